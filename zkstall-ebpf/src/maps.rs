//! Every map and load-time global the programs share. Names come from `zkstall_common::names`
//! (the statics are named identically, which is what aya's `#[map]` uses by default).

use aya_ebpf::{
    EbpfContext as _, Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::TracePointContext,
};
use zkstall_common::{
    COMM_LEN, COUNTER_COUNT, Config, Counter, EVENTS_BYTES, Field, MAX_INFLIGHT, MAX_TARGETS,
    RequestKey,
};

/// Tracepoint field offsets and thresholds, written by userspace at load time.
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config::DEFAULT);

/// Reads one member of CONFIG without copying the whole struct onto the BPF stack.
macro_rules! config {
    ($($member:tt)+) => {{
        let base = &crate::maps::CONFIG as *const aya_ebpf::Global<zkstall_common::Config>
            as *const zkstall_common::Config;
        // SAFETY: Global<T> is #[repr(transparent)] over an always-initialised T; a
        // volatile read keeps the loader-written value from being constant-folded.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*base).$($member)+)) }
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

/// A call in progress: when it started, which syscall, and its argument.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Inflight {
    pub start_ns: u64,
    pub arg: u64,
    pub syscall: u32,
    pub _pad: u32,
}

/// tid -> the watched syscall it is inside. LRU: a thread killed inside a call never
/// reaches its exit tracepoint, and its entry must not stay forever.
#[map]
pub static INFLIGHT: LruHashMap<u32, Inflight> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Drop and error counters, per CPU so incrementing needs no atomics.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Counts one occurrence of `c` on this CPU.
#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot is only touched by the program running on this CPU, and
        // tracepoint programs do not nest on one CPU.
        unsafe { *p += 1 };
    }
}

/// True when the current task belongs to a traced process.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence, never dereferenced.
    unsafe { TARGETS.get(tgid) }.is_some()
}

/// A block request between insert (or issue) and completion.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Request {
    pub insert_ns: u64,
    pub issue_ns: u64,
    pub ino: u64,
    pub cgroup_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub bytes: u32,
    pub requeues: u32,
    pub comm: [u8; COMM_LEN],
}

/// Block requests in flight, all devices. LRU: a completion we never see (a device
/// removed, a tracepoint missed) must not leak the entry.
#[map]
pub static REQUESTS: LruHashMap<RequestKey, Request> = LruHashMap::with_max_entries(16384, 0);

/// A flusher (or any thread) writing back one inode.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Flushing {
    pub ino: u64,
    pub start_ns: u64,
    /// When its writeback ended (0: still going).
    pub end_ns: u64,
}

/// How long after an inode's writeback ends its flusher's requests are still charged to
/// it: the flusher holds a block plug across inodes, so the last requests of one inode
/// are queued when the plug is flushed, just after its writeback ended.
pub const FLUSH_GRACE_NS: u64 = 50_000_000;

#[map]
pub static FLUSHING: LruHashMap<u32, Flushing> = LruHashMap::with_max_entries(4096, 0);

/// A target thread off CPU.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct OffCpu {
    pub off_ns: u64,
    pub wake_ns: u64,
    pub state: u64,
    pub stack_id: i64,
    pub tgid: u32,
    pub waker_tgid: u32,
    pub waker_tid: u32,
    pub _pad: u32,
    pub waker_comm: [u8; COMM_LEN],
}

#[map]
pub static OFFCPU: LruHashMap<u32, OffCpu> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// tid -> the syscall (orig_ax) a target thread was in at its last switch-out.
#[map]
pub static SWITCH_SYSCALL: LruHashMap<u32, i64> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

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

/// Kernel stacks of D-state sleeps of target threads.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);
