//! Recent activity, kept for attribution: block requests of each watched disk, off-CPU
//! intervals of the target's threads, throttling pauses and journal commits of the last
//! [`HORIZON_NS`]. When a slow call ends, attribution looks back over its interval.
//!
//! Bounded by time and by count, per disk: a flood on one disk sheds that disk's oldest
//! requests (counted), never another's, never memory. Every loss is remembered as the
//! instant before which a queue is no longer complete ([`DiskHistory::complete_from`],
//! [`History::blocked_complete_from`]) or as a window in which records were lost
//! ([`History::lost`]), so attribution can tell whether its inputs cover a call.

use std::{collections::VecDeque, sync::Arc};

use serde::Serialize;

use crate::{
    clock::MonoNs,
    decode::{SchedState, Waker},
    enrich::{DevId, DiskDev},
};

/// How far back the history reaches: longer than any stall worth explaining.
pub const HORIZON_NS: u64 = 120_000_000_000;
/// Caps (the oldest entries go first, and are counted).
pub const MAX_IOS_PER_DISK: usize = 200_000;
pub const MAX_BLOCKED: usize = 100_000;
pub const MAX_THROTTLES: usize = 50_000;
pub const MAX_COMMITS: usize = 10_000;
pub const MAX_LOST: usize = 10_000;

/// The caps of a [`History`]: the defaults above for `trace`, smaller for an agent that
/// must stay within a memory bound (see `agent::memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    pub ios_per_disk: usize,
    pub blocked: usize,
    pub throttles: usize,
    pub commits: usize,
}

impl HistoryLimits {
    pub const DEFAULT: HistoryLimits = HistoryLimits {
        ios_per_disk: MAX_IOS_PER_DISK,
        blocked: MAX_BLOCKED,
        throttles: MAX_THROTTLES,
        commits: MAX_COMMITS,
    };
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A name many entries share (a thread's, a cgroup's): one allocation for all of them, so
/// a flood of requests costs no string per request.
pub type Name = Arc<str>;

type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// What kind of party caused I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyKind {
    /// A user task (or a kernel thread doing its own work).
    Task,
    /// A filesystem journal thread (jbd2, xfs log): everybody's metadata.
    Journal,
    /// A kernel thread relaying I/O for a cgroup it could not be traced back further than.
    Cgroup,
    /// A kernel thread relaying the I/O of a process: the only process in the cgroup the
    /// block layer charged (blk-throttle's dispatch worker, for one). Its thread is not
    /// known (`tid` 0).
    Process,
    /// A kernel thread relaying I/O for nobody we can name.
    Kernel,
    /// Not known (a request first seen at its completion).
    Unknown,
    /// Another block device relaying its own I/O to this one: a loop device writing its
    /// backing file (`comm` names the device).
    Layer,
}

/// Who a request is charged to: the dirtier for flusher writeback, the original submitter,
/// or (for I/O relayed by a kernel thread) the cgroup the block layer charged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Party {
    pub kind: PartyKind,
    pub pid: u32,
    pub tid: u32,
    /// The thread's name (the process's for a relay).
    pub comm: Name,
    pub cgroup: Option<Name>,
}

impl Party {
    pub fn unknown() -> Party {
        Party {
            kind: PartyKind::Unknown,
            pid: 0,
            tid: 0,
            comm: "".into(),
            cgroup: None,
        }
    }
}

/// The op of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Read,
    Write,
    Flush,
    Discard,
    SecureErase,
    WriteZeroes,
    Other,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Io {
    pub disk: DiskDev,
    /// The partition the block layer named, when it did.
    pub part: Option<DevId>,
    pub sector: u64,
    /// Submitter (pid 0: not seen).
    pub pid: u32,
    pub tid: u32,
    pub charged: Party,
    /// The cgroup the block layer charged it to (the io controller's hierarchy).
    pub blkcg: Option<Name>,
    /// Bytes completed by this completion (the whole request, or a part of it).
    pub bytes: u32,
    pub op: Op,
    pub sync: bool,
    /// Carries a cache flush before (preflush) or forces its data to media (FUA).
    pub flush: bool,
    pub fua: bool,
    pub queued: Option<MonoNs>,
    pub issued: Option<MonoNs>,
    /// None: still in flight when tracing ended.
    pub completed: Option<MonoNs>,
    /// First seen at its completion (queued before its disk was watched, or not followed
    /// by choice: `late`).
    pub unmatched: bool,
    /// Not followed from its start by choice: issued while no watched call could be in
    /// flight (`--requests around-calls`); its submitter is unknown unless block_getrq saw
    /// its bio. Never a traced process's own submission (those are always followed).
    pub late: bool,
    pub requeues: u16,
    pub status: u32,
}

impl Io {
    /// When the request entered the block layer, as far as is known.
    pub fn start(&self) -> MonoNs {
        self.queued
            .or(self.issued)
            .or(self.completed)
            .unwrap_or(MonoNs(0))
    }

    /// When it left (or `until`, for a request still in flight at the end).
    pub fn end_or(&self, until: MonoNs) -> MonoNs {
        self.completed.unwrap_or(until)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    pub state: SchedState,
    pub off: MonoNs,
    pub on: MonoNs,
    pub wake: Option<MonoNs>,
    pub syscall: Option<String>,
    pub waker: Option<WakerInfo>,
    pub stack: Vec<String>,
    /// It began right after a watched syscall returned.
    pub after_call: bool,
    /// It began before tracing: `off` is a bound.
    pub seeded: bool,
    /// Still off CPU when tracing ended.
    pub open: bool,
}

/// Who woke a thread, resolved to names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WakerInfo {
    Task {
        pid: u32,
        tid: u32,
        thread: String,
        /// The waker's process, when it is another one.
        #[serde(skip_serializing_if = "Option::is_none")]
        process: Option<String>,
    },
    Irq,
    Softirq,
    Timer,
}

impl WakerInfo {
    pub fn label(&self) -> String {
        match self {
            // A kernel thread is its own process: its name once.
            WakerInfo::Task {
                thread,
                process: Some(p),
                pid,
                ..
            } if p == thread => format!("{thread} ({pid})"),
            WakerInfo::Task {
                thread,
                process: Some(p),
                pid,
                ..
            } => format!("{thread} ({p} {pid})"),
            WakerInfo::Task { thread, .. } => thread.clone(),
            WakerInfo::Irq => "irq".into(),
            WakerInfo::Softirq => "softirq".into(),
            WakerInfo::Timer => "timer".into(),
        }
    }

    pub fn from_waker(w: &Waker, thread: String, process: Option<String>) -> WakerInfo {
        match w {
            Waker::Task { task, .. } => WakerInfo::Task {
                pid: task.pid,
                tid: task.tid,
                thread,
                process,
            },
            Waker::Irq => WakerInfo::Irq,
            Waker::Softirq => WakerInfo::Softirq,
            Waker::Timer => WakerInfo::Timer,
        }
    }
}

impl Blocked {
    /// Run-queue part: woken -> running, or all of it when preempted while runnable.
    pub fn runq(&self) -> (MonoNs, MonoNs) {
        match self.wake {
            Some(w) => (w.max(self.off), self.on),
            None if self.state == SchedState::Runnable => (self.off, self.on),
            None => (self.on, self.on),
        }
    }

    /// Sleeping part (before the wakeup).
    pub fn sleep(&self) -> (MonoNs, MonoNs) {
        match self.wake {
            Some(w) => (self.off, w.min(self.on)),
            None if self.state == SchedState::Runnable => (self.off, self.off),
            None => (self.off, self.on),
        }
    }
}

/// A target thread reclaiming memory itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Reclaim {
    pub pid: u32,
    pub tid: u32,
    pub start: MonoNs,
    pub end: MonoNs,
    pub nr_reclaimed: u64,
    pub memcg: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Throttle {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub at: MonoNs,
    pub pause_ms: i64,
    /// The bdi it was throttled on (`MAJ:MIN`): the disk whose dirty pages were over the
    /// limit.
    pub bdi: String,
}

/// A safepoint of a traced JVM (HotSpot's safepoint__begin..end), with the VM operation
/// it ran and whether that was a GC.
#[derive(Clone, Debug, PartialEq)]
pub struct JvmPause {
    pub pid: u32,
    pub start: MonoNs,
    pub end: MonoNs,
    /// The VM operation (`G1CollectFull`, `ThreadDump`, ...).
    pub op: Option<String>,
    /// Some(full?) when a GC ran in it.
    pub gc: Option<bool>,
    /// zkstall's own doing (the one `jcmd Thread.print` that names threads).
    pub by_zkstall: bool,
    /// Still in progress (`end` is its start until it ends): threads it releases run, and
    /// their calls are explained, before its end probe fires.
    pub open: bool,
}

/// An open safepoint older than this lost its end (the JVM died in it, or the record was
/// lost): it is not taken to cover later waits.
pub const SAFEPOINT_OPEN_MAX_NS: u64 = 60_000_000_000;

impl JvmPause {
    /// Its end as seen at `now`: an open one lasts until now (within bounds).
    pub fn end_at(&self, now: MonoNs) -> MonoNs {
        if self.open && now.since(self.start) < SAFEPOINT_OPEN_MAX_NS {
            now.max(self.start)
        } else {
            self.end
        }
    }
}

/// A target thread queued writeback of a filesystem because it was low on free space.
#[derive(Clone, Debug, PartialEq)]
pub struct LowSpaceQueued {
    pub pid: u32,
    pub tid: u32,
    pub at: MonoNs,
    /// The filesystem's device.
    pub dev: DevId,
    pub nr_pages: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub dev: DevId,
    pub transaction: u32,
    /// The journal thread that ran it.
    pub tid: u32,
    pub start: MonoNs,
    pub end: MonoNs,
    pub locking_ms: Option<f64>,
    pub flushing_ms: Option<f64>,
    pub logging_ms: Option<f64>,
    pub handles: Option<u32>,
    pub blocks: Option<u32>,
}

/// The requests of one watched disk.
#[derive(Clone, Debug)]
pub struct DiskHistory {
    /// Completed (and, at the end, open) requests, in arrival order.
    pub ios: VecDeque<Io>,
    /// Since when the disk is watched: requests allocated before are missing or
    /// unmatched.
    pub since: MonoNs,
    /// Requests completing at or before this were shed or expired: before it the queue is
    /// incomplete.
    pub lost_until: Option<MonoNs>,
    pub shed: u64,
    /// Windows in which the block layer counted completions the probes did not see: the
    /// queue is not known there.
    pub unseen: VecDeque<(MonoNs, MonoNs)>,
    /// Windows from the issue of requests the probes held in flight that the disk no
    /// longer had (their completions missed) to when that was found: the same.
    pub stale: VecDeque<(MonoNs, MonoNs)>,
    /// Requests summed in the kernel instead of sent one by one (none overlapped a watched
    /// call), one entry per disk and interval, oldest first.
    pub summed: VecDeque<IoSummed>,
    /// Requests in flight that the probes did not follow (issued while no watched call
    /// could be in flight), during the look at a running call that found them (see
    /// [`History::set_unfollowed`]); 0 otherwise. Whatever they are, they are not in
    /// `ios`: the disk is not known while they are.
    pub unfollowed: u64,
}

/// Requests of one disk summed in the kernel over `from..to` (see [`Note::IoSummary`]).
///
/// [`Note::IoSummary`]: crate::pipeline::Note::IoSummary
#[derive(Clone, Debug, PartialEq)]
pub struct IoSummed {
    pub from: MonoNs,
    pub to: MonoNs,
    pub requests: u64,
    pub bytes: u64,
    pub service_ns: u64,
    /// Service times: entry k counts those up to [`summed_bound_ns`]`(k)`.
    pub hist: Vec<u64>,
}

/// The upper bound of bucket `k` of [`IoSummed::hist`] (the last one has none: u64::MAX).
pub fn summed_bound_ns(k: usize) -> u64 {
    if k + 1 >= zkstall_common::IO_HIST_BUCKETS {
        u64::MAX
    } else {
        zkstall_common::IO_HIST_FIRST_NS << k
    }
}

/// A value standing for bucket `k`'s requests: the geometric middle of its bounds (the
/// last bucket: half again its lower bound).
pub fn summed_value_ns(k: usize) -> u64 {
    let last = zkstall_common::IO_HIST_BUCKETS - 1;
    let k = k.min(last);
    if k == last {
        summed_bound_ns(k - 1) / 2 * 3
    } else {
        (summed_bound_ns(k) as f64 / std::f64::consts::SQRT_2) as u64
    }
}

/// Summaries kept per disk (one a second: the whole horizon).
const SUMMED_PER_DISK: usize = 256;

impl DiskHistory {
    fn new(since: MonoNs) -> DiskHistory {
        DiskHistory {
            ios: VecDeque::new(),
            since,
            lost_until: None,
            shed: 0,
            unseen: VecDeque::new(),
            stale: VecDeque::new(),
            summed: VecDeque::new(),
            unfollowed: 0,
        }
    }

    /// The windows of unseen completions overlapping `from..=to`.
    pub fn unseen_during(&self, from: MonoNs, to: MonoNs) -> usize {
        overlapping(&self.unseen, from, to)
    }

    /// The windows of stale requests overlapping `from..=to`.
    pub fn stale_during(&self, from: MonoNs, to: MonoNs) -> usize {
        overlapping(&self.stale, from, to)
    }

    /// The instant from which this disk's history is complete.
    pub fn complete_from(&self) -> MonoNs {
        match self.lost_until {
            Some(l) => self.since.max(MonoNs(l.0 + 1)),
            None => self.since,
        }
    }
}

#[derive(Default)]
pub struct History {
    pub disks: HashMap<DiskDev, DiskHistory>,
    pub blocked: VecDeque<Blocked>,
    /// Off-CPU intervals ending at or before this were shed: before it the timeline of the
    /// target's threads is incomplete.
    pub blocked_lost_until: Option<MonoNs>,
    pub throttles: VecDeque<Throttle>,
    pub reclaims: VecDeque<Reclaim>,
    pub low_space: VecDeque<LowSpaceQueued>,
    pub jvm_pauses: VecDeque<JvmPause>,
    /// CPUs whose heartbeat stopped (cpu, from, to), and how many CPUs have one (None: no
    /// heartbeat, so a host pause cannot be seen).
    pub host_gaps: VecDeque<(u32, MonoNs, MonoNs)>,
    pub host_cpus: Option<u32>,
    pub commits: VecDeque<Commit>,
    /// Windows in which records were lost (ring buffer full, or shed by the reader).
    pub lost: VecDeque<(MonoNs, MonoNs)>,
    /// Entries shed to stay within bounds before they aged out (a flood).
    pub shed: u64,
    pub limits: HistoryLimits,
}

fn push<T>(q: &mut VecDeque<T>, cap: usize, v: T, shed: &mut u64) -> Option<T> {
    let out = if q.len() >= cap {
        *shed += 1;
        q.pop_front()
    } else {
        None
    };
    q.push_back(v);
    out
}

fn expire<T>(q: &mut VecDeque<T>, now: MonoNs, at: impl Fn(&T) -> MonoNs) -> Option<MonoNs> {
    let mut last = None;
    while let Some(v) = q.front() {
        let t = at(v);
        if now.since(t) <= HORIZON_NS {
            break;
        }
        last = Some(t);
        q.pop_front();
    }
    last
}

impl History {
    pub fn with_limits(limits: HistoryLimits) -> History {
        History {
            limits,
            ..Default::default()
        }
    }

    /// Lowers the caps (to stay under a memory bound) and drops the oldest entries beyond
    /// them now, as shedding (counted; the queues are incomplete before what remains).
    pub fn shrink(&mut self, limits: HistoryLimits) {
        self.limits = limits;
        for h in self.disks.values_mut() {
            while h.ios.len() > limits.ios_per_disk {
                if let Some(old) = h.ios.pop_front() {
                    let t = old.completed.unwrap_or(old.start());
                    h.lost_until = Some(h.lost_until.map_or(t, |l| l.max(t)));
                    h.shed += 1;
                    self.shed += 1;
                }
            }
            h.ios.shrink_to_fit();
        }
        while self.blocked.len() > limits.blocked {
            if let Some(old) = self.blocked.pop_front() {
                self.blocked_lost_until =
                    Some(self.blocked_lost_until.map_or(old.on, |l| l.max(old.on)));
                self.shed += 1;
            }
        }
        self.blocked.shrink_to_fit();
        for q in [&mut self.throttles] {
            while q.len() > limits.throttles {
                q.pop_front();
                self.shed += 1;
            }
        }
        while self.reclaims.len() > limits.throttles {
            self.reclaims.pop_front();
            self.shed += 1;
        }
        while self.commits.len() > limits.commits {
            self.commits.pop_front();
            self.shed += 1;
        }
    }

    /// Starts keeping the requests of `disk` (from `since`).
    pub fn watch(&mut self, disk: DiskDev, since: MonoNs) {
        self.disks.entry(disk).or_insert(DiskHistory::new(since));
    }

    /// Stops keeping the requests of `disk` (nobody traced uses it any more): a later
    /// watch starts a new history.
    pub fn unwatch(&mut self, disk: DiskDev) {
        self.disks.remove(&disk);
    }

    /// Completions on `disk` between `from` and `to` were not seen.
    pub fn unseen(&mut self, disk: DiskDev, from: MonoNs, to: MonoNs) {
        if let Some(h) = self.disks.get_mut(&disk) {
            push(&mut h.unseen, 1024, (from, to), &mut 0);
        }
    }

    /// Requests on `disk` issued from `from` on were found gone at `to`, their completions
    /// not seen.
    pub fn stale(&mut self, disk: DiskDev, from: MonoNs, to: MonoNs) {
        if let Some(h) = self.disks.get_mut(&disk) {
            push(&mut h.stale, 1024, (from, to), &mut 0);
        }
    }

    pub fn io(&mut self, v: Io) {
        let now = v.completed.unwrap_or(v.start());
        let disk = v.disk;
        // Not announced as watched: complete only from its first request on.
        let h = self
            .disks
            .entry(disk)
            .or_insert_with(|| DiskHistory::new(now));
        let mut shed = 0;
        if let Some(old) = push(&mut h.ios, self.limits.ios_per_disk, v, &mut shed) {
            let t = old.completed.unwrap_or(now);
            h.lost_until = Some(h.lost_until.map_or(t, |l| l.max(t)));
        }
        h.shed += shed;
        self.shed += shed;
        if let Some(t) = expire(&mut h.ios, now, |v| v.completed.unwrap_or(now)) {
            h.lost_until = Some(h.lost_until.map_or(t, |l| l.max(t)));
        }
    }

    pub fn summed(&mut self, disk: DiskDev, v: IoSummed) {
        let now = v.to;
        let h = self
            .disks
            .entry(disk)
            .or_insert_with(|| DiskHistory::new(now));
        let mut shed = 0;
        push(&mut h.summed, SUMMED_PER_DISK, v, &mut shed);
        expire(&mut h.summed, now, |v| v.to);
    }

    pub fn blocked(&mut self, v: Blocked) {
        let now = v.on;
        if let Some(old) = push(&mut self.blocked, self.limits.blocked, v, &mut self.shed) {
            let t = old.on;
            self.blocked_lost_until = Some(self.blocked_lost_until.map_or(t, |l| l.max(t)));
        }
        if let Some(t) = expire(&mut self.blocked, now, |v| v.on) {
            self.blocked_lost_until = Some(self.blocked_lost_until.map_or(t, |l| l.max(t)));
        }
    }

    pub fn throttle(&mut self, v: Throttle) {
        let now = v.at;
        push(
            &mut self.throttles,
            self.limits.throttles,
            v,
            &mut self.shed,
        );
        expire(&mut self.throttles, now, |v| v.at);
    }

    pub fn host_gap(&mut self, cpu: u32, from: MonoNs, to: MonoNs) {
        let mut s = 0;
        push(&mut self.host_gaps, 4096, (cpu, from, to), &mut s);
    }

    /// When every CPU's heartbeat was silent at once, within `win`.
    pub fn host_frozen(&self, win: (MonoNs, MonoNs)) -> Vec<(MonoNs, MonoNs)> {
        let Some(n) = self.host_cpus.filter(|n| *n > 0) else {
            return Vec::new();
        };
        let mut all: Option<Vec<(MonoNs, MonoNs)>> = None;
        for cpu in 0..n {
            let mut mine: Vec<(MonoNs, MonoNs)> = self
                .host_gaps
                .iter()
                .filter(|(c, a, b)| *c == cpu && *b > win.0 && *a < win.1)
                .map(|(_, a, b)| (*a, *b))
                .collect();
            mine.sort();
            all = Some(match all {
                None => mine,
                Some(prev) => intersect(&prev, &mine),
            });
        }
        all.unwrap_or_default()
    }

    pub fn jvm_pause(&mut self, v: JvmPause) {
        let now = v.end;
        push(
            &mut self.jvm_pauses,
            self.limits.throttles,
            v,
            &mut self.shed,
        );
        expire(&mut self.jvm_pauses, now, |v| v.end);
    }

    /// The open safepoint of `pid`, if any (the newest).
    pub fn open_jvm_pause(&mut self, pid: u32) -> Option<&mut JvmPause> {
        self.jvm_pauses
            .iter_mut()
            .rev()
            .take(64)
            .find(|p| p.pid == pid && p.open)
    }

    pub fn low_space(&mut self, v: LowSpaceQueued) {
        let now = v.at;
        push(
            &mut self.low_space,
            self.limits.throttles,
            v,
            &mut self.shed,
        );
        expire(&mut self.low_space, now, |v| v.at);
    }

    pub fn reclaim(&mut self, v: Reclaim) {
        let now = v.end;
        push(&mut self.reclaims, self.limits.throttles, v, &mut self.shed);
        expire(&mut self.reclaims, now, |v| v.end);
    }

    pub fn commit(&mut self, v: Commit) {
        let now = v.end;
        push(&mut self.commits, self.limits.commits, v, &mut self.shed);
        expire(&mut self.commits, now, |v| v.end);
    }

    /// Adds requests still in flight for one look (an explanation while a call is still
    /// running); [`History::remove_open`] takes them out again. Nothing is shed or expired.
    pub fn add_open(&mut self, ios: Vec<Io>) -> Vec<DiskDev> {
        let mut added = Vec::with_capacity(ios.len());
        for io in ios {
            if let Some(h) = self.disks.get_mut(&io.disk) {
                added.push(io.disk);
                h.ios.push_back(io);
            }
        }
        added
    }

    /// Requests in flight unfollowed, by disk, for one look (see [`DiskHistory::unfollowed`]);
    /// an empty list ends it.
    pub fn set_unfollowed(&mut self, by_disk: &[(DiskDev, u64)]) {
        for (d, h) in self.disks.iter_mut() {
            h.unfollowed = by_disk.iter().find(|(x, _)| x == d).map_or(0, |(_, n)| *n);
        }
    }

    pub fn remove_open(&mut self, added: Vec<DiskDev>) {
        for d in added.into_iter().rev() {
            if let Some(h) = self.disks.get_mut(&d) {
                h.ios.pop_back();
            }
        }
    }

    /// Records were lost between `from` and `to`.
    pub fn lost(&mut self, from: MonoNs, to: MonoNs) {
        let mut s = 0;
        push(&mut self.lost, MAX_LOST, (from, to), &mut s);
    }

    /// The loss windows overlapping `[from, to]`.
    pub fn lost_during(&self, from: MonoNs, to: MonoNs) -> Vec<(MonoNs, MonoNs)> {
        self.lost
            .iter()
            .filter(|(a, b)| *a <= to && *b >= from)
            .copied()
            .collect()
    }
}

/// How many of `windows` overlap `from..=to`.
fn overlapping(windows: &VecDeque<(MonoNs, MonoNs)>, from: MonoNs, to: MonoNs) -> usize {
    windows
        .iter()
        .filter(|(a, b)| *a <= to && *b >= from)
        .count()
}

/// Length of the overlap of [a0, a1) and [b0, b1), in ns.
pub fn overlap(a: (MonoNs, MonoNs), b: (MonoNs, MonoNs)) -> u64 {
    let lo = a.0.max(b.0);
    let hi = a.1.min(b.1);
    hi.since(lo)
}

/// The intersection of two sorted lists of intervals (each disjoint).
pub fn intersect(a: &[(MonoNs, MonoNs)], b: &[(MonoNs, MonoNs)]) -> Vec<(MonoNs, MonoNs)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(disk: u32, completed: u64) -> Io {
        Io {
            disk: DiskDev(DevId {
                major: 7,
                minor: disk,
            }),
            part: None,
            sector: 0,
            pid: 1,
            tid: 1,
            charged: Party::unknown(),
            blkcg: None,
            bytes: 4096,
            op: Op::Write,
            sync: false,
            flush: false,
            fua: false,
            queued: Some(MonoNs(completed)),
            issued: Some(MonoNs(completed)),
            completed: Some(MonoNs(completed)),
            unmatched: false,
            late: false,
            requeues: 0,
            status: 0,
        }
    }

    #[test]
    fn floods_shed_the_oldest_and_count_it() {
        let mut h = History::default();
        for i in 0..(MAX_THROTTLES + 10) {
            h.throttle(Throttle {
                comm: String::new(),
                bdi: String::new(),
                pid: 1,
                tid: 1,
                at: MonoNs(i as u64),
                pause_ms: 1,
            });
        }
        assert_eq!(h.throttles.len(), MAX_THROTTLES);
        assert_eq!(h.shed, 10);
        assert_eq!(h.throttles.front().unwrap().at, MonoNs(10));
    }

    #[test]
    fn a_flood_on_one_disk_sheds_only_that_disk_and_marks_where_it_is_complete() {
        let mut h = History::default();
        let quiet = DiskDev(DevId { major: 7, minor: 1 });
        h.watch(quiet, MonoNs(5));
        h.io(io(1, 10));
        for i in 0..(MAX_IOS_PER_DISK as u64 + 3) {
            h.io(io(2, 100 + i));
        }
        let busy = &h.disks[&DiskDev(DevId { major: 7, minor: 2 })];
        assert_eq!(busy.ios.len(), MAX_IOS_PER_DISK);
        assert_eq!(busy.shed, 3);
        assert_eq!(
            busy.complete_from(),
            MonoNs(103),
            "complete after the last shed"
        );
        let q = &h.disks[&quiet];
        assert_eq!((q.ios.len(), q.complete_from()), (1, MonoNs(5)));
    }

    #[test]
    fn old_entries_expire_past_the_horizon_and_the_queue_says_so() {
        let mut h = History::default();
        h.throttle(Throttle {
            comm: String::new(),
            bdi: String::new(),
            pid: 1,
            tid: 1,
            at: MonoNs(1),
            pause_ms: 1,
        });
        h.throttle(Throttle {
            comm: String::new(),
            bdi: String::new(),
            pid: 1,
            tid: 1,
            at: MonoNs(HORIZON_NS + 10),
            pause_ms: 1,
        });
        assert_eq!(h.throttles.len(), 1);
        assert_eq!(h.shed, 0, "expiry is not shedding");
        h.io(io(1, 1));
        h.io(io(1, HORIZON_NS + 10));
        let d = &h.disks[&DiskDev(DevId { major: 7, minor: 1 })];
        assert_eq!(d.complete_from(), MonoNs(2));
    }

    #[test]
    fn loss_windows_are_found_by_overlap() {
        let mut h = History::default();
        h.lost(MonoNs(100), MonoNs(200));
        assert_eq!(h.lost_during(MonoNs(150), MonoNs(300)).len(), 1);
        assert!(h.lost_during(MonoNs(201), MonoNs(300)).is_empty());
    }

    #[test]
    fn overlaps() {
        assert_eq!(overlap((MonoNs(0), MonoNs(10)), (MonoNs(5), MonoNs(20))), 5);
        assert_eq!(
            overlap((MonoNs(0), MonoNs(10)), (MonoNs(10), MonoNs(20))),
            0
        );
        assert_eq!(overlap((MonoNs(5), MonoNs(6)), (MonoNs(0), MonoNs(20))), 1);
    }
}
