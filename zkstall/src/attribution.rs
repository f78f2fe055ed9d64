//! Attribution: for one slow call, where the time went and who caused it. A pure function
//! of the call and the [`History`] around it, so live tracing and (later) recordings give
//! the same answer, and synthetic streams can test every verdict.
//!
//! The calling thread's interval is split into on-CPU, sleeping in D, sleeping in S and
//! waiting on the run queue (from its off-CPU intervals); the device holding the file is
//! examined over the same interval (requests in flight, completions, the longest stretch
//! with requests in flight but no completion, latencies, bytes by whom); throttling pauses
//! and journal commits are matched. The rules, first match wins:
//!
//! | verdict | when |
//! |---|---|
//! | device_stall | requests were in flight but none completed for >= 50% of the call, and for at least 500 ms (a single slow request of a short call is not a stall) |
//! | dirty_throttle | balance_dirty_pages pauses cover >= 30% of the call |
//! | cpu_starvation | runnable but not running for >= 50% of the call (during the syscall or right after it) |
//! | journal_wait | >= 30% in D, waiting on a jbd2 commit (its stack, or woken by jbd2) |
//! | fs_blocked | >= 50% in D with no I/O of its own in flight for most of it |
//! | device_contention | >= 30% in D and others moved more bytes on the device than it did |
//! | own_io | its own I/O at the device's speed |
//! | unknown | none of the above (no signal covers the time) |
//!
//! | jvm_pause | the syscall returned, then the thread slept (parked at a safepoint) for >= 50% of what its caller measured |
//!
//! The interval is what the caller saw: when the thread went off CPU right after the
//! syscall returned, until it ran again (`Span::syscall_end` marks the return). A JVM
//! timing `force()` counts that wait too; so does zkstall.

use std::collections::HashMap;

use serde::Serialize;

use crate::{
    clock::MonoNs,
    enrich::DevId,
    history::{Blocked, History, overlap},
};

/// The call being explained.
#[derive(Clone, Debug)]
pub struct Span {
    pub pid: u32,
    pub tid: u32,
    pub syscall: &'static str,
    /// The device of the file (None for sync, or when unresolved).
    pub dev: Option<DevId>,
    pub device: Option<String>,
    pub start: MonoNs,
    /// When the caller could go on: the syscall's return, or later if the thread went off
    /// CPU right after it (`syscall_end` is then when the syscall itself returned).
    pub end: MonoNs,
    pub syscall_end: Option<MonoNs>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The numbers behind a verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// How the calling thread spent the call (ms).
    pub on_cpu_ms: f64,
    pub d_state_ms: f64,
    pub s_state_ms: f64,
    pub runq_ms: f64,
    /// On the file's device during the call.
    pub dev: Option<String>,
    pub device: Option<String>,
    pub inflight_max: u32,
    pub completions: u32,
    /// Longest stretch with requests in flight and no completion.
    pub longest_completion_gap_ms: f64,
    /// Device service time (issue -> completion) of requests completed during the call.
    pub latency_ms: Option<Percentiles>,
    pub bytes_target: u64,
    pub bytes_others: u64,
    pub requests_target: u32,
    pub requests_others: u32,
    /// Sum of balance_dirty_pages pauses of the thread during the call.
    pub throttle_pause_ms: f64,
    /// The jbd2 commit that overlapped the call most, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalEvidence>,
    /// Where the thread slept longest in D.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// Who woke it from that sleep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker: Option<String>,
    /// Time between the syscall's return and the thread running again, when it went
    /// off CPU right after the syscall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_syscall_ms: Option<f64>,
    /// Other threads of the same process off CPU through most of that wait (a JVM
    /// safepoint stops them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_threads_stopped: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JournalEvidence {
    pub transaction: u32,
    pub duration_ms: f64,
    pub locking_ms: Option<f64>,
    pub flushing_ms: Option<f64>,
    pub logging_ms: Option<f64>,
    pub handles: Option<u32>,
    pub blocks: Option<u32>,
}

/// Another process's share of the device during the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contender {
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub bytes: u64,
    pub requests: u32,
}

/// One off-CPU interval of one of the target's threads, during the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub tid: u32,
    pub thread: String,
    pub state: String,
    pub start_ns: u64,
    pub duration_ms: f64,
    pub syscall: Option<String>,
    pub waker: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    pub verdict: &'static str,
    pub headline: String,
    pub evidence: Evidence,
    pub contenders: Vec<Contender>,
    pub timeline: Vec<TimelineEntry>,
}

const MAX_CONTENDERS: usize = 5;
/// Kernel functions where a thread waits for the device: to submit I/O (block layer
/// queueing, writeback throttling) or for writeback to complete (its own pages, or the
/// whole filesystem's when ext4 forces delayed allocations out). A thread sleeping there
/// waits on the device and whoever keeps it busy, not on the filesystem.
const DEVICE_WAITS: [&str; 10] = [
    "rq_qos_wait",
    "wbt_wait",
    "blk_mq_get_tag",
    "__blk_mq_get_tag",
    "bio_queue_enter",
    "blk_queue_enter",
    "submit_bio_wait",
    "wb_wait_for_completion",
    "folio_wait_writeback",
    "__filemap_fdatawait_range",
];
/// Others' traffic below both of these is not contention (a few metadata blocks).
const CONTENTION_MIN_BYTES: u64 = 1 << 20;
const CONTENTION_MIN_REQUESTS: u32 = 16;

/// `12.3 MB`, `48 KB`, `512 B`.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} KB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// A device that completes nothing for less than this is slow, not stalled.
const STALL_MIN_NS: u64 = 500_000_000;
const MAX_TIMELINE: usize = 20;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn percentiles(mut v: Vec<f64>) -> Option<Percentiles> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some(Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: v[v.len() - 1],
    })
}

/// Total length of the union of intervals, clipped to `win`.
fn union_len(mut iv: Vec<(MonoNs, MonoNs)>, win: (MonoNs, MonoNs)) -> u64 {
    iv.retain(|(a, b)| b > a);
    iv.sort();
    let mut total = 0;
    let mut cur: Option<(MonoNs, MonoNs)> = None;
    for (a, b) in iv {
        match cur {
            Some((c0, c1)) if a <= c1 => cur = Some((c0, c1.max(b))),
            Some(c) => {
                total += overlap(c, win);
                cur = Some((a, b));
            }
            None => cur = Some((a, b)),
        }
    }
    if let Some(c) = cur {
        total += overlap(c, win);
    }
    total
}

pub fn explain(call: &Span, h: &History) -> Explanation {
    let win = (call.start, call.end);
    let dur = call.end.since(call.start).max(1);
    let frac = |ns: u64| ns as f64 / dur as f64;
    let mut ev = Evidence {
        dev: call.dev.map(|d| d.to_string()),
        device: call.device.clone(),
        ..Default::default()
    };

    // 1. The calling thread's time.
    let (mut d_ns, mut s_ns, mut runq_ns) = (0u64, 0u64, 0u64);
    let mut longest_d: Option<(&Blocked, u64)> = None;
    for b in recent_blocked(h, call).filter(|b| b.tid == call.tid) {
        runq_ns += overlap(b.runq(), win);
        let sleep = overlap(b.sleep(), win);
        if b.state.contains('D') {
            d_ns += sleep;
            if longest_d.is_none_or(|(_, l)| sleep > l) {
                longest_d = Some((b, sleep));
            }
        } else {
            s_ns += sleep;
        }
    }
    ev.d_state_ms = ms(d_ns);
    ev.s_state_ms = ms(s_ns);
    ev.runq_ms = ms(runq_ns);
    ev.on_cpu_ms = ms(dur.saturating_sub(d_ns + s_ns + runq_ns));
    if let Some((b, _)) = longest_d {
        ev.stack = b.stack.clone();
        ev.waker = b.waker.as_ref().map(|(_, _, c)| c.clone());
    }

    // 2. Throttling of the thread.
    // Every history queue is appended in time order: walk back from the newest and stop
    // at the call's start, so explaining a call costs its own interval, not the history.
    let pause_ms: i64 = h
        .throttles
        .iter()
        .rev()
        .take_while(|t| t.at >= call.start)
        .filter(|t| t.tid == call.tid && t.at <= call.end && t.pause_ms > 0)
        .map(|t| t.pause_ms)
        .sum();
    ev.throttle_pause_ms = pause_ms as f64;

    // 3. The device.
    let ios: Vec<_> = match call.dev {
        Some(dev) => h
            .ios
            .iter()
            .rev()
            .take_while(|io| io.completed > call.start)
            .filter(|io| io.dev == dev && io.start() < call.end)
            .collect(),
        None => Vec::new(),
    };
    let mut by_party: HashMap<u32, Contender> = HashMap::new();
    let mut own_busy = Vec::new();
    for io in &ios {
        let own = io.charged.pid == call.pid || io.pid == call.pid;
        if own {
            ev.bytes_target += io.bytes as u64;
            ev.requests_target += 1;
            own_busy.push((io.start(), io.completed));
        } else {
            ev.bytes_others += io.bytes as u64;
            ev.requests_others += 1;
            let c = by_party.entry(io.charged.pid).or_insert_with(|| Contender {
                pid: io.charged.pid,
                comm: io.charged.comm.clone(),
                cgroup: io.charged.cgroup.clone(),
                bytes: 0,
                requests: 0,
            });
            c.bytes += io.bytes as u64;
            c.requests += 1;
        }
    }
    // Completions of requests never seen queued have no known submitter.
    by_party.remove(&0);
    // Requests that completed during the call, by completion time.
    let mut done: Vec<_> = ios.iter().filter(|io| io.completed <= call.end).collect();
    done.sort_by_key(|io| io.completed);
    ev.completions = done.len() as u32;
    ev.latency_ms = percentiles(
        done.iter()
            .filter_map(|io| io.issued.map(|i| ms(io.completed.since(i))))
            .collect(),
    );
    // In flight: a sweep over starts and completions.
    let mut edges: Vec<(MonoNs, i32)> = ios
        .iter()
        .flat_map(|io| [(io.start(), 1), (io.completed, -1)])
        .collect();
    edges.sort();
    let mut level = 0i32;
    for (_, d) in edges {
        level += d;
        ev.inflight_max = ev.inflight_max.max(level.max(0) as u32);
    }
    // The longest stretch with something in flight and nothing completing: between two
    // consecutive completions (or the call's start and the first), from the later of the
    // previous completion and the earliest start among the requests still to complete.
    let mut gap = 0u64;
    let mut suffix_min_start = vec![MonoNs(u64::MAX); done.len() + 1];
    for i in (0..done.len()).rev() {
        suffix_min_start[i] = suffix_min_start[i + 1].min(done[i].start());
    }
    let mut prev = call.start;
    for (i, io) in done.iter().enumerate() {
        let from = prev.max(suffix_min_start[i]);
        gap = gap.max(io.completed.since(from));
        prev = io.completed;
    }
    ev.longest_completion_gap_ms = ms(gap);

    // 4. Journal commits on the device overlapping the call.
    let commit = call.dev.and_then(|dev| {
        h.commits
            .iter()
            .rev()
            .take_while(|c| c.end > call.start)
            .filter(|c| c.dev == dev && overlap((c.start, c.end), win) > 0)
            .max_by_key(|c| overlap((c.start, c.end), win))
    });
    ev.journal = commit.map(|c| JournalEvidence {
        transaction: c.transaction,
        duration_ms: ms(c.end.since(c.start)),
        locking_ms: c.locking_ms,
        flushing_ms: c.flushing_ms,
        logging_ms: c.logging_ms,
        handles: c.handles,
        blocks: c.blocks,
    });
    let waits_on_journal = ev
        .stack
        .iter()
        .any(|f| f.starts_with("jbd2_log_wait_commit") || f.starts_with("jbd2_journal_wait"))
        || ev.waker.as_deref().is_some_and(|w| w.starts_with("jbd2/"));

    // 5. After the syscall returned, if the thread went off CPU right away: asleep (a
    //    JVM safepoint parks returning threads in futex) or waiting for a CPU.
    let mut s_after = 0u64;
    if let Some(se) = call.syscall_end {
        let after = (se, call.end);
        let wait = call.end.since(se).max(1);
        for b in recent_blocked(h, call)
            .filter(|b| b.tid == call.tid && b.state != "R" && !b.state.contains('D'))
        {
            s_after += overlap(b.sleep(), after);
        }
        let mut stopped: HashMap<u32, u64> = HashMap::new();
        for b in recent_blocked(h, call).filter(|b| b.pid == call.pid && b.tid != call.tid) {
            *stopped.entry(b.tid).or_default() += overlap((b.off, b.on), after);
        }
        ev.after_syscall_ms = Some(ms(call.end.since(se)));
        ev.other_threads_stopped =
            Some(stopped.values().filter(|&&t| t * 2 >= wait).count() as u32);
    }

    // No own I/O in flight while in D.
    let own_inflight = union_len(own_busy, win);
    let in_block_layer = ev
        .stack
        .iter()
        .any(|f| DEVICE_WAITS.iter().any(|w| f.starts_with(w)));

    let mut contenders: Vec<Contender> = by_party.into_values().collect();
    contenders.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.requests.cmp(&a.requests)));
    contenders.truncate(MAX_CONTENDERS);

    let device = call
        .device
        .clone()
        .or_else(|| call.dev.map(|d| d.to_string()))
        .unwrap_or_else(|| "the device".into());
    let dur_ms = ms(dur);
    let sc = call.syscall;
    let top_frame = ev
        .stack
        .iter()
        .find(|f| {
            !f.starts_with("__traceiter")
                && !f.starts_with("__schedule")
                && !f.starts_with("schedule")
                && !f.starts_with("io_schedule")
        })
        .cloned();
    let (verdict, headline) = if frac(gap) >= 0.5 && gap >= STALL_MIN_NS && ev.inflight_max > 0 {
        (
            "device_stall",
            format!(
                "{device} stopped completing I/O for {:.0} ms of this {dur_ms:.0} ms {sc} ({} request(s) in flight, {} completion(s))",
                ms(gap),
                ev.inflight_max,
                ev.completions
            ),
        )
    } else if frac((ev.throttle_pause_ms * 1e6) as u64) >= 0.3 {
        (
            "dirty_throttle",
            format!(
                "paused {:.0} ms of this {dur_ms:.0} ms {sc} in balance_dirty_pages: too many dirty pages",
                ev.throttle_pause_ms
            ),
        )
    } else if frac(runq_ns) >= 0.5 {
        (
            "cpu_starvation",
            format!(
                "runnable but not running for {:.0} ms of this {dur_ms:.0} ms {sc}: the CPU was busy with others",
                ms(runq_ns)
            ),
        )
    } else if frac(s_after) >= 0.5 {
        (
            "jvm_pause",
            format!(
                "{sc} returned in {:.0} ms, then the thread slept {:.0} ms before its caller ran again, with {} other thread(s) of the process stopped too: a JVM pause (safepoint or GC)",
                ms(call.syscall_end.map_or(0, |se| se.since(call.start))),
                ms(s_after),
                ev.other_threads_stopped.unwrap_or(0)
            ),
        )
    } else if frac(d_ns) >= 0.3 && waits_on_journal {
        let detail = match &ev.journal {
            Some(j) => format!(
                " (commit {} took {:.0} ms{})",
                j.transaction,
                j.duration_ms,
                match j.flushing_ms {
                    Some(f) if f >= 1.0 => format!(", {f:.0} ms of it flushing ordered data"),
                    _ => String::new(),
                }
            ),
            None => String::new(),
        };
        (
            "journal_wait",
            format!(
                "waited {:.0} ms of this {dur_ms:.0} ms {sc} for a jbd2 commit on {device}{detail}",
                ms(d_ns)
            ),
        )
    } else if frac(d_ns) >= 0.5 && own_inflight < d_ns / 10 && !in_block_layer {
        (
            "fs_blocked",
            format!(
                "blocked {:.0} ms of this {dur_ms:.0} ms {sc} in the filesystem with no I/O of its own in flight (frozen filesystem or fs lock){}",
                ms(d_ns),
                top_frame.map(|f| format!(" at {f}")).unwrap_or_default()
            ),
        )
    } else if frac(d_ns) >= 0.3
        && ev.bytes_others > ev.bytes_target
        && (ev.bytes_others >= CONTENTION_MIN_BYTES
            || ev.requests_others >= CONTENTION_MIN_REQUESTS)
    {
        let who = contenders
            .first()
            .map(|c| format!("{} ({})", c.comm, c.pid))
            .unwrap_or_else(|| "others".into());
        (
            "device_contention",
            format!(
                "{device} was busy with others' I/O during this {dur_ms:.0} ms {sc}: {} by others vs {} of its own; top: {who}{}",
                human(ev.bytes_others),
                human(ev.bytes_target),
                if in_block_layer {
                    " (it waited in the block layer or for writeback)"
                } else {
                    ""
                }
            ),
        )
    } else if ev.bytes_target > 0 || frac(d_ns) >= 0.3 {
        (
            "own_io",
            format!(
                "writing its own {} on {device}{}",
                human(ev.bytes_target),
                ev.latency_ms
                    .as_ref()
                    .map(|l| format!(" (device latency p50 {:.2} ms, max {:.2} ms)", l.p50, l.max))
                    .unwrap_or_default()
            ),
        )
    } else {
        (
            "unknown",
            format!("no traced signal accounts for this {dur_ms:.0} ms {sc}"),
        )
    };

    Explanation {
        verdict,
        headline,
        evidence: ev,
        contenders,
        timeline: timeline(call, h),
    }
}

/// Off-CPU intervals overlapping the call (the queue is ordered by their end).
fn recent_blocked<'a>(h: &'a History, call: &'a Span) -> impl Iterator<Item = &'a Blocked> + 'a {
    h.blocked
        .iter()
        .rev()
        .take_while(move |b| b.on > call.start)
        .filter(move |b| overlap((b.off, b.on), (call.start, call.end)) > 0)
}

/// The target's threads that spent a noticeable part of the call off CPU, and how.
fn timeline(call: &Span, h: &History) -> Vec<TimelineEntry> {
    let win = (call.start, call.end);
    let dur = call.end.since(call.start).max(1);
    let mut per_thread: HashMap<u32, u64> = HashMap::new();
    for b in recent_blocked(h, call).filter(|b| b.pid == call.pid) {
        *per_thread.entry(b.tid).or_default() += overlap((b.off, b.on), win);
    }
    let mut out: Vec<TimelineEntry> = recent_blocked(h, call)
        .filter(|b| b.pid == call.pid && per_thread.get(&b.tid).is_some_and(|&t| t * 5 >= dur))
        // A thread already asleep (S) when the call began is idle, not held up by the
        // stall (JVM housekeeping threads sleep for seconds); D and runnable always count.
        .filter(|b| b.state != "S" || b.off >= call.start || b.tid == call.tid)
        .map(|b| TimelineEntry {
            tid: b.tid,
            thread: b.thread.clone(),
            state: b.state.clone(),
            start_ns: b.off.0,
            duration_ms: ms(b.on.since(b.off)),
            syscall: b.syscall.clone(),
            waker: b.waker.as_ref().map(|(_, _, c)| c.clone()),
        })
        .collect();
    // The calling thread first, then the longest.
    out.sort_by(|a, b| {
        (b.tid == call.tid)
            .cmp(&(a.tid == call.tid))
            .then(b.duration_ms.total_cmp(&a.duration_ms))
    });
    out.truncate(MAX_TIMELINE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Commit, Io, Party, Throttle};

    const MS: u64 = 1_000_000;
    const ZK: u32 = 100;
    const SYNC: u32 = 101;
    const DEV: DevId = DevId { major: 7, minor: 1 };

    fn t(ms: u64) -> MonoNs {
        MonoNs(1_000_000_000 + ms * MS)
    }

    fn call(start: u64, end: u64) -> Span {
        Span {
            pid: ZK,
            tid: SYNC,
            syscall: "fdatasync",
            dev: Some(DEV),
            device: Some("loop1".into()),
            start: t(start),
            end: t(end),
            syscall_end: None,
        }
    }

    fn io(pid: u32, comm: &str, bytes: u32, issued: u64, completed: u64) -> Io {
        Io {
            dev: DEV,
            pid,
            charged: Party {
                pid,
                comm: comm.into(),
                cgroup: None,
            },
            bytes,
            write: true,
            queued: Some(t(issued)),
            issued: Some(t(issued)),
            completed: t(completed),
        }
    }

    fn blocked(
        tid: u32,
        state: &str,
        off: u64,
        on: u64,
        wake: Option<u64>,
        stack: &[&str],
        waker: Option<&str>,
    ) -> Blocked {
        Blocked {
            pid: ZK,
            tid,
            thread: if tid == SYNC {
                "SyncThread:1".into()
            } else {
                format!("t{tid}")
            },
            state: state.into(),
            off: t(off),
            on: t(on),
            wake: wake.map(t),
            syscall: Some("fdatasync".into()),
            waker: waker.map(|w| (7, 7, w.to_string())),
            stack: stack.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn requests_in_flight_without_completions_is_a_device_stall() {
        let mut h = History::default();
        h.io(io(ZK, "SyncThread:1", 4096, 1, 2)); // normal, early
        h.io(io(ZK, "SyncThread:1", 4096, 5, 4900)); // issued, then nothing for ~4.9 s
        h.io(io(0, "jbd2/loop1-8", 8192, 10, 4950));
        h.blocked(blocked(
            SYNC,
            "D",
            5,
            4950,
            Some(4950),
            &["io_schedule+0x3f", "folio_wait_writeback+0x2a"],
            Some("loop1"),
        ));
        let e = explain(&call(0, 5000), &h);
        assert_eq!(e.verdict, "device_stall", "{}", e.headline);
        assert!(
            e.evidence.longest_completion_gap_ms >= 4890.0,
            "{:?}",
            e.evidence
        );
        assert_eq!(e.evidence.inflight_max, 2);
        assert_eq!(e.evidence.completions, 3);
        assert!(
            e.headline.contains("loop1 stopped completing I/O"),
            "{}",
            e.headline
        );
    }

    #[test]
    fn a_call_spanning_an_idle_device_is_not_a_stall() {
        // Nothing in flight for most of the call: gaps without requests are idle, not stalls.
        let mut h = History::default();
        h.io(io(ZK, "SyncThread:1", 4096, 1, 2));
        h.io(io(ZK, "SyncThread:1", 4096, 990, 995));
        h.blocked(blocked(SYNC, "S", 3, 985, Some(985), &[], Some("java")));
        let e = explain(&call(0, 1000), &h);
        assert_ne!(e.verdict, "device_stall");
        assert!(
            e.evidence.longest_completion_gap_ms < 10.0,
            "{:?}",
            e.evidence
        );
    }

    #[test]
    fn a_busy_device_full_of_a_neighbours_writes_is_contention_with_the_neighbour_first() {
        let mut h = History::default();
        for i in 0..50 {
            h.io(io(777, "dd", 1 << 20, i * 4, i * 4 + 3)); // 50 MB by dd
        }
        h.io(io(555, "logrotate", 1 << 16, 10, 12));
        h.io(io(ZK, "SyncThread:1", 4096, 150, 199));
        h.blocked(blocked(
            SYNC,
            "D",
            1,
            199,
            Some(199),
            &["io_schedule", "folio_wait_writeback"],
            Some("kworker/1:1H"),
        ));
        let e = explain(&call(0, 200), &h);
        assert_eq!(e.verdict, "device_contention", "{}", e.headline);
        assert_eq!(e.contenders[0].comm, "dd");
        assert_eq!(e.contenders[0].bytes, 50 << 20);
        assert_eq!(e.contenders[0].requests, 50);
        assert_eq!(e.contenders[1].comm, "logrotate");
        assert_eq!(e.evidence.bytes_target, 4096);
        assert!(e.headline.contains("dd (777)"), "{}", e.headline);
    }

    #[test]
    fn flusher_io_counts_for_the_dirtier_among_contenders() {
        let mut h = History::default();
        let mut wb = io(42, "kworker/u8:0", 8 << 20, 5, 90);
        wb.charged = Party {
            pid: 777,
            comm: "dd".into(),
            cgroup: Some("/backup.slice".into()),
        };
        h.io(wb);
        h.blocked(blocked(SYNC, "D", 1, 99, Some(99), &["io_schedule"], None));
        let e = explain(&call(0, 100), &h);
        assert_eq!(e.contenders[0].pid, 777);
        assert_eq!(e.contenders[0].cgroup.as_deref(), Some("/backup.slice"));
    }

    #[test]
    fn waiting_on_a_jbd2_commit_is_journal_wait_with_the_commit() {
        let mut h = History::default();
        h.io(io(0, "jbd2/loop1-8", 4096, 10, 20));
        for i in 0..10 {
            h.io(io(777, "dd", 1 << 20, 20 + i * 30, 45 + i * 30));
        }
        h.commit(Commit {
            dev: DEV,
            transaction: 9,
            start: t(5),
            end: t(340),
            locking_ms: Some(1.0),
            flushing_ms: Some(300.0),
            logging_ms: Some(30.0),
            handles: Some(40),
            blocks: Some(12),
        });
        h.blocked(blocked(
            SYNC,
            "D",
            2,
            341,
            Some(340),
            &[
                "__schedule",
                "jbd2_log_wait_commit+0x11",
                "ext4_sync_file+0x2",
            ],
            Some("jbd2/loop1-8"),
        ));
        let e = explain(&call(0, 342), &h);
        assert_eq!(e.verdict, "journal_wait", "{}", e.headline);
        let j = e.evidence.journal.as_ref().unwrap();
        assert_eq!((j.transaction, j.flushing_ms), (9, Some(300.0)));
        assert_eq!(
            e.contenders[0].comm, "dd",
            "whose data the commit was flushing"
        );
        assert!(e.headline.contains("commit 9"), "{}", e.headline);
    }

    #[test]
    fn pauses_in_balance_dirty_pages_are_dirty_throttle() {
        let mut h = History::default();
        for i in 0..6 {
            h.throttle(Throttle {
                pid: ZK,
                tid: SYNC,
                at: t(i * 40),
                pause_ms: 40,
            });
        }
        h.blocked(blocked(
            SYNC,
            "D",
            0,
            240,
            Some(240),
            &["balance_dirty_pages+0x1"],
            None,
        ));
        let e = explain(&call(0, 250), &h);
        assert_eq!(e.verdict, "dirty_throttle", "{}", e.headline);
        assert_eq!(e.evidence.throttle_pause_ms, 240.0);
        // Another thread's pauses do not count.
        let mut other = History::default();
        other.throttle(Throttle {
            pid: ZK,
            tid: 999,
            at: t(10),
            pause_ms: 200,
        });
        assert_ne!(explain(&call(0, 250), &other).verdict, "dirty_throttle");
    }

    #[test]
    fn runnable_but_not_running_is_cpu_starvation() {
        let mut h = History::default();
        h.io(io(ZK, "SyncThread:1", 4096, 1, 3));
        // Woken at 4 ms, ran again at 300 ms; then preempted for another 100 ms.
        h.blocked(blocked(
            SYNC,
            "D",
            1,
            300,
            Some(4),
            &["io_schedule"],
            Some("kworker/0:1H"),
        ));
        h.blocked(blocked(SYNC, "R", 300, 400, None, &[], None));
        let e = explain(&call(0, 410), &h);
        assert_eq!(e.verdict, "cpu_starvation", "{}", e.headline);
        assert!(
            (e.evidence.runq_ms - 396.0).abs() < 0.001,
            "{:?}",
            e.evidence
        );
    }

    #[test]
    fn blocked_with_no_io_in_flight_is_fs_blocked_with_its_stack() {
        let mut h = History::default();
        h.blocked(blocked(
            SYNC,
            "D",
            1,
            1500,
            Some(1500),
            &[
                "__traceiter_sched_switch+0x41",
                "__schedule+0x6",
                "schedule+0x2",
                "percpu_rwsem_wait+0x9",
                "__percpu_down_read+0x5",
                "ext4_buffered_write_iter+0x3",
                "vfs_write+0x1",
            ],
            Some("fsfreeze"),
        ));
        let e = explain(&call(0, 1502), &h);
        assert_eq!(e.verdict, "fs_blocked", "{}", e.headline);
        assert!(
            e.headline.contains("at percpu_rwsem_wait+0x9"),
            "{}",
            e.headline
        );
        assert_eq!(e.evidence.waker.as_deref(), Some("fsfreeze"));
        assert_eq!(e.evidence.stack.len(), 7);
    }

    #[test]
    fn held_back_in_the_block_layer_by_a_busy_device_is_contention_not_fs_blocked() {
        let mut h = History::default();
        for i in 0..20 {
            h.io(io(777, "dd", 1 << 20, i * 15, i * 15 + 14));
        }
        h.io(io(0, "", 0, 5, 6)); // an unmatched completion: no submitter to rank
        h.blocked(blocked(
            SYNC,
            "D",
            1,
            299,
            Some(299),
            &[
                "__schedule",
                "io_schedule",
                "rq_qos_wait+0xad",
                "wbt_wait",
                "blk_mq_submit_bio",
            ],
            Some("ksoftirqd/1"),
        ));
        let e = explain(&call(0, 300), &h);
        assert_eq!(e.verdict, "device_contention", "{}", e.headline);
        assert!(
            e.headline.contains("waited in the block layer"),
            "{}",
            e.headline
        );
        assert_eq!(
            e.contenders.len(),
            1,
            "pid 0 is not a contender: {:?}",
            e.contenders
        );
    }

    #[test]
    fn a_few_metadata_blocks_of_others_are_not_contention() {
        let mut h = History::default();
        h.io(io(0, "jbd2/loop1-8", 16384, 2, 20));
        h.io(io(ZK, "SyncThread:1", 8192, 1, 25));
        h.blocked(blocked(SYNC, "D", 1, 29, Some(29), &["io_schedule"], None));
        let e = explain(&call(0, 30), &h);
        assert_eq!(e.verdict, "own_io", "{}", e.headline);
        assert!(e.headline.contains("8 KB"), "{}", e.headline);
    }

    #[test]
    fn threads_idle_since_before_the_call_are_not_in_its_timeline() {
        let mut h = History::default();
        h.blocked(blocked(SYNC, "D", 1, 99, Some(99), &["io_schedule"], None));
        // The JVM's housekeeping thread sleeps for a second, from before the call.
        let mut vm = blocked(310, "S", 0, 1000, Some(1000), &[], None);
        vm.off = MonoNs(t(0).0 - 500 * MS);
        h.blocked(vm);
        // A thread that fell asleep during the call, woken by the stalled one, counts.
        h.blocked(blocked(
            311,
            "S",
            20,
            100,
            Some(100),
            &[],
            Some("SyncThread:1"),
        ));
        let e = explain(&call(0, 100), &h);
        let tids: Vec<u32> = e.timeline.iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![SYNC, 311]);
    }

    #[test]
    fn a_quick_syscall_then_a_park_with_the_whole_jvm_is_a_jvm_pause() {
        let mut h = History::default();
        h.io(io(ZK, "SyncThread:1", 4096, 1, 11));
        h.blocked(blocked(SYNC, "D", 1, 11, Some(11), &["io_schedule"], None));
        // Returned at 12 ms; parked in futex until 90 ms, as were two other JVM threads.
        h.blocked(blocked(SYNC, "S", 12, 90, Some(89), &[], Some("VM Thread")));
        h.blocked(blocked(320, "S", 12, 90, Some(89), &[], Some("VM Thread")));
        h.blocked(blocked(321, "S", 13, 89, Some(88), &[], Some("VM Thread")));
        let mut c = call(0, 90);
        c.syscall_end = Some(t(12));
        let e = explain(&c, &h);
        assert_eq!(e.verdict, "jvm_pause", "{}", e.headline);
        assert_eq!(e.evidence.after_syscall_ms, Some(78.0));
        assert_eq!(e.evidence.other_threads_stopped, Some(2));
        assert!(e.headline.contains("returned in 12 ms"), "{}", e.headline);
    }

    #[test]
    fn preempted_right_after_the_syscall_is_cpu_starvation() {
        let mut h = History::default();
        h.blocked(blocked(SYNC, "D", 1, 11, Some(11), &["io_schedule"], None));
        h.blocked(blocked(SYNC, "R", 12, 60, None, &[], None));
        let mut c = call(0, 60);
        c.syscall_end = Some(t(12));
        assert_eq!(explain(&c, &h).verdict, "cpu_starvation");
    }

    #[test]
    fn quick_own_io_is_own_io_and_nothing_is_unknown() {
        let mut h = History::default();
        h.io(io(ZK, "SyncThread:1", 16384, 1, 9));
        h.blocked(blocked(SYNC, "D", 1, 9, Some(9), &["io_schedule"], None));
        let e = explain(&call(0, 10), &h);
        assert_eq!(e.verdict, "own_io", "{}", e.headline);
        assert_eq!(e.evidence.bytes_target, 16384);
        assert_eq!(e.evidence.latency_ms.as_ref().unwrap().max, 8.0);
        assert_eq!(
            explain(&call(0, 10), &History::default()).verdict,
            "unknown"
        );
    }

    #[test]
    fn overlapping_calls_are_explained_by_their_own_thread() {
        let mut h = History::default();
        h.throttle(Throttle {
            pid: ZK,
            tid: 202,
            at: t(10),
            pause_ms: 90,
        });
        h.blocked(blocked(
            202,
            "D",
            5,
            100,
            Some(100),
            &["balance_dirty_pages"],
            None,
        ));
        h.blocked(blocked(SYNC, "R", 0, 90, None, &[], None));
        let mut other = call(0, 100);
        other.tid = 202;
        assert_eq!(explain(&other, &h).verdict, "dirty_throttle");
        assert_eq!(explain(&call(0, 100), &h).verdict, "cpu_starvation");
    }

    #[test]
    fn the_timeline_lists_the_jvm_threads_blocked_during_the_call() {
        let mut h = History::default();
        h.blocked(blocked(
            SYNC,
            "D",
            1,
            90,
            Some(90),
            &["io_schedule"],
            Some("kworker/0:1H"),
        ));
        h.blocked(blocked(
            300,
            "S",
            0,
            100,
            Some(99),
            &[],
            Some("SyncThread:1"),
        )); // QuorumPeer waiting
        h.blocked(blocked(301, "S", 50, 52, Some(52), &[], None)); // barely: left out
        // A thread that exited mid-call still shows what it did before.
        h.blocked(blocked(302, "D", 10, 60, Some(60), &[], None));
        let mut stranger = blocked(400, "D", 0, 100, None, &[], None);
        stranger.pid = 999;
        h.blocked(stranger);
        let e = explain(&call(0, 100), &h);
        let tids: Vec<u32> = e.timeline.iter().map(|t| t.tid).collect();
        assert_eq!(
            tids,
            vec![SYNC, 300, 302],
            "calling thread first, then by length; no other process"
        );
        assert_eq!(e.timeline[1].waker.as_deref(), Some("SyncThread:1"));
    }
}
