//! Page dirtying, flusher writeback and dirty throttling, for every process: who dirtied
//! pages of which inode, which inode a flusher is writing back (so the block requests it
//! queues meanwhile are charged to the dirtier), and who is paused in
//! balance_dirty_pages.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use zkstall_common::{DirtyEvent, EventKind, Field, LowSpaceEvent, ThrottleEvent, WritebackEvent};

use crate::{
    emit::{emit, header},
    maps::{DIRTY_PENDING, DirtyKey, FLUSHING, Flushing, config, current_comm, field, is_target},
};

#[inline(always)]
fn emit_dirty(pid_tgid: u64, ino: u64, pages: u32, bdi: [u8; 16]) {
    // SAFETY: plain helper calls.
    let (now, cgroup_id) = unsafe { (bpf_ktime_get_ns(), bpf_get_current_cgroup_id()) };
    emit(DirtyEvent {
        hdr: header::<DirtyEvent>(EventKind::Dirty, now, pid_tgid),
        ino,
        pages,
        _pad: 0,
        cgroup_id,
        bdi,
        comm: current_comm(),
    });
}

#[inline(always)]
fn on_dirty(ctx: &TracePointContext, ino: Field, name: Field) -> u32 {
    let Some(ino) = field::<u64>(ctx, ino) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = DirtyKey {
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ino,
    };
    match DIRTY_PENDING.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: a valid map value pointer.
            let pending = unsafe {
                *p += 1;
                *p
            };
            if pending >= config!(dirty_batch_pages) {
                // SAFETY: as above.
                unsafe { *p = 0 };
                let bdi = field::<[u8; 16]>(ctx, name).unwrap_or([0; 16]);
                emit_dirty(pid_tgid, ino, pending, bdi);
            }
        }
        None => {
            let _ = DIRTY_PENDING.insert(key, 0, 0);
            let bdi = field::<[u8; 16]>(ctx, name).unwrap_or([0; 16]);
            emit_dirty(pid_tgid, ino, 1, bdi);
        }
    }
    0
}

/* TP_PROTO(struct folio *folio, struct address_space *mapping): name (bdi), ino, index.
 * Fires for every folio dirtied, in the dirtier's context: records are batched per
 * (process, inode): the first folio at once (so attribution is known early), then one
 * record per dirty_batch_pages. */
#[tracepoint]
pub fn writeback_dirty_folio(ctx: TracePointContext) -> u32 {
    on_dirty(&ctx, Field::DirtyIno, Field::DirtyName)
}

/* Kernels before 5.16: TP_PROTO(struct page *page, struct address_space *mapping), same
 * fields. */
#[tracepoint]
pub fn writeback_dirty_page(ctx: TracePointContext) -> u32 {
    on_dirty(&ctx, Field::DirtyPageIno, Field::DirtyPageName)
}

/* TP_PROTO(struct inode *inode, struct writeback_control *wbc, unsigned long nr_to_write):
 * name, ino, state, dirtied_when, writeback_index, nr_to_write, wrote, cgroup_ino. */
#[tracepoint]
pub fn writeback_single_inode_start(ctx: TracePointContext) -> u32 {
    let Some(ino) = field::<u64>(&ctx, Field::WbStartIno) else {
        return 0;
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: plain helper call.
    let start_ns = unsafe { bpf_ktime_get_ns() };
    let _ = FLUSHING.insert(
        tid,
        Flushing {
            ino,
            start_ns,
            end_ns: 0,
            bdi: field::<[u8; 16]>(&ctx, Field::WbStartName).unwrap_or([0; 16]),
        },
        0,
    );
    0
}

/* Same prototype and fields as writeback_single_inode_start; `wrote` is final here. */
#[tracepoint]
pub fn writeback_single_inode(ctx: TracePointContext) -> u32 {
    let Some(ino) = field::<u64>(&ctx, Field::WbIno) else {
        return 0;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // Keep the entry (marked ended) for the requests still in the flusher's plug.
    let start_ns = match FLUSHING.get_ptr_mut(tid) {
        Some(f) => {
            // SAFETY: a valid map value pointer.
            unsafe {
                (*f).end_ns = now;
                (*f).start_ns
            }
        }
        None => 0,
    };
    let wrote = field::<u64>(&ctx, Field::WbWrote).unwrap_or(0);
    if wrote == 0 {
        return 0;
    }
    emit(WritebackEvent {
        hdr: header::<WritebackEvent>(EventKind::Writeback, now, pid_tgid),
        ino,
        wrote,
        start_ns,
        bdi: field::<[u8; 16]>(&ctx, Field::WbName).unwrap_or([0; 16]),
    });
    0
}

/* TP_PROTO(struct bdi_writeback *wb, unsigned long thresh, ..., long pause,
 * unsigned long start_time): bdi, limit, setpoint, dirty, ..., paused, pause, period,
 * think, cgroup_ino (pause and paused in ms). Runs in the throttled task's context. */
#[tracepoint]
pub fn balance_dirty_pages(ctx: TracePointContext) -> u32 {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(ThrottleEvent {
        hdr: header::<ThrottleEvent>(EventKind::Throttle, now, bpf_get_current_pid_tgid()),
        pause_ms: field::<i64>(&ctx, Field::BdpPause).unwrap_or(0),
        paused_ms: field::<u64>(&ctx, Field::BdpPaused).unwrap_or(0),
        dirty: field::<u64>(&ctx, Field::BdpDirty).unwrap_or(0),
        limit: field::<u64>(&ctx, Field::BdpLimit).unwrap_or(0),
        bdi: field::<[u8; 16]>(&ctx, Field::BdpBdi).unwrap_or([0; 16]),
        comm: current_comm(),
    });
    0
}

/* TP_PROTO(struct bdi_writeback *wb, struct wb_writeback_work *work): writeback work queued
 * on a bdi, in the queuing task's context: name, nr_pages, sb_dev, sync_mode, ..., reason.
 * Only work a target queued because its filesystem ran low on free space is sent (ext4's
 * ext4_nonda_switch -> try_to_writeback_inodes_sb); everything else returns at once. */
#[tracepoint]
pub fn writeback_queue(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(reason) = field::<u32>(&ctx, Field::WqReason) else {
        return 0;
    };
    if reason != config!(wb_reason_free_space) {
        return 0;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(LowSpaceEvent {
        hdr: header::<LowSpaceEvent>(EventKind::LowSpace, now, pid_tgid),
        nr_pages: field::<i64>(&ctx, Field::WqNrPages).unwrap_or(0),
        sb_dev: field::<u32>(&ctx, Field::WqSbDev).unwrap_or(0),
        _pad: 0,
    });
    0
}
