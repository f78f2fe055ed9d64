//! Writing records into the ring buffer. A failed reservation is counted, never silent.

use zkstall_common::{Counter, EVENTS_BYTES, EventHeader, EventKind};

use crate::maps::{EVENTS, count};

/// bpf_ringbuf_query: bytes not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;
/// bpf_ringbuf_submit flags.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// Wake the reader only once this much is waiting. Below it, the reader's own periodic
/// drain (every few ms) picks records up: waking it for every record costs bystanders an
/// IPI and a context switch per block request.
const WAKEUP_BYTES: u64 = (EVENTS_BYTES / 16) as u64;

#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Copies `rec` into the ring buffer. When the buffer is full the record is dropped and
/// [`Counter::RingbufFull`] incremented.
#[inline(always)]
pub fn emit<T: 'static>(rec: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(rec);
            entry.submit(wakeup_flags());
        }
        None => count(Counter::RingbufFull),
    }
}

/// Copies a record that lives in map memory (too large for the BPF stack) into the ring
/// buffer.
///
/// # Safety
/// `rec` must point to a valid, initialised `T` in map memory.
#[inline(always)]
pub unsafe fn emit_from<T: 'static>(rec: *const T) {
    // SAFETY: the caller guarantees `rec` is valid; bpf_ringbuf_output copies from it.
    if EVENTS
        .output::<T>(unsafe { &*rec }, wakeup_flags())
        .is_err()
    {
        count(Counter::RingbufFull);
    }
}

/// The header every record starts with.
#[inline(always)]
pub fn header<T>(kind: EventKind, ts_ns: u64, pid_tgid: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        size: core::mem::size_of::<T>() as u32,
        ts_ns,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    }
}

/// Rare diagnostics (aya-log) are rate-limited: one per CPU per second at most, so a map
/// that stays full cannot flood the log ring.
#[aya_ebpf::macros::map]
static LOG_NEXT_NS: aya_ebpf::maps::PerCpuArray<u64> =
    aya_ebpf::maps::PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn log_allowed() -> bool {
    // SAFETY: plain helper call.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let Some(next) = LOG_NEXT_NS.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU value; a program never nests with itself, and a torn read between
    // two programs only lets one more line through.
    unsafe {
        if now < *next {
            return false;
        }
        *next = now + 1_000_000_000;
    }
    true
}
