//! Every map and load-time global the programs share. Names come from `zkstall_common::names`
//! (the statics are named identically, which is what aya's `#[map]` uses by default).

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use zkstall_common::{COUNTER_COUNT, Config, Counter, EVENTS_BYTES, MAX_INFLIGHT, MAX_TARGETS};

/// Tracepoint field offsets, written by userspace at load time from tracefs.
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config {
    arg_offset: [0; zkstall_common::SYSCALL_COUNT],
    ret_offset: 0,
    _pad: 0,
});

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
    unsafe { TARGETS.get(&tgid) }.is_some()
}
