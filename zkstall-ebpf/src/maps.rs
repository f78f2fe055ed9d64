//! Every map and load-time global the programs share. Names come from `zkstall_common::names`
//! (the statics are named identically, which is what aya's `#[map]` uses by default).

use aya_ebpf::{
    EbpfContext as _, Global,
    helpers::bpf_probe_read_kernel,
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use zkstall_common::{
    COMM_LEN, COUNTER_COUNT, Config, Counter, EVENTS_BYTES, Field, IRQ_CTX_COUNT, Inflight,
    MAX_INFLIGHT, MAX_TARGETS, NO_OFFSET, OtherIo, OtherIoKey, PID_BITS, Request, Submitter,
    TARGET_WORDS, ThreadState,
};

/// Tracepoint field offsets, kernel struct offsets and thresholds, written by userspace at
/// load time.
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config::DEFAULT);

/// Reads one member of CONFIG without copying the whole struct onto the BPF stack.
macro_rules! config {
    ($($member:tt)+) => {{
        let base = &crate::maps::CONFIG as *const aya_ebpf::Global<zkstall_common::Config>
            as *const zkstall_common::Config;
        // SAFETY: Global<T> is #[repr(transparent)] over an always-initialised T; a
        // volatile read keeps the loader-written value from being constant-folded.
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*base).$($member)+)) };
        v
    }};
}
pub(crate) use config;

/// Reads tracepoint field `f` at the offset userspace found in tracefs. None when the
/// field is absent on this kernel (offset 0) or the read fails (counted).
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, f: Field) -> Option<T> {
    let off = config!(field[f as usize]);
    if off == 0 {
        return None;
    }
    // SAFETY: `off` is inside this tracepoint's record: userspace checked it against the
    // tracepoint's format (name and size) before loading.
    match unsafe { ctx.read_at::<T>(off as usize) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(Counter::ReadError);
            None
        }
    }
}

/// Reads a `T` at byte offset `off` of the kernel object at `base` (an offset from BTF;
/// NO_OFFSET: absent on this kernel). None when absent, `base` is null or the read fails.
#[inline(always)]
pub fn kread<T>(base: u64, off: u16) -> Option<T> {
    if off == NO_OFFSET || base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    match unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            count(Counter::ReadError);
            None
        }
    }
}

/// Reads a `T` at byte offset `off` of `base`, a pointer the verifier knows the BTF type of:
/// a tp_btf program's argument, a pointer member read from one with `btf_read`, or what
/// bpf_task_pt_regs returns. A plain load, which the verifier checks against BTF at load
/// time (it must be one whole member, or lie inside an integer member) and turns into a
/// load that cannot fault (a bad address reads 0, and no error is counted): no helper
/// call. This works because `off` comes from the frozen read-only CONFIG, so the verifier
/// knows its value; a pointer of unknown type (an integer from bpf_get_current_task, or
/// from a map) must go through [`kread`] instead, or the program is rejected. None when the
/// member is absent on this kernel (NO_OFFSET) or `base` is null.
#[inline(always)]
pub fn btf_read<T>(base: u64, off: u16) -> Option<T> {
    if off == NO_OFFSET || base == 0 {
        return None;
    }
    // SAFETY: see above; volatile, so that LLVM never merges two reads of adjacent members
    // into one wider load that would cross a member's end.
    Some(unsafe { core::ptr::read_volatile((base + off as u64) as *const T) })
}

/// The current task's comm, or zeros.
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; COMM_LEN])
}

/// Keeps `ctx` used in programs that only need helpers.
#[inline(always)]
pub fn touch(ctx: &TracePointContext) {
    let _ = ctx.as_ptr();
}

/// Every record to userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// tgid -> 1 for each traced process. Filtering on the tgid (not the tid) covers threads
/// created after tracing started.
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// tid -> the watched syscall it is inside. LRU: a thread killed inside a call never
/// reaches its exit tracepoint, and its entry must not stay forever. Userspace seeds calls
/// already running at attach, and scans it for calls crossing the threshold.
#[map]
pub static INFLIGHT: LruHashMap<u32, Inflight> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Drop and error counters, per CPU so incrementing needs no atomics.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Counts one occurrence of `c` on this CPU.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Not atomic (bpfel-unknown-none has no atomic RMW in core). The counters bumped
        // on hot paths (IoWatched, IoOther, ...) are each bumped by one program, which
        // never nests with itself on a CPU, so they are exact. A counter several
        // programs bump (MapFull, IoStale, ReadError, RingbufFull) could lose one if an interrupt's program
        // bumps it between this load and store: those are rare-event counters, and a
        // loss would need two rare events nested within three instructions.
        // SAFETY: a valid map value pointer for the program's whole run.
        unsafe { *p += 1 };
    }
}

/// TARGETS as a bitmap by tgid (userspace keeps both): one inlined array access on the
/// hot paths every bystander's context switch, wakeup and syscall go through.
#[map]
pub static TARGET_BITS: Array<u64> = Array::with_max_entries(TARGET_WORDS, 0);

/// Bumped by userspace whenever DISKS changes (entry 0).
#[map]
pub static WATCH_GEN: Array<u64> = Array::with_max_entries(1, 0);

/// The current DISKS generation.
#[inline(always)]
pub fn watch_gen() -> u64 {
    WATCH_GEN.get(0).copied().unwrap_or(0)
}

/// True when a task of this tgid belongs to a traced process.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    if tgid >= PID_BITS {
        // SAFETY: the value is only tested for presence, never dereferenced.
        return unsafe { TARGETS.get(tgid) }.is_some();
    }
    match TARGET_BITS.get(tgid >> 6) {
        Some(w) => *w & (1u64 << (tgid & 63)) != 0,
        None => false,
    }
}

/// Block requests in flight on watched disks, keyed by `struct request *`. A plain hash,
/// not an LRU: an entry must never be evicted silently (the oldest in-flight requests are
/// exactly those of a stalled device). A `struct request` is reused from a fixed pool, so
/// an entry whose completion was missed is replaced when its request is next seen, and the
/// map cannot grow beyond the number of requests that exist.
#[map]
pub static REQUESTS: HashMap<u64, Request> = HashMap::with_max_entries(65536, 0);

/// `struct bio *` -> its submitter, between block_getrq and the request's first sighting.
/// LRU: only a hint (a bio whose request is never seen again must not stay).
#[map]
pub static BIOS: LruHashMap<u64, Submitter> = LruHashMap::with_max_entries(16384, 0);

/// Kernel dev_t -> since when (CLOCK_MONOTONIC ns) it is watched, for each watched disk
/// and each of its partitions.
#[map]
pub static DISKS: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

/// Requests completed on disks nobody watches: counted, not sent.
#[map]
pub static OTHER_IO: LruPerCpuHashMap<OtherIoKey, OtherIo> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// A few of OTHER_IO's keys per CPU, with their counts (see names::OTHER_IO_CACHE).
#[map]
pub static OTHER_IO_CACHE: PerCpuArray<zkstall_common::OtherIoCached> =
    PerCpuArray::with_max_entries(zkstall_common::OTHER_IO_WAYS, 0);

/// The watched disks' requests not sent one by one, summed per disk (see
/// `Config::io_slow_ns`), per CPU, at each disk's slot (DISK_SLOTS).
#[map]
pub static IO_SUMMARY: PerCpuArray<zkstall_common::IoSummary> =
    PerCpuArray::with_max_entries(zkstall_common::WATCH_SLOTS, 0);

/// Every completion on a watched disk, per CPU, at its slot (see names::WATCHED_IO).
#[map]
pub static WATCHED_IO: PerCpuArray<zkstall_common::OtherIo> =
    PerCpuArray::with_max_entries(zkstall_common::WATCH_SLOTS, 0);

/// Kernel dev_t -> its slot of IO_SUMMARY and WATCHED_IO (see names::DISK_SLOTS).
#[map]
pub static DISK_SLOTS: HashMap<u32, u32> =
    HashMap::with_max_entries(zkstall_common::WATCH_SLOTS, 0);

/// Whether a watched call may be in flight (see zkstall_common::names::CALL_WATCH).
#[map]
pub static CALL_WATCH: Array<u64> = Array::with_max_entries(zkstall_common::CALL_WATCH_ENTRIES, 0);

/// Stamps entry `which` of CALL_WATCH with `now` (a plain store: two CPUs racing leave one
/// of two instants nanoseconds apart).
#[inline(always)]
pub fn stamp_call(which: u32, now: u64) {
    if let Some(p) = CALL_WATCH.get_ptr_mut(which) {
        // SAFETY: a valid map value pointer for the program's whole run.
        unsafe { *p = now };
    }
}

/// A flusher (or any thread) writing back one inode.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Flushing {
    pub ino: u64,
    pub start_ns: u64,
    /// When its writeback ended (0: still going).
    pub end_ns: u64,
    pub bdi: [u8; 16],
}

/// How long after an inode's writeback ends its flusher's requests are still charged to
/// it: the flusher holds a block plug across inodes, so the last requests of one inode
/// are queued when the plug is flushed, just after its writeback ended.
pub const FLUSH_GRACE_NS: u64 = 50_000_000;

#[map]
pub static FLUSHING: LruHashMap<u32, Flushing> = LruHashMap::with_max_entries(4096, 0);

/// Target thread tid -> its scheduling state. LRU so that threads whose exit was missed
/// cannot fill it.
#[map]
pub static THREADS: LruHashMap<u32, ThreadState> = LruHashMap::with_max_entries(8192, 0);

/// Per-CPU nesting depth of hardirq, softirq and timer-callback context, maintained by the
/// irq/timer tracepoints: what a wakeup came from when no task did it.
#[map]
pub static IRQ_CTX: PerCpuArray<u32> = PerCpuArray::with_max_entries(IRQ_CTX_COUNT, 0);

/// Interrupt time on one CPU, measured only while a target thread on it is on its way back
/// from a watched syscall (`watch`): the way back's CPU budget (`after_gap_ns`) is the
/// thread's own time, and an interrupt handled meanwhile (a burst of block completions in a
/// softirq) must not end it early.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct IrqClock {
    pub watch: u32,
    /// Nesting of hardirq, softirq and timer contexts entered while watched.
    pub depth: u32,
    /// When the outermost of them began.
    pub start_ns: u64,
    /// Their total, ever (monotonic: readers keep a mark and subtract).
    pub sum_ns: u64,
}

#[map]
pub static IRQ_CLOCK: PerCpuArray<IrqClock> = PerCpuArray::with_max_entries(1, 0);

/// Starts measuring this CPU's interrupts for the thread `st` running on it, from now.
///
/// # Safety
/// `st` must be a valid THREADS value pointer of the running thread.
#[inline(always)]
pub unsafe fn watch_irqs(st: *mut ThreadState) {
    if let Some(c) = IRQ_CLOCK.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot, only touched on this CPU (task context here, so no
        // interrupt is half counted); `st` as guaranteed by the caller.
        unsafe {
            (*c).watch = 1;
            (*st).irq_mark_ns = (*c).sum_ns;
        }
    }
}

/// Stops measuring this CPU's interrupts; returns their time since `st`'s mark.
///
/// # Safety
/// As [`watch_irqs`].
#[inline(always)]
pub unsafe fn unwatch_irqs(st: *mut ThreadState) -> u64 {
    match IRQ_CLOCK.get_ptr_mut(0) {
        // SAFETY: as in watch_irqs.
        Some(c) => unsafe {
            (*c).watch = 0;
            (*c).sum_ns.saturating_sub((*st).irq_mark_ns)
        },
        None => 0,
    }
}

/// (tgid, ino) of a dirtier.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct DirtyKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ino: u64,
}

#[map]
pub static DIRTY_PENDING: LruHashMap<DirtyKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Target thread tid -> when its reclaim began.
#[map]
pub static RECLAIM_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);
