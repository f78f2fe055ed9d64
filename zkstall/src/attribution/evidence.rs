//! Gathering the evidence for one call: where its thread's time went (by stage), what each
//! disk layer under its file did, the journal commit it waited on, and whether the inputs
//! cover the call. No verdict is reached here.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Contender, ContenderKind, Span, ms};
use crate::{
    clock::MonoNs,
    decode::SchedState,
    enrich::{DiskDev, Enricher, Layer, LayerKind},
    history::{
        Blocked, Commit, History, Io, JvmPause, LowSpaceQueued, Op, PartyKind, WakerInfo, overlap,
    },
    pipeline::on_partition,
};

/// balance_dirty_pages sleeps at most this long per pause (MAX_PAUSE is HZ/5; with
/// slack for any HZ): larger values in a record are corruption, clamped.
const MAX_PAUSE_MS: i64 = 1_000;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One disk layer under the file, during the call.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LayerEvidence {
    pub disk: String,
    pub dev: String,
    /// 0: the disk holding the file's filesystem; 1: the one below it; ...
    pub depth: u32,
    pub kind: LayerKindName,
    /// The partition the file's filesystem is on, when it is on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Its requests are traced one by one (and since when, if after the call began).
    pub watched: bool,
    /// The history of this disk covers the whole call (nothing shed, dropped, or missed).
    pub complete: bool,
    /// Requests in flight on it when a running call was looked at that the probes did not
    /// follow (`--requests around-calls`: issued while no traced call was in flight):
    /// whose they are is not known, so `complete` says no.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub unfollowed: u32,
    /// With `unfollowed`: everything else about the disk is known (`complete` but for
    /// them). Enough to say it stopped when too few are in flight for a flood of others'
    /// to explain the pause (see rules' `stalled`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub complete_but_unfollowed: bool,
    pub inflight_max: u32,
    /// Requests still in flight when the window ended.
    pub inflight_at_end: u32,
    pub completions: u32,
    /// The longest stretch with requests in flight and no completion.
    pub longest_completion_gap_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gap_start_ns: Option<u64>,
    /// Device service time (issue -> completion) of requests completed in the window.
    pub latency_ms: Option<Percentiles>,
    /// The same before the call (the disk's usual latency), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usual_p50_ms: Option<f64>,
    /// Bytes and requests: the calling thread's own, other threads' of its process,
    /// everybody else's, the journal's, and unattributable ones.
    pub bytes_thread: u64,
    pub bytes_process: u64,
    pub bytes_others: u64,
    pub bytes_journal: u64,
    pub bytes_unknown: u64,
    pub requests_thread: u32,
    pub requests_others: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_unknown: u32,
    /// Of the unattributable ones: not followed from their start (`--requests
    /// around-calls`: issued while no traced call was in flight). Not a traced process's
    /// own submissions, but possibly the journal's or a flusher's writeback of its pages.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_late: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_late: u32,
    /// Of the others': on other partitions of this disk.
    pub bytes_other_partitions: u64,
    /// Of the others': requests the kernel summed instead of sending them one by one
    /// (`--requests around-calls`), over the part of the window outside the call (none
    /// that overlapped a traced call is summed), each second's sum counted for its share
    /// of that part. Whose they were is not kept; never a traced process's own.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_summed: u64,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub requests_summed: u32,
    /// Relayed from a layer above on this path (a loop device writing its backing file).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_from_above: u64,
    /// Of `requests_others`: discards (and secure erases), whose length is not data moved
    /// and is not in `bytes_others` but here (a deleted file's blocks freed on a `discard`
    /// mount, fstrim).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub discards_others: u32,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_discarded: u64,
    pub flushes: u32,
    pub errors: u32,
    pub requeues: u32,
    /// Of the errors, those the block layer completed as timed out (BLK_STS_TIMEOUT: a
    /// SCSI or NVMe command timeout, the classic cause of a 30 s fsync).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub timeouts: u32,
    /// It saw no block I/O at all during the call.
    pub no_io: bool,
    /// For a loop device, over its longest completion gap: how long the disk under its
    /// backing file had requests in flight (the loop waiting on it: a flush of the backing
    /// file, say), how long tasks were paused by dirty throttling there (the loop's own
    /// writes to that file are throttled with them), and the one paused longest.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub backing_busy_ms: f64,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub backing_throttled_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_throttled: Option<String>,
    /// The share of the gap either covers (union).
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub backing_held_ms: f64,
}

pub(crate) fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

pub(crate) fn is_zero_u64(v: &u64) -> bool {
    *v == 0
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
    /// What the journal's disk did during the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_during: Option<LayerEvidence>,
    /// The journal thread during the commit (when its scheduling was traced): waiting for
    /// a CPU, and asleep in D.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_runq_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_d_ms: Option<f64>,
    /// How long after the call began waiting on the journal the commit began, when it
    /// began later; and how much of that the journal thread sat runnable without a CPU
    /// (when its scheduling was traced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_delay_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_runq_before_ms: Option<f64>,
    /// When the journal's disk is a loop device that spent the commit waiting on the disk
    /// under it (its flush is an fsync of its backing file, which writes back everything
    /// written to the loop device before): the data others wrote to it just before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_writers: Option<BackingWriters>,
}

/// Others' writes to a loop device in the window before a commit whose flush had to write
/// them back first.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackingWriters {
    pub disk: String,
    pub window_ms: f64,
    pub bytes_others: u64,
    pub requests_others: u32,
    pub bytes_thread: u64,
    /// Of `bytes_others` and `requests_others`: requests the kernel summed instead of
    /// sending them (`--requests around-calls`: no traced call overlapped them), whose
    /// submitters are not kept. Never the traced processes' own (those are always sent).
    pub bytes_summed: u64,
    pub requests_summed: u32,
    /// The top writers (the summed requests as one, named as such).
    pub contenders: Vec<Contender>,
}

/// The name of the requests the kernel summed, among a window's contenders.
pub const SUMMED_WRITERS: &str = "others' requests summed in the kernel (no traced call was in flight: --requests all names them)";

/// The requests of `disk` the kernel summed over `win`, (bytes, requests): each second's
/// sum counted for the share of it inside `win`.
pub(crate) fn summed_in(h: &History, disk: DiskDev, win: (MonoNs, MonoNs)) -> (u64, u64) {
    let Some(d) = h.disks.get(&disk) else {
        return (0, 0);
    };
    let (mut bytes, mut requests) = (0f64, 0f64);
    for s in &d.summed {
        let span = s.to.since(s.from);
        let share = if span == 0 {
            (s.to >= win.0 && s.to <= win.1) as u8 as f64
        } else {
            overlap((s.from, s.to), win) as f64 / span as f64
        };
        bytes += s.bytes as f64 * share;
        requests += s.requests as f64 * share;
    }
    (bytes.round() as u64, requests.round() as u64)
}

/// How far before a commit the writes its loop device's flush must persist are looked for.
const BACKING_LOOKBACK_NS: u64 = 30_000_000_000;

/// The numbers behind a verdict. Field names are a contract: later versions add fields,
/// never rename these.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// How the calling thread spent the call (ms): on CPU (measured in the kernel; 0 when
    /// not measured), asleep in D, asleep otherwise, waiting for a CPU, and what no signal
    /// covers (never counted as CPU).
    pub on_cpu_ms: f64,
    pub d_state_ms: f64,
    pub s_state_ms: f64,
    pub runq_ms: f64,
    pub unaccounted_ms: f64,
    /// The file's device and its name.
    pub dev: Option<String>,
    pub device: Option<String>,
    /// The disk whose queue holds the file's I/O (the top layer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The top layer's numbers, flat (as earlier versions printed them).
    pub inflight_max: u32,
    pub completions: u32,
    pub longest_completion_gap_ms: f64,
    pub latency_ms: Option<Percentiles>,
    pub bytes_target: u64,
    pub bytes_others: u64,
    pub requests_target: u32,
    pub requests_others: u32,
    /// Every layer under the file, top first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerEvidence>,
    /// Sum of balance_dirty_pages pauses of the thread during the call.
    pub throttle_pause_ms: f64,
    /// The journal commit the call waited on (or that overlapped it most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalEvidence>,
    /// Where the thread slept longest in D, and who woke it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker: Option<String>,
    /// The frame it waited at (the first one below the scheduler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_frame: Option<String>,
    /// Time between the syscall's return and the thread running again, when it went
    /// off CPU right after the syscall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_syscall_ms: Option<f64>,
    /// Other threads of the same process off CPU through most of that wait (a JVM
    /// safepoint stops them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_threads_stopped: Option<u32>,
    /// Every CPU's heartbeat silent at once during the call: the whole host stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_freeze: Option<HostFreezeEvidence>,
    /// HotSpot's own markers (its safepoint probes) for the wait after the return: the
    /// safepoints of the JVM that overlapped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safepoint: Option<SafepointEvidence>,
    /// After the return: how long at least one other thread of the process was runnable
    /// without a CPU (the JVM could not finish a pause for want of a CPU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_others_runq_ms: Option<f64>,
    /// After the return: how long at least one other thread of the process was reclaiming
    /// memory (the JVM could not finish a pause while its threads freed memory first), and
    /// which threads, longest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_others_reclaim: Option<OthersReclaim>,
    /// After the return: the other thread of the process blocked (D) through most of
    /// that wait (the VM thread first), where it waited: what a JVM pause waited on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_holder: Option<PauseHolder>,
    /// An I/O limit (blk-throttle) on a disk under the file, from the thread's cgroup, and
    /// how close that cgroup's I/O came to it during the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_limit: Option<IoLimitEvidence>,
    /// Time the thread spent reclaiming memory itself during the call, and the memory limit
    /// of its cgroup.
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub reclaim_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg_reclaim: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<crate::enrich::MemLimit>,
    /// Asleep waiting for a journal commit (or an XFS log force), all of it (the stages
    /// charge the part where the commit's writes queued behind others' to device_queue).
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub journal_wait_ms: f64,
    /// Writeback the thread queued for low free space during the call (writeback_queue's
    /// reason fs_free_space): the largest, and how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_space_writeback: Option<LowSpaceEvidence>,
    /// Why the inputs do not cover the whole call (then no gap is claimed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// A blk-throttle limit and the limited cgroup's I/O during the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IoLimitEvidence {
    #[serde(flatten)]
    pub limit: crate::enrich::IoLimit,
    /// The disk's name.
    pub disk_name: String,
    /// The cgroup's I/O on that disk during the call, per second.
    pub write_bps: f64,
    pub write_iops: f64,
    pub read_bps: f64,
    pub read_iops: f64,
    /// The highest share of a limit reached (1.0: at the limit).
    pub utilization: f64,
}

/// Where a long sleep of the calling thread was spent, from its stack (and waker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// Direct or memcg reclaim.
    Reclaim,
    /// Writeback forced by low free space (ext4_nonda_switch and friends).
    LowSpace,
    /// balance_dirty_pages.
    DirtyThrottle,
    /// Waiting for a journal commit (jbd2, XFS log force).
    Journal,
    /// Held back before the device: writeback throttling, no free tags.
    BlockQueue,
    /// Waiting for its own writeback or a flush to complete.
    Writeback,
    /// A frozen filesystem.
    Freeze,
    /// A filesystem or VFS lock.
    Lock,
    /// Anything else in D.
    OtherD,
    /// Interruptible sleep inside the syscall.
    Sleep,
}

/// A thread of the JVM blocked (D) through most of the wait after the return: a safepoint
/// cannot end while the VM thread (or a thread still to reach it) is stuck in the kernel,
/// as when the GC log's write() or the hsperfdata page blocks on I/O.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PauseHolder {
    /// "name (tid)".
    pub thread: String,
    /// Its time in D within the wait.
    pub d_ms: f64,
    /// The syscall it was in, if any (none: a page fault, or the JVM's own work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// Where its longest D sleep waited, and what kind of wait that was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_frame: Option<String>,
    pub site: &'static str,
}

/// Other threads of the process reclaiming memory while the call's thread was held after
/// its return.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OthersReclaim {
    /// The union of their reclaims within that wait.
    pub ms: f64,
    /// The longest few, "name (tid) N ms".
    pub threads: Vec<String>,
    /// How many threads reclaimed in it.
    pub count: u32,
    /// Any of it memory-cgroup reclaim (else direct reclaim).
    pub memcg: bool,
}

/// Frames by site, checked in this order (a reclaim stack can contain writeback waits;
/// low-space writeback contains writeback waits; ...).
const SITES: &[(Site, &[&str])] = &[
    (
        Site::Reclaim,
        &[
            "try_to_free_mem_cgroup_pages",
            "try_to_free_pages",
            "mem_cgroup_handle_over_high",
            "__alloc_pages_slowpath",
            "__alloc_pages_direct_reclaim",
            "throttle_direct_reclaim",
            "shrink_node",
            "reclaim_throttle",
            "do_try_to_free_pages",
        ],
    ),
    (
        Site::LowSpace,
        &[
            "ext4_nonda_switch",
            "try_to_writeback_inodes_sb",
            "writeback_inodes_sb",
            "ext4_should_retry_alloc",
        ],
    ),
    (Site::DirtyThrottle, &["balance_dirty_pages"]),
    (
        Site::Journal,
        &[
            "jbd2_log_wait_commit",
            "jbd2_journal_wait",
            "__jbd2_log_wait_for_space",
            "jbd2_complete_transaction",
            "wait_transaction_locked",
            "xlog_wait_on_iclog",
            "xlog_cil_force_seq",
            "xlog_wait",
            "_xfs_log_force",
            "xfs_log_force_seq",
        ],
    ),
    (
        Site::BlockQueue,
        &[
            "rq_qos_wait",
            "wbt_wait",
            "blk_mq_get_tag",
            "__blk_mq_get_tag",
            "bio_queue_enter",
            "blk_queue_enter",
        ],
    ),
    (
        Site::Writeback,
        &[
            "folio_wait_writeback",
            "wait_on_page_writeback",
            "__filemap_fdatawait_range",
            "filemap_fdatawait",
            "submit_bio_wait",
            "blkdev_issue_flush",
            "wb_wait_for_completion",
            "blk_io_schedule",
            "__iomap_dio_rw",
            "iomap_dio_rw",
            "wait_for_completion_io",
            "wait_for_completion_io_timeout",
            "__blockdev_direct_IO",
            // A buffer head is locked for as long as its I/O runs: waiting on one is
            // waiting on the device.
            "__wait_on_buffer",
            "__lock_buffer",
        ],
    ),
    (
        Site::Freeze,
        &[
            "percpu_rwsem_wait",
            "__percpu_down_read",
            "sb_start_write",
            "freeze_super",
        ],
    ),
    (
        Site::Lock,
        &[
            "rwsem_down_read_slowpath",
            "rwsem_down_write_slowpath",
            "__mutex_lock",
            "mutex_lock",
            "down_read",
            "down_write",
            "inode_lock",
        ],
    ),
];

fn frame_name(f: &str) -> &str {
    f.split('+').next().unwrap_or(f)
}

/// Frames of the scheduler, not the wait site.
fn is_sched_frame(f: &str) -> bool {
    let n = frame_name(f);
    n.starts_with("__schedule")
        || n.starts_with("schedule")
        || n.starts_with("io_schedule")
        || n.starts_with("__traceiter")
        || n.starts_with("preempt_schedule")
}

/// The first frame below the scheduler: where it waited.
pub fn wait_frame(stack: &[String]) -> Option<String> {
    stack.iter().find(|f| !is_sched_frame(f)).cloned()
}

/// The wait site of a sleep.
/// The host stopped: every CPU's heartbeat silent at once.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostFreezeEvidence {
    /// How much of the call, the longest freeze and when it began, and on how many CPUs.
    pub frozen_ms: f64,
    pub longest_ms: f64,
    pub start_ns: u64,
    pub cpus: u32,
}

/// Safepoints of the JVM while the thread was held after the return.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SafepointEvidence {
    /// How much of the wait after the return they covered, and how many there were.
    pub overlap_ms: f64,
    pub count: u32,
    /// The longest: its length, the VM operation it ran, whether a GC (full?) ran in it.
    pub longest_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_full: Option<bool>,
    /// zkstall's own (the jcmd Thread.print it runs once to name threads).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub by_zkstall: bool,
}

/// Writeback the thread queued for low free space, as evidence.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LowSpaceEvidence {
    /// The filesystem's device, `MAJ:MIN`.
    pub dev: String,
    pub nr_pages: i64,
    /// How many times it queued such writeback during the call.
    pub queued: u32,
    /// When (the largest), ms into the call.
    pub at_ms: f64,
}

/// A wait that began right after the thread queued low-space writeback (within this) is
/// waiting for that writeback.
const LOW_SPACE_FOLLOW_NS: u64 = 5_000_000;

fn low_space_site(site: Site, from: MonoNs, queued: &[&LowSpaceQueued]) -> Site {
    let follows = queued
        .iter()
        .any(|q| q.at <= from && from.since(q.at) <= LOW_SPACE_FOLLOW_NS);
    match site {
        Site::Writeback | Site::OtherD | Site::BlockQueue if follows => Site::LowSpace,
        s => s,
    }
}

impl Site {
    pub fn name(self) -> &'static str {
        match self {
            Site::Reclaim => "memory reclaim",
            Site::LowSpace => "low-space writeback",
            Site::DirtyThrottle => "dirty throttling",
            Site::Journal => "a journal commit",
            Site::BlockQueue => "the block queue",
            Site::Writeback => "writeback or a flush",
            Site::Freeze => "a frozen filesystem",
            Site::Lock => "a filesystem lock",
            Site::OtherD => "the kernel",
            Site::Sleep => "a sleep",
        }
    }
}

pub fn site_of(b: &Blocked) -> Site {
    if b.state != SchedState::DiskSleep {
        return Site::Sleep;
    }
    for (site, frames) in SITES {
        if b.stack
            .iter()
            .any(|f| frames.iter().any(|w| frame_name(f) == *w))
        {
            return *site;
        }
    }
    match &b.waker {
        Some(WakerInfo::Task { thread, .. }) if thread.starts_with("jbd2/") => Site::Journal,
        _ => Site::OtherD,
    }
}

/// A stage of the call's time. Each instant is charged to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    OnCpu,
    RunQueue,
    /// Asleep after the syscall returned, before the caller ran again.
    AfterReturn,
    JournalWait,
    /// Waiting with its own requests queued, or behind others' requests.
    DeviceQueue,
    /// Waiting with its own requests at the device.
    DeviceService,
    /// Waiting for writeback with nothing of its own in flight and the disk idle (held
    /// above the block layer: throttling, a frozen filesystem).
    WritebackWait,
    /// Its own requests queued in the block layer while the device had none issued:
    /// held above the device (a dispatching worker that cannot run, the I/O scheduler),
    /// not waiting on it.
    QueueHeld,
    /// The same while its cgroup has an I/O limit on the disk: held by blk-throttle above
    /// the block layer (its bios reach the block layer only when the limit lets them).
    IoThrottle,
    DirtyThrottle,
    Reclaim,
    LowSpace,
    FsLock,
    OtherD,
    Sleep,
    /// Off-CPU intervals too short to be sent one by one (the kernel's sums): in D while
    /// its own I/O was in flight (its share of that time), in D otherwise, other sleeps.
    ShortDeviceWaits,
    ShortWaits,
    ShortSleeps,
    Unaccounted,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::OnCpu => "on_cpu",
            Stage::RunQueue => "run_queue",
            Stage::AfterReturn => "after_return",
            Stage::JournalWait => "journal_wait",
            Stage::DeviceQueue => "device_queue",
            Stage::DeviceService => "device_service",
            Stage::WritebackWait => "writeback_wait",
            Stage::QueueHeld => "queue_held",
            Stage::IoThrottle => "io_throttle",
            Stage::DirtyThrottle => "dirty_throttle",
            Stage::Reclaim => "reclaim",
            Stage::LowSpace => "low_space",
            Stage::FsLock => "fs_wait",
            Stage::OtherD => "other_wait",
            Stage::Sleep => "sleep",
            Stage::ShortDeviceWaits => "short_device_waits",
            Stage::ShortWaits => "short_waits",
            Stage::ShortSleeps => "short_sleeps",
            Stage::Unaccounted => "unaccounted",
        }
    }
}

/// One long sleep of the calling thread in the call's window, classified.
#[derive(Clone, Debug)]
pub struct Wait<'a> {
    pub b: &'a Blocked,
    pub site: Site,
    /// Its sleeping part within the window.
    pub ns: u64,
}

fn add(m: &mut BTreeMap<Stage, u64>, s: Stage, ns: u64) {
    *m.entry(s).or_default() += ns;
}

impl Gathered<'_> {
    /// Who kept the journal's disk busy: its users during the commit the call waited on,
    /// or during the call when there is no commit record (an XFS log force) or the commit
    /// saw none.
    pub fn journal_contenders(&self) -> &[Contender] {
        if self.ev.journal.is_some() && !self.commit_contenders.is_empty() {
            &self.commit_contenders
        } else {
            &self.contenders
        }
    }
}

/// Everything attribution knows about a call.
pub struct Gathered<'a> {
    pub ev: Evidence,
    /// The top layer's contenders, and every layer's.
    pub contenders: Vec<Contender>,
    pub contenders_by_layer: Vec<Vec<Contender>>,
    /// The top layer's during the journal commit the call waited on (which may have begun
    /// before the call).
    pub commit_contenders: Vec<Contender>,
    pub stages: BTreeMap<Stage, u64>,
    pub waits: Vec<Wait<'a>>,
    /// Total sleeping time by site (long intervals only).
    pub by_site: BTreeMap<Site, u64>,
    pub commit: Option<&'a Commit>,
    /// The process is a JVM.
    pub jvm: bool,
    /// After-return sleep: slept vs runnable, and whether most of it was woken by a thread
    /// of its own process that is not one of the JVM's own (its work queue, not a pause).
    pub after_sleep_ns: u64,
    pub after_runq_ns: u64,
    /// Run-queue time before the entry (within the caller's measure).
    pub before_runq_ns: u64,
    pub after_woken_by_own_work: bool,
    pub after_woken_by_vm: bool,
    /// Asleep waiting for a journal commit (or log force), all of it; and the part of it
    /// charged to the device's queue (the journal's requests behind others').
    pub journal_ns: u64,
    pub journal_queue_ns: u64,
    /// Requests of the thread in flight during the window (union, ns).
    pub own_inflight_ns: u64,
    pub dur_ns: u64,
    /// The call's syscall part (start to return, or to now).
    pub syscall_end: MonoNs,
}

impl Gathered<'_> {
    pub fn stages_ms(&self) -> BTreeMap<&'static str, f64> {
        self.stages
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k.name(), ms(*v)))
            .collect()
    }

    pub fn stage(&self, s: Stage) -> u64 {
        self.stages.get(&s).copied().unwrap_or(0)
    }

    pub fn top_layer(&self) -> Option<&LayerEvidence> {
        self.ev.layers.first()
    }
}

/// Whether a thread of a JVM blocked in the kernel can keep a safepoint from ending: the VM
/// thread (it runs the operation) and the GC's workers can; a Java thread only outside a
/// syscall (a page fault in Java code: inside a syscall it is in native, already safe);
/// the JIT compilers and the JVM's other service threads do not hold one.
pub fn can_hold_safepoint(thread: &str, in_syscall: bool) -> bool {
    if ["VM Thread", "GC Thread", "G1 "]
        .iter()
        .any(|n| thread.starts_with(n))
    {
        return true;
    }
    !is_jvm_internal(thread) && !in_syscall
}

/// Names the JVM gives its own threads (15-character kernel comms).
pub fn is_jvm_internal(thread: &str) -> bool {
    const NAMES: [&str; 14] = [
        "VM Thread",
        "VM Periodic Tas",
        "GC Thread",
        "G1 ",
        "C1 CompilerThre",
        "C2 CompilerThre",
        "Signal Dispatch",
        "Service Thread",
        "Reference Handl",
        "Finalizer",
        "Common-Cleaner",
        "Notification Th",
        "Sweeper thread",
        "Monitor Deflati",
    ];
    NAMES.iter().any(|n| thread.starts_with(n))
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

/// Merges intervals into a sorted, disjoint union.
fn union(mut iv: Vec<(MonoNs, MonoNs)>) -> Vec<(MonoNs, MonoNs)> {
    iv.retain(|(a, b)| b > a);
    iv.sort();
    let mut out: Vec<(MonoNs, MonoNs)> = Vec::new();
    for (a, b) in iv {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Length of a union's part inside `win`.
fn measure(u: &[(MonoNs, MonoNs)], win: (MonoNs, MonoNs)) -> u64 {
    u.iter().map(|iv| overlap(*iv, win)).sum()
}

/// Off-CPU intervals of `pid`'s threads overlapping `win` (the queue is ordered by end).
pub fn blocked_in<'a>(
    h: &'a History,
    pid: u32,
    win: (MonoNs, MonoNs),
) -> impl Iterator<Item = &'a Blocked> + 'a {
    h.blocked
        .iter()
        .rev()
        .take_while(move |b| b.on > win.0)
        .filter(move |b| b.pid == pid && overlap((b.off, b.on), win) > 0)
}

/// The requests of `disk` overlapping `win` (in flight or completed in it).
fn ios_in(h: &History, disk: DiskDev, win: (MonoNs, MonoNs)) -> Vec<&Io> {
    let Some(d) = h.disks.get(&disk) else {
        return Vec::new();
    };
    d.ios
        .iter()
        .rev()
        .take_while(|io| io.completed.is_none_or(|c| c > win.0) || io.start() >= win.0)
        .filter(|io| io.start() < win.1 && io.end_or(win.1) > win.0)
        .collect()
}

/// What a layer is, as evidence names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKindName {
    #[default]
    Disk,
    Loop,
    DeviceMapper,
    Md,
}

fn kind_name(k: &LayerKind) -> LayerKindName {
    match k {
        LayerKind::Disk => LayerKindName::Disk,
        LayerKind::Loop { .. } => LayerKindName::Loop,
        LayerKind::DeviceMapper => LayerKindName::DeviceMapper,
        LayerKind::Md => LayerKindName::Md,
    }
}

/// Whose is a request, as seen from the calling thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Whose {
    Thread,
    Process,
    Journal,
    Unknown,
    /// A layer above on the call's own path relaying its I/O here (a loop device writing
    /// its backing file): that layer's traffic, not a separate party.
    FromAbove,
    Other,
}

fn whose(io: &Io, call: &Span) -> Whose {
    whose_in(io, call, &[], false)
}

/// `above`: names of the layers above this one on the call's path; `under_loop`: a loop
/// device is above (its worker's relayed I/O carries no other owner).
fn whose_in(io: &Io, call: &Span, above: &[String], under_loop: bool) -> Whose {
    let c = &io.charged;
    match c.kind {
        PartyKind::Layer if above.iter().any(|a| **a == *c.comm) => Whose::FromAbove,
        PartyKind::Kernel if under_loop => Whose::FromAbove,
        PartyKind::Journal => Whose::Journal,
        PartyKind::Unknown => Whose::Unknown,
        PartyKind::Task if c.pid == call.pid && c.tid == call.tid => Whose::Thread,
        PartyKind::Task | PartyKind::Process if c.pid == call.pid => Whose::Process,
        _ if io.pid == call.pid && io.tid == call.tid && c.kind != PartyKind::Task => Whose::Thread,
        _ => Whose::Other,
    }
}

/// Whether one disk's requests over `win` are all known: its history reaches back to
/// `win`'s start, no records were lost in it, no completions went unseen in it (nor
/// stale requests were found whose completions did), and, when a running call is looked
/// at, no request is in flight that the probes did not follow. Every
/// window a rule reads a disk over (the call's, its journal commit's, the look-back before
/// a commit) is judged by this one test.
fn disk_known(h: &History, disk: DiskDev, win: (MonoNs, MonoNs)) -> bool {
    disk_known_but_unfollowed(h, disk, win) && h.disks.get(&disk).is_some_and(|d| d.unfollowed == 0)
}

/// [`disk_known`] but for the requests in flight now that the probes did not follow.
fn disk_known_but_unfollowed(h: &History, disk: DiskDev, win: (MonoNs, MonoNs)) -> bool {
    h.disks.get(&disk).is_some_and(|d| {
        d.complete_from() <= win.0
            && d.unseen_during(win.0, win.1) == 0
            && d.stale_during(win.0, win.1) == 0
    }) && h.lost_during(win.0, win.1).is_empty()
}

/// The requests of `disk` the kernel summed over the parts of `win` before and after
/// `call` (none that overlapped a traced call is summed), (bytes, requests).
fn summed_outside(h: &History, disk: DiskDev, win: (MonoNs, MonoNs), call: &Span) -> (u64, u64) {
    [(win.0, win.1.min(call.start)), (win.0.max(call.end), win.1)]
        .into_iter()
        .filter(|part| part.0 < part.1)
        .map(|part| summed_in(h, disk, part))
        .fold((0, 0), |(b, r), (b2, r2)| (b + b2, r + r2))
}

/// What one disk did over `win`.
pub fn layer_evidence(
    h: &History,
    layer: &Layer,
    call: &Span,
    win: (MonoNs, MonoNs),
) -> (LayerEvidence, Vec<Contender>) {
    let above: Vec<String> = call
        .disks
        .layers
        .iter()
        .filter(|l| l.depth < layer.depth)
        .map(|l| l.name.clone())
        .collect();
    let under_loop = call
        .disks
        .layers
        .iter()
        .any(|l| l.depth < layer.depth && matches!(l.kind, LayerKind::Loop { .. }));
    let mut cmap: HashMap<(u32, u32, String), Contender> = HashMap::new();
    let disk = layer.disk;
    let hist = h.disks.get(&disk);
    let mut le = LayerEvidence {
        disk: layer.name.clone(),
        dev: disk.to_string(),
        depth: layer.depth,
        kind: kind_name(&layer.kind),
        partition: layer.part_name.clone(),
        watched: hist.is_some(),
        complete: disk_known(h, disk, win),
        unfollowed: hist.map_or(0, |d| u32::try_from(d.unfollowed).unwrap_or(u32::MAX)),
        ..Default::default()
    };
    le.complete_but_unfollowed = le.unfollowed > 0 && disk_known_but_unfollowed(h, disk, win);
    let ios = ios_in(h, disk, win);
    le.no_io = ios.is_empty();
    for io in &ios {
        if io.op == Op::Flush && io.bytes == 0 {
            // The block layer's own cache flushes: everybody's, counted apart.
            le.flushes += 1;
            continue;
        }
        if io.status != 0 {
            le.errors += 1;
            if crate::pipeline::status_errno(io.status) == -110 {
                le.timeouts += 1;
            }
        }
        le.requeues += io.requeues as u32;
        // A discard's length is not data moved: freeing a 256 MiB file on a `discard` mount
        // sends discards of that size in a few requests (a test's own thread was named
        // with "268 MB of others' I/O" over fio's 90 MB of writes). They count as requests,
        // their length apart.
        let discard = matches!(io.op, Op::Discard | Op::SecureErase);
        let bytes = if discard { 0 } else { io.bytes as u64 };
        match whose_in(io, call, &above, under_loop) {
            Whose::FromAbove => le.bytes_from_above += bytes,
            Whose::Thread => {
                le.bytes_thread += bytes;
                le.requests_thread += 1;
            }
            Whose::Journal => le.bytes_journal += bytes,
            Whose::Unknown => {
                le.bytes_unknown += bytes;
                le.requests_unknown += 1;
                if io.late {
                    le.bytes_late += bytes;
                    le.requests_late += 1;
                }
            }
            w @ (Whose::Process | Whose::Other) => {
                le.bytes_others += bytes;
                le.requests_others += 1;
                if discard {
                    le.discards_others += 1;
                    le.bytes_discarded += io.bytes as u64;
                }
                if w == Whose::Process {
                    le.bytes_process += bytes;
                }
                if let Some(part) = &layer.part
                    && !on_partition(io, part)
                {
                    le.bytes_other_partitions += bytes;
                }
                {
                    let c = &io.charged;
                    let key = (c.pid, c.tid, c.comm.to_string());
                    let e = cmap.entry(key).or_insert_with(|| Contender {
                        pid: c.pid,
                        tid: c.tid,
                        comm: c.comm.to_string(),
                        process: None,
                        cgroup: c.cgroup.as_deref().map(str::to_string),
                        blkio_cgroup: None,
                        memory_cgroup: None,
                        kind: match c.kind {
                            PartyKind::Task => ContenderKind::Task,
                            PartyKind::Cgroup => ContenderKind::Cgroup,
                            PartyKind::Process => ContenderKind::Relayed,
                            PartyKind::Layer => ContenderKind::Device,
                            _ => ContenderKind::Kernel,
                        },
                        same_process: w == Whose::Process,
                        bytes: 0,
                        requests: 0,
                        discards: 0,
                        bytes_discarded: 0,
                        disk: layer.name.clone(),
                    });
                    // Its cgroup from any of its requests that knew it (a request charged
                    // through the page it wrote may not: seen in the 6.1 guest, where a
                    // backup dd's first request left its cgroup unnamed for the call).
                    if e.cgroup.is_none() {
                        e.cgroup = c.cgroup.as_deref().map(str::to_string);
                    }
                    e.bytes += bytes;
                    e.requests += 1;
                    if discard {
                        e.discards += 1;
                        e.bytes_discarded += io.bytes as u64;
                    }
                }
            }
        }
    }
    // Completions in the window, their latencies.
    let mut done: Vec<&&Io> = ios
        .iter()
        .filter(|io| io.completed.is_some_and(|c| c >= win.0 && c <= win.1))
        .collect();
    done.sort_by_key(|io| io.completed);
    le.completions = done.len() as u32;
    le.latency_ms = percentiles(
        done.iter()
            .filter_map(|io| Some(ms(io.completed?.since(io.issued?))))
            .collect(),
    );
    // The usual latency: up to 1000 requests completed before the window, those sent one
    // by one first, then those the kernel summed (each at its bucket's middle).
    if let Some(d) = hist {
        let mut before: Vec<f64> = d
            .ios
            .iter()
            .rev()
            .filter(|io| io.completed.is_some_and(|c| c < win.0))
            .take(1000)
            .filter_map(|io| Some(ms(io.completed?.since(io.issued?))))
            .collect();
        for s in d.summed.iter().rev().filter(|s| s.to <= win.0) {
            let room = 1000u64.saturating_sub(before.len() as u64);
            if room == 0 {
                break;
            }
            // More than there is room for: each bucket in proportion.
            let total: u64 = s.hist.iter().sum();
            for (k, n) in s.hist.iter().enumerate() {
                let take = if total <= room { *n } else { n * room / total };
                let v = ms(crate::history::summed_value_ns(k));
                before.extend(std::iter::repeat_n(v, take as usize));
            }
        }
        if before.len() >= 5 {
            le.usual_p50_ms = percentiles(before).map(|p| p.p50);
        }
    }
    // In flight (issued to the device, not completed) and the longest stretch without a
    // completion: a sweep. Requests only queued in the block layer are not at the device,
    // and one that never was (an empty flush the flush machinery completed) says nothing
    // about it.
    let mut edges: Vec<(MonoNs, i32)> = Vec::new();
    let mut level = 0i32;
    for io in &ios {
        let Some(s) = io.issued else {
            continue;
        };
        if s <= win.0 {
            level += 1;
        } else {
            edges.push((s, 1));
        }
        if let Some(c) = io.completed
            && c <= win.1
        {
            edges.push((c, -1));
        }
    }
    // Completions before starts at the same instant.
    edges.sort_by_key(|(t, d)| (*t, *d));
    let mut seg_start = (level > 0).then_some(win.0);
    let mut gap = 0u64;
    let mut gap_start = None;
    le.inflight_max = level.max(0) as u32;
    for (t, d) in edges {
        if d < 0 {
            if let Some(s) = seg_start
                && t.since(s) > gap
            {
                gap = t.since(s);
                gap_start = Some(s);
            }
            level -= 1;
            seg_start = (level > 0).then_some(t);
        } else {
            if level <= 0 {
                seg_start = Some(t);
            }
            level += 1;
        }
        le.inflight_max = le.inflight_max.max(level.max(0) as u32);
    }
    if let Some(s) = seg_start
        && level > 0
        && win.1.since(s) > gap
    {
        gap = win.1.since(s);
        gap_start = Some(s);
    }
    le.inflight_at_end = level.max(0) as u32;
    le.longest_completion_gap_ms = ms(gap);
    le.gap_start_ns = gap_start.map(|s| s.0);
    let mut contenders: Vec<Contender> = cmap.into_values().collect();
    // What the kernel summed in the part of the window before or after the call (the
    // look-back before a commit, a commit that began before the call): others' all the
    // same, one contender named as such.
    let summed = summed_outside(h, disk, win, call);
    if summed.1 > 0 {
        let requests = summed.1.min(u32::MAX as u64) as u32;
        le.bytes_summed = summed.0;
        le.requests_summed = requests;
        le.bytes_others += summed.0;
        le.requests_others = le.requests_others.saturating_add(requests);
        contenders.push(Contender {
            pid: 0,
            tid: 0,
            comm: SUMMED_WRITERS.into(),
            process: None,
            cgroup: None,
            blkio_cgroup: None,
            memory_cgroup: None,
            kind: ContenderKind::Kernel,
            same_process: false,
            bytes: summed.0,
            requests,
            discards: 0,
            bytes_discarded: 0,
            disk: layer.name.clone(),
        });
    }
    contenders.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.requests.cmp(&a.requests)));
    contenders.truncate(5);
    (le, contenders)
}

/// A loop device completes nothing while its worker waits on the disk under its backing
/// file (a flush of the backing file writing back everything a flood left there), or while
/// its buffered writes to that file sleep in balance_dirty_pages: that is not the layer
/// stopping but the layer under it busy (a stop there is found at that layer). Measures,
/// for each loop layer's longest gap, the time the disk under it had requests in flight
/// and the throttling pauses on its bdi.
fn backing_held(h: &History, path: &[Layer], layers: &mut [LayerEvidence]) {
    for i in 0..layers.len() {
        let l = &layers[i];
        let (Some(gs), true) = (l.gap_start_ns, l.kind == LayerKindName::Loop) else {
            continue;
        };
        let Some(bi) = layers.iter().position(|b| b.depth == l.depth + 1) else {
            continue;
        };
        let (below_dev, below_disk) = (layers[bi].dev.clone(), path.get(bi).map(|p| p.disk));
        let gap = (
            MonoNs(gs),
            MonoNs(gs + (l.longest_completion_gap_ms * 1e6) as u64),
        );
        let busy: Vec<(MonoNs, MonoNs)> = below_disk
            .map(|d| {
                ios_in(h, d, gap)
                    .iter()
                    .map(|io| (io.start(), io.end_or(gap.1)))
                    .collect()
            })
            .unwrap_or_default();
        let mut longest: Option<(u64, &str)> = None;
        let throttled: Vec<(MonoNs, MonoNs)> = h
            .throttles
            .iter()
            .filter(|t| t.bdi == below_dev && t.pause_ms > 0)
            .map(|t| {
                let iv = (
                    t.at,
                    MonoNs(
                        t.at.0
                            .saturating_add(t.pause_ms.min(MAX_PAUSE_MS) as u64 * 1_000_000),
                    ),
                );
                let o = overlap(iv, gap);
                if o > 0 && longest.is_none_or(|(m, _)| o > m) {
                    longest = Some((o, t.comm.as_str()));
                }
                iv
            })
            .collect();
        let busy_ns = measure(&union(busy.clone()), gap);
        let throttled_ns = measure(&union(throttled.clone()), gap);
        let held_ns = measure(&union([busy, throttled].concat()), gap);
        let who = longest.map(|(_, c)| c.to_string());
        let l = &mut layers[i];
        l.backing_busy_ms = ms(busy_ns);
        l.backing_throttled_ms = ms(throttled_ns);
        l.backing_throttled = who.filter(|_| throttled_ns > 0);
        l.backing_held_ms = ms(held_ns);
    }
}

/// Other threads of the process that can hold a safepoint up, reclaiming memory while the
/// call's thread was held after its return (`after`): a pause that lasts because the VM
/// thread (or a thread still to reach the safepoint) has to free memory first is memory
/// reclaim, the pause its mechanism.
fn others_reclaim(
    h: &History,
    call: &Span,
    after: (MonoNs, MonoNs),
    enrich: &mut dyn Enricher,
) -> Option<OthersReclaim> {
    let mut by_tid: HashMap<u32, Vec<(MonoNs, MonoNs)>> = HashMap::new();
    let mut memcg = false;
    for r in h
        .reclaims
        .iter()
        .rev()
        .take_while(|r| r.end > after.0)
        .filter(|r| r.pid == call.pid && r.tid != call.tid && r.start < call.end)
    {
        by_tid.entry(r.tid).or_default().push((r.start, r.end));
        memcg |= r.memcg;
    }
    // Their sleeps whose kernel stack is in reclaim count too (a reclaim still under
    // way when the pause ended has no end record yet).
    for b in
        blocked_in(h, call.pid, after).filter(|b| b.tid != call.tid && site_of(b) == Site::Reclaim)
    {
        by_tid.entry(b.tid).or_default().push((b.off, b.on));
        memcg |= b.stack.iter().any(|f| f.contains("mem_cgroup"));
    }
    // Only threads that can hold the safepoint up (a thread reclaiming inside a syscall
    // is in native: the pause does not wait for it).
    by_tid.retain(|tid, _| {
        let spans: Vec<&Blocked> = blocked_in(h, call.pid, after)
            .filter(|b| b.tid == *tid)
            .collect();
        let name = spans
            .first()
            .map(|b| b.thread.clone())
            .or_else(|| enrich.thread_name(call.pid, *tid))
            .unwrap_or_default();
        let in_syscall = !spans.is_empty() && spans.iter().all(|b| b.syscall.is_some());
        can_hold_safepoint(&name, in_syscall)
    });
    if by_tid.is_empty() {
        return None;
    }
    let all = union(by_tid.values().flatten().copied().collect());
    let mut threads: Vec<(u64, u32)> = by_tid
        .iter()
        .map(|(tid, v)| (measure(&union(v.clone()), after), *tid))
        .filter(|(ns, _)| *ns > 0)
        .collect();
    threads.sort_by(|a, b| b.cmp(a));
    let name = |tid: u32| {
        blocked_in(h, call.pid, after)
            .find(|b| b.tid == tid)
            .map(|b| format!("{} ({tid})", b.thread))
            .unwrap_or_else(|| format!("thread {tid}"))
    };
    Some(OthersReclaim {
        ms: ms(measure(&all, after)),
        threads: threads
            .iter()
            .take(3)
            .map(|&(ns, tid)| format!("{} {:.0} ms", name(tid), ms(ns)))
            .collect(),
        count: threads.len() as u32,
        memcg,
    })
}

/// What held a JVM pause of `wait` ns in `after`: the other thread that can hold a
/// safepoint up longest in D through at least half of it, the VM thread first (it runs the
/// safepoint's operation).
fn pause_holder(
    h: &History,
    call: &Span,
    after: (MonoNs, MonoNs),
    wait: u64,
) -> Option<PauseHolder> {
    let mut d_by_tid: HashMap<u32, (u64, &Blocked)> = HashMap::new();
    for b in blocked_in(h, call.pid, after).filter(|b| {
        b.tid != call.tid
            && b.state == SchedState::DiskSleep
            && can_hold_safepoint(&b.thread, b.syscall.is_some())
    }) {
        let d = overlap(b.sleep(), after);
        let e = d_by_tid.entry(b.tid).or_insert((0, b));
        e.0 += d;
        if d > overlap(e.1.sleep(), after) {
            e.1 = b;
        }
    }
    let holder = d_by_tid
        .values()
        .filter(|(d, _)| d * 2 >= wait)
        .max_by_key(|(d, b)| (b.thread == "VM Thread", *d));
    holder.map(|(d, b)| PauseHolder {
        thread: format!("{} ({})", b.thread, b.tid),
        d_ms: ms(*d),
        syscall: b.syscall.clone(),
        wait_frame: wait_frame(&b.stack),
        site: site_of(b).name(),
    })
}

/// A contender's process name (when not its thread's) and v1 blkio and memory cgroups.
fn enrich_contenders(cs: &mut [Contender], enrich: &mut dyn Enricher) {
    for c in cs {
        if c.kind == ContenderKind::Task && c.pid != 0 && c.pid != c.tid {
            c.process = enrich.thread_name(c.pid, c.pid).filter(|p| *p != c.comm);
        }
        if c.kind == ContenderKind::Task && c.pid != 0 {
            let pc = enrich.process_cgroups(c.pid);
            c.blkio_cgroup = pc.blkio;
            c.memory_cgroup = pc.memory;
        }
    }
}

/// Gathers everything about `call`.
/// When requests were in flight on the file's own disk over a call, as unions of
/// intervals: what a D sleep waiting for I/O is charged to.
struct IoSpans {
    /// The calling thread's own requests at the device (issued to completion).
    own_service: Vec<(MonoNs, MonoNs)>,
    /// Its own requests in the block layer (from their start to completion).
    own_any: Vec<(MonoNs, MonoNs)>,
    /// Its own in the block layer while the device had a request issued.
    own_at_device: Vec<(MonoNs, MonoNs)>,
    /// Anyone's requests in the block layer.
    all: Vec<(MonoNs, MonoNs)>,
    /// Anyone's at the device: a request queued while it had none was held above the
    /// device, not behind it. A request not followed from its start has the block layer's
    /// issue stamp; one without any counts from its start.
    issued: Vec<(MonoNs, MonoNs)>,
}

impl IoSpans {
    fn of(ios: &[&Io], call: &Span) -> IoSpans {
        let spans = |f: &dyn Fn(&Io) -> Option<MonoNs>, own: bool| {
            union(
                ios.iter()
                    .filter(|io| !own || whose(io, call) == Whose::Thread)
                    .filter_map(|io| Some((f(io)?, io.end_or(call.end))))
                    .collect(),
            )
        };
        let own_any = spans(&|io| Some(io.start()), true);
        let issued = spans(&|io| Some(io.issued.unwrap_or(io.start())), false);
        IoSpans {
            own_service: spans(&|io| io.issued, true),
            own_at_device: crate::history::intersect(&own_any, &issued),
            own_any,
            all: spans(&|io| Some(io.start()), false),
            issued,
        }
    }

    /// A D sleep's part `sw` at `site` (waiting for writeback, in the block layer, or
    /// another D sleep), split by what was in flight: its own requests at the device; its
    /// own queued behind requests at the device, or others' there; its own queued while the
    /// device had none (held above it: seen in CI with the worker that dispatches them
    /// starved by a real-time hog, 958 ms queued for a 0.44 ms write); or nothing (held
    /// above the block layer).
    fn split(&self, site: Site, sw: (MonoNs, MonoNs)) -> Vec<(Stage, u64)> {
        let total = sw.1.since(sw.0);
        let rest = if site == Site::OtherD {
            Stage::OtherD
        } else {
            Stage::WritebackWait
        };
        if site == Site::OtherD && measure(&self.all, sw) == 0 {
            return vec![(Stage::OtherD, total)];
        }
        let service = measure(&self.own_service, sw);
        let at_device = measure(&self.own_at_device, sw);
        let own_q = at_device.saturating_sub(service);
        let own_held = measure(&self.own_any, sw).saturating_sub(service + own_q);
        let others = measure(&self.issued, sw).saturating_sub(at_device);
        vec![
            (Stage::DeviceService, service),
            (Stage::DeviceQueue, own_q + others),
            (Stage::QueueHeld, own_held),
            (
                rest,
                total.saturating_sub(service + own_q + own_held + others),
            ),
        ]
    }

    /// The stage of a wait for writeback or in the block layer still going on over `w`.
    fn running_stage(&self, w: (MonoNs, MonoNs)) -> Stage {
        if measure(&self.issued, w) > 0 {
            Stage::DeviceQueue
        } else if measure(&self.own_any, w) > 0 {
            Stage::QueueHeld
        } else {
            Stage::WritebackWait
        }
    }
}

pub fn gather<'a>(call: &Span, h: &'a History, enrich: &mut dyn Enricher) -> Gathered<'a> {
    let win = (call.start, call.end);
    // What the caller measured may begin before the entry: a preemption right before it.
    let vstart = MonoNs(call.start.0.saturating_sub(call.before_ns));
    let dur = call.end.since(vstart).max(1);
    let syscall_end = call.syscall_end.unwrap_or(call.end);
    let mut ev = Evidence {
        dev: call.file_dev.map(|d| d.to_string()),
        device: call.device.clone(),
        disk: call.disks.top().map(|l| l.name.clone()),
        ..Default::default()
    };

    // 0. The host: every CPU's heartbeat silent at once.
    let frozen = h.host_frozen(win);
    if let Some(longest) = frozen.iter().max_by_key(|(a, b)| b.since(*a)) {
        ev.host_freeze = Some(HostFreezeEvidence {
            frozen_ms: ms(measure(&frozen, win)),
            longest_ms: ms(longest.1.since(longest.0)),
            start_ns: longest.0.0,
            cpus: h.host_cpus.unwrap_or(0),
        });
    }

    // 1. Coverage.
    if call.start_bound {
        ev.incomplete
            .push("the call was already running when tracing began: its start is a bound".into());
    }
    let lost = h.lost_during(call.start, call.end);
    if !lost.is_empty() {
        ev.incomplete.push(format!(
            "records were lost in {} window(s) during the call (ring buffer full, or shed)",
            lost.len()
        ));
    }
    if h.blocked_lost_until.is_some_and(|t| t >= call.start) {
        ev.incomplete
            .push("the off-CPU history before part of the call was shed (a flood)".into());
    }
    if call.switch_unseen {
        ev.incomplete.push(
            "the thread came back onto a CPU without the kernel running the scheduler probe: one of its off-CPU intervals in the call is missing (time no signal covers)"
                .into(),
        );
    }

    // 2. The disks.
    let mut by_layer: Vec<Vec<Contender>> = Vec::new();
    for l in &call.disks.layers {
        let (le, mut cs) = layer_evidence(h, l, call, win);
        enrich_contenders(&mut cs, enrich);
        by_layer.push(cs);
        // `le.complete` already says no (see `disk_known`); these say why. Lost records
        // are said once above: which disk's they were is not known, so none is complete.
        let hist = h.disks.get(&l.disk);
        let reaches_back = hist.is_some_and(|d| d.complete_from() <= win.0);
        let unseen = hist.map_or(0, |d| d.unseen_during(call.start, call.end));
        if unseen > 0 {
            ev.incomplete.push(format!(
                "{}: completions the probes did not see (the block layer counted more) in {unseen} window(s) during the call",
                le.disk
            ));
        }
        let stale = hist.map_or(0, |d| d.stale_during(call.start, call.end));
        if stale > 0 {
            ev.incomplete.push(format!(
                "{}: completions the probes did not see (requests they held in flight that the disk no longer had, found twice a second apart) in {stale} window(s) during the call",
                le.disk
            ));
        }
        let unfollowed = hist.map_or(0, |d| d.unfollowed);
        if unfollowed > 0 {
            ev.incomplete.push(format!(
                "{}: {unfollowed} request(s) in flight now that the probes did not follow (issued before tracing began, seen only as they complete; or, with --requests around-calls, while no watched call was in flight)",
                le.disk
            ));
        }
        if !le.watched {
            ev.incomplete.push(format!(
                "{} was not watched: its requests are unknown",
                le.disk
            ));
        } else if !reaches_back {
            ev.incomplete.push(format!(
                "{}'s request history does not reach back to the call's start",
                le.disk
            ));
        }
        ev.layers.push(le);
    }
    backing_held(h, &call.disks.layers, &mut ev.layers);
    if let Some(top) = ev.layers.first() {
        ev.inflight_max = top.inflight_max;
        ev.completions = top.completions;
        ev.longest_completion_gap_ms = top.longest_completion_gap_ms;
        ev.latency_ms = top.latency_ms.clone();
        ev.bytes_target = top.bytes_thread;
        ev.bytes_others = top.bytes_others;
        ev.requests_target = top.requests_thread;
        ev.requests_others = top.requests_others;
    }
    let contenders = by_layer.first().cloned().unwrap_or_default();

    // 3. The calling thread's own requests, in flight over the window, and everyone's on
    // the file's own disk.
    let top_ios = call
        .disks
        .top()
        .map(|l| ios_in(h, l.disk, win))
        .unwrap_or_default();
    let spans = IoSpans::of(&top_ios, call);
    let own_any = &spans.own_any;
    let own_inflight_ns = measure(own_any, win);
    // While it waited for a journal commit: when the journal's requests were in flight
    // together with others' (the commit's writes queued behind them), that part of the
    // wait is the device's queue, the deeper cause.
    let journal_io = union(
        top_ios
            .iter()
            .filter(|io| whose(io, call) == Whose::Journal)
            .map(|io| (io.start(), io.end_or(call.end)))
            .collect(),
    );
    // Others' data, not the block layer's own empty flushes (which the flush machinery
    // issues from a kernel thread for the commit itself).
    let others_io = union(
        top_ios
            .iter()
            .filter(|io| {
                matches!(whose(io, call), Whose::Other | Whose::Process)
                    && io.bytes > 0
                    && io.charged.kind != PartyKind::Kernel
            })
            .map(|io| (io.start(), io.end_or(call.end)))
            .collect(),
    );
    let journal_behind_others = crate::history::intersect(&journal_io, &others_io);

    // 4. The calling thread's time, by stage.
    let mut stages: BTreeMap<Stage, u64> = BTreeMap::new();
    let mut waits: Vec<Wait<'a>> = Vec::new();
    let mut by_site: BTreeMap<Site, u64> = BTreeMap::new();
    let mut mine: Vec<&Blocked> = blocked_in(h, call.pid, (vstart, call.end))
        .filter(|b| b.tid == call.tid)
        .collect();
    mine.sort_by_key(|b| b.off);
    let before = (vstart, call.start);
    let in_call = (call.start, syscall_end);
    let after = (syscall_end, call.end);
    let (mut d_ns, mut s_ns, mut runq_ns) = (0u64, 0u64, 0u64);
    let mut after_sleep = 0u64;
    let mut after_runq = 0u64;
    let mut before_runq = 0u64;
    // After-return sleep by who woke it: a thread of the process doing its own work (a
    // queue handing it the next job), or one of the JVM's own threads.
    let mut after_own_ns = 0u64;
    let mut after_by_vm = false;
    // When the thread queued writeback for low free space during the call (writeback_queue
    // with that reason): the wait that follows is that writeback's.
    let low_queued: Vec<&LowSpaceQueued> = h
        .low_space
        .iter()
        .rev()
        .take_while(|q| q.at >= call.start)
        .filter(|q| q.tid == call.tid && q.at <= call.end)
        .collect();
    if let Some(q) = low_queued.iter().max_by_key(|q| q.nr_pages) {
        ev.low_space_writeback = Some(LowSpaceEvidence {
            dev: q.dev.to_string(),
            nr_pages: q.nr_pages,
            queued: low_queued.len() as u32,
            at_ms: ms(q.at.since(call.start)),
        });
    }
    // Time asleep waiting for the journal, and the part of it charged to the device queue.
    let (mut journal_ns, mut journal_queue_ns) = (0u64, 0u64);
    let mut longest: Option<(&Blocked, u64)> = None;
    for b in &mine {
        // Before the entry: the preemption the caller may have counted.
        let rq_b = overlap(b.runq(), before);
        before_runq += rq_b;
        runq_ns += rq_b;
        add(&mut stages, Stage::RunQueue, rq_b);
        let rq = overlap(b.runq(), in_call);
        let sl = overlap(b.sleep(), in_call);
        runq_ns += rq;
        add(&mut stages, Stage::RunQueue, rq);
        // After the return.
        let rq_a = overlap(b.runq(), after);
        let sl_a = overlap(b.sleep(), after);
        after_runq += rq_a;
        after_sleep += sl_a;
        runq_ns += rq_a;
        add(&mut stages, Stage::RunQueue, rq_a);
        add(&mut stages, Stage::AfterReturn, sl_a);
        if sl_a > 0 {
            match &b.waker {
                Some(WakerInfo::Task { pid, thread, .. }) if *pid == call.pid => {
                    if is_jvm_internal(thread) {
                        after_by_vm = true;
                    } else {
                        after_own_ns += sl_a;
                    }
                }
                _ => {}
            }
        }
        if b.state == SchedState::DiskSleep {
            d_ns += sl + sl_a;
        } else if b.state != SchedState::Runnable {
            s_ns += sl + sl_a;
        }
        if sl == 0 {
            continue;
        }
        let site = low_space_site(site_of(b), b.sleep().0, &low_queued);
        *by_site.entry(site).or_default() += sl;
        if b.state == SchedState::DiskSleep && longest.is_none_or(|(_, l)| sl > l) {
            longest = Some((b, sl));
        }
        waits.push(Wait { b, site, ns: sl });
        let sw = b.sleep();
        let sw = (sw.0.max(in_call.0), sw.1.min(in_call.1));
        match site {
            Site::Journal => {
                let behind = measure(&journal_behind_others, sw).min(sl);
                add(&mut stages, Stage::DeviceQueue, behind);
                add(&mut stages, Stage::JournalWait, sl - behind);
                journal_ns += sl;
                journal_queue_ns += behind;
            }
            Site::DirtyThrottle => add(&mut stages, Stage::DirtyThrottle, sl),
            Site::Reclaim => add(&mut stages, Stage::Reclaim, sl),
            Site::LowSpace => add(&mut stages, Stage::LowSpace, sl),
            Site::Freeze | Site::Lock => add(&mut stages, Stage::FsLock, sl),
            Site::Sleep => add(&mut stages, Stage::Sleep, sl),
            Site::OtherD | Site::Writeback | Site::BlockQueue => {
                for (stage, ns) in spans.split(site, sw) {
                    add(&mut stages, stage, ns);
                }
            }
        }
    }
    // The interval a running call's thread is in now.
    if let Some(o) = &call.off_now {
        let b = Blocked {
            pid: call.pid,
            tid: call.tid,
            thread: call.thread.clone(),
            state: o.state,
            off: o.off.max(call.start),
            on: call.end,
            wake: o.wake,
            syscall: None,
            waker: None,
            stack: o.stack.clone(),
            after_call: false,
            seeded: false,
            open: true,
        };
        let site = site_of(&b);
        let sl = overlap(b.sleep(), in_call);
        let rq = overlap(b.runq(), in_call);
        runq_ns += rq;
        add(&mut stages, Stage::RunQueue, rq);
        if o.state == SchedState::DiskSleep {
            d_ns += sl;
        } else if o.state != SchedState::Runnable {
            s_ns += sl;
        }
        *by_site.entry(site).or_default() += sl;
        if site == Site::Journal {
            journal_ns += sl;
        }
        let stage = match site {
            Site::Journal => Stage::JournalWait,
            Site::DirtyThrottle => Stage::DirtyThrottle,
            Site::Reclaim => Stage::Reclaim,
            Site::LowSpace => Stage::LowSpace,
            Site::Freeze | Site::Lock => Stage::FsLock,
            Site::Sleep => Stage::Sleep,
            Site::Writeback | Site::BlockQueue => spans.running_stage((b.off, b.on)),
            Site::OtherD => Stage::OtherD,
        };
        add(&mut stages, stage, sl);
        if ev.stack.is_empty() && !o.stack.is_empty() {
            ev.stack = o.stack.clone();
        }
    }
    // The kernel's measurements of the rest.
    let mut on_cpu = 0;
    if let Some(a) = &call.accounting {
        // No part of a call is longer than the call (a corrupt record could say so).
        let a = crate::decode::Accounting {
            on_cpu_ns: a.on_cpu_ns.min(dur),
            short_d_ns: a.short_d_ns.min(dur),
            short_s_ns: a.short_s_ns.min(dur),
            short_runq_ns: a.short_runq_ns.min(dur),
        };
        on_cpu = a.on_cpu_ns;
        add(&mut stages, Stage::OnCpu, a.on_cpu_ns);
        // Short D waits are not placed in time: charge them to its own I/O in the share of
        // the call that it had I/O in flight.
        let io_share = own_inflight_ns as f64 / dur as f64;
        let dev = (a.short_d_ns as f64 * io_share.min(1.0)) as u64;
        add(&mut stages, Stage::ShortDeviceWaits, dev);
        add(&mut stages, Stage::ShortWaits, a.short_d_ns - dev);
        add(&mut stages, Stage::ShortSleeps, a.short_s_ns);
        add(&mut stages, Stage::RunQueue, a.short_runq_ns);
        d_ns += a.short_d_ns;
        s_ns += a.short_s_ns;
        runq_ns += a.short_runq_ns;
    }
    let counted: u64 = stages.values().fold(0, |a, b| a.saturating_add(*b));
    if counted < dur {
        add(&mut stages, Stage::Unaccounted, dur - counted);
    } else if counted > dur {
        // Kernel and interval clocks differ by microseconds: trim the largest stage.
        let excess = counted - dur;
        if let Some((_, v)) = stages.iter_mut().max_by_key(|(_, v)| **v) {
            *v = v.saturating_sub(excess);
        }
    }
    ev.on_cpu_ms = ms(on_cpu);
    ev.d_state_ms = ms(d_ns);
    ev.s_state_ms = ms(s_ns);
    ev.runq_ms = ms(runq_ns);
    ev.unaccounted_ms = ms(stages.get(&Stage::Unaccounted).copied().unwrap_or(0));
    if let Some((b, _)) = longest {
        if !b.stack.is_empty() {
            ev.stack = b.stack.clone();
        }
        ev.waker = b.waker.as_ref().map(|w| w.label());
    }
    ev.wait_frame = wait_frame(&ev.stack);

    // 4b. Memory reclaim by the thread itself: its intervals are charged to the Reclaim
    //     stage, whatever the thread's state (reclaim runs on CPU, and sleeps on writeback).
    let reclaims: Vec<&crate::history::Reclaim> = h
        .reclaims
        .iter()
        .rev()
        .take_while(|r| r.end > call.start)
        .filter(|r| r.tid == call.tid && r.start < call.end)
        .collect();
    if !reclaims.is_empty() {
        let ru = union(reclaims.iter().map(|r| (r.start, r.end)).collect());
        let rec_ns = measure(&ru, in_call);
        ev.reclaim_ms = ms(rec_ns);
        ev.memcg_reclaim = Some(reclaims.iter().any(|r| r.memcg));
        // Sleeps inside reclaim already classified by their stack stay where they are if
        // they are Reclaim; the rest of the reclaim time comes out of the other stages,
        // CPU first.
        let already = stages.get(&Stage::Reclaim).copied().unwrap_or(0);
        let mut need = rec_ns.saturating_sub(already);
        for from in [
            Stage::OnCpu,
            Stage::ShortWaits,
            Stage::ShortDeviceWaits,
            Stage::Unaccounted,
            Stage::WritebackWait,
            Stage::QueueHeld,
            Stage::DeviceService,
            Stage::DeviceQueue,
            Stage::OtherD,
        ] {
            if need == 0 {
                break;
            }
            if let Some(v) = stages.get_mut(&from) {
                let take = (*v).min(need);
                *v -= take;
                need -= take;
                add(&mut stages, Stage::Reclaim, take);
            }
        }
        stages.retain(|_, v| *v > 0);
    }
    if ev.reclaim_ms > 0.0 || stages.contains_key(&Stage::Reclaim) {
        ev.mem_limit = enrich.mem_limit(call.pid);
    }

    // 4c. An I/O limit on a disk under the file, for the thread's cgroup.
    for l in &call.disks.layers {
        let Some(limit) = enrich.io_limit(call.pid, l.disk) else {
            continue;
        };
        let secs = (win.1.since(win.0).max(1)) as f64 / 1e9;
        let (mut wb, mut wr, mut rb, mut rr) = (0u64, 0u64, 0u64, 0u64);
        for io in ios_in(h, l.disk, win) {
            let mine = io.blkcg.as_deref().is_some_and(|c| {
                c == limit.own_cgroup || c.starts_with(&format!("{}/", limit.own_cgroup))
            });
            if !mine || io.completed.is_none_or(|c| c > win.1) {
                continue;
            }
            match io.op {
                Op::Write => {
                    wb += io.bytes as u64;
                    wr += 1;
                }
                Op::Read => {
                    rb += io.bytes as u64;
                    rr += 1;
                }
                _ => {}
            }
        }
        let share = |got: u64, lim: Option<u64>| {
            lim.filter(|l| *l > 0)
                .map_or(0.0, |l| got as f64 / secs / l as f64)
        };
        let utilization = [
            share(wb, limit.wbps),
            share(wr, limit.wiops),
            share(rb, limit.rbps),
            share(rr, limit.riops),
        ]
        .into_iter()
        .fold(0.0, f64::max);
        ev.io_limit = Some(IoLimitEvidence {
            limit,
            disk_name: l.name.clone(),
            write_bps: wb as f64 / secs,
            write_iops: wr as f64 / secs,
            read_bps: rb as f64 / secs,
            read_iops: rr as f64 / secs,
            utilization,
        });
        break;
    }

    // With an I/O limit on a disk under the file, the waits with nothing of its own in the
    // block layer are the throttle holding its bios back.
    if ev.io_limit.is_some()
        && let Some(w) = stages.remove(&Stage::WritebackWait)
    {
        add(&mut stages, Stage::IoThrottle, w);
    }

    // 5. Throttling pauses of the thread (every history queue is in time order).
    let pause_ms: i64 = h
        .throttles
        .iter()
        .rev()
        .take_while(|t| t.at >= call.start)
        .filter(|t| t.tid == call.tid && t.at <= call.end && t.pause_ms > 0)
        // The kernel pauses 200 ms at most (MAX_PAUSE); a wild value is not summed whole.
        .map(|t| t.pause_ms.min(MAX_PAUSE_MS))
        .fold(0i64, i64::saturating_add);
    // The planned pauses (jiffies), or the time it actually slept there, whichever is more.
    ev.throttle_pause_ms =
        (pause_ms as f64).max(ms(stages.get(&Stage::DirtyThrottle).copied().unwrap_or(0)));

    // 6. The journal commit: the one it waited on (overlapping its journal waits most),
    //    else the one overlapping the call most, on the file's filesystem.
    let journal_waits = union(
        waits
            .iter()
            .filter(|w| w.site == Site::Journal)
            .map(|w| w.b.sleep())
            .collect(),
    );
    let commit = call.file_dev.and_then(|dev| {
        h.commits
            .iter()
            .rev()
            .take_while(|c| c.end > call.start)
            .filter(|c| c.dev == dev.0 && overlap((c.start, c.end), win) > 0)
            .max_by_key(|c| {
                (
                    measure(&journal_waits, (c.start, c.end)),
                    overlap((c.start, c.end), win),
                )
            })
    });
    let mut commit_contenders = Vec::new();
    ev.journal = commit.map(|c| {
        let cw = (c.start, c.end);
        // A commit that began after the call had started waiting for it: the thread may
        // not have got a CPU to begin it.
        let waited_from = journal_waits
            .first()
            .map(|w| w.0.max(call.start))
            .filter(|from| *from < c.start);
        let before = waited_from.map(|from| (from, c.start));
        let jt: Vec<&Blocked> = blocked_in(h, c.tid, (waited_from.unwrap_or(c.start), c.end))
            .filter(|b| b.tid == c.tid)
            .collect();
        let (mut rq, mut rq_before, mut d) = (0u64, 0u64, 0u64);
        for b in &jt {
            rq += overlap(b.runq(), cw);
            if let Some(w) = before {
                rq_before += overlap(b.runq(), w);
            }
            if b.state == SchedState::DiskSleep {
                d += overlap(b.sleep(), cw);
            }
        }
        // The journal's disk during the commit, with how long each layer waited on the one
        // under it.
        let mut during: Vec<LayerEvidence> = Vec::new();
        for (i, l) in call.disks.layers.iter().enumerate() {
            let (le, cs) = layer_evidence(h, l, call, cw);
            if i == 0 {
                commit_contenders = cs;
            }
            during.push(le);
        }
        backing_held(h, &call.disks.layers, &mut during);
        // Who wrote to the journal's loop device before the commit, when the commit waited
        // on the disk under it: its longest pause held from below (as the rules say it),
        // for a share of the commit that explains it. (Held for half the commit was asked
        // before: CI's commit (on 2e8dd2e) of 86 ms, 40 ms of its 75 ms pause on loop0 held by the
        // disk writing back dd's data, was then called slow on its own.)
        let t = &super::rules::Thresholds::DEFAULT;
        let backing_writers = match (call.disks.layers.first(), during.first()) {
            (Some(l), Some(d))
                if d.kind == LayerKindName::Loop
                    && super::rules::held_from_below(d)
                    && d.backing_held_ms >= t.dominant_share * ms(c.end.since(c.start)) =>
            {
                let from = MonoNs(c.start.0.saturating_sub(BACKING_LOOKBACK_NS));
                let (le, mut cs) = layer_evidence(h, l, call, (from, c.start));
                cs.truncate(5);
                Some(BackingWriters {
                    disk: le.disk,
                    window_ms: ms(c.start.since(from)),
                    bytes_others: le.bytes_others,
                    requests_others: le.requests_others,
                    bytes_thread: le.bytes_thread,
                    bytes_summed: le.bytes_summed,
                    requests_summed: le.requests_summed,
                    contenders: cs,
                })
            }
            _ => None,
        };
        JournalEvidence {
            backing_writers,
            thread: jt.first().map(|b| b.thread.clone()),
            thread_runq_ms: (!jt.is_empty()).then_some(ms(rq)),
            thread_d_ms: (!jt.is_empty()).then_some(ms(d)),
            start_delay_ms: before.map(|w| ms(w.1.since(w.0))),
            thread_runq_before_ms: (before.is_some() && !jt.is_empty()).then_some(ms(rq_before)),
            transaction: c.transaction,
            duration_ms: ms(c.end.since(c.start)),
            locking_ms: c.locking_ms,
            flushing_ms: c.flushing_ms,
            logging_ms: c.logging_ms,
            handles: c.handles,
            blocks: c.blocks,
            disk_during: during.into_iter().next(),
        }
    });

    // 7. After the return.
    if call.syscall_end.is_some() && call.end > syscall_end {
        let wait = call.end.since(syscall_end).max(1);
        let mut stopped: HashMap<u32, u64> = HashMap::new();
        let mut runnable = Vec::new();
        for b in blocked_in(h, call.pid, after).filter(|b| b.tid != call.tid) {
            *stopped.entry(b.tid).or_default() += overlap((b.off, b.on), after);
            runnable.push(b.runq());
        }
        ev.after_syscall_ms = Some(ms(wait));
        ev.other_threads_stopped =
            Some(stopped.values().filter(|&&t| t * 2 >= wait).count() as u32);
        // While it was held, for how long some other thread of the process (the VM thread
        // that runs the safepoint, threads still to reach it) sat runnable without a CPU: a
        // pause that lasts because the JVM cannot get a CPU is CPU starvation.
        let others_runq = measure(&union(runnable), after);
        ev.after_others_runq_ms = Some(ms(others_runq));
        ev.after_others_reclaim = others_reclaim(h, call, after, enrich);
        if ev.after_others_reclaim.is_some() && ev.mem_limit.is_none() {
            ev.mem_limit = enrich.mem_limit(call.pid);
        }
        ev.pause_holder = pause_holder(h, call, after, wait);
        // HotSpot's markers: the JVM's safepoints during that wait.
        let span = |p: &JvmPause| (p.start, p.end_at(call.end));
        let sps: Vec<&JvmPause> = h
            .jvm_pauses
            .iter()
            .rev()
            .take(256)
            .filter(|p| p.pid == call.pid && overlap(span(p), after) > 0)
            .collect();
        if let Some(longest) = sps.iter().max_by_key(|p| span(p).1.since(p.start)) {
            ev.safepoint = Some(SafepointEvidence {
                overlap_ms: ms(measure(
                    &union(sps.iter().map(|p| span(p)).collect()),
                    after,
                )),
                count: sps.len() as u32,
                longest_ms: ms(span(longest).1.since(longest.start)),
                op: longest.op.clone(),
                gc_full: longest.gc,
                by_zkstall: longest.by_zkstall,
            });
        }
    }
    let jvm = enrich.is_jvm(call.pid);
    // The commit's contenders and the look-back's writers are named like the call's.
    enrich_contenders(&mut commit_contenders, enrich);
    if let Some(bw) = ev.journal.as_mut().and_then(|j| j.backing_writers.as_mut()) {
        enrich_contenders(&mut bw.contenders, enrich);
    }

    ev.journal_wait_ms = ms(journal_ns);
    if journal_ns > 0 && call.disks.layers.is_empty() {
        ev.incomplete.push(
            "the disks under the file are not known: whether the journal's disk stalled or was busy is not either"
                .into(),
        );
    }
    // Requests not followed from their start, as many as would make a disk contended: who
    // kept it busy is not known (see rules::unknown_could_contend).
    let t = &super::rules::Thresholds::DEFAULT;
    let during = ev.journal.as_ref().and_then(|j| j.disk_during.as_ref());
    let mut late: Vec<String> = Vec::new();
    for (l, what) in ev
        .layers
        .iter()
        .map(|l| (l, "the call"))
        .chain(during.map(|d| (d, "the journal commit")))
    {
        // The journal's disk is said once, over the call when it is one of the call's.
        let said = late
            .iter()
            .any(|m| m.contains(&format!(" kept {} busy", l.disk)));
        if !said && l.requests_late > 0 && super::rules::unknown_could_contend(l, t) {
            late.push(format!(
                "whose requests kept {} busy during {what}: {} of them ({}) were not followed from their start (issued while no traced call was in flight; --requests all follows every one)",
                l.disk,
                l.requests_late,
                super::render::size(l.bytes_late)
            ));
        }
    }
    ev.incomplete.extend(late);
    Gathered {
        ev,
        contenders,
        contenders_by_layer: by_layer,
        commit_contenders,
        stages,
        waits,
        by_site,
        commit,
        jvm,
        after_sleep_ns: after_sleep,
        after_runq_ns: after_runq,
        before_runq_ns: before_runq,
        // Most of it, not any of it: a thread held by a safepoint for seconds may still
        // take a lock or a queue item on its way back (seen: a 1.5 s safepoint, then a short
        // wait that a NIO thread ended).
        after_woken_by_own_work: after_own_ns * 2 > after_sleep,
        after_woken_by_vm: after_by_vm,
        journal_ns,
        journal_queue_ns,
        own_inflight_ns,
        dur_ns: dur,
        syscall_end,
    }
}
