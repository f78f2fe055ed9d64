//! Memory reclaim done by the target's threads themselves: direct reclaim (the system is
//! short of memory) and memory-cgroup reclaim (their cgroup is at its limit). A write that
//! has to free memory first stalls for as long as that takes, often waiting for writeback.
//! One record per reclaim, at its end, for target threads only.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use zkstall_common::{EventKind, Field, ReclaimEvent};

use crate::{
    emit::{emit, header},
    maps::{RECLAIM_START, field, is_target, touch},
};

#[inline(always)]
fn begin(ctx: &TracePointContext) -> u32 {
    touch(ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = RECLAIM_START.insert(pid_tgid as u32, now, 0);
    0
}

#[inline(always)]
fn end(ctx: &TracePointContext, nr: Field, memcg: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let tid = pid_tgid as u32;
    // SAFETY: copied out at once.
    let Some(start) = unsafe { RECLAIM_START.get(tid) }.copied() else {
        return 0;
    };
    let _ = RECLAIM_START.remove(tid);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(ReclaimEvent {
        hdr: header::<ReclaimEvent>(EventKind::Reclaim, now, pid_tgid),
        start_ns: start,
        nr_reclaimed: field::<u64>(ctx, nr).unwrap_or(0),
        memcg,
        _pad: 0,
    });
    0
}

/* TP_PROTO(int order, gfp_t gfp_flags): order, gfp_flags. */
#[tracepoint]
pub fn mm_vmscan_direct_reclaim_begin(ctx: TracePointContext) -> u32 {
    begin(&ctx)
}

/* TP_PROTO(unsigned long nr_reclaimed): nr_reclaimed. */
#[tracepoint]
pub fn mm_vmscan_direct_reclaim_end(ctx: TracePointContext) -> u32 {
    end(&ctx, Field::DirectReclaimEndNr, 0)
}

/* TP_PROTO(int order, gfp_t gfp_flags): order, gfp_flags. */
#[tracepoint]
pub fn mm_vmscan_memcg_reclaim_begin(ctx: TracePointContext) -> u32 {
    begin(&ctx)
}

/* TP_PROTO(unsigned long nr_reclaimed): nr_reclaimed. */
#[tracepoint]
pub fn mm_vmscan_memcg_reclaim_end(ctx: TracePointContext) -> u32 {
    end(&ctx, Field::MemcgReclaimEndNr, 1)
}
