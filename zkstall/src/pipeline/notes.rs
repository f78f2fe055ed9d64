//! Notes: what userspace observes outside the ring buffer (targets found and gone, disks
//! watched, calls already running at attach or crossing the threshold, records lost). They
//! go through the pipeline and into recordings exactly like kernel records, in the order
//! they were handled, so `report` sees what the live run saw.

use serde::{Deserialize, Serialize};

/// One userspace observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// A process is traced from now on (at start, or found later).
    Target {
        ts_ns: u64,
        pid: u32,
        comm: String,
        reason: String,
    },
    /// A traced process was seen gone from /proc.
    TargetExit { ts_ns: u64, pid: u32 },
    /// A disk's requests are traced one by one from now on.
    Watch {
        ts_ns: u64,
        /// The disk, `MAJ:MIN`.
        disk: String,
        name: String,
        /// Why: the file (or device) it serves.
        why: String,
        /// For a loop device: the bdi (`MAJ:MIN` of the disk) and inode of its backing
        /// file, so that the flusher's writeback of that file is known as this device's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backing_bdi: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backing_ino: Option<u64>,
    },
    /// A kernel thread traced calls wait on (a filesystem's journal thread) is traced too,
    /// from now on.
    Helper {
        ts_ns: u64,
        pid: u32,
        comm: String,
        why: String,
    },
    /// A thread was already inside a watched syscall when tracing began (from /proc).
    Stuck {
        ts_ns: u64,
        pid: u32,
        tid: u32,
        thread: String,
        syscall: String,
        arg: u64,
        /// ps state letter from /proc/<tid>/stat.
        state: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        wchan: Option<String>,
        /// /proc/<tid>/stack, innermost first (empty where unreadable).
        stack: Vec<String>,
    },
    /// A call in progress crossed the threshold, or was still running at the end.
    Running {
        ts_ns: u64,
        pid: u32,
        tid: u32,
        syscall: String,
        arg: u64,
        start_ns: u64,
        /// The start is only a bound (running since before tracing began).
        start_bound: bool,
        /// Seen at the end of tracing (the call is reported as unfinished).
        at_end: bool,
        /// The thread's state now (ps letter), and since when it is off CPU (from the
        /// kernel's per-thread state), when it is.
        #[serde(skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        off_ns: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        wake_ns: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        wchan: Option<String>,
        /// Where it waits now, innermost first.
        stack: Vec<String>,
        /// The requests in flight on watched disks now (kernel records in the ring
        /// buffer's layout, hex), as the kernel will report them when they complete: a
        /// call stuck behind a request that has not completed is explained with it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        in_flight: Vec<String>,
        /// By disk (`MAJ:MIN`), requests in flight now that the probes did not follow
        /// (`--requests around-calls`: issued while no watched call could be in flight):
        /// not among `in_flight`, so that disk is not known now.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unfollowed: Vec<(String, u64)>,
    },
    /// Requests of a watched disk completed between `from_ns` and `to_ns` without the
    /// probes seeing them (the block layer's own count, /proc/diskstats, is higher: the
    /// kernel skipped the program's run), or requests that looked in flight were not (the
    /// disk's own in-flight count is lower). That disk's history is incomplete there.
    Unseen {
        from_ns: u64,
        to_ns: u64,
        /// The disk, `MAJ:MIN`.
        disk: String,
        name: String,
        /// Completions the block layer counted and the probes did not.
        #[serde(default)]
        completions: u64,
        /// Requests the probes held in flight that the disk no longer had (dropped).
        #[serde(default)]
        stale: u64,
    },
    /// Requests of a watched disk completed between `from_ns` and `to_ns` that were summed
    /// in the kernel instead of sent one by one: they overlapped no watched call, were
    /// not a target's, were quicker than the bound and nothing about them was unusual
    /// (`--requests around-calls`).
    IoSummary {
        from_ns: u64,
        to_ns: u64,
        /// The disk, `MAJ:MIN`.
        disk: String,
        name: String,
        requests: u64,
        bytes: u64,
        /// Sum of their device service times (issue to completion).
        service_ns: u64,
        /// Their service times: entry k counts those up to 20 us << k (above the previous
        /// bound), the last one the rest.
        hist: Vec<u64>,
    },
    /// Java thread names of a JVM, from `jcmd PID Thread.print` (run once at attach, for
    /// threads that started before HotSpot's probes were attached); the command made the
    /// JVM stop in a safepoint between `ts_ns` and `end_ns`: zkstall's own pause.
    JavaNames {
        ts_ns: u64,
        end_ns: u64,
        pid: u32,
        /// (tid, Java name)
        names: Vec<(u32, String)>,
    },
    /// Each CPU's heartbeat runs from now on (CPUs 0..cpus): a gap on all of them at once is
    /// a host that stopped.
    Host { ts_ns: u64, cpus: u32 },
    /// A disk is no longer watched (no traced process uses it any more): its requests are
    /// only counted in the kernel from now on.
    Unwatch {
        ts_ns: u64,
        disk: String,
        name: String,
    },
    /// Records were lost between `from_ns` and `to_ns`: the kernel found its ring buffer
    /// full, or the reader shed records it could not queue.
    Lost {
        from_ns: u64,
        to_ns: u64,
        ringbuf_full: u64,
        shed: u64,
    },
}

impl Note {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Note::Target { ts_ns, .. }
            | Note::TargetExit { ts_ns, .. }
            | Note::Watch { ts_ns, .. }
            | Note::Helper { ts_ns, .. }
            | Note::Stuck { ts_ns, .. }
            | Note::Running { ts_ns, .. }
            | Note::Unwatch { ts_ns, .. }
            | Note::Host { ts_ns, .. } => *ts_ns,
            Note::JavaNames { end_ns, .. } => *end_ns,
            Note::Lost { to_ns, .. }
            | Note::Unseen { to_ns, .. }
            | Note::IoSummary { to_ns, .. } => *to_ns,
        }
    }
}

/// A kernel record as a note carries it (hex), and back.
pub fn to_hex(rec: &[u8]) -> String {
    rec.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The syscall named `name` (as notes carry it).
pub fn syscall_by_name(name: &str) -> Option<zkstall_common::Syscall> {
    zkstall_common::Syscall::ALL
        .iter()
        .copied()
        .find(|s| s.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_as_json() {
        let n = Note::Running {
            ts_ns: 5,
            pid: 1,
            tid: 2,
            syscall: "fdatasync".into(),
            arg: 3,
            start_ns: 1,
            start_bound: true,
            at_end: false,
            state: Some("D".into()),
            off_ns: Some(2),
            wake_ns: None,
            wchan: None,
            stack: vec!["jbd2_log_wait_commit".into()],
            in_flight: vec!["00ff".into()],
            unfollowed: vec![("7:0".into(), 3)],
        };
        let j = serde_json::to_string(&n).unwrap();
        assert!(j.contains("\"note\":\"running\""), "{j}");
        assert_eq!(serde_json::from_str::<Note>(&j).unwrap(), n);
        assert_eq!(
            syscall_by_name("fdatasync"),
            Some(zkstall_common::Syscall::Fdatasync)
        );
        assert_eq!(syscall_by_name("nope"), None);
        assert_eq!(
            from_hex(&to_hex(&[0, 1, 0xab, 0xff])),
            Some(vec![0, 1, 0xab, 0xff])
        );
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
