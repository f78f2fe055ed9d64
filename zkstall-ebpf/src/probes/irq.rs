//! Interrupt and timer context, per CPU: a wakeup done from a hardirq, a softirq or a timer
//! callback happens "in" whatever task that CPU was running. These probes keep a nesting
//! depth per context so that sched_waking can say `irq`, `softirq` or `timer` instead of
//! naming an innocent bystander as the waker. Each costs one per-CPU array update.
//!
//! While a target thread is on its way back from a watched syscall on a CPU, they also
//! time that CPU's interrupts (`IRQ_CLOCK`), which its CPU budget must not count.
//!
//! They fire on every interrupt, softirq and timer of the host, so they are BTF
//! tracepoints (no event record is built for them: a classic tracepoint formats one for
//! every hit, ~10% of a context-switch-heavy bystander's time here); the classic ones are
//! the fallback for kernels without BTF.

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use zkstall_common::{IRQ_CTX_HARDIRQ, IRQ_CTX_SOFTIRQ, IRQ_CTX_TIMER};

use aya_ebpf::helpers::bpf_ktime_get_ns;

use crate::maps::{IRQ_CLOCK, IRQ_CTX, touch};

#[inline(always)]
fn inc(which: u32) {
    if let Some(p) = IRQ_CTX.get_ptr_mut(which) {
        // SAFETY: a per-CPU slot, only touched on this CPU.
        unsafe { *p = (*p).saturating_add(1) };
    }
    if let Some(c) = IRQ_CLOCK.get_ptr_mut(0) {
        // SAFETY: as above. `watch` changes only in task context (a switch, a syscall's
        // exit), never inside an interrupt: an outermost entry seen watched has its exit
        // seen too.
        unsafe {
            if (*c).watch != 0 {
                if (*c).depth == 0 {
                    (*c).start_ns = bpf_ktime_get_ns();
                }
                (*c).depth += 1;
            }
        }
    }
}

#[inline(always)]
fn dec(which: u32) {
    if let Some(p) = IRQ_CTX.get_ptr_mut(which) {
        // SAFETY: as above. Saturating: an exit whose entry happened before attach.
        unsafe { *p = (*p).saturating_sub(1) };
    }
    if let Some(c) = IRQ_CLOCK.get_ptr_mut(0) {
        // SAFETY: as above. Only entries counted while watched are closed.
        unsafe {
            if (*c).depth != 0 {
                (*c).depth -= 1;
                if (*c).depth == 0 {
                    (*c).sum_ns += bpf_ktime_get_ns().saturating_sub((*c).start_ns);
                }
            }
        }
    }
}

#[inline(always)]
fn enter(ctx: &TracePointContext, which: u32) -> u32 {
    touch(ctx);
    inc(which);
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext, which: u32) -> u32 {
    touch(ctx);
    dec(which);
    0
}

macro_rules! btf_pair {
    ($entry:ident, $entry_tp:literal, $exit:ident, $exit_tp:literal, $which:expr) => {
        #[btf_tracepoint(function = $entry_tp)]
        pub fn $entry(_ctx: BtfTracePointContext) -> i32 {
            inc($which);
            0
        }

        #[btf_tracepoint(function = $exit_tp)]
        pub fn $exit(_ctx: BtfTracePointContext) -> i32 {
            dec($which);
            0
        }
    };
}

btf_pair!(
    irq_handler_entry_btf,
    "irq_handler_entry",
    irq_handler_exit_btf,
    "irq_handler_exit",
    IRQ_CTX_HARDIRQ
);
btf_pair!(
    softirq_entry_btf,
    "softirq_entry",
    softirq_exit_btf,
    "softirq_exit",
    IRQ_CTX_SOFTIRQ
);
btf_pair!(
    hrtimer_expire_entry_btf,
    "hrtimer_expire_entry",
    hrtimer_expire_exit_btf,
    "hrtimer_expire_exit",
    IRQ_CTX_TIMER
);
btf_pair!(
    timer_expire_entry_btf,
    "timer_expire_entry",
    timer_expire_exit_btf,
    "timer_expire_exit",
    IRQ_CTX_TIMER
);

/* TP_PROTO(int irq, struct irqaction *action): a device interrupt handler. */
#[tracepoint]
pub fn irq_handler_entry(ctx: TracePointContext) -> u32 {
    enter(&ctx, IRQ_CTX_HARDIRQ)
}

#[tracepoint]
pub fn irq_handler_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, IRQ_CTX_HARDIRQ)
}

/* TP_PROTO(unsigned int vec_nr) */
#[tracepoint]
pub fn softirq_entry(ctx: TracePointContext) -> u32 {
    enter(&ctx, IRQ_CTX_SOFTIRQ)
}

#[tracepoint]
pub fn softirq_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, IRQ_CTX_SOFTIRQ)
}

/* TP_PROTO(struct hrtimer *hrtimer, ktime_t *now): an hrtimer callback (timeouts, sleeps,
 * the scheduler tick), in hardirq or softirq context. */
#[tracepoint]
pub fn hrtimer_expire_entry(ctx: TracePointContext) -> u32 {
    enter(&ctx, IRQ_CTX_TIMER)
}

#[tracepoint]
pub fn hrtimer_expire_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, IRQ_CTX_TIMER)
}

/* TP_PROTO(struct timer_list *timer, unsigned long baseclk): a timer-wheel callback. */
#[tracepoint]
pub fn timer_expire_entry(ctx: TracePointContext) -> u32 {
    enter(&ctx, IRQ_CTX_TIMER)
}

#[tracepoint]
pub fn timer_expire_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx, IRQ_CTX_TIMER)
}
