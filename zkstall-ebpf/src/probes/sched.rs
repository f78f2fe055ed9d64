//! Scheduler events of the target's threads: off-CPU intervals (state, syscall, waker and
//! its context, kernel stack of D sleeps), on-CPU time, and thread creation, exit and
//! renaming. Each target thread has a [`ThreadState`] in THREADS:
//!
//! - at switch-out: the on-CPU slice is added up, the interval begins (stack for D);
//! - at switch-in: the interval is sent if it lasted `blocked_min_ns` or more, else added
//!   to the thread's short sums by state (so no off-CPU time is ever counted as CPU);
//! - a watched syscall's exit waits in `pending` until the thread is past its caller's
//!   clock read: every off-CPU interval that begins before the thread has run
//!   `after_gap_ns` of its own CPU time since the return (interrupts on its CPU meanwhile
//!   not counted: `IRQ_CLOCK`; preempted on the way back to user space,
//!   parked at a JVM safepoint) is part of the way back, and the exit carries the wall time
//!   from the return to the last of them; it is sent at the first switch-out after that
//!   CPU budget, or at the thread's next watched syscall or exit. A write that returned
//!   under `write_min_ns` waits the same way, and is sent only if its way back made it
//!   that slow (THREAD_PENDING_FAST).
//!
//! Bystanders pay one hash lookup per context switch and per wakeup.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use zkstall_common::{
    BLOCKED_AFTER_CALL, BLOCKED_SEEDED, CALL_AFTER, CALL_FAST, Counter, EventKind, Field,
    IRQ_CTX_HARDIRQ, IRQ_CTX_SOFTIRQ, IRQ_CTX_TIMER, MAX_FRAMES, SHORT_D, SHORT_RUNQ, SHORT_S,
    THREAD_ACCOUNTED, THREAD_AFTER, THREAD_OFF, THREAD_PENDING, THREAD_PENDING_FAST, ThreadChange,
    ThreadEvent, ThreadState, WakerCtx,
};

use crate::{
    emit::{emit, emit_from, header},
    maps::{
        INFLIGHT, IRQ_CTX, THREADS, btf_read, config, count, current_comm, field, is_target,
        unwatch_irqs, watch_irqs,
    },
};

/// TASK_UNINTERRUPTIBLE, in the raw state and in sched_switch's report encoding alike.
const TASK_UNINTERRUPTIBLE: u64 = 0x2;
/// Report-encoding bits of an exiting task's last switch (X, Z).
const EXIT_STATES: u64 = 0x10 | 0x20;
/// Report encoding of a task preempted while runnable ("R+", TASK_REPORT_MAX).
const STATE_PREEMPTED: u64 = 0x100;

/// An all-zero ThreadState to create entries from: 456 bytes do not fit the BPF stack.
#[map]
static ZERO_THREAD: PerCpuArray<ThreadState> = PerCpuArray::with_max_entries(1, 0);

/// The entry of `tid`, created (zeroed, owned by `tgid`) when missing.
#[inline(always)]
pub fn thread_entry(tid: u32, tgid: u32) -> Option<*mut ThreadState> {
    if let Some(p) = THREADS.get_ptr_mut(tid) {
        return Some(p);
    }
    let zero = ZERO_THREAD.get_ptr(0)?;
    // SAFETY: a valid map value pointer; the map copies from it. A reference, not a value:
    // clippy's `*zero` would copy the 456 bytes onto the BPF stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = THREADS.insert(tid, unsafe { &*zero }, 0);
    if inserted.is_err() {
        count(Counter::MapFull);
        return None;
    }
    let p = THREADS.get_ptr_mut(tid)?;
    // SAFETY: a valid map value pointer.
    unsafe { (*p).tgid = tgid };
    Some(p)
}

/// Sends a thread's pending syscall exit and clears it; its way back is over, so this
/// CPU's interrupts are no longer timed for it (every caller runs in its context).
///
/// # Safety
/// `st` must be a valid THREADS value pointer of the running thread.
#[inline(always)]
pub unsafe fn flush_pending(st: *mut ThreadState) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if (*st).flags & THREAD_PENDING != 0 {
            unwatch_irqs(st);
        }
        send_pending(st);
    }
}

/// [`flush_pending`] for a caller that settles the interrupt clock itself (a switch-out
/// that already stopped it, a syscall exit that starts it again at once).
///
/// # Safety
/// `st` must be a valid THREADS value pointer of the running thread.
#[inline(always)]
pub unsafe fn send_pending(st: *mut ThreadState) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let flags = (*st).flags;
        if flags & THREAD_PENDING != 0 {
            let p = &raw mut (*st).pending;
            if flags & THREAD_PENDING_FAST == 0 {
                emit_from(p);
            } else if (*p).hdr.ts_ns.saturating_sub((*p).start_ns) + (*p).after_ns
                >= config!(write_min_ns)
            {
                // Every caller runs in the thread's own context (its switch-out, syscalls
                // and exit), so this is still its name.
                (*p).comm = bpf_get_current_comm().unwrap_or([0; 16]);
                (*p).flags |= CALL_FAST;
                emit_from(p);
            }
        }
        (*st).flags &= !(THREAD_PENDING | THREAD_AFTER | THREAD_PENDING_FAST);
    }
}

/// Is a runnable task (preempted, or yielded) in this report-encoded state?
#[inline(always)]
fn runnable(state: u64) -> bool {
    state & 0xff == 0
}

/// Records how many frames a stack helper wrote (`n`: bytes, or a negative error, counted).
///
/// # Safety
/// `off` must be a valid THREADS value's interval.
#[inline(always)]
unsafe fn set_frames(off: *mut zkstall_common::BlockedEvent, n: i64) {
    if n > 0 {
        // SAFETY: guaranteed by the caller.
        unsafe { (*off).nframes = (n / 8) as u32 };
    } else {
        count(Counter::StackError);
    }
}

#[inline(always)]
fn switch_out<C: EbpfContext>(ctx: &C, now: u64, tid: u32, tgid: u32, state: u64, syscall: i64) {
    if state & EXIT_STATES != 0 {
        // The exiting thread's last switch: sched_process_exit already sent what was
        // pending; an entry now would outlive the thread (and mislead a reused tid).
        let _ = THREADS.remove(tid);
        return;
    }
    let Some(st) = thread_entry(tid, tgid) else {
        return;
    };
    // SAFETY: a valid map value pointer, only updated by programs running for this
    // thread (its own switches and syscalls, which do not overlap) and by wakers, which
    // only fill the waker fields of an interval in progress.
    unsafe {
        let flags = (*st).flags;
        if flags & THREAD_ACCOUNTED != 0 && flags & THREAD_OFF == 0 && (*st).on_since_ns != 0 {
            (*st).on_ns += now.saturating_sub((*st).on_since_ns);
        }
        let mut after = false;
        if flags & THREAD_PENDING != 0 {
            // CPU run since the return, up to this switch, less the interrupts handled
            // on this CPU meanwhile.
            let from = (*st).on_since_ns.max((*st).pending.hdr.ts_ns);
            let irqs = unwatch_irqs(st);
            (*st).after_cpu_ns += now.saturating_sub(from).saturating_sub(irqs);
            if (*st).after_cpu_ns <= config!(after_gap_ns) {
                // Still on its way back to the caller: this wait is part of the way.
                (*st).flags |= THREAD_AFTER;
                after = true;
            } else {
                send_pending(st);
            }
        }
        let off = &raw mut (*st).off;
        (*off).off_ns = now;
        (*off).wake_ns = 0;
        (*off).state = state;
        (*off).syscall = syscall;
        (*off).waker_tgid = 0;
        (*off).waker_tid = 0;
        (*off).waker_ctx = WakerCtx::Task as u32;
        (*off).flags = if after { BLOCKED_AFTER_CALL } else { 0 };
        (*off).waker_comm = [0; 16];
        (*off).nframes = 0;
        // With sched_waking's BTF program, the stack is taken there, for long sleeps only:
        // most D sleeps (a block request's wait) are shorter than blocked_min_ns, are not
        // sent, and a stack here cost ~1.3 us per ZooKeeper create.
        if state & TASK_UNINTERRUPTIBLE != 0 && config!(stack_at_wake) == 0 {
            let buf = &raw mut (*off).frames;
            let n = aya_ebpf::helpers::generated::bpf_get_stack(
                ctx.as_ptr(),
                buf.cast(),
                (8 * MAX_FRAMES) as u32,
                0,
            );
            set_frames(off, n);
        }
        (*st).flags |= THREAD_OFF;
    }
}

#[inline(always)]
fn switch_in(now: u64, tid: u32) {
    let Some(st) = THREADS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: as in switch_out.
    unsafe {
        let flags = (*st).flags;
        if flags & THREAD_OFF != 0 {
            let off = &raw mut (*st).off;
            let from = (*off).off_ns;
            let dur = now.saturating_sub(from);
            let send = dur >= config!(blocked_min_ns)
                || (*off).flags & (BLOCKED_AFTER_CALL | BLOCKED_SEEDED) != 0;
            if send {
                (*off).hdr = header::<zkstall_common::BlockedEvent>(EventKind::Blocked, now, 0);
                (*off).hdr.tgid = (*st).tgid;
                (*off).hdr.tid = tid;
                emit_from(off);
            } else {
                let wake = (*off).wake_ns;
                let (sleep, runq) = if wake != 0 && wake >= from {
                    (wake - from, now.saturating_sub(wake))
                } else if runnable((*off).state) {
                    (0, dur)
                } else {
                    (dur, 0)
                };
                let slot = if (*off).state & TASK_UNINTERRUPTIBLE != 0 {
                    SHORT_D
                } else {
                    SHORT_S
                };
                (*st).short_ns[slot] += sleep;
                (*st).short_ns[SHORT_RUNQ] += runq;
            }
            if flags & THREAD_AFTER != 0 {
                // Back on CPU, maybe not yet past the caller's clock read: the exit stays
                // held (sent at the next switch-out past the CPU budget, or next syscall).
                (*st).pending.after_ns = now.saturating_sub((*st).pending.hdr.ts_ns);
                (*st).pending.flags |= CALL_AFTER;
                (*st).flags &= !THREAD_AFTER;
            }
        }
        (*st).flags = ((*st).flags & !THREAD_OFF) | THREAD_ACCOUNTED;
        (*st).on_since_ns = now;
        if flags & THREAD_PENDING != 0 {
            // Still on its way back: time this CPU's interrupts from here.
            watch_irqs(st);
        }
    }
}

/// Byte offsets of `ax` and `orig_ax` in x86_64's `struct pt_regs`: an architecture ABI,
/// not a kernel-version layout.
#[cfg(bpf_target_arch = "x86_64")]
const AX_OFFSET: u64 = 80;
#[cfg(bpf_target_arch = "x86_64")]
const ORIG_AX_OFFSET: u64 = 120;
/// The syscall entry code stores -ENOSYS in `ax` until the syscall returns: `ax` tells a
/// thread inside a syscall apart from one in a page fault or interrupt (whose `orig_ax` is
/// an error code or a vector, not a syscall number).
#[cfg(bpf_target_arch = "x86_64")]
const ENOSYS: i64 = 38;

/// The syscall the current task is inside (-1: none, or not known on this arch).
#[inline(always)]
fn current_syscall() -> i64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
        // SAFETY: helpers valid in tp_btf programs; bpf_task_pt_regs returns a BTF pointer
        // (struct pt_regs), read with btf_read.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
        let ax = btf_read::<i64>(regs, AX_OFFSET as u16);
        let nr = btf_read::<i64>(regs, ORIG_AX_OFFSET as u16);
        match (ax, nr) {
            (Some(ax), Some(nr)) if ax == -ENOSYS => nr,
            _ => -1,
        }
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        -1
    }
}

/* tp_btf sched_switch: TP_PROTO(bool preempt, struct task_struct *prev,
 * struct task_struct *next, unsigned int prev_state) (prev_state since 5.18). Runs in
 * prev's context. The primary switch program: it also sees the user registers of prev, so
 * every interval knows the syscall it was spent in. */
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // A switch between two bystanders (nearly every one) costs two bitmap tests and one
    // read of next's ids: no clock, no hash lookup.
    let next: u64 = ctx.arg(2);
    let next_ids = next_ids(next);
    let prev_is = tid != 0 && is_target(tgid);
    if !prev_is && next_ids.is_none() {
        return 0;
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if prev_is {
        let preempt: u64 = ctx.arg(0);
        // The raw state, normalised to the report encoding the classic tracepoint prints:
        // preempted -> R+, TASK_IDLE (D|NOLOAD) -> I, TASK_DEAD -> X.
        let state = if preempt & 0xff != 0 {
            STATE_PREEMPTED
        } else if config!(switch_has_state_arg) != 0 {
            let raw: u64 = ctx.arg(3);
            let raw = raw & 0xffff_ffff;
            if raw & 0x402 == 0x402 {
                0x80
            } else if raw & 0x80 != 0 {
                0x10
            } else {
                raw & 0x7f
            }
        } else {
            0
        };
        switch_out(&ctx, now, tid, tgid, state, current_syscall());
    }
    if let Some(next_tid) = next_ids {
        switch_in(now, next_tid);
    }
    0
}

/// The tid of `task` when it may have a THREADS entry (its tgid is a target, or the tgid
/// offset is unknown on this kernel); None for a bystander. `task` is a BTF pointer.
#[inline(always)]
fn next_ids(task: u64) -> Option<u32> {
    // Two plain loads (btf_read): `pid` and `tgid` sit side by side, but one 8-byte load
    // across both members is what the verifier refuses.
    let tid = btf_read::<i32>(task, config!(kernel.task_pid))?;
    let tgid = btf_read::<i32>(task, config!(kernel.task_tgid)).unwrap_or(0);
    if tid <= 0 || (tgid > 0 && !is_target(tgid as u32)) {
        return None;
    }
    Some(tid as u32)
}

/* Classic sched_switch, used when there is no BTF: TP_PROTO(bool preempt,
 * struct task_struct *prev, struct task_struct *next, unsigned int prev_state):
 * prev_comm, prev_pid, prev_prio, prev_state, next_comm, next_pid, next_prio. Runs in
 * prev's context. Intervals then lack the syscall. */
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != 0 && is_target(tgid) {
        let state = field::<u64>(&ctx, Field::SwitchPrevState).unwrap_or(0);
        switch_out(&ctx, now, tid, tgid, state, -1);
    }
    if let Some(next) = field::<i32>(&ctx, Field::SwitchNextPid)
        && next > 0
    {
        switch_in(now, next as u32);
    }
    0
}

/// Where the current wakeup comes from: a task, or an interrupt/timer on top of one.
#[inline(always)]
fn waker_ctx() -> WakerCtx {
    let depth = |i: u32| IRQ_CTX.get(i).copied().unwrap_or(0);
    let (hard, soft, timer) = (
        depth(IRQ_CTX_HARDIRQ),
        depth(IRQ_CTX_SOFTIRQ),
        depth(IRQ_CTX_TIMER),
    );
    if timer > 0 {
        WakerCtx::Timer
    } else if hard > 0 {
        WakerCtx::Irq
    } else if soft > 0 {
        WakerCtx::Softirq
    } else {
        WakerCtx::Task
    }
}

/* TP_PROTO(struct task_struct *p): comm, pid, prio, target_cpu. Runs in the waker's
 * context (a task, or an interrupt on whatever task was running). Every wakeup of the host
 * passes here: the BTF tracepoint reads p->pid and builds no event record; the classic one
 * is the fallback without BTF. */
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking_btf(ctx: BtfTracePointContext) -> i32 {
    let p: u64 = ctx.arg(0);
    if let Some(tid) = next_ids(p) {
        waking(tid as i32, p);
    }
    0
}

#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    if let Some(pid) = field::<i32>(&ctx, Field::WakingPid) {
        waking(pid, 0);
    }
    0
}

/// Fills the waker of `pid`'s interval in progress. `task` (0: not known) is the woken
/// task's BTF pointer: a D sleep long enough to be sent gets its kernel stack now, while
/// the task still sits where it went to sleep (see `Config::stack_at_wake`).
#[inline(always)]
fn waking(pid: i32, task: u64) {
    if pid <= 0 {
        return;
    }
    let Some(st) = THREADS.get_ptr_mut(pid as u32) else {
        return;
    };
    // SAFETY: a valid map value pointer; the waker fields of an interval in progress.
    unsafe {
        if (*st).flags & THREAD_OFF != 0 && (*st).off.wake_ns == 0 {
            let pid_tgid = bpf_get_current_pid_tgid();
            (*st).off.wake_ns = bpf_ktime_get_ns();
            (*st).off.waker_tgid = (pid_tgid >> 32) as u32;
            (*st).off.waker_tid = pid_tgid as u32;
            (*st).off.waker_ctx = waker_ctx() as u32;
            (*st).off.waker_comm = current_comm();
            let off = &raw mut (*st).off;
            if task != 0
                && config!(stack_at_wake) != 0
                && (*off).state & TASK_UNINTERRUPTIBLE != 0
                && (*off).flags & BLOCKED_SEEDED == 0
                && (*off).wake_ns.saturating_sub((*off).off_ns) >= config!(blocked_min_ns)
            {
                let n = aya_ebpf::helpers::generated::bpf_get_task_stack(
                    task as *mut _,
                    (&raw mut (*off).frames).cast(),
                    (8 * MAX_FRAMES) as u32,
                    0,
                );
                set_frames(off, n);
            }
        }
    }
}

#[inline(always)]
fn thread_event(change: ThreadChange, tid: u32, comm: [u8; 16]) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    emit(ThreadEvent {
        hdr: header::<ThreadEvent>(EventKind::Thread, now, bpf_get_current_pid_tgid()),
        change: change as u32,
        tid,
        comm,
    });
}

/* TP_PROTO(struct task_struct *task, u64 clone_flags): pid, comm, clone_flags,
 * oom_score_adj. Runs in the parent's context. A new thread starts runnable; any state
 * left under its tid by an earlier thread is dropped. */
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let Some(pid) = field::<i32>(&ctx, Field::NewtaskPid) else {
        return 0;
    };
    let tid = pid as u32;
    let _ = THREADS.remove(tid);
    let _ = INFLIGHT.remove(tid);
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(st) = thread_entry(tid, tgid) {
        // SAFETY: a valid map value pointer.
        unsafe {
            (*st).off.off_ns = now;
            (*st).off.wake_ns = now;
            (*st).off.state = STATE_PREEMPTED;
            (*st).off.syscall = -1;
            (*st).flags = THREAD_OFF | THREAD_ACCOUNTED;
        }
    }
    let comm = field::<[u8; 16]>(&ctx, Field::NewtaskComm).unwrap_or([0; 16]);
    thread_event(ThreadChange::New, tid, comm);
    0
}

/* TP_PROTO(struct task_struct *p): comm, pid, prio, group_dead. Runs in the exiting
 * thread's context: what it had pending is sent, its state dropped. */
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    crate::maps::touch(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let tid = pid_tgid as u32;
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // SAFETY: a valid map value pointer.
        unsafe { flush_pending(st) };
    }
    let _ = THREADS.remove(tid);
    let _ = INFLIGHT.remove(tid);
    thread_event(ThreadChange::Exit, tid, current_comm());
    0
}

/* TP_PROTO(struct task_struct *task, const char *comm): pid, oldcomm, newcomm,
 * oom_score_adj. The renaming task is a thread of the same process in practice (prctl,
 * or /proc/self/task/<tid>/comm). */
#[tracepoint]
pub fn task_rename(ctx: TracePointContext) -> u32 {
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    let Some(pid) = field::<i32>(&ctx, Field::RenamePid) else {
        return 0;
    };
    let comm = field::<[u8; 16]>(&ctx, Field::RenameNewcomm).unwrap_or([0; 16]);
    thread_event(ThreadChange::Rename, pid as u32, comm);
    0
}
