//! JSON lines: one object per line, flushed per record so a pipe sees it at once.
//!
//! One time convention for every record type: `ts_ns` (CLOCK_MONOTONIC ns, the record's
//! start: a call's entry, a request's queueing, an interval's beginning) and `unix_ms`
//! (the same instant, wall clock). They are added after the record's own fields (which
//! keep their names: `start_ns`, `queued_ns`... are still there).

use std::io::{self, Write};

use super::{CallRecord, EventRecord, Sink, Summary};
use crate::clock::{MonoNs, WallClock};

pub struct JsonSink<W: Write> {
    w: W,
    wall: Option<WallClock>,
    buf: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(w: W) -> Self {
        JsonSink {
            w,
            wall: None,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Writes `v` with `ts_ns` (unless it has that field already: `has_ts`) and `unix_ms`.
    fn line<T: serde::Serialize>(
        &mut self,
        v: &T,
        ts: Option<u64>,
        has_ts: bool,
    ) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, v)?;
        if let Some(ts) = ts
            && self.buf.last() == Some(&b'}')
        {
            self.buf.pop();
            let sep = if self.buf.len() > 1 { "," } else { "" };
            if !has_ts {
                write!(self.buf, "{sep}\"ts_ns\":{ts}")?;
            }
            if let Some(w) = self.wall {
                let sep = if has_ts { sep } else { "," };
                write!(self.buf, "{sep}\"unix_ms\":{}", w.unix_ms(MonoNs(ts)))?;
            }
            self.buf.push(b'}');
        }
        self.buf.push(b'\n');
        self.w.write_all(&self.buf)?;
        self.w.flush()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        self.line(r, Some(r.start_ns), false)
    }
    fn event(&mut self, r: &EventRecord) -> io::Result<()> {
        match r.ts_field() {
            Some(ts) => self.line(r, Some(ts), true),
            None => self.line(r, r.start_ns(), false),
        }
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.line(s, None, false)
    }
    fn clock(&mut self, wall: &WallClock) {
        self.wall = Some(*wall);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record() -> CallRecord {
        CallRecord {
            kind: "fsync",
            pid: 10,
            tid: 11,
            thread: "SyncThread:1".into(),
            thread_source: None,
            comm: None,
            syscall: "fdatasync",
            fd: Some(5),
            path: Some("/zk/version-2/log.1".into()),
            dev: Some("7:0".into()),
            device: Some("loop0".into()),
            disk: Some("loop0".into()),
            start_ns: 123,
            start_unix_ms: 1_700_000_000_000,
            duration_ms: 213.5,
            ret: Some(0),
            unfinished: false,
            in_progress: false,
            revised: false,
            start_bound: false,
            after_ms: None,
            before_ms: None,
            visible_ms: None,
            why: None,
        }
    }

    #[test]
    fn writes_the_documented_field_names() {
        let mut out = Vec::new();
        JsonSink::new(&mut out).call(&record()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "type",
            "pid",
            "tid",
            "thread",
            "syscall",
            "fd",
            "path",
            "dev",
            "device",
            "start_ns",
            "start_unix_ms",
            "duration_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["type"], "fsync");
        assert_eq!(v["dev"], "7:0");
        assert_eq!(v["duration_ms"], 213.5);
        assert!(v.get("unfinished").is_none());
        assert!(out.ends_with(b"\n"));
        assert_eq!(v["ts_ns"], 123);
        assert!(v.get("unix_ms").is_none(), "no clock, no unix_ms");
    }

    #[test]
    fn every_record_type_gets_ts_ns_and_unix_ms() {
        use crate::sinks::timeline::tests as t;
        let mut out = Vec::new();
        let mut s = JsonSink::new(&mut out);
        s.clock(&WallClock {
            offset_ns: 1_700_000_000_000_000_000,
        });
        s.call(&record()).unwrap();
        s.event(&EventRecord::Io(t::io(5_000_000, 6_000_000, 9_000_000)))
            .unwrap();
        s.event(&EventRecord::Blocked(t::blocked(7_000_000, 1.0, 0.1)))
            .unwrap();
        s.event(&EventRecord::Thread(crate::sinks::events::ThreadRecord {
            kind: "thread",
            change: "new",
            pid: 1,
            tid: 2,
            thread: "x".into(),
            ts_ns: 8_000_000,
        }))
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = [
            (123, 1_700_000_000_000i64),
            (5_000_000, 1_700_000_000_005),
            (7_000_000, 1_700_000_000_007),
            (8_000_000, 1_700_000_000_008),
        ];
        for (v, (ts, ms)) in lines.iter().zip(want) {
            assert_eq!(v["ts_ns"], ts, "{v}");
            assert_eq!(v["unix_ms"], ms, "{v}");
        }
        // Fields of their own are kept.
        assert_eq!(lines[1]["queued_ns"], 5_000_000);
    }

    #[test]
    fn summary_is_a_typed_line() {
        let mut out = Vec::new();
        let s = Summary {
            kind: "summary",
            dropped: 3,
            ..Default::default()
        };
        JsonSink::new(&mut out).summary(&s).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["dropped"], 3);
    }
}
