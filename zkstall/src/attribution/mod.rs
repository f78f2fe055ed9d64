//! Attribution: for one slow call, where the time went and who caused it. A function of
//! the call, the [`History`] around it and names from the enricher, so live tracing and
//! recordings give the same answer, and synthetic streams can test every verdict.
//!
//! Three steps, one module each:
//! - [`evidence`] gathers the numbers: the calling thread's time split by stage (every
//!   instant charged to one stage, so the stages add up to the call), each disk layer
//!   under the file (requests in flight, completions, the longest stretch without one,
//!   latencies, bytes by whom), the journal commit waited on, throttling, and whether the
//!   inputs cover the call at all;
//! - [`rules`] names the root cause: an ordered table, one function per verdict, with
//!   their thresholds in one place ([`rules::Thresholds`]); the mechanism goes in `via`
//!   and the chain of waits in `chain`;
//! - [`render`] writes the headline an on-call engineer can act on.
//!
//! [`timeline`] lists what the process's other threads were doing meanwhile.

pub mod evidence;
pub mod render;
pub mod rules;
pub mod timeline;

use std::collections::BTreeMap;

use serde::Serialize;

pub use evidence::{Evidence, JournalEvidence, LayerEvidence, Percentiles};
pub use rules::{Thresholds, Verdict};
pub use timeline::TimelineEntry;

use crate::{
    clock::MonoNs,
    decode::{Accounting, SchedState},
    enrich::{DiskPath, Enricher, FileDev},
    history::History,
};

/// The call being explained.
#[derive(Clone, Debug)]
pub struct Span {
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    pub syscall: &'static str,
    pub write_family: bool,
    /// The filesystem device of the file (None for sync, or when unresolved).
    pub file_dev: Option<FileDev>,
    pub device: Option<String>,
    /// The disks serving it, top first.
    pub disks: DiskPath,
    pub start: MonoNs,
    /// A preemption that ended just before the entry, which the caller may have counted
    /// (0: none): the time runs from `start - before_ns`.
    pub before_ns: u64,
    /// When the syscall returned (None: still running at `end`).
    pub syscall_end: Option<MonoNs>,
    /// When the caller could go on: the return plus the wait right after it; or now, for
    /// a call still running.
    pub end: MonoNs,
    /// On/off-CPU split measured in the kernel (None: not covered).
    pub accounting: Option<Accounting>,
    /// The start is a bound: the call was running before tracing began.
    pub start_bound: bool,
    /// Still running at `end`.
    pub running: bool,
    /// For a call still running: the thread's off-CPU interval in progress.
    pub off_now: Option<OffNow>,
    /// A return to CPU within the call ran no probe (the kernel skipped it): one
    /// off-CPU interval of the thread is missing from the evidence.
    pub switch_unseen: bool,
}

/// The off-CPU interval a running call's thread is in right now.
#[derive(Clone, Debug, PartialEq)]
pub struct OffNow {
    pub off: MonoNs,
    pub wake: Option<MonoNs>,
    pub state: SchedState,
    pub stack: Vec<String>,
}

/// One link of the chain of waits: the call waited on this, for this long.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    /// call, journal_commit, device_queue, device, requests_of, throttle, reclaim, ...
    pub what: &'static str,
    pub detail: String,
    pub start_ns: u64,
    pub duration_ms: f64,
}

/// What kind of party a contender is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContenderKind {
    /// A thread (its own I/O, or writeback of pages it dirtied).
    Task,
    /// I/O a kernel thread relayed for a cgroup of several processes (or none known).
    Cgroup,
    /// I/O a kernel thread relayed for the only process of a cgroup (its thread unknown).
    Relayed,
    /// A block device above relaying its own I/O (a loop device writing its backing file).
    Device,
    /// A kernel thread on its own account, or nobody known.
    Kernel,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contender {
    pub pid: u32,
    pub tid: u32,
    /// The thread's name (or `cgroup <path>` for I/O a kernel thread relayed for a
    /// cgroup).
    pub comm: String,
    /// The process's name, when it is not the thread's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    pub cgroup: Option<String>,
    /// Its v1 blkio and memory cgroups, on hosts where those controllers are on v1 (read
    /// from /proc when it is analysed: absent once the process is gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio_cgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_cgroup: Option<String>,
    pub kind: ContenderKind,
    /// A thread of the traced process itself (ZooKeeper's Snapshot Thread, say).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub same_process: bool,
    /// Data moved (a discard's length is not: see `bytes_discarded`).
    pub bytes: u64,
    /// Its requests, discards among them.
    pub requests: u32,
    /// Of `requests`: discards (or secure erases), and their length.
    #[serde(skip_serializing_if = "crate::attribution::evidence::is_zero_u32")]
    pub discards: u32,
    #[serde(skip_serializing_if = "crate::attribution::evidence::is_zero_u64")]
    pub bytes_discarded: u64,
    /// The disk it used.
    pub disk: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The mechanism the root cause acted through (`journal`, `writeback`, `block_queue`,
    /// `after_return`), when it is not the verdict itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
    pub headline: String,
    /// The chain of waits, from the call down to the root cause.
    pub chain: Vec<Link>,
    /// The call's time split by stage (ms); adds up to the call.
    pub stages: BTreeMap<&'static str, f64>,
    pub evidence: Evidence,
    pub contenders: Vec<Contender>,
    pub timeline: Vec<TimelineEntry>,
    /// Threads left out of the timeline (idle periodic sleepers), counted.
    #[serde(skip_serializing_if = "is_zero")]
    pub timeline_omitted: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Explains one call.
pub fn explain(call: &Span, h: &History, enrich: &mut dyn Enricher) -> Explanation {
    let g = evidence::gather(call, h, enrich);
    let finding = rules::decide(call, &g, &Thresholds::DEFAULT);
    let headline = render::headline(call, &g, &finding);
    let (timeline, omitted) = timeline::timeline(call, h);
    let backing = finding.chain.iter().any(|l| l.what == "backing_flush");
    Explanation {
        verdict: finding.verdict,
        via: finding.via,
        headline,
        chain: finding.chain,
        stages: g.stages_ms(),
        evidence: g.ev.clone(),
        contenders: match g
            .ev
            .journal
            .as_ref()
            .and_then(|j| j.backing_writers.as_ref())
        {
            // Those who wrote what the commit's flush had to write back first.
            Some(bw) if backing => bw.contenders.clone(),
            // Those whose requests the commit's queued behind (on its own disk; on the one
            // under it, the layer's).
            _ if finding.verdict == Verdict::DeviceContention
                && finding.via == Some("journal")
                && finding.layer.is_none_or(|i| i == 0) =>
            {
                g.journal_contenders().to_vec()
            }
            _ => finding
                .layer
                .and_then(|i| g.contenders_by_layer.get(i))
                .unwrap_or(&g.contenders)
                .clone(),
        },
        timeline,
        timeline_omitted: omitted,
    }
}

pub(crate) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests;
