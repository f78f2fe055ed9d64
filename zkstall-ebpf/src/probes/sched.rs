//! Scheduler events of the target's threads: off-CPU intervals (state, syscall, waker,
//! kernel stack of D sleeps), and thread creation, exit and renaming.
//!
//! Bystanders pay one hash lookup per context switch and per wakeup (is the task a
//! target? is the woken task one of ours off CPU?).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext, tracing::StackIdContext as _},
};
use zkstall_common::{BlockedEvent, Counter, EventKind, Field, ThreadChange, ThreadEvent};

use crate::{
    emit::{emit, header},
    maps::{OFFCPU, OffCpu, STACKS, SWITCH_SYSCALL, config, count, current_comm, field, is_target},
};

/// TASK_UNINTERRUPTIBLE in sched_switch's prev_state.
const TASK_UNINTERRUPTIBLE: u64 = 0x2;

/* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
 *          unsigned int prev_state): prev_comm, prev_pid, prev_prio, prev_state,
 * next_comm, next_pid, next_prio. Runs in prev's context. */
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);

    // A target thread leaves the CPU: remember when, in what state, and where (D only).
    if tid != 0 && is_target(tgid) {
        let state = field::<u64>(&ctx, Field::SwitchPrevState).unwrap_or(0);
        let stack_id = if state & TASK_UNINTERRUPTIBLE != 0 {
            match ctx.get_stackid(&STACKS, 0) {
                Ok(id) => id,
                Err(_) => {
                    count(Counter::StackError);
                    -1
                }
            }
        } else {
            -1
        };
        let off = OffCpu {
            off_ns: now,
            wake_ns: 0,
            state,
            stack_id,
            tgid,
            waker_tgid: 0,
            waker_tid: 0,
            _pad: 0,
            waker_comm: [0; 16],
        };
        if OFFCPU.insert(tid, off, 0).is_err() {
            count(Counter::MapFull);
        }
    }

    // A thread comes back: if it is one of ours, send the interval.
    let Some(next) = field::<i32>(&ctx, Field::SwitchNextPid) else {
        return 0;
    };
    if next <= 0 {
        return 0;
    }
    let next = next as u32;
    // SAFETY: the entry is copied out before it is removed.
    let Some(off) = (unsafe { OFFCPU.get(next) }).copied() else {
        return 0;
    };
    let _ = OFFCPU.remove(next);
    if now.saturating_sub(off.off_ns) < config!(blocked_min_ns) {
        return 0;
    }
    // SAFETY: copied out at once.
    let syscall = unsafe { SWITCH_SYSCALL.get(next) }.copied().unwrap_or(-1);
    let mut hdr = header::<BlockedEvent>(EventKind::Blocked, now, 0);
    hdr.tgid = off.tgid;
    hdr.tid = next;
    emit(BlockedEvent {
        hdr,
        off_ns: off.off_ns,
        wake_ns: off.wake_ns,
        state: off.state,
        syscall,
        waker_tgid: off.waker_tgid,
        waker_tid: off.waker_tid,
        waker_comm: off.waker_comm,
        stack_id: off.stack_id,
    });
    0
}

/// Byte offset of `orig_ax` (the syscall number) in x86_64's `struct pt_regs`: an
/// architecture ABI, not a kernel-version layout.
#[cfg(bpf_target_arch = "x86_64")]
const ORIG_AX_OFFSET: usize = 120;

/* tp_btf sched_switch: the same tracepoint, typed. Only used for what the classic one
 * cannot give: the user registers of the switching-out task, whose orig_ax says which
 * syscall it is blocked in. Optional: without BTF the intervals just lack the syscall. */
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_syscall(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    #[cfg(bpf_target_arch = "x86_64")]
    {
        use aya_ebpf::helpers::{
            bpf_probe_read_kernel,
            generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
        };
        // SAFETY: helpers valid in tp_btf programs; the returned pointer is only read
        // through bpf_probe_read_kernel.
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
        if regs.is_null() {
            return 0;
        }
        // SAFETY: read through the checked helper.
        let nr = unsafe { bpf_probe_read_kernel(regs.add(ORIG_AX_OFFSET) as *const i64) };
        let tid = pid_tgid as u32;
        match nr {
            Ok(nr) => {
                let _ = SWITCH_SYSCALL.insert(&tid, &nr, 0);
            }
            Err(_) => count(Counter::ReadError),
        }
    }
    0
}

/* TP_PROTO(struct task_struct *p): comm, pid, prio, target_cpu. Runs in the waker's
 * context. */
#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    let Some(pid) = field::<i32>(&ctx, Field::WakingPid) else {
        return 0;
    };
    if pid <= 0 {
        return 0;
    }
    let Some(off) = OFFCPU.get_ptr_mut(pid as u32) else {
        return 0;
    };
    // SAFETY: plain helper calls; `off` is a valid map value pointer.
    unsafe {
        if (*off).wake_ns == 0 {
            let pid_tgid = bpf_get_current_pid_tgid();
            (*off).wake_ns = bpf_ktime_get_ns();
            (*off).waker_tgid = (pid_tgid >> 32) as u32;
            (*off).waker_tid = pid_tgid as u32;
            (*off).waker_comm = current_comm();
        }
    }
    0
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
 * oom_score_adj. Runs in the parent's context. */
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    if !is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    let Some(pid) = field::<i32>(&ctx, Field::NewtaskPid) else {
        return 0;
    };
    let comm = field::<[u8; 16]>(&ctx, Field::NewtaskComm).unwrap_or([0; 16]);
    thread_event(ThreadChange::New, pid as u32, comm);
    0
}

/* TP_PROTO(struct task_struct *p): comm, pid, prio, group_dead. Runs in the exiting
 * thread's context. */
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    crate::maps::touch(&ctx);
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let tid = pid_tgid as u32;
    let _ = OFFCPU.remove(tid);
    let _ = SWITCH_SYSCALL.remove(tid);
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
