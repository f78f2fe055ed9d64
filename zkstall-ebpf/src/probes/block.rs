//! Block requests, all devices and all processes: who queued each one, when it was queued,
//! issued and completed, its size and flags. One record per completed request.
//!
//! Requests are keyed by (dev, op, sector) because classic tracepoints do not expose the
//! request pointer (bcc's tracepoint biosnoop does the same). Who queued a request is
//! taken at insert, which runs in the submitter's context; a request issued directly
//! without an insert is attributed at issue instead. When the submitter is writing back an
//! inode (FLUSHING), the inode is stored, so userspace can charge the dirtier.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use zkstall_common::{Counter, EventKind, Field, IoEvent, RequestKey};

use crate::{
    emit::{emit, header},
    maps::{FLUSH_GRACE_NS, FLUSHING, REQUESTS, Request, count, current_comm, field},
};

/// The op character of an rwbs string: the first flag after an optional leading `F`
/// (preflush), so `FWS` and `WS` key alike.
#[inline(always)]
fn op_of(rwbs: u64) -> u32 {
    let b0 = (rwbs & 0xff) as u32;
    let b1 = ((rwbs >> 8) & 0xff) as u32;
    if b0 == b'F' as u32 && b1 != 0 { b1 } else { b0 }
}

#[inline(always)]
fn key(dev: u32, rwbs: u64, sector: u64) -> RequestKey {
    let op = op_of(rwbs);
    // A pure flush has no sector: the kernel reports 0 at issue and -1 at completion.
    let sector = if op == b'F' as u32 { 0 } else { sector };
    RequestKey { dev, op, sector }
}

/// A new entry for a request queued (or issued directly) by the current task.
#[inline(always)]
fn new_request(now: u64, bytes: u32) -> Request {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out immediately.
    let ino = match unsafe { FLUSHING.get(tid) } {
        Some(f) if f.end_ns == 0 || now.saturating_sub(f.end_ns) < FLUSH_GRACE_NS => f.ino,
        _ => 0,
    };
    Request {
        insert_ns: now,
        issue_ns: 0,
        ino,
        // SAFETY: plain helper call.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        tid,
        bytes,
        requeues: 0,
        comm: current_comm(),
    }
}

/* TP_PROTO(struct request *rq): dev, sector, nr_sector, bytes, ioprio, rwbs, comm, cmd */
#[tracepoint]
pub fn block_rq_insert(ctx: TracePointContext) -> u32 {
    let (Some(dev), Some(sector), Some(bytes), Some(rwbs)) = (
        field::<u32>(&ctx, Field::RqInsertDev),
        field::<u64>(&ctx, Field::RqInsertSector),
        field::<u32>(&ctx, Field::RqInsertBytes),
        field::<u64>(&ctx, Field::RqInsertRwbs),
    ) else {
        return 0;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if REQUESTS
        .insert(key(dev, rwbs, sector), new_request(now, bytes), 0)
        .is_err()
    {
        count(Counter::MapFull);
    }
    0
}

/* TP_PROTO(struct request *rq): as block_rq_insert */
#[tracepoint]
pub fn block_rq_issue(ctx: TracePointContext) -> u32 {
    let (Some(dev), Some(sector), Some(bytes), Some(rwbs)) = (
        field::<u32>(&ctx, Field::RqIssueDev),
        field::<u64>(&ctx, Field::RqIssueSector),
        field::<u32>(&ctx, Field::RqIssueBytes),
        field::<u64>(&ctx, Field::RqIssueRwbs),
    ) else {
        return 0;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let k = key(dev, rwbs, sector);
    match REQUESTS.get_ptr_mut(k) {
        Some(r) => {
            // SAFETY: a valid map value pointer; updates of one request are serialised by
            // the block layer (issue happens once per dispatch).
            unsafe {
                (*r).issue_ns = now;
                (*r).bytes = bytes;
            }
        }
        None => {
            // Issued without a visible insert (direct issue): the issuer is the submitter.
            let mut r = new_request(now, bytes);
            r.issue_ns = now;
            if REQUESTS.insert(k, r, 0).is_err() {
                count(Counter::MapFull);
            }
        }
    }
    0
}

/* TP_PROTO(struct request *rq): dev, sector, nr_sector, ioprio, rwbs, cmd */
#[tracepoint]
pub fn block_rq_requeue(ctx: TracePointContext) -> u32 {
    let (Some(dev), Some(sector), Some(rwbs)) = (
        field::<u32>(&ctx, Field::RqRequeueDev),
        field::<u64>(&ctx, Field::RqRequeueSector),
        field::<u64>(&ctx, Field::RqRequeueRwbs),
    ) else {
        return 0;
    };
    if let Some(r) = REQUESTS.get_ptr_mut(key(dev, rwbs, sector)) {
        // SAFETY: a valid map value pointer.
        unsafe {
            (*r).requeues += 1;
            (*r).issue_ns = 0;
        }
    }
    0
}

/* TP_PROTO(struct request *rq, blk_status_t error, unsigned int nr_bytes):
 * dev, sector, nr_sector, error, ioprio, rwbs, cmd. Runs in IRQ context: the current task
 * means nothing here, everything comes from the entry made at insert/issue. */
#[tracepoint]
pub fn block_rq_complete(ctx: TracePointContext) -> u32 {
    let (Some(dev), Some(sector), Some(rwbs)) = (
        field::<u32>(&ctx, Field::RqCompleteDev),
        field::<u64>(&ctx, Field::RqCompleteSector),
        field::<u64>(&ctx, Field::RqCompleteRwbs),
    ) else {
        return 0;
    };
    let error = field::<i32>(&ctx, Field::RqCompleteError).unwrap_or(0);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let k = key(dev, rwbs, sector);
    // SAFETY: the entry is copied out before it is removed.
    let r = match unsafe { REQUESTS.get(k) }.copied() {
        Some(r) => {
            let _ = REQUESTS.remove(k);
            r
        }
        None => {
            // Queued before tracing started, or never seen queued or issued: still a
            // completion on this device (the evidence of a device stall is in the
            // completions), with who and when unknown.
            count(Counter::IoUnmatched);
            Request {
                insert_ns: 0,
                issue_ns: 0,
                ino: 0,
                cgroup_id: 0,
                tgid: 0,
                tid: 0,
                bytes: 0,
                requeues: 0,
                comm: [0; 16],
            }
        }
    };
    let mut hdr = header::<IoEvent>(EventKind::Io, now, 0);
    hdr.tgid = r.tgid;
    hdr.tid = r.tid;
    emit(IoEvent {
        hdr,
        dev,
        error,
        sector,
        bytes: r.bytes,
        requeues: r.requeues,
        rwbs: rwbs.to_le_bytes(),
        insert_ns: r.insert_ns,
        issue_ns: r.issue_ns,
        ino: r.ino,
        cgroup_id: r.cgroup_id,
        comm: r.comm,
    });
    0
}
