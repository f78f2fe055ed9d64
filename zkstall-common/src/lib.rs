//! The wire format shared by zkstall's eBPF programs and its userspace agent.
//!
//! Every record the kernel side writes into the ring buffer starts with an [`EventHeader`];
//! userspace decodes `kind` with a checked `TryFrom` and never transmutes. All records are
//! `#[repr(C)]`, `Copy`, made of fixed-width integers with explicit padding, and their sizes
//! are asserted at compile time so that both sides fail to build if they drift apart.
#![no_std]

use core::mem::size_of;

/// Map, global and program names, defined once and used by both sides so that a typo is a
/// compile error rather than a load-time "map not found".
pub mod names {
    /// Ring buffer carrying every record to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// tgid -> 1 for every traced process; userspace fills it.
    pub const TARGETS: &str = "TARGETS";
    /// tid -> the syscall the thread is in (LRU, so a lost exit cannot leak an entry).
    pub const INFLIGHT: &str = "INFLIGHT";
    /// Per-CPU counters of drops and errors, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Load-time configuration: tracepoint field offsets read from tracefs.
    pub const CONFIG: &str = "CONFIG";
    /// Block requests in flight, keyed by (dev, op, sector).
    pub const REQUESTS: &str = "REQUESTS";
    /// Flusher thread tid -> the inode it is writing back.
    pub const FLUSHING: &str = "FLUSHING";
    /// Target thread tid -> when and how it went off CPU.
    pub const OFFCPU: &str = "OFFCPU";
    /// Target thread tid -> the syscall it was in when it switched out (from tp_btf).
    pub const SWITCH_SYSCALL: &str = "SWITCH_SYSCALL";
    /// (tgid, ino) -> pages dirtied since the last dirty record.
    pub const DIRTY_PENDING: &str = "DIRTY_PENDING";
    /// Kernel stacks of D-state sleeps.
    pub const STACKS: &str = "STACKS";
}

/// Size of the ring buffer in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;
/// How many processes can be traced at once.
pub const MAX_TARGETS: u32 = 1024;
/// How many threads can be inside a watched syscall at once.
pub const MAX_INFLIGHT: u32 = 16384;
/// Length of a task's comm, including the terminating NUL (the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// What a record is. On the wire it is a `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    SyscallEnter = 1,
    SyscallExit = 2,
    Io = 3,
    Blocked = 4,
    Thread = 5,
    Dirty = 6,
    Writeback = 7,
    Throttle = 8,
    Journal = 9,
    JournalStats = 10,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::SyscallEnter,
            2 => Self::SyscallExit,
            3 => Self::Io,
            4 => Self::Blocked,
            5 => Self::Thread,
            6 => Self::Dirty,
            7 => Self::Writeback,
            8 => Self::Throttle,
            9 => Self::Journal,
            10 => Self::JournalStats,
            other => return Err(other),
        })
    }
}

/// The watched syscalls. On the wire a `u32`; also the index into [`Config::arg_offset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Syscall {
    Fsync = 0,
    Fdatasync = 1,
    SyncFileRange = 2,
    Syncfs = 3,
    Msync = 4,
    Sync = 5,
    Write = 6,
    Pwrite64 = 7,
    Writev = 8,
    Pwritev = 9,
    Pwritev2 = 10,
}

/// Number of [`Syscall`] variants; sizes the per-syscall tables.
pub const SYSCALL_COUNT: usize = 11;

/// What the first argument of a watched syscall is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A file descriptor (`fd` field of the tracepoint).
    Fd,
    /// A user address (`start` of msync).
    Addr,
    /// No argument (sync).
    None,
}

impl Syscall {
    pub const ALL: [Syscall; SYSCALL_COUNT] = [
        Syscall::Fsync,
        Syscall::Fdatasync,
        Syscall::SyncFileRange,
        Syscall::Syncfs,
        Syscall::Msync,
        Syscall::Sync,
        Syscall::Write,
        Syscall::Pwrite64,
        Syscall::Writev,
        Syscall::Pwritev,
        Syscall::Pwritev2,
    ];

    /// True for the write family: traced at exit only, and only when slower than
    /// [`Config::write_min_ns`] (a JVM makes far too many writes to send them all).
    pub const fn is_write(self) -> bool {
        matches!(
            self,
            Syscall::Write
                | Syscall::Pwrite64
                | Syscall::Writev
                | Syscall::Pwritev
                | Syscall::Pwritev2
        )
    }

    /// The syscall's name, as in `syscalls:sys_enter_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Fsync => "fsync",
            Syscall::Fdatasync => "fdatasync",
            Syscall::SyncFileRange => "sync_file_range",
            Syscall::Syncfs => "syncfs",
            Syscall::Msync => "msync",
            Syscall::Sync => "sync",
            Syscall::Write => "write",
            Syscall::Pwrite64 => "pwrite64",
            Syscall::Writev => "writev",
            Syscall::Pwritev => "pwritev",
            Syscall::Pwritev2 => "pwritev2",
        }
    }

    /// The tracepoint field holding the argument zkstall records, and what it is.
    pub const fn arg(self) -> (&'static str, ArgKind) {
        match self {
            Syscall::Fsync
            | Syscall::Fdatasync
            | Syscall::SyncFileRange
            | Syscall::Syncfs
            | Syscall::Write
            | Syscall::Pwrite64
            | Syscall::Writev
            | Syscall::Pwritev
            | Syscall::Pwritev2 => ("fd", ArgKind::Fd),
            Syscall::Msync => ("start", ArgKind::Addr),
            Syscall::Sync => ("", ArgKind::None),
        }
    }

    /// Names of the eBPF programs attached to `sys_enter_<name>` and `sys_exit_<name>`.
    pub const fn programs(self) -> (&'static str, &'static str) {
        match self {
            Syscall::Fsync => ("enter_fsync", "exit_fsync"),
            Syscall::Fdatasync => ("enter_fdatasync", "exit_fdatasync"),
            Syscall::SyncFileRange => ("enter_sync_file_range", "exit_sync_file_range"),
            Syscall::Syncfs => ("enter_syncfs", "exit_syncfs"),
            Syscall::Msync => ("enter_msync", "exit_msync"),
            Syscall::Sync => ("enter_sync", "exit_sync"),
            Syscall::Write => ("enter_write", "exit_write"),
            Syscall::Pwrite64 => ("enter_pwrite64", "exit_pwrite64"),
            Syscall::Writev => ("enter_writev", "exit_writev"),
            Syscall::Pwritev => ("enter_pwritev", "exit_pwritev"),
            Syscall::Pwritev2 => ("enter_pwritev2", "exit_pwritev2"),
        }
    }
}

impl TryFrom<u32> for Syscall {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Syscall::ALL.get(v as usize).copied().ok_or(v)
    }
}

/// Indexes into the per-CPU [`names::COUNTERS`] array. Every dropped record or failed
/// operation in the kernel increments one of these; userspace sums them over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// A record could not be reserved in the ring buffer (userspace too slow): lost.
    RingbufFull = 0,
    /// The INFLIGHT map refused an entry: that call's exit cannot be timed.
    InflightFull = 1,
    /// A tracepoint field could not be read.
    ReadError = 2,
    /// A target thread left a watched syscall we never saw it enter (tracing started
    /// while it was inside, or its entry was evicted).
    ExitWithoutEnter = 3,
    /// A block request completed that was never seen inserted or issued.
    IoUnmatched = 4,
    /// A per-CPU map (requests, off-CPU, dirty) refused an entry.
    MapFull = 5,
    /// bpf_get_stackid failed (stack map full or the walk failed).
    StackError = 6,
}

pub const COUNTER_COUNT: u32 = 7;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::RingbufFull,
        Counter::InflightFull,
        Counter::ReadError,
        Counter::ExitWithoutEnter,
        Counter::IoUnmatched,
        Counter::MapFull,
        Counter::StackError,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufFull => "ringbuf_full",
            Counter::InflightFull => "inflight_full",
            Counter::ReadError => "read_error",
            Counter::ExitWithoutEnter => "exit_without_enter",
            Counter::IoUnmatched => "io_unmatched",
            Counter::MapFull => "map_full",
            Counter::StackError => "stack_error",
        }
    }
}

/// Load-time configuration written into the `CONFIG` global by userspace. Offsets come from
/// the tracepoints' tracefs `format` files, never from a hard-coded kernel layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Config {
    /// Offset of each syscall's recorded argument in its `sys_enter_*` record, indexed by
    /// [`Syscall`]; 0 means "no argument".
    pub arg_offset: [u32; SYSCALL_COUNT],
    /// Offset of `ret` in the `sys_exit_*` records (all share one layout).
    pub ret_offset: u32,
    /// Offsets of the other tracepoint fields the programs read, indexed by [`Field`];
    /// 0 means "absent on this kernel" (every real field is past the common header).
    pub field: [u16; FIELD_COUNT],
    pub _pad0: u32,
    /// Write-family calls shorter than this are not sent to userspace.
    pub write_min_ns: u64,
    /// Off-CPU intervals of target threads shorter than this are not sent.
    pub blocked_min_ns: u64,
    /// Dirty records are sent on a (process, inode)'s first dirtied folio, then once per
    /// this many folios.
    pub dirty_batch_pages: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Config>() == 176);

impl Config {
    /// Every offset unknown, nothing filtered: the eBPF side's initial value, and what
    /// userspace starts from before reading tracefs.
    pub const DEFAULT: Config = Config {
        arg_offset: [0; SYSCALL_COUNT],
        ret_offset: 0,
        field: [0; FIELD_COUNT],
        _pad0: 0,
        write_min_ns: 0,
        blocked_min_ns: 0,
        dirty_batch_pages: 256,
        _pad: 0,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// The tracepoint fields the programs read, besides the syscall ones. Each knows its
/// tracepoint, its name in the `format` file, and the size the program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Field {
    RqInsertDev = 0,
    RqInsertSector,
    RqInsertBytes,
    RqInsertRwbs,
    RqIssueDev,
    RqIssueSector,
    RqIssueBytes,
    RqIssueRwbs,
    RqCompleteDev,
    RqCompleteSector,
    RqCompleteError,
    RqCompleteRwbs,
    RqRequeueDev,
    RqRequeueSector,
    RqRequeueRwbs,
    SwitchPrevPid,
    SwitchPrevState,
    SwitchNextPid,
    WakingPid,
    NewtaskPid,
    NewtaskComm,
    RenamePid,
    RenameNewcomm,
    DirtyName,
    DirtyIno,
    WbStartName,
    WbStartIno,
    WbName,
    WbIno,
    WbWrote,
    BdpBdi,
    BdpLimit,
    BdpDirty,
    BdpPaused,
    BdpPause,
    JStartDev,
    JStartTransaction,
    JLockingDev,
    JLockingTransaction,
    JFlushingDev,
    JFlushingTransaction,
    JLoggingDev,
    JLoggingTransaction,
    JEndDev,
    JEndTransaction,
    JStatsDev,
    JStatsTid,
    JStatsHandleCount,
    JStatsBlocks,
    JStatsBlocksLogged,
}

pub const FIELD_COUNT: usize = 50;

impl Field {
    /// (category, tracepoint, field, bytes the program reads). A field whose format says
    /// a different size (for arrays: a smaller one) cannot be used on that kernel.
    pub const fn spec(self) -> (&'static str, &'static str, &'static str, u32) {
        use Field::*;
        match self {
            RqInsertDev => ("block", "block_rq_insert", "dev", 4),
            RqInsertSector => ("block", "block_rq_insert", "sector", 8),
            RqInsertBytes => ("block", "block_rq_insert", "bytes", 4),
            RqInsertRwbs => ("block", "block_rq_insert", "rwbs", 8),
            RqIssueDev => ("block", "block_rq_issue", "dev", 4),
            RqIssueSector => ("block", "block_rq_issue", "sector", 8),
            RqIssueBytes => ("block", "block_rq_issue", "bytes", 4),
            RqIssueRwbs => ("block", "block_rq_issue", "rwbs", 8),
            RqCompleteDev => ("block", "block_rq_complete", "dev", 4),
            RqCompleteSector => ("block", "block_rq_complete", "sector", 8),
            RqCompleteError => ("block", "block_rq_complete", "error", 4),
            RqCompleteRwbs => ("block", "block_rq_complete", "rwbs", 8),
            RqRequeueDev => ("block", "block_rq_requeue", "dev", 4),
            RqRequeueSector => ("block", "block_rq_requeue", "sector", 8),
            RqRequeueRwbs => ("block", "block_rq_requeue", "rwbs", 8),
            SwitchPrevPid => ("sched", "sched_switch", "prev_pid", 4),
            SwitchPrevState => ("sched", "sched_switch", "prev_state", 8),
            SwitchNextPid => ("sched", "sched_switch", "next_pid", 4),
            WakingPid => ("sched", "sched_waking", "pid", 4),
            NewtaskPid => ("task", "task_newtask", "pid", 4),
            NewtaskComm => ("task", "task_newtask", "comm", 16),
            RenamePid => ("task", "task_rename", "pid", 4),
            RenameNewcomm => ("task", "task_rename", "newcomm", 16),
            DirtyName => ("writeback", "writeback_dirty_folio", "name", 16),
            DirtyIno => ("writeback", "writeback_dirty_folio", "ino", 8),
            WbStartName => ("writeback", "writeback_single_inode_start", "name", 16),
            WbStartIno => ("writeback", "writeback_single_inode_start", "ino", 8),
            WbName => ("writeback", "writeback_single_inode", "name", 16),
            WbIno => ("writeback", "writeback_single_inode", "ino", 8),
            WbWrote => ("writeback", "writeback_single_inode", "wrote", 8),
            BdpBdi => ("writeback", "balance_dirty_pages", "bdi", 16),
            BdpLimit => ("writeback", "balance_dirty_pages", "limit", 8),
            BdpDirty => ("writeback", "balance_dirty_pages", "dirty", 8),
            BdpPaused => ("writeback", "balance_dirty_pages", "paused", 8),
            BdpPause => ("writeback", "balance_dirty_pages", "pause", 8),
            JStartDev => ("jbd2", "jbd2_start_commit", "dev", 4),
            JStartTransaction => ("jbd2", "jbd2_start_commit", "transaction", 4),
            JLockingDev => ("jbd2", "jbd2_commit_locking", "dev", 4),
            JLockingTransaction => ("jbd2", "jbd2_commit_locking", "transaction", 4),
            JFlushingDev => ("jbd2", "jbd2_commit_flushing", "dev", 4),
            JFlushingTransaction => ("jbd2", "jbd2_commit_flushing", "transaction", 4),
            JLoggingDev => ("jbd2", "jbd2_commit_logging", "dev", 4),
            JLoggingTransaction => ("jbd2", "jbd2_commit_logging", "transaction", 4),
            JEndDev => ("jbd2", "jbd2_end_commit", "dev", 4),
            JEndTransaction => ("jbd2", "jbd2_end_commit", "transaction", 4),
            JStatsDev => ("jbd2", "jbd2_run_stats", "dev", 4),
            JStatsTid => ("jbd2", "jbd2_run_stats", "tid", 4),
            JStatsHandleCount => ("jbd2", "jbd2_run_stats", "handle_count", 4),
            JStatsBlocks => ("jbd2", "jbd2_run_stats", "blocks", 4),
            JStatsBlocksLogged => ("jbd2", "jbd2_run_stats", "blocks_logged", 4),
        }
    }

    pub const ALL: [Field; FIELD_COUNT] = {
        let mut out = [Field::RqInsertDev; FIELD_COUNT];
        let mut i = 0;
        while i < FIELD_COUNT {
            // SAFETY: Field is #[repr(u16)] with discriminants 0..FIELD_COUNT, contiguous.
            out[i] = unsafe { core::mem::transmute::<u16, Field>(i as u16) };
            i += 1;
        }
        out
    };
}

/// Phases of a jbd2 commit, in the order the kernel goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum JournalPhase {
    Start = 0,
    Locking = 1,
    Flushing = 2,
    Logging = 3,
    End = 4,
}

impl TryFrom<u32> for JournalPhase {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            0 => Self::Start,
            1 => Self::Locking,
            2 => Self::Flushing,
            3 => Self::Logging,
            4 => Self::End,
            other => return Err(other),
        })
    }
}

/// What a [`ThreadEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ThreadChange {
    New = 1,
    Exit = 2,
    Rename = 3,
}

/// The start of every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u32,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
}
const _: () = assert!(size_of::<EventHeader>() == 24);

/// A target thread entered a watched syscall. Sent so that userspace can resolve the fd to
/// a path while the call is in progress (the fd is certainly open then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SyscallEnterEvent {
    pub hdr: EventHeader,
    /// A [`Syscall`].
    pub syscall: u32,
    pub _pad: u32,
    /// The fd (as the raw 64-bit argument) or the msync address; 0 for sync.
    pub arg: u64,
}
const _: () = assert!(size_of::<SyscallEnterEvent>() == 40);

/// A target thread left a watched syscall. Timed in the kernel: `hdr.ts_ns` is the exit,
/// `start_ns` the entry, so a lost enter record does not lose the duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SyscallExitEvent {
    pub hdr: EventHeader,
    /// A [`Syscall`].
    pub syscall: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC nanoseconds at entry.
    pub start_ns: u64,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Same as [`SyscallEnterEvent::arg`].
    pub arg: u64,
    /// The thread's comm at exit (NUL-padded): the JVM's thread name, 15 bytes at most.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<SyscallExitEvent>() == 72);

/// A block request completed. `hdr.tgid/tid` is who queued it (at insert, or at issue
/// when it was issued directly); `hdr.ts_ns` the completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IoEvent {
    pub hdr: EventHeader,
    /// Kernel dev_t: major << 20 | minor.
    pub dev: u32,
    /// Negative errno, 0 on success.
    pub error: i32,
    pub sector: u64,
    pub bytes: u32,
    pub requeues: u32,
    /// The block layer's rwbs flags, NUL-padded (`WS`, `FWFS`, `R`...).
    pub rwbs: [u8; 8],
    /// When it was queued (inserted), or issued if it was never seen queued.
    pub insert_ns: u64,
    /// When it was issued to the device driver.
    pub issue_ns: u64,
    /// The inode a flusher thread was writing back when it queued this (else 0).
    pub ino: u64,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<IoEvent>() == 104);

/// A target thread went back on CPU after an off-CPU interval. `hdr.ts_ns` is when it ran
/// again; `hdr.tgid/tid` the thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BlockedEvent {
    pub hdr: EventHeader,
    /// When it switched out.
    pub off_ns: u64,
    /// When it was woken (0: never; it was preempted while runnable).
    pub wake_ns: u64,
    /// `prev_state` at switch-out (TASK_REPORT bits; 0 or the preempt bit: runnable).
    pub state: u64,
    /// The syscall it was in when it switched out (-1: not known).
    pub syscall: i64,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    pub waker_comm: [u8; COMM_LEN],
    /// Kernel stack id in STACKS (-1: none; only D-state sleeps get one).
    pub stack_id: i64,
}
const _: () = assert!(size_of::<BlockedEvent>() == 88);

/// A target thread was created, exited or renamed. `hdr` is the acting task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadEvent {
    pub hdr: EventHeader,
    /// A [`ThreadChange`].
    pub change: u32,
    /// The thread concerned.
    pub tid: u32,
    /// Its (new) name.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<ThreadEvent>() == 48);

/// A process dirtied page-cache pages of an inode (`hdr` is the dirtier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DirtyEvent {
    pub hdr: EventHeader,
    pub ino: u64,
    /// Folios dirtied since the previous record for this (process, inode) (a folio is
    /// one page, or several on filesystems with large folios).
    pub pages: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    /// The backing device's name (`7:0`), NUL-padded.
    pub bdi: [u8; 16],
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<DirtyEvent>() == 80);

/// A flusher thread finished writing back one inode (`hdr` is the flusher).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WritebackEvent {
    pub hdr: EventHeader,
    pub ino: u64,
    /// Pages written.
    pub wrote: u64,
    /// When writeback of the inode started (0: not seen).
    pub start_ns: u64,
    pub bdi: [u8; 16],
}
const _: () = assert!(size_of::<WritebackEvent>() == 64);

/// A task was paused in balance_dirty_pages (`hdr` is the task).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ThrottleEvent {
    pub hdr: EventHeader,
    /// The pause it is about to sleep, in ms (may be <= 0: no sleep this time).
    pub pause_ms: i64,
    /// How long it has been paused in this throttling episode, in ms.
    pub paused_ms: u64,
    pub dirty: u64,
    pub limit: u64,
    pub bdi: [u8; 16],
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<ThrottleEvent>() == 88);

/// A jbd2 commit reached a phase (`hdr.ts_ns` is when).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct JournalEvent {
    pub hdr: EventHeader,
    /// Kernel dev_t of the journal's filesystem.
    pub dev: u32,
    pub transaction: u32,
    /// A [`JournalPhase`].
    pub phase: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<JournalEvent>() == 40);

/// jbd2_run_stats: the size of a committed transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct JournalStatsEvent {
    pub hdr: EventHeader,
    pub dev: u32,
    pub transaction: u32,
    pub handle_count: u32,
    pub blocks: u32,
    pub blocks_logged: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<JournalStatsEvent>() == 48);

/// Key of an in-flight block request. Classic tracepoints do not expose the request
/// pointer, so requests are keyed as bcc's biosnoop does: device, direction, sector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RequestKey {
    pub dev: u32,
    /// The op character of rwbs (`R`, `W`, `D`, `F`, `N`...).
    pub op: u32,
    pub sector: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integers with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RequestKey {}
}
