//! Where results go. Each sink writes to any `io::Write`, so tests pass a `Vec<u8>`.
//! Data goes to stdout (or a file) through a sink; diagnostics go to stderr via `tracing`.

pub mod aggregate;
pub mod chrome;
pub mod events;
pub mod incidents;
pub mod json;
pub mod metrics;
pub mod perfetto;
pub mod text;
pub mod timeline;

use std::io;

use serde::Serialize;

pub use events::EventRecord;
pub use json::JsonSink;
pub use text::TextSink;

/// One watched call, as printed. The JSON field names are a contract with other tools:
/// later versions add fields but never rename these.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallRecord {
    /// "fsync" for the fsync family, "write" for the write family.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    /// The thread's name: its whole Java name when known (`thread_source` says how), else
    /// the kernel's (15 characters at most; `java` for every thread of a JDK 8 JVM).
    pub thread: String,
    /// Where `thread` came from when it is not the kernel's name: `usdt` (HotSpot's
    /// thread__start probe) or `jcmd` (`jcmd PID Thread.print` at attach).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_source: Option<&'static str>,
    /// The kernel's name of the thread, when `thread` is another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub syscall: &'static str,
    /// The fd synced; null for msync and sync.
    pub fd: Option<i32>,
    pub path: Option<String>,
    /// The file's device as "MAJ:MIN".
    pub dev: Option<String>,
    /// The device's name (`sdb1`, `loop0`; the filesystem type for device-less ones).
    pub device: Option<String>,
    /// The disk whose request queue was examined for it (`sdb` for a file on `sdb1`; the
    /// layers below, for loop, dm and md devices, are in the evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// CLOCK_MONOTONIC nanoseconds at entry.
    pub start_ns: u64,
    /// The same instant, wall clock, Unix milliseconds.
    pub start_unix_ms: i64,
    pub duration_ms: f64,
    /// The return value; negative errno when the call failed; null while unfinished.
    pub ret: Option<i64>,
    /// True for a call still running when tracing ended (its duration is a lower bound).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unfinished: bool,
    /// Still running: reported as it crossed the threshold (it is reported again when it
    /// ends). Its duration and verdict are so far.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub in_progress: bool,
    /// An in-progress record after the first: the call, looked at again as its length
    /// doubled, has a different verdict so far than it was last reported with.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub revised: bool,
    /// The call was already running when tracing began: its start (and duration) are
    /// lower bounds.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub start_bound: bool,
    /// When the thread went off CPU right after the syscall returned (preempted, or parked
    /// at a JVM safepoint): how long until it ran again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<f64>,
    /// When the thread sat preempted until just before the entry (its last 100 µs of CPU
    /// led into the syscall): how long. A caller that read its clock before that
    /// preemption counts it; start_ns stays the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_ms: Option<f64>,
    /// before_ms + duration_ms + after_ms: what the caller measured (ZooKeeper's
    /// System.nanoTime() around force()). Reporting and --threshold use it when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible_ms: Option<f64>,
    /// Why it was slow: verdict, headline, evidence, contenders, timeline.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub why: Option<crate::attribution::Explanation>,
}

/// A signal that could not run on this kernel.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct DisabledSignal {
    pub signal: String,
    pub reason: String,
}

/// The last record of a run: what was seen, and everything that was lost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pids: Vec<u32>,
    pub duration_s: f64,
    /// Records received from the kernel.
    pub events: u64,
    /// Records lost in the kernel because the ring buffer was full.
    pub dropped: u64,
    /// Program runs the kernel skipped (a tracepoint firing while the same program ran on
    /// that CPU): their events were never seen.
    pub probe_misses: u64,
    /// Watched calls seen, and how many were at or above the threshold.
    pub calls: u64,
    pub reported: u64,
    pub threshold_ms: f64,
    /// Calls the kernel could not time (its table of open calls was full).
    pub untimed: u64,
    /// Exits whose entry was never seen (tracing began mid-call).
    pub exit_without_enter: u64,
    pub read_errors: u64,
    pub decode_errors: u64,
    /// Calls reported while running, as they crossed the threshold.
    pub crossed: u64,
    /// Requests on watched disks completed, and those that could not be paired with a
    /// submission: allocated after their disk was watched, so their start was missed
    /// (`io_unmatched`), or already allocated when it was watched (`io_before_watch`, in
    /// flight at attach: nothing missed, only their submitter is unknown).
    pub io_watched: u64,
    pub io_unmatched: u64,
    pub io_before_watch: u64,
    /// Scheduler switches back onto a CPU that ran no program (the kernel skipped it),
    /// found at the thread's next syscall: an off-CPU interval lost; calls over one say so.
    pub switch_unseen: u64,
    /// Requests on watched disks that overlapped no watched call, were quick and usual:
    /// summed per disk (`io_summary` notes) instead of sent one by one.
    pub io_summed: u64,
    /// Requests on watched disks not followed from their start by choice (issued while no
    /// watched call could be in flight) and first seen completing: summed, or sent without
    /// their submitter when a call overlapped them.
    pub io_late: u64,
    /// Requests merged into others, entries replaced because their struct was reused
    /// (a completion missed), partial completions, the block layer's own flushes.
    pub io_merged: u64,
    pub io_stale: u64,
    pub io_partial: u64,
    pub io_flush: u64,
    /// Second, empty completions ending a request's flush sequence (not requests).
    pub io_flush_seq_end: u64,
    /// Requests completed on disks nobody watches (summarized, not sent).
    pub io_other_disks: u64,
    /// Those, by disk and cgroup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_disks: Vec<crate::recording::OtherDisk>,
    /// Requests the block layer completed and the probes never saw (the kernel skipped
    /// their runs without counting them), on any disk: a lower bound, by disk.
    pub io_unseen: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unseen_disks: Vec<crate::recording::UnseenDisk>,
    /// On watched disks: completions the block layer counted that the probes did not see,
    /// requests held in flight that the disk no longer had (dropped), and the windows
    /// they fell in (verdicts over them say incomplete).
    pub unseen_watched: u64,
    pub stale_requests: u64,
    pub unseen_windows: u64,
    /// Disks no longer watched because no traced process used them any more.
    pub unwatched: u64,
    /// Entries refused by full kernel maps (requests, threads, dirty).
    pub map_full: u64,
    /// Map updates and removals refused because a program interrupted another holding
    /// the same bucket lock (a request entry then outlives its request).
    pub map_busy: u64,
    pub stack_errors: u64,
    /// History entries shed to stay within bounds before they aged out (a flood).
    pub history_shed: u64,
    /// Records the reader dropped because the pipeline fell behind.
    pub shed_by_reader: u64,
    /// Windows in which records were lost (verdicts overlapping them say "incomplete").
    pub lost_windows: u64,
    /// Calls whose exit never arrived (lost record), and calls closed by their thread's
    /// exit.
    pub calls_exit_lost: u64,
    pub calls_thread_exited: u64,
    /// The disks whose requests were traced one by one.
    pub watched: Vec<String>,
    /// Records of each type sent to the output.
    pub by_type: std::collections::BTreeMap<&'static str, u64>,
    pub disabled: Vec<DisabledSignal>,
}

/// Something measured on the way, reported or not (the agent's metrics count them all).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation<'a> {
    /// A watched call ended (every one, not only those over the threshold).
    Call {
        syscall: &'static str,
        /// A write-family call: these are traced only when slower than the threshold, so
        /// they are no sample of the family's latency.
        write_family: bool,
        /// The kernel's name of the thread.
        thread: &'a str,
        /// The file's device, when known, and the disk behind it (`sdb` for `sdb1`).
        dev: Option<crate::enrich::DevId>,
        disk: Option<&'a str>,
        duration_ns: u64,
        pid: u32,
        tid: u32,
        /// CLOCK_MONOTONIC ns at entry.
        start_ns: u64,
    },
    /// A request on a watched disk completed.
    Io {
        disk: crate::enrich::DiskDev,
        /// Issue -> completion, and queued -> issue, when both ends were seen.
        service_ns: Option<u64>,
        queue_ns: Option<u64>,
    },
    /// Requests on a watched disk summed in the kernel: how many of them in each service
    /// time bucket (`history::summed_bound_ns`).
    IoSummary {
        disk: crate::enrich::DiskDev,
        hist: &'a [u64],
    },
}

pub trait Sink {
    fn call(&mut self, r: &CallRecord) -> io::Result<()>;
    fn event(&mut self, r: &EventRecord) -> io::Result<()>;
    fn summary(&mut self, s: &Summary) -> io::Result<()>;
    /// Every watched call and every request on a watched disk, as it ends.
    fn observe(&mut self, _o: &Observation<'_>) {}
    /// The run's monotonic-to-wall mapping, before the first record (JSON adds `unix_ms`
    /// to every record with it).
    fn clock(&mut self, _wall: &crate::clock::WallClock) {}
}

/// Passes records on to another sink and keeps a copy (the demo compares them).
pub struct Tee<'a> {
    pub inner: &'a mut dyn Sink,
    pub calls: Vec<CallRecord>,
}

impl Sink for Tee<'_> {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        self.calls.push(r.clone());
        self.inner.call(r)
    }
    fn event(&mut self, r: &EventRecord) -> io::Result<()> {
        self.inner.event(r)
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.inner.summary(s)
    }
    fn observe(&mut self, o: &Observation<'_>) {
        self.inner.observe(o)
    }
    fn clock(&mut self, wall: &crate::clock::WallClock) {
        self.inner.clock(wall)
    }
}
