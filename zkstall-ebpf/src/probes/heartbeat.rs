//! A heartbeat per CPU: a perf cpu-clock timer (HEARTBEAT_HZ) that fires on idle CPUs too.
//! When every CPU's heartbeat stops at once, the whole host stopped: a VM paused by its
//! hypervisor (a stun, a live migration, a snapshot), which otherwise looks exactly like a
//! disk that stopped completing I/O. Silence alone proves nothing on an idle CPU (no other
//! event runs there), hence the timer. Only gaps leave the kernel.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{map, perf_event},
    maps::PerCpuArray,
    programs::PerfEventContext,
};
use zkstall_common::{EventKind, HOST_GAP_NS, HostGapEvent};

use crate::emit::{emit, header};

#[map]
static HEARTBEAT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[perf_event]
pub fn heartbeat(_ctx: PerfEventContext) -> u32 {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(slot) = HEARTBEAT.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU value only this CPU touches (the program never nests with itself).
    let last = unsafe { core::ptr::replace(slot, now) };
    if last != 0 && now.saturating_sub(last) >= HOST_GAP_NS {
        emit(HostGapEvent {
            hdr: header::<HostGapEvent>(EventKind::HostGap, now, 0),
            last_ns: last,
            // SAFETY: plain helper call.
            cpu: unsafe { bpf_get_smp_processor_id() },
            _pad: 0,
        });
    }
    0
}
