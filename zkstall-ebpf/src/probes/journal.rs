//! jbd2 (ext4's journal) commits: a record at each phase, timed in the kernel, and the
//! transaction's size. A commit is rare (at most a few hundred per second), so every
//! phase is sent.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use zkstall_common::{EventKind, Field, JournalEvent, JournalPhase, JournalStatsEvent};

use crate::{
    emit::{emit, header},
    maps::field,
};

#[inline(always)]
fn phase(ctx: &TracePointContext, p: JournalPhase, dev: Field, transaction: Field) -> u32 {
    let (Some(dev), Some(transaction)) = (field::<u32>(ctx, dev), field::<u32>(ctx, transaction))
    else {
        return 0;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(JournalEvent {
        hdr: header::<JournalEvent>(EventKind::Journal, now, bpf_get_current_pid_tgid()),
        dev,
        transaction,
        phase: p as u32,
        _pad: 0,
    });
    0
}

/* TP_PROTO(journal_t *journal, transaction_t *commit_transaction) for all five:
 * dev, sync_commit, transaction (+ head for end_commit). */
#[tracepoint]
pub fn jbd2_start_commit(ctx: TracePointContext) -> u32 {
    phase(
        &ctx,
        JournalPhase::Start,
        Field::JStartDev,
        Field::JStartTransaction,
    )
}

#[tracepoint]
pub fn jbd2_commit_locking(ctx: TracePointContext) -> u32 {
    phase(
        &ctx,
        JournalPhase::Locking,
        Field::JLockingDev,
        Field::JLockingTransaction,
    )
}

#[tracepoint]
pub fn jbd2_commit_flushing(ctx: TracePointContext) -> u32 {
    phase(
        &ctx,
        JournalPhase::Flushing,
        Field::JFlushingDev,
        Field::JFlushingTransaction,
    )
}

#[tracepoint]
pub fn jbd2_commit_logging(ctx: TracePointContext) -> u32 {
    phase(
        &ctx,
        JournalPhase::Logging,
        Field::JLoggingDev,
        Field::JLoggingTransaction,
    )
}

#[tracepoint]
pub fn jbd2_end_commit(ctx: TracePointContext) -> u32 {
    phase(
        &ctx,
        JournalPhase::End,
        Field::JEndDev,
        Field::JEndTransaction,
    )
}

/* TP_PROTO(dev_t dev, tid_t tid, struct transaction_run_stats_s *stats): dev, tid, wait,
 * request_delay, running, locked, flushing, logging (jiffies), handle_count, blocks,
 * blocks_logged. The phase durations come from the phase records (ns, no HZ needed). */
#[tracepoint]
pub fn jbd2_run_stats(ctx: TracePointContext) -> u32 {
    let (Some(dev), Some(transaction)) = (
        field::<u32>(&ctx, Field::JStatsDev),
        field::<u32>(&ctx, Field::JStatsTid),
    ) else {
        return 0;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(JournalStatsEvent {
        hdr: header::<JournalStatsEvent>(EventKind::JournalStats, now, bpf_get_current_pid_tgid()),
        dev,
        transaction,
        handle_count: field::<u32>(&ctx, Field::JStatsHandleCount).unwrap_or(0),
        blocks: field::<u32>(&ctx, Field::JStatsBlocks).unwrap_or(0),
        blocks_logged: field::<u32>(&ctx, Field::JStatsBlocksLogged).unwrap_or(0),
        _pad: 0,
    });
    0
}
