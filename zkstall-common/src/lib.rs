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
    /// The same set as a bitmap by tgid: what every hot path tests (an array lookup the
    /// verifier inlines, where a hash lookup costs a hash and a bucket walk).
    pub const TARGET_BITS: &str = "TARGET_BITS";
    /// One counter userspace bumps whenever DISKS changes: the programs' per-CPU caches of
    /// "is this queue (or block device) watched" are good while it stays the same.
    pub const WATCH_GEN: &str = "WATCH_GEN";
    /// tid -> the watched syscall the thread is in ([`crate::Inflight`]); LRU, so a lost
    /// exit cannot leak an entry. Userspace scans it for calls crossing the threshold.
    pub const INFLIGHT: &str = "INFLIGHT";
    /// Per-CPU counters of drops and errors, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Load-time configuration: tracepoint field offsets read from tracefs, struct
    /// offsets read from BTF.
    pub const CONFIG: &str = "CONFIG";
    /// Block requests in flight on the disks of interest, keyed by `struct request *`.
    pub const REQUESTS: &str = "REQUESTS";
    /// `struct bio *` -> who submitted it (at block_getrq, in the submitter's context).
    pub const BIOS: &str = "BIOS";
    /// Disks (and their partitions) whose requests are traced one by one; userspace fills
    /// it with the devices behind the traced files.
    pub const DISKS: &str = "DISKS";
    /// Per-CPU summary of requests on all other disks, by (disk, cgroup).
    pub const OTHER_IO: &str = "OTHER_IO";
    /// Per-CPU summary of the watched disks' requests that were not sent one by one
    /// ([`crate::IoSummary`]): an array, indexed by the slot DISK_SLOTS gives each disk.
    pub const IO_SUMMARY: &str = "IO_SUMMARY";
    /// Kernel dev_t -> its slot of IO_SUMMARY: userspace gives each device it watches one
    /// (for good: a device watched again gets its old one back), before the device is in
    /// DISKS. The programs look it up once per CPU and request queue, beside DISKS.
    pub const DISK_SLOTS: &str = "DISK_SLOTS";
    /// Per-CPU count of every completion on a watched disk ([`crate::OtherIo`]), at the
    /// disk's slot: what OTHER_IO counts of the other disks, for the same check against
    /// the block layer's own count. Userspace reads it as OTHER_IO's entries under
    /// [`crate::OTHER_IO_WATCHED`], where a disk without a slot is counted.
    pub const WATCHED_IO: &str = "WATCHED_IO";
    /// Per-CPU, a few of OTHER_IO's keys with their counts ([`crate::OtherIoCached`]): a
    /// completion whose (disk, cgroup) holds the way its key hashes to is counted there,
    /// an array index instead of a hash lookup (a neighbour's flood is one key); others
    /// go to OTHER_IO. A way, once taken, keeps its key for the run. Userspace adds both.
    pub const OTHER_IO_CACHE: &str = "OTHER_IO_CACHE";
    /// Whether a target's watched call may be in flight, for deciding which requests are
    /// sent one by one ([`crate::Config::io_slow_ns`]); four u64 entries:
    /// - [`crate::CALL_WATCH_QUIET`] (userspace): 1 when its last look at INFLIGHT found no
    ///   call in it (starts at 0: nothing looked at yet);
    /// - [`crate::CALL_WATCH_SCANNED`] (userspace): when that look began (ns, monotonic);
    /// - [`crate::CALL_WATCH_ENTER`] / [`crate::CALL_WATCH_EXIT`] (programs): the last
    ///   entry and exit of a watched call.
    ///
    /// A call in flight during a request either entered or exited after the request
    /// started, or was in flight all along: then it was in INFLIGHT when userspace last
    /// looked (not quiet), or it entered after that look began. Userspace writes QUIET
    /// before SCANNED and the programs read SCANNED before QUIET, so that a new look's
    /// instant is never paired with the previous look's "quiet".
    pub const CALL_WATCH: &str = "CALL_WATCH";
    /// Flusher thread tid -> the inode it is writing back.
    pub const FLUSHING: &str = "FLUSHING";
    /// Target thread tid -> its scheduling state ([`crate::ThreadState`]).
    pub const THREADS: &str = "THREADS";
    /// Per-CPU interrupt context depth (hardirq, softirq, timer), for naming wakers.
    pub const IRQ_CTX: &str = "IRQ_CTX";
    /// (tgid, ino) -> pages dirtied since the last dirty record.
    pub const DIRTY_PENDING: &str = "DIRTY_PENDING";
    /// Target thread tid -> when its direct or memcg reclaim began.
    pub const RECLAIM_START: &str = "RECLAIM_START";
    /// Attach cookie -> which HotSpot USDT probe a uprobe is and how to read its arguments
    /// ([`crate::UsdtSpec`]); userspace fills it from libjvm.so's `.note.stapsdt`.
    pub const USDT_SPECS: &str = "USDT_SPECS";
    /// The uprobe program every HotSpot USDT probe is attached with.
    pub const JVM_USDT: &str = "jvm_usdt";
    /// Per CPU: when its heartbeat last ran.
    pub const HEARTBEAT: &str = "HEARTBEAT";
    /// The per-CPU timer program (perf cpu-clock at [`crate::HEARTBEAT_HZ`]).
    pub const HEARTBEAT_PROG: &str = "heartbeat";
}

/// How often each CPU's heartbeat runs (a perf cpu-clock timer: it fires on idle CPUs too).
pub const HEARTBEAT_HZ: u64 = 10;
/// A CPU silent this long (three heartbeats missed) reports the gap.
pub const HOST_GAP_NS: u64 = 300_000_000;

/// Size of the ring buffer in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;
/// How many processes can be traced at once.
pub const MAX_TARGETS: u32 = 1024;
/// tgids below this are in [`names::TARGET_BITS`] (Linux's PID_MAX_LIMIT on 64-bit); above
/// it (never, today) the hash is asked.
pub const PID_BITS: u32 = 1 << 22;
pub const TARGET_WORDS: u32 = PID_BITS / 64;
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
    Reclaim = 11,
    LowSpace = 12,
    Jvm = 13,
    HostGap = 14,
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
            11 => Self::Reclaim,
            12 => Self::LowSpace,
            13 => Self::Jvm,
            14 => Self::HostGap,
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
    /// A tracepoint field or kernel struct field could not be read.
    ReadError = 2,
    /// A target thread left a watched syscall we never saw it enter (tracing started
    /// while it was inside and it was not seeded, or its entry was evicted).
    ExitWithoutEnter = 3,
    /// A request on a watched disk completed that was never seen before, and that the
    /// kernel allocated after its disk was watched (or when its allocation time is
    /// unknown): a start the probes missed.
    IoUnmatched = 4,
    /// A map (requests, bios, threads, dirty) refused an entry.
    MapFull = 5,
    /// bpf_get_stack failed.
    StackError = 6,
    /// A request was merged into another one (its bytes complete with the other).
    IoMerged = 7,
    /// A request entry found still in use when its `struct request` was reused (its
    /// completion was never seen): replaced.
    IoStale = 8,
    /// Partial completions (a request completed in several parts).
    IoPartial = 9,
    /// Requests completed on disks nobody watches (summarized in OTHER_IO, not sent).
    IoOther = 10,
    /// Requests completed on watched disks and sent one by one.
    IoWatched = 11,
    /// Completions of the block layer's own flush requests (REQ_OP_FLUSH, no data).
    IoFlush = 12,
    /// The second, empty completion of a request whose data already completed: the end of
    /// its flush sequence (PREFLUSH/FUA emulated with separate flushes). Not a request.
    IoFlushSeqEnd = 13,
    /// A request on a watched disk completed that was never seen before because it was
    /// already allocated when its disk was watched (in flight at attach, or when the
    /// disk was first watched): nothing was missed, its submitter is simply unknown.
    IoBeforeWatch = 14,
    /// A thread of a target was found running a syscall program while its state said
    /// off CPU: the scheduler switch that brought it back ran no program, and one of its
    /// off-CPU intervals was lost (its call says so: CALL_SWITCH_UNSEEN).
    SwitchUnseen = 15,
    /// A request on a watched disk was summed into IO_SUMMARY instead of sent (see
    /// `Config::io_slow_ns`).
    IoSummed = 16,
    /// A request on a watched disk completed that the probes chose not to follow: it was
    /// issued while no watched call could be in flight (see `Config::io_slow_ns`).
    IoLate = 17,
    /// A map refused to update or remove an entry because its bucket's lock was held on
    /// this CPU (a program interrupting another in the same map: -EBUSY before 6.15,
    /// -EDEADLK/-ETIMEDOUT from the resilient locks after): a request entry then outlives
    /// its request (found stale later) or one is not followed.
    MapBusy = 18,
}

pub const COUNTER_COUNT: u32 = 19;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::RingbufFull,
        Counter::InflightFull,
        Counter::ReadError,
        Counter::ExitWithoutEnter,
        Counter::IoUnmatched,
        Counter::MapFull,
        Counter::StackError,
        Counter::IoMerged,
        Counter::IoStale,
        Counter::IoPartial,
        Counter::IoOther,
        Counter::IoWatched,
        Counter::IoFlush,
        Counter::IoFlushSeqEnd,
        Counter::IoBeforeWatch,
        Counter::SwitchUnseen,
        Counter::IoSummed,
        Counter::IoLate,
        Counter::MapBusy,
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
            Counter::IoMerged => "io_merged",
            Counter::IoStale => "io_stale",
            Counter::IoPartial => "io_partial",
            Counter::IoOther => "io_other_disks",
            Counter::IoWatched => "io_watched",
            Counter::IoFlush => "io_flush",
            Counter::IoFlushSeqEnd => "io_flush_seq_end",
            Counter::IoBeforeWatch => "io_before_watch",
            Counter::SwitchUnseen => "switch_unseen",
            Counter::IoSummed => "io_summed",
            Counter::IoLate => "io_late",
            Counter::MapBusy => "map_busy",
        }
    }
}

/// Offsets of kernel struct fields the programs read, from the running kernel's BTF.
/// 0xffff means "absent on this kernel" (0 is a valid offset for some fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct KernelOffsets {
    /// struct request
    pub rq_q: u16,
    pub rq_cmd_flags: u16,
    pub rq_data_len: u16,
    pub rq_sector: u16,
    pub rq_bio: u16,
    pub rq_part: u16,
    /// u64 start_time_ns: when the request was allocated (0 when the queue keeps no
    /// times).
    pub rq_start_time: u16,
    /// u64 io_start_time_ns: when it was issued to the driver (0 when the queue keeps no
    /// statistics).
    pub rq_io_start_time: u16,
    /// For a request first seen at its completion, the inode whose pages its first bio
    /// carries (page cache writeback) and the bdi of its filesystem, as writeback's
    /// tracepoints name it: bio -> bi_io_vec -> bv_page (-> its head, `compound_head`) ->
    /// mapping -> host -> i_ino, and host -> i_sb -> s_bdi -> dev_name.
    pub bio_io_vec: u16,
    pub bvec_page: u16,
    pub page_compound_head: u16,
    pub page_mapping: u16,
    pub mapping_host: u16,
    pub inode_ino: u16,
    pub inode_sb: u16,
    pub sb_bdi: u16,
    pub bdi_dev_name: u16,
    /// struct request_queue -> struct gendisk *
    pub q_disk: u16,
    /// struct gendisk: int major, int first_minor
    pub disk_major: u16,
    pub disk_first_minor: u16,
    /// struct block_device: dev_t bd_dev
    pub bdev_dev: u16,
    /// struct bio
    pub bio_bdev: u16,
    pub bio_blkg: u16,
    /// struct blkcg_gq -> struct blkcg *; blkcg's embedded css -> cgroup; cgroup -> kn;
    /// kernfs_node's 64-bit id (what bpf_get_current_cgroup_id returns for v2).
    pub blkg_blkcg: u16,
    pub blkcg_css_cgroup: u16,
    pub cgroup_kn: u16,
    pub kn_id: u16,
    /// struct task_struct
    pub task_pid: u16,
    pub task_tgid: u16,
    pub task_flags: u16,
    /// What a write-family call writes to (is it storage?): task_struct -> files ->
    /// fdt -> max_fds, fd[]; file -> f_inode; inode -> i_mode.
    pub task_files: u16,
    pub files_fdt: u16,
    pub fdt_max_fds: u16,
    pub fdt_fd: u16,
    pub file_inode: u16,
    pub inode_mode: u16,
    /// The file an fsync-family call syncs, named for userspace's fd cache: inode -> i_sb
    /// -> s_dev (with `inode_ino`).
    pub sb_dev: u16,
    pub _pad: [u16; 3],
}
const _: () = assert!(size_of::<KernelOffsets>() == 80);

/// "This field does not exist on this kernel."
pub const NO_OFFSET: u16 = 0xffff;

impl KernelOffsets {
    pub const NONE: KernelOffsets = KernelOffsets {
        rq_q: NO_OFFSET,
        rq_cmd_flags: NO_OFFSET,
        rq_data_len: NO_OFFSET,
        rq_sector: NO_OFFSET,
        rq_bio: NO_OFFSET,
        rq_part: NO_OFFSET,
        rq_start_time: NO_OFFSET,
        rq_io_start_time: NO_OFFSET,
        bio_io_vec: NO_OFFSET,
        bvec_page: NO_OFFSET,
        page_compound_head: NO_OFFSET,
        page_mapping: NO_OFFSET,
        mapping_host: NO_OFFSET,
        inode_ino: NO_OFFSET,
        inode_sb: NO_OFFSET,
        sb_bdi: NO_OFFSET,
        bdi_dev_name: NO_OFFSET,
        q_disk: NO_OFFSET,
        disk_major: NO_OFFSET,
        disk_first_minor: NO_OFFSET,
        bdev_dev: NO_OFFSET,
        bio_bdev: NO_OFFSET,
        bio_blkg: NO_OFFSET,
        blkg_blkcg: NO_OFFSET,
        blkcg_css_cgroup: NO_OFFSET,
        cgroup_kn: NO_OFFSET,
        kn_id: NO_OFFSET,
        task_pid: NO_OFFSET,
        task_tgid: NO_OFFSET,
        task_flags: NO_OFFSET,
        task_files: NO_OFFSET,
        files_fdt: NO_OFFSET,
        fdt_max_fds: NO_OFFSET,
        fdt_fd: NO_OFFSET,
        file_inode: NO_OFFSET,
        inode_mode: NO_OFFSET,
        sb_dev: NO_OFFSET,
        _pad: [0; 3],
    };
}

/// Load-time configuration written into the `CONFIG` global by userspace. Offsets come from
/// the tracepoints' tracefs `format` files and the kernel's BTF, never from a hard-coded
/// kernel layout.
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
    pub _pad_f: [u16; 2],
    pub kernel: KernelOffsets,
    /// Write-family calls shorter than this are not sent to userspace.
    pub write_min_ns: u64,
    /// Off-CPU intervals of target threads shorter than this are not sent (they are
    /// summed per thread and state, and each call's exit carries its share).
    pub blocked_min_ns: u64,
    /// A thread that goes off CPU before it has run this much CPU time past a syscall's
    /// return does so on its way back to its caller (preempted on the return to user
    /// space, or parked at a JVM safepoint in the code around the syscall): the exit is
    /// held until it has, and carries the wall time since the return (userspace decides
    /// whether each of those waits was part of what the caller measured).
    pub after_gap_ns: u64,
    /// Dirty records are sent on a (process, inode)'s first dirtied folio, then once per
    /// this many folios.
    pub dirty_batch_pages: u32,
    /// 1 when the tp_btf sched_switch passes prev_state as its 4th argument (>= 5.18).
    pub switch_has_state_arg: u32,
    /// writeback_queue's `reason` for writeback forced by low free space
    /// (WB_REASON_FS_FREE_SPACE, from the format file's print fmt); u32::MAX: unknown.
    pub wb_reason_free_space: u32,
    /// 1 when the tp_btf sched_waking program is attached: a D sleep's kernel stack is
    /// then taken when it is woken, and only if it lasted `blocked_min_ns` (the stack of a
    /// sleeping task is where it went to sleep); 0: at every switch-out into D.
    pub stack_at_wake: u32,
    /// Requests on watched disks are sent one by one only where they matter: when a target's
    /// watched call overlapped them (see [`names::CALL_WATCH`]), when a target submitted them,
    /// when they took this long from queue to completion, or when anything about them is
    /// unusual (an error, a requeue, a partial completion, no known start). The rest are
    /// summed per disk in [`names::IO_SUMMARY`]. 0: every request is sent.
    pub io_slow_ns: u64,
}
const _: () = assert!(size_of::<Config>() == 264);

impl Config {
    /// Every offset unknown, nothing filtered: the eBPF side's initial value, and what
    /// userspace starts from before reading tracefs.
    pub const DEFAULT: Config = Config {
        arg_offset: [0; SYSCALL_COUNT],
        ret_offset: 0,
        field: [0; FIELD_COUNT],
        _pad_f: [0; 2],
        kernel: KernelOffsets::NONE,
        write_min_ns: 0,
        blocked_min_ns: 0,
        // 50 us of CPU: enough for the JVM's native-to-Java transition and the FileChannel
        // epilogue before the caller's clock read; waits after that are the caller's own
        // code (ZooKeeper logging the slow fsync, waiting for work). CPU time, not wall
        // time: a thread preempted again and again on its way back is still on its way.
        after_gap_ns: 50_000,
        dirty_batch_pages: 256,
        switch_has_state_arg: 0,
        wb_reason_free_space: u32::MAX,
        stack_at_wake: 0,
        io_slow_ns: 0,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// The tracepoint fields the classic-tracepoint programs read. Each knows its
/// tracepoint, its name in the `format` file, and the size the program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Field {
    SwitchPrevPid = 0,
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
    DirtyPageName,
    DirtyPageIno,
    DirectReclaimEndNr,
    MemcgReclaimEndNr,
    WqSbDev,
    WqReason,
    WqNrPages,
}

pub const FIELD_COUNT: usize = 42;

impl Field {
    /// (category, tracepoint, field, bytes the program reads). A field whose format says
    /// a different size (for arrays: a smaller one) cannot be used on that kernel.
    pub const fn spec(self) -> (&'static str, &'static str, &'static str, u32) {
        use Field::*;
        match self {
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
            WqSbDev => ("writeback", "writeback_queue", "sb_dev", 4),
            WqReason => ("writeback", "writeback_queue", "reason", 4),
            WqNrPages => ("writeback", "writeback_queue", "nr_pages", 8),
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
            // Kernels before 5.16 name the dirtying event per page.
            DirtyPageName => ("writeback", "writeback_dirty_page", "name", 16),
            DirtyPageIno => ("writeback", "writeback_dirty_page", "ino", 8),
            DirectReclaimEndNr => ("vmscan", "mm_vmscan_direct_reclaim_end", "nr_reclaimed", 8),
            MemcgReclaimEndNr => ("vmscan", "mm_vmscan_memcg_reclaim_end", "nr_reclaimed", 8),
        }
    }

    pub const ALL: [Field; FIELD_COUNT] = {
        let mut out = [Field::SwitchPrevPid; FIELD_COUNT];
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

/// The context a wakeup came from ([`BlockedEvent::waker_ctx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum WakerCtx {
    /// A task (`waker_*` name it).
    Task = 0,
    /// A hardware interrupt handler (e.g. a device completing I/O).
    Irq = 1,
    /// A softirq (e.g. block completion, networking).
    Softirq = 2,
    /// A timer expiring (a timeout, a sleep ending).
    Timer = 3,
}

impl WakerCtx {
    pub const fn from_u32(v: u32) -> Option<WakerCtx> {
        match v {
            0 => Some(WakerCtx::Task),
            1 => Some(WakerCtx::Irq),
            2 => Some(WakerCtx::Softirq),
            3 => Some(WakerCtx::Timer),
            _ => None,
        }
    }
}

/// Indexes into the per-CPU [`names::IRQ_CTX`] array: nesting depth of each context.
pub const IRQ_CTX_HARDIRQ: u32 = 0;
pub const IRQ_CTX_SOFTIRQ: u32 = 1;
pub const IRQ_CTX_TIMER: u32 = 2;
pub const IRQ_CTX_COUNT: u32 = 3;

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
    /// The fd's file, as the kernel knows it (an fd argument only; 0 when not read): its
    /// filesystem's kernel dev_t and its inode number. Userspace's cache of what an fd
    /// resolves to is valid while they stay the same, without a stat through /proc for
    /// each call (ZooKeeper's log fd, thousands of times a second).
    pub file_dev: u32,
    /// The fd (as the raw 64-bit argument) or the msync address; 0 for sync.
    pub arg: u64,
    pub file_ino: u64,
}
const _: () = assert!(size_of::<SyscallEnterEvent>() == 48);
/// The size of a [`SyscallEnterEvent`] before `file_ino` (recordings of version 3 before
/// it was added), still read.
pub const SYSCALL_ENTER_V1_SIZE: usize = 40;

/// [`Inflight::flags`] / [`SyscallExitEvent::flags`]: the start is only a bound (the call
/// was already running when tracing began; userspace seeded it from /proc).
pub const CALL_START_BOUND: u32 = 1;
/// The thread's on/off-CPU accounting covers the whole call (on_cpu_ns and the short_*
/// sums are meaningful).
pub const CALL_ACCOUNTED: u32 = 2;
/// The thread went off CPU right after the syscall returned; `after_ns` is how long until
/// it ran again.
pub const CALL_AFTER: u32 = 4;
/// Within the call, the thread was found running while its state said off CPU: a
/// scheduler switch back onto the CPU ran no program (the kernel skips a program's run
/// now and then), so one off-CPU interval of the call was never sent. Its timeline has a
/// gap, and its accounting is incomplete.
pub const CALL_SWITCH_UNSEEN: u32 = 8;
/// A write that returned faster than `write_min_ns`, sent because its way back to the
/// caller (`after_ns`) made it that slow: not a slow write in itself.
pub const CALL_FAST: u32 = 16;

/// A call in progress (value of [`names::INFLIGHT`], keyed by tid).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Inflight {
    pub start_ns: u64,
    pub arg: u64,
    /// The thread's on-CPU total and short off-CPU sums at entry (see [`ThreadState`]).
    pub on_ns: u64,
    pub short_ns: [u64; 3],
    pub syscall: u32,
    pub tgid: u32,
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Inflight>() == 64);

/// A target thread left a watched syscall. Timed in the kernel: `hdr.ts_ns` is the exit,
/// `start_ns` the entry. Sent at the thread's next context switch (or next watched call, or
/// exit), so that it can say whether the thread went off CPU right on its way back to the
/// caller, and for how long: what the caller measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SyscallExitEvent {
    pub hdr: EventHeader,
    /// A [`Syscall`].
    pub syscall: u32,
    /// `CALL_*` flags.
    pub flags: u32,
    /// CLOCK_MONOTONIC nanoseconds at entry.
    pub start_ns: u64,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Same as [`SyscallEnterEvent::arg`].
    pub arg: u64,
    /// Time on CPU during the call (with CALL_ACCOUNTED).
    pub on_cpu_ns: u64,
    /// Off-CPU time during the call in intervals too short to be sent one by one:
    /// asleep in D, asleep otherwise (S), waiting for a CPU.
    pub short_ns: [u64; 3],
    /// With CALL_AFTER: from the return until the thread ran again.
    pub after_ns: u64,
    /// The thread's comm at exit (NUL-padded): the JVM's thread name, 15 bytes at most.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<SyscallExitEvent>() == 112);

/// Index of the short-interval sums: D, S (other sleeps), run queue.
pub const SHORT_D: usize = 0;
pub const SHORT_S: usize = 1;
pub const SHORT_RUNQ: usize = 2;

/// How many kernel stack frames a D-state sleep keeps.
pub const MAX_FRAMES: usize = 24;

/// [`BlockedEvent::flags`]: the interval began right after a watched syscall returned.
pub const BLOCKED_AFTER_CALL: u32 = 1;
/// The interval began before tracing (userspace seeded it from /proc): `off_ns` is a bound.
pub const BLOCKED_SEEDED: u32 = 2;
/// Still off CPU when tracing ended: `hdr.ts_ns` is the end of tracing, not a switch-in.
pub const BLOCKED_OPEN: u32 = 4;

/// A target thread went back on CPU after an off-CPU interval. `hdr.ts_ns` is when it ran
/// again; `hdr.tgid/tid` the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BlockedEvent {
    pub hdr: EventHeader,
    /// When it switched out.
    pub off_ns: u64,
    /// When it was woken (0: never; it was preempted while runnable).
    pub wake_ns: u64,
    /// `prev_state` at switch-out (TASK_REPORT bits; 0 or the preempt bit: runnable).
    pub state: u64,
    /// The syscall it was in when it switched out (-1: not in a syscall, or unknown).
    pub syscall: i64,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    /// A [`WakerCtx`]: a task, or an interrupt/timer on whatever task was running.
    pub waker_ctx: u32,
    /// `BLOCKED_*` flags.
    pub flags: u32,
    pub waker_comm: [u8; COMM_LEN],
    /// Kernel stack at switch-out (D sleeps only), innermost first.
    pub nframes: u32,
    pub _pad: u32,
    pub frames: [u64; MAX_FRAMES],
}
const _: () = assert!(size_of::<BlockedEvent>() == 96 + 8 * MAX_FRAMES);

impl Default for BlockedEvent {
    fn default() -> Self {
        BlockedEvent {
            hdr: EventHeader::default(),
            off_ns: 0,
            wake_ns: 0,
            state: 0,
            syscall: -1,
            waker_tgid: 0,
            waker_tid: 0,
            waker_ctx: 0,
            flags: 0,
            waker_comm: [0; COMM_LEN],
            nframes: 0,
            _pad: 0,
            frames: [0; MAX_FRAMES],
        }
    }
}

/// Per target thread (value of [`names::THREADS`]): the off-CPU interval in progress, the
/// thread's on-CPU and short off-CPU totals, and a syscall exit waiting to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ThreadState {
    /// The off-CPU interval in progress (valid with THREAD_OFF), in the same layout as the
    /// record it becomes.
    pub off: BlockedEvent,
    /// Since when the thread is on CPU (valid without THREAD_OFF, with THREAD_ACCOUNTED).
    pub on_since_ns: u64,
    /// Total on-CPU time since accounting began.
    pub on_ns: u64,
    /// Off-CPU intervals shorter than `blocked_min_ns`, summed by [`SHORT_D`] etc.
    pub short_ns: [u64; 3],
    pub tgid: u32,
    /// `THREAD_*` flags.
    pub flags: u32,
    /// CPU time the thread has run since `pending`'s syscall returned, interrupts on its
    /// CPU in that time not counted.
    pub after_cpu_ns: u64,
    /// The CPU's interrupt time (`IrqClock::sum_ns`) when the thread's current stretch on
    /// CPU since `pending`'s return began (valid with THREAD_PENDING, while on CPU).
    pub irq_mark_ns: u64,
    /// A syscall exit held until the thread is past its caller's clock read (valid with
    /// THREAD_PENDING).
    pub pending: SyscallExitEvent,
}

/// [`ThreadState::flags`]: the thread is off CPU (`off` is valid).
pub const THREAD_OFF: u32 = 1;
/// On/off-CPU accounting is complete since some point (the first switch-in seen).
pub const THREAD_ACCOUNTED: u32 = 2;
/// `pending` holds an exit not yet sent.
pub const THREAD_PENDING: u32 = 4;
/// The thread is off CPU on its way back from `pending`'s syscall.
pub const THREAD_AFTER: u32 = 8;
/// `pending` is a write that returned faster than `write_min_ns`: it is sent only if the
/// way back to its caller (`after_ns`) makes it that slow, and its `comm` is filled then.
/// A wait between a fast write's return and the caller's clock read (a preemption right
/// after ZooKeeper's append, before `System.nanoTime()`) is part of what the caller timed.
pub const THREAD_PENDING_FAST: u32 = 16;

/// A block request on a watched disk (value of [`names::REQUESTS`], and the body of
/// [`IoEvent`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Request {
    /// When its submitter allocated it (block_getrq), or when first seen.
    pub queued_ns: u64,
    /// When it was inserted into a scheduler queue (0: issued directly).
    pub insert_ns: u64,
    /// When it was (last) issued to the driver (0: not issued yet, or requeued).
    pub issue_ns: u64,
    pub sector: u64,
    /// The inode a flusher was writing back when it submitted this (else 0), and that
    /// inode's bdi name (`8:0`), so userspace can find who dirtied it.
    pub ino: u64,
    pub wb_bdi: [u8; 16],
    /// The submitter's cgroup (v2 id) and the cgroup the block layer charges the I/O to
    /// (the bio's blkcg: the dirtier's for writeback, the original submitter's for I/O
    /// relayed by a kernel thread; a v1 blkio id on hybrid hosts). 0 when unknown.
    pub task_cgroup: u64,
    pub blk_cgroup: u64,
    /// Kernel dev_t of the disk, and of the partition when the block layer set it.
    pub disk: u32,
    pub part: u32,
    pub tgid: u32,
    pub tid: u32,
    /// Bytes of the request (at issue), and bytes completed so far.
    pub bytes: u32,
    pub done_bytes: u32,
    /// The request's op and flags (REQ_OP_* | REQ_*; userspace decodes them with the
    /// kernel's own bit numbers from BTF).
    pub cmd_flags: u32,
    pub requeues: u16,
    /// `REQ_*` flags below.
    pub flags: u16,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<Request>() == 120);

/// [`Request::flags`]: the submitter is a kernel thread (a flusher, kblockd, a loop or
/// throttling worker): who caused the I/O is in `ino`/`blk_cgroup`, not in `tgid`.
pub const RQ_KTHREAD: u16 = 1;
/// The submitter was seen at block_getrq (the definitive submitter context).
pub const RQ_FROM_GETRQ: u16 = 2;
/// Seen only at its completion: queued before its disk was watched.
pub const RQ_UNMATCHED: u16 = 4;
/// This completion covers part of the request; more follow.
pub const RQ_PARTIAL: u16 = 8;
/// Still in flight when tracing ended (`hdr.ts_ns` is the end of tracing).
pub const RQ_OPEN: u16 = 16;
/// Not followed from its start by choice: issued while no watched call could be in flight
/// (`--requests around-calls`), first seen at its completion. Its start and issue are the
/// block layer's own stamps (`start_time_ns`, `io_start_time_ns`, where the queue keeps
/// them); its submitter is unknown unless block_getrq saw its bio. Set with
/// [`RQ_UNMATCHED`].
pub const RQ_LATE: u16 = 32;
/// `ino` and `wb_bdi` are the inode whose page cache pages the request carries and its
/// filesystem's bdi (a request first seen at its completion: see
/// [`KernelOffsets::bio_io_vec`]), not a flusher's.
pub const RQ_PAGE_INODE: u16 = 64;

/// A block request on a watched disk completed (or part of it did). `hdr.ts_ns` is the
/// completion; `hdr.tgid/tid` who submitted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IoEvent {
    pub hdr: EventHeader,
    pub rq: Request,
    /// Bytes completed by this completion.
    pub nr_bytes: u32,
    /// The block layer's status (blk_status_t; 0 is success).
    pub status: u32,
}
const _: () = assert!(size_of::<IoEvent>() == 152);

/// Key of [`names::OTHER_IO`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct OtherIoKey {
    pub disk: u32,
    pub _pad: u32,
    /// The cgroup the block layer charged the requests to, or [`OTHER_IO_WATCHED`].
    pub blk_cgroup: u64,
}

/// `OtherIoKey::blk_cgroup` of a watched disk's entry: its completions, counted the way
/// unwatched disks' are, so that every disk's count can be checked against the block
/// layer's own (a completion the kernel skipped the program for leaves a request that
/// looks in flight forever).
pub const OTHER_IO_WATCHED: u64 = u64::MAX;

/// Value of [`names::OTHER_IO`] (per CPU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct OtherIo {
    pub requests: u64,
    pub bytes: u64,
}

/// A way of [`names::OTHER_IO_CACHE`]: free while `key.disk` is 0 (no block device is
/// 0:0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct OtherIoCached {
    pub key: OtherIoKey,
    pub io: OtherIo,
}

/// Ways of [`names::OTHER_IO_CACHE`] per CPU (a power of two).
pub const OTHER_IO_WAYS: u32 = 8;

impl OtherIoKey {
    /// The way of [`names::OTHER_IO_CACHE`] this key may be kept in.
    #[inline(always)]
    pub const fn way(&self) -> u32 {
        let h = self.disk ^ (self.blk_cgroup as u32) ^ ((self.blk_cgroup >> 32) as u32);
        h.wrapping_mul(0x9e37_79b1) >> (32 - OTHER_IO_WAYS.trailing_zeros())
    }
}

/// The upper bound of the first bucket of [`IoSummary::hist`]; each next one doubles it.
/// The same bounds as the agent's `zkstall_disk_request_duration_seconds` histogram.
pub const IO_HIST_FIRST_NS: u64 = 20_000;
/// Buckets of [`IoSummary::hist`]: 22 bounds (20 us .. ~42 s), then the rest.
pub const IO_HIST_BUCKETS: usize = 23;

/// Slots of [`names::IO_SUMMARY`]: how many devices (disks and partitions) one run can
/// watch with their summaries kept. An array, so the hot paths index it (a lookup the
/// verifier inlines) where a hash map cost a hash and a bucket walk (~40 ns per request
/// here, twice per request while no call is in flight).
pub const WATCH_SLOTS: u32 = 256;
/// No slot (a disk not watched, or watched past the first [`WATCH_SLOTS`] devices).
pub const NO_SLOT: u32 = u32::MAX;

/// Value of [`names::IO_SUMMARY`] (per CPU, by watched disk's slot): the requests that
/// were not sent one by one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct IoSummary {
    /// Requests completed (each counted at its last completion).
    pub requests: u64,
    pub bytes: u64,
    /// Sum of their device service times (issue to completion).
    pub service_ns: u64,
    /// Their service times: bucket k counts those up to `IO_HIST_FIRST_NS << k` (and
    /// above the previous bound); the last bucket, the rest.
    pub hist: [u64; IO_HIST_BUCKETS],
    /// Requests with data issued while no watched call could be in flight, which the
    /// probes did not follow ([`RQ_LATE`]); those of them the driver gave back (requeued,
    /// to be issued again); and those first seen completing. Over CPUs, `late_issued -
    /// late_requeued - late_done` is how many are in flight unseen. One field per program
    /// (block_rq_issue, block_rq_requeue, block_rq_complete): programs nest on one CPU,
    /// but none with itself.
    pub late_issued: u64,
    pub late_requeued: u64,
    pub late_done: u64,
}

/// Entries of [`names::CALL_WATCH`].
pub const CALL_WATCH_QUIET: u32 = 0;
pub const CALL_WATCH_SCANNED: u32 = 1;
pub const CALL_WATCH_ENTER: u32 = 2;
pub const CALL_WATCH_EXIT: u32 = 3;
pub const CALL_WATCH_ENTRIES: u32 = 4;

/// Who submitted a bio (value of [`names::BIOS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Submitter {
    pub ts_ns: u64,
    pub ino: u64,
    pub wb_bdi: [u8; 16],
    pub task_cgroup: u64,
    pub tgid: u32,
    pub tid: u32,
    pub flags: u16,
    pub _pad: [u16; 3],
    pub comm: [u8; COMM_LEN],
}

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

/// A CPU whose heartbeat did not run for [`HOST_GAP_NS`] or more: from `last_ns` to the
/// header's time. Every CPU silent at once is a host that stopped (a paused VM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct HostGapEvent {
    pub hdr: EventHeader,
    pub last_ns: u64,
    pub cpu: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<HostGapEvent>() == 40);

/// Where a USDT argument is ([`UsdtArgSpec::loc`]).
pub const USDT_ARG_NONE: u8 = 0;
/// In a register of the probed instruction (`reg`: a `pt_regs` slot, x86_64 order).
pub const USDT_ARG_REG: u8 = 1;
/// In user memory at a register plus `off`.
pub const USDT_ARG_MEM: u8 = 2;
/// A constant (`value`).
pub const USDT_ARG_CONST: u8 = 3;

/// How to read one USDT argument (from its `SIZE@OPERAND` spec in the ELF note).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UsdtArgSpec {
    pub loc: u8,
    pub reg: u8,
    /// Bytes; negative: signed.
    pub size: i8,
    pub _pad: u8,
    pub off: i32,
    pub value: i64,
}
const _: () = assert!(size_of::<UsdtArgSpec>() == 16);

pub const USDT_MAX_ARGS: usize = 4;
/// Slots of [`names::USDT_SPECS`]: eight probes for each of up to eight libjvm builds.
pub const USDT_SPEC_SLOTS: u32 = 64;

/// The HotSpot probes zkstall uses ([`UsdtSpec::probe`], [`JvmEvent::probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum JvmProbe {
    /// hotspot:thread__start(name, name_len, java_tid, native_tid, daemon).
    ThreadStart = 1,
    /// hotspot:thread__stop(the same).
    ThreadStop = 2,
    /// hs_private:safepoint__begin().
    SafepointBegin = 3,
    /// hs_private:safepoint__end().
    SafepointEnd = 4,
    /// hotspot:vmops__begin(name, name_len, mode): a VM operation (GC, deoptimization...).
    VmopBegin = 5,
    /// hotspot:vmops__end(the same).
    VmopEnd = 6,
    /// hotspot:gc__begin(full).
    GcBegin = 7,
    /// hotspot:gc__end().
    GcEnd = 8,
}

impl JvmProbe {
    pub const ALL: [JvmProbe; 8] = [
        JvmProbe::ThreadStart,
        JvmProbe::ThreadStop,
        JvmProbe::SafepointBegin,
        JvmProbe::SafepointEnd,
        JvmProbe::VmopBegin,
        JvmProbe::VmopEnd,
        JvmProbe::GcBegin,
        JvmProbe::GcEnd,
    ];

    /// (provider, name) in the ELF note.
    pub const fn note(self) -> (&'static str, &'static str) {
        match self {
            JvmProbe::ThreadStart => ("hotspot", "thread__start"),
            JvmProbe::ThreadStop => ("hotspot", "thread__stop"),
            JvmProbe::SafepointBegin => ("hs_private", "safepoint__begin"),
            JvmProbe::SafepointEnd => ("hs_private", "safepoint__end"),
            JvmProbe::VmopBegin => ("hotspot", "vmops__begin"),
            JvmProbe::VmopEnd => ("hotspot", "vmops__end"),
            JvmProbe::GcBegin => ("hotspot", "gc__begin"),
            JvmProbe::GcEnd => ("hotspot", "gc__end"),
        }
    }

    pub const fn from_u32(v: u32) -> Option<JvmProbe> {
        Some(match v {
            1 => JvmProbe::ThreadStart,
            2 => JvmProbe::ThreadStop,
            3 => JvmProbe::SafepointBegin,
            4 => JvmProbe::SafepointEnd,
            5 => JvmProbe::VmopBegin,
            6 => JvmProbe::VmopEnd,
            7 => JvmProbe::GcBegin,
            8 => JvmProbe::GcEnd,
            _ => return None,
        })
    }
}

/// Value of [`names::USDT_SPECS`]: one attached probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UsdtSpec {
    /// A [`JvmProbe`].
    pub probe: u32,
    pub nargs: u32,
    pub args: [UsdtArgSpec; USDT_MAX_ARGS],
}
const _: () = assert!(size_of::<UsdtSpec>() == 72);

/// Bytes of a name a [`JvmEvent`] carries (thread names, VM operation names).
pub const JVM_NAME_LEN: usize = 64;

/// A HotSpot USDT probe fired in a target JVM (`hdr` is the firing thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct JvmEvent {
    pub hdr: EventHeader,
    /// A [`JvmProbe`].
    pub probe: u32,
    /// The name's length as the probe gave it (the copy is cut at JVM_NAME_LEN - 1).
    pub name_len: u32,
    /// thread probes: the Java thread id and the OS thread id; vmops: the mode; gc: full.
    pub a: u64,
    pub b: u64,
    /// A thread's Java name, or a VM operation's name (NUL-terminated).
    pub name: [u8; JVM_NAME_LEN],
}
const _: () = assert!(size_of::<JvmEvent>() == 112);

/// A target thread queued writeback of a filesystem because it was low on free space
/// (writeback_queue with reason WB_REASON_FS_FREE_SPACE; ext4 does it from
/// ext4_nonda_switch when delayed allocation runs short).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct LowSpaceEvent {
    pub hdr: EventHeader,
    /// Pages asked for.
    pub nr_pages: i64,
    /// The filesystem's device (kernel dev_t).
    pub sb_dev: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<LowSpaceEvent>() == 40);

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

/// A target thread reclaimed memory itself (direct reclaim, or its memory cgroup's
/// limit): `hdr.ts_ns` is the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ReclaimEvent {
    pub hdr: EventHeader,
    pub start_ns: u64,
    pub nr_reclaimed: u64,
    /// 1: memory-cgroup reclaim (the cgroup's limit), 0: direct reclaim (the system's).
    pub memcg: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ReclaimEvent>() == 48);

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

#[cfg(feature = "user")]
mod user {
    // SAFETY (all below): plain #[repr(C)] integers with explicit padding; every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Inflight {}
    unsafe impl aya::Pod for super::ThreadState {}
    unsafe impl aya::Pod for super::Request {}
    unsafe impl aya::Pod for super::OtherIoKey {}
    unsafe impl aya::Pod for super::OtherIo {}
    unsafe impl aya::Pod for super::OtherIoCached {}
    unsafe impl aya::Pod for super::IoSummary {}
    unsafe impl aya::Pod for super::UsdtSpec {}
}
