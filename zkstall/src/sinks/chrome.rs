//! A [`Timeline`] as Chrome trace-event JSON (`{"traceEvents":[...]}`), for
//! chrome://tracing and older tools: the same content as the Perfetto export. Chrome's
//! format has only processes and threads, so a track that is neither (a thread's off-CPU
//! lane, a disk's requests) becomes a thread of its own in the nearest process, and a
//! recording's devices a process of their own. Times are Unix microseconds.

use std::{
    collections::HashMap,
    io::{self, Write},
};

use serde_json::{Value, json};

use super::timeline::{Arg, Args, Timeline, TrackKind};

/// Pseudo-ids start above any pid the timeline uses (those stay below 2^31 >> 1).
const PSEUDO_PID: i64 = 1 << 30;
const PSEUDO_TID: i64 = 1 << 30;

fn us(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

fn args_json(args: &Args) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in args {
        m.insert(
            k.to_string(),
            match v {
                Arg::Str(s) => json!(s),
                Arg::Int(i) => json!(i),
                Arg::F64(f) => json!(f),
                Arg::Bool(b) => json!(b),
            },
        );
    }
    Value::Object(m)
}

/// Where a track's events go: (pid, tid); tid None for counters and process tracks.
#[derive(Clone, Copy)]
struct Place {
    pid: i64,
    tid: Option<i64>,
}

pub fn write(t: &Timeline, w: &mut impl Write) -> io::Result<()> {
    let by_uuid: HashMap<u64, usize> = t
        .tracks
        .iter()
        .enumerate()
        .map(|(i, tr)| (tr.uuid, i))
        .collect();
    let mut places: HashMap<u64, Place> = HashMap::new();
    let mut meta: Vec<Value> = Vec::new();
    let (mut next_pid, mut next_tid) = (PSEUDO_PID, PSEUDO_TID);
    // Parents come before children in `tracks` (each is created on first use, after its
    // parent), except lanes, which point at tracks made earlier too: one pass suffices.
    for tr in &t.tracks {
        let parent = tr.parent.and_then(|p| places.get(&p).copied()).or_else(|| {
            tr.parent
                .and_then(|p| by_uuid.get(&p))
                .and_then(|&i| match t.tracks[i].kind {
                    TrackKind::Process { pid, .. } => Some(Place {
                        pid: pid as i64,
                        tid: None,
                    }),
                    _ => None,
                })
        });
        let place = match &tr.kind {
            TrackKind::Process { pid, labels, .. } => {
                let pid = *pid as i64;
                meta.push(
                    json!({"ph":"M","name":"process_name","pid":pid,"args":{"name":tr.name}}),
                );
                meta.push(json!({"ph":"M","name":"process_labels","pid":pid,"args":{"labels":labels.join(",")}}));
                Place { pid, tid: None }
            }
            TrackKind::Thread { pid, tid, .. } => {
                let (pid, tid) = (*pid as i64, *tid as i64);
                meta.push(json!({"ph":"M","name":"thread_name","pid":pid,"tid":tid,"args":{"name":tr.name}}));
                Place {
                    pid,
                    tid: Some(tid),
                }
            }
            TrackKind::Group => {
                let pid = next_pid;
                next_pid += 1;
                meta.push(
                    json!({"ph":"M","name":"process_name","pid":pid,"args":{"name":tr.name}}),
                );
                Place { pid, tid: None }
            }
            TrackKind::Slices => {
                let pid = match parent {
                    Some(p) => p.pid,
                    None => {
                        let pid = next_pid;
                        next_pid += 1;
                        pid
                    }
                };
                let tid = next_tid;
                next_tid += 1;
                meta.push(json!({"ph":"M","name":"thread_name","pid":pid,"tid":tid,"args":{"name":tr.name}}));
                Place {
                    pid,
                    tid: Some(tid),
                }
            }
            TrackKind::Counter { .. } => Place {
                pid: parent.map_or_else(
                    || {
                        let pid = next_pid;
                        next_pid += 1;
                        pid
                    },
                    |p| p.pid,
                ),
                tid: None,
            },
        };
        places.insert(tr.uuid, place);
    }

    w.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
    let mut first = true;
    let mut line = |w: &mut dyn Write, s: String| -> io::Result<()> {
        if !first {
            w.write_all(b",\n")?;
        }
        first = false;
        w.write_all(s.as_bytes())
    };
    for m in &meta {
        line(w, m.to_string())?;
    }
    let at = |track: u64| {
        places.get(&track).copied().unwrap_or(Place {
            pid: PSEUDO_PID - 1,
            tid: Some(0),
        })
    };
    for s in &t.slices {
        let p = at(s.track);
        let tid = p.tid.unwrap_or(0);
        line(
            w,
            format!(
                "{{\"ph\":\"X\",\"name\":{},\"cat\":\"{}\",\"ts\":{},\"dur\":{},\"pid\":{},\"tid\":{},\"args\":{}}}",
                json!(s.name),
                s.cat,
                us(s.start),
                us(s.dur),
                p.pid,
                tid,
                args_json(&s.args)
            ),
        )?;
        if let Some(id) = s.flow_in {
            line(
                w,
                format!(
                    "{{\"ph\":\"f\",\"bp\":\"e\",\"name\":\"wakeup\",\"cat\":\"wakeup\",\"id\":{id},\"ts\":{},\"pid\":{},\"tid\":{tid}}}",
                    us(s.start),
                    p.pid
                ),
            )?;
        }
    }
    for i in &t.instants {
        let p = at(i.track);
        let tid = p.tid.unwrap_or(0);
        if let Some(id) = i.flow_out {
            // A flow starts inside a slice: a zero-length one marks the wakeup.
            line(
                w,
                format!(
                    "{{\"ph\":\"X\",\"name\":{},\"cat\":\"{}\",\"ts\":{},\"dur\":0,\"pid\":{},\"tid\":{tid},\"args\":{}}}",
                    json!(i.name),
                    i.cat,
                    us(i.ts),
                    p.pid,
                    args_json(&i.args)
                ),
            )?;
            line(
                w,
                format!(
                    "{{\"ph\":\"s\",\"name\":\"wakeup\",\"cat\":\"wakeup\",\"id\":{id},\"ts\":{},\"pid\":{},\"tid\":{tid}}}",
                    us(i.ts),
                    p.pid
                ),
            )?;
        } else {
            line(
                w,
                format!(
                    "{{\"ph\":\"i\",\"s\":\"t\",\"name\":{},\"cat\":\"{}\",\"ts\":{},\"pid\":{},\"tid\":{tid},\"args\":{}}}",
                    json!(i.name),
                    i.cat,
                    us(i.ts),
                    p.pid,
                    args_json(&i.args)
                ),
            )?;
        }
    }
    for s in &t.samples {
        let p = at(s.track);
        let name = by_uuid
            .get(&s.track)
            .map_or("counter", |&i| t.tracks[i].name.as_str());
        line(
            w,
            format!(
                "{{\"ph\":\"C\",\"name\":{},\"ts\":{},\"pid\":{},\"args\":{{\"value\":{}}}}}",
                json!(name),
                us(s.ts),
                p.pid,
                json!(s.value)
            ),
        )?;
    }
    w.write_all(b"\n]}\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{
        EventRecord, Sink as _,
        json::tests::record,
        timeline::{TimelineSink, tests},
    };

    #[test]
    fn is_json_with_named_threads_and_slices() {
        let mut s = TimelineSink::new();
        s.begin(tests::source("zk1"));
        s.call(&record()).unwrap();
        s.event(&EventRecord::Blocked(tests::blocked(200, 10.0, 1.0)))
            .unwrap();
        s.event(&EventRecord::Io(tests::io(100, 200, 5_000_000)))
            .unwrap();
        let t = s.finish();
        let mut out = Vec::new();
        write(&t, &mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let evs = v["traceEvents"].as_array().unwrap();
        assert!(evs.iter().any(|e| e["name"] == "thread_name"
            && e["args"]["name"] == "SyncThread:1"
            && e["tid"] == 11));
        let call = evs
            .iter()
            .find(|e| e["ph"] == "X" && e["name"] == "fdatasync")
            .unwrap();
        assert_eq!(call["dur"].as_f64().unwrap(), 213500.0);
        assert!(evs.iter().any(|e| e["ph"] == "s"));
        assert!(evs.iter().any(|e| e["ph"] == "f"));
        assert!(
            evs.iter()
                .any(|e| e["ph"] == "C" && e["name"] == "loop0 in flight")
        );
    }
}
