//! Records for `trace --events`: everything around the calls (block I/O, off-CPU intervals,
//! threads, dirtying, writeback, throttling, journal commits), one JSON object per line,
//! or one readable line each in text.

use serde::Serialize;

/// A process (or thread) as shown in records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Who {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IoRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub dev: String,
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The partition the block layer named (`MAJ:MIN`) and its name, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_name: Option<String>,
    /// Null for a flush (it has no sector: the kernel's -1).
    pub sector: Option<u64>,
    pub bytes: u32,
    /// The block layer's flags: R/W/D/F(lush)/N(one) + F(UA), S(ync), M(eta), A(head).
    pub rwbs: String,
    pub op: &'static str,
    pub sync: bool,
    /// Carries a cache flush before its data (PREFLUSH) or is a pure flush.
    pub flush: bool,
    pub fua: bool,
    /// Who submitted it (pid 0 and an empty comm when it was not seen before it
    /// completed).
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    /// Who it is charged to: the submitter, the dirtier (flusher writeback), the cgroup
    /// (I/O a kernel thread relayed), the journal.
    pub charged_to: String,
    /// When it was queued (None: not seen; the request predates tracing).
    pub queued_ns: Option<u64>,
    pub issue_ns: Option<u64>,
    pub complete_ns: u64,
    /// Queued -> issued (time in the block layer / I/O scheduler).
    pub queue_ms: Option<f64>,
    /// Issued -> completed (device service time).
    pub service_ms: Option<f64>,
    pub error: i32,
    pub requeues: u32,
    /// The inode a flusher was writing back when it queued this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// For writeback I/O: the process that dirtied those pages, charged for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirtier: Option<Who>,
    /// This completion covers part of the request; more follow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Still in flight when tracing ended (complete_ns is the end of tracing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_flight_at_end: bool,
    /// Not seen before its completion: queued before its disk was watched, or not followed
    /// (`late`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unmatched: bool,
    /// Not followed from its start by choice (`--requests around-calls`: issued while no
    /// traced call was in flight): start and issue are the block layer's stamps, the
    /// submitter unknown (pid 0) unless its pages' inode names whoever dirtied them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BlockedRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    /// D (uninterruptible, usually I/O), S (sleeping), R (preempted while runnable), ...
    pub state: String,
    pub start_ns: u64,
    pub start_unix_ms: i64,
    pub duration_ms: f64,
    /// Woken -> running again (run-queue delay); the whole interval when preempted.
    pub runq_ms: f64,
    pub syscall: Option<String>,
    /// The task that woke it (null when an interrupt or a timer did: see waker_context).
    pub waker: Option<Who>,
    /// task, irq, softirq or timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker_context: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    /// It began right after a watched syscall returned (part of what its caller saw).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_call: bool,
    /// It began before tracing: start_ns is when tracing began.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub since_before_tracing: bool,
    /// Still off CPU when tracing ended.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub still_off_at_end: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// new, exit or rename.
    pub change: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    pub ts_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DirtyRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub dev: String,
    pub device: Option<String>,
    pub ino: u64,
    /// Folios dirtied since the previous record for this (process, inode): the first
    /// one at once, then one record per batch. A folio is one page or, on filesystems
    /// with large folios, several.
    pub folios: u32,
    pub ts_ns: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WritebackRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The flusher (or whoever wrote the inode back).
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub dev: String,
    pub device: Option<String>,
    pub ino: u64,
    pub pages: u64,
    pub start_ns: Option<u64>,
    pub duration_ms: Option<f64>,
    pub ts_ns: u64,
    pub dirtier: Option<Who>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThrottleRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub dev: String,
    pub device: Option<String>,
    /// The pause balance_dirty_pages is about to sleep.
    pub pause_ms: i64,
    /// Time already spent throttled in this episode.
    pub paused_ms: u64,
    pub dirty_pages: u64,
    pub limit_pages: u64,
    pub ts_ns: u64,
    pub start_unix_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JournalRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub dev: String,
    pub device: Option<String>,
    pub transaction: u32,
    /// The journal thread (jbd2/<dev>).
    pub pid: u32,
    pub comm: String,
    pub start_ns: u64,
    pub duration_ms: f64,
    /// Waiting for running handles to finish (T_LOCKED).
    pub locking_ms: Option<f64>,
    /// Writing the ordered data of the transaction's inodes (data=ordered).
    pub flushing_ms: Option<f64>,
    /// Writing the journal blocks and the commit record.
    pub logging_ms: Option<f64>,
    pub handles: Option<u32>,
    pub blocks: Option<u32>,
    pub blocks_logged: Option<u32>,
}

/// Requests of a watched disk the kernel summed instead of sending them one by one
/// (`--requests around-calls`): none of them overlapped a watched call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IoSummaryRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub dev: String,
    pub device: Option<String>,
    /// The interval they completed in.
    pub start_ns: u64,
    pub end_ns: u64,
    pub requests: u64,
    pub bytes: u64,
    /// Their mean device service time (issue to completion).
    pub service_ms: f64,
    /// Service times: entry k counts those up to 0.02 ms << k, the last one the rest.
    pub hist: Vec<u64>,
}

/// Any of the above. Built one at a time and handed to the sinks by reference, never
/// stored in bulk: boxing the large variant would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventRecord {
    Io(IoRecord),
    Blocked(BlockedRecord),
    Thread(ThreadRecord),
    Dirty(DirtyRecord),
    Writeback(WritebackRecord),
    Throttle(ThrottleRecord),
    Journal(JournalRecord),
    IoSummary(IoSummaryRecord),
}

fn dev_name(dev: &str, device: &Option<String>) -> String {
    match device {
        Some(d) => format!("{d} ({dev})"),
        None => dev.to_string(),
    }
}

/// A task as text lines name it: `comm (pid/tid)`, and never `(0/0)` for a task that was
/// not seen.
fn who(comm: &str, pid: u32, tid: u32) -> String {
    match (comm.is_empty(), pid) {
        (true, 0) => "an unseen task".to_string(),
        (true, _) => format!("pid {pid}/{tid}"),
        (false, _) if pid == tid || tid == 0 => format!("{comm} ({pid})"),
        (false, _) => format!("{comm} ({pid}/{tid})"),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.3}"))
}

impl EventRecord {
    /// The record's instant (CLOCK_MONOTONIC ns): when it began (a request: when it was
    /// queued, else issued, else completed); for writeback, when it ended. Records that
    /// already carry a `ts_ns` field return None: theirs is kept as it is.
    pub fn start_ns(&self) -> Option<u64> {
        match self {
            EventRecord::Io(r) => Some(r.queued_ns.or(r.issue_ns).unwrap_or(r.complete_ns)),
            EventRecord::Blocked(r) => Some(r.start_ns),
            EventRecord::Journal(r) => Some(r.start_ns),
            EventRecord::IoSummary(r) => Some(r.start_ns),
            EventRecord::Thread(_)
            | EventRecord::Dirty(_)
            | EventRecord::Writeback(_)
            | EventRecord::Throttle(_) => None,
        }
    }

    /// The value of its `ts_ns` field, for those that have one.
    pub fn ts_field(&self) -> Option<u64> {
        match self {
            EventRecord::Thread(r) => Some(r.ts_ns),
            EventRecord::Dirty(r) => Some(r.ts_ns),
            EventRecord::Writeback(r) => Some(r.ts_ns),
            EventRecord::Throttle(r) => Some(r.ts_ns),
            _ => None,
        }
    }

    /// One readable line.
    pub fn text(&self) -> String {
        match self {
            EventRecord::Io(r) => {
                // A flush has no sector.
                let sector = r.sector.map(|s| format!(" sector {s}")).unwrap_or_default();
                let mut s = format!(
                    "io        {:<4} {:>8}  {}{sector}  queue {} ms  device {} ms  for {}",
                    r.rwbs,
                    crate::attribution::render::size(r.bytes as u64),
                    dev_name(&r.dev, &r.device),
                    ms(r.queue_ms),
                    ms(r.service_ms),
                    if r.charged_to.trim().is_empty() || r.charged_to.contains("(0/0)") {
                        who(&r.comm, r.pid, r.tid)
                    } else {
                        r.charged_to.clone()
                    },
                );
                if r.in_flight_at_end {
                    s.push_str(" (still in flight at the end)");
                }
                if r.error != 0 {
                    s.push_str(&format!(" error {}", r.error));
                }
                s
            }
            EventRecord::Blocked(r) => {
                let mut s = format!(
                    "blocked   {} {:.3} ms  {} ({}/{})  in {}  runq {:.3} ms",
                    r.state,
                    r.duration_ms,
                    r.thread,
                    r.pid,
                    r.tid,
                    r.syscall.as_deref().unwrap_or("?"),
                    r.runq_ms
                );
                match (&r.waker, r.waker_context) {
                    (Some(w), _) => {
                        s.push_str(&format!("  woken by {}", who(&w.comm, w.pid, w.tid)))
                    }
                    (None, Some(ctx)) => s.push_str(&format!("  woken by {ctx}")),
                    _ => {}
                }
                if let Some(top) = r.stack.first() {
                    s.push_str(&format!("  at {top}"));
                }
                s
            }
            EventRecord::Thread(r) => {
                format!("thread    {} {} ({}/{})", r.change, r.thread, r.pid, r.tid)
            }
            EventRecord::Dirty(r) => format!(
                "dirty     {} folio(s) of inode {} on {} by {}",
                r.folios,
                r.ino,
                dev_name(&r.dev, &r.device),
                who(&r.comm, r.pid, r.tid)
            ),
            EventRecord::Writeback(r) => {
                let mut s = format!(
                    "writeback {} page(s) of inode {} on {} by {} in {} ms",
                    r.pages,
                    r.ino,
                    dev_name(&r.dev, &r.device),
                    who(&r.comm, r.pid, r.tid),
                    ms(r.duration_ms)
                );
                if let Some(d) = &r.dirtier {
                    s.push_str(&format!(", dirtied by {}", who(&d.comm, d.pid, d.tid)));
                }
                s
            }
            EventRecord::Throttle(r) => format!(
                "throttle  {} pauses {} ms on {} (paused {} ms so far; dirty {} / limit {} pages)",
                who(&r.comm, r.pid, r.tid),
                r.pause_ms,
                dev_name(&r.dev, &r.device),
                r.paused_ms,
                r.dirty_pages,
                r.limit_pages
            ),
            EventRecord::Journal(r) => format!(
                "journal   commit {} on {} took {:.3} ms (locking {} flushing {} logging {} ms; {} handles, {} blocks)",
                r.transaction,
                dev_name(&r.dev, &r.device),
                r.duration_ms,
                ms(r.locking_ms),
                ms(r.flushing_ms),
                ms(r.logging_ms),
                r.handles.map_or("?".into(), |h| h.to_string()),
                r.blocks.map_or("?".into(), |b| b.to_string())
            ),
            EventRecord::IoSummary(r) => format!(
                "io_sum    {} requests ({} KiB) on {} in {:.1} s not overlapping any call, service {:.3} ms on average",
                r.requests,
                r.bytes / 1024,
                dev_name(&r.dev, &r.device),
                r.end_ns.saturating_sub(r.start_ns) as f64 / 1e9,
                r.service_ms
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::timeline::tests::{blocked, io};

    #[test]
    fn text_lines_print_no_sentinel_as_a_value() {
        let mut flush = io(1_000, 2_000, 3_000);
        flush.sector = None;
        flush.bytes = 0;
        flush.rwbs = "F".into();
        flush.comm = String::new();
        flush.pid = 0;
        flush.tid = 0;
        flush.charged_to = " (0/0)".into();
        let line = EventRecord::Io(flush).text();
        assert!(!line.contains("18446744073709551615"), "{line}");
        assert!(!line.contains("sector"), "{line}");
        assert!(!line.contains("(0/0)"), "{line}");
        assert!(line.contains("for an unseen task"), "{line}");
        let line = EventRecord::Io(io(1_000, 2_000, 3_000)).text();
        assert!(line.contains("sector 8") && line.contains("4 KB"), "{line}");

        let mut b = blocked(1_000, 2.0, 0.1);
        b.waker = Some(Who {
            pid: 0,
            tid: 0,
            comm: String::new(),
            cgroup: None,
        });
        let line = EventRecord::Blocked(b).text();
        assert!(line.contains("woken by an unseen task"), "{line}");
        assert!(!line.contains("(0/0)"), "{line}");
    }
}
