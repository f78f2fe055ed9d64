//! Interrupt and timer context, per CPU: a wakeup done from a hardirq, a softirq or a timer
//! callback happens "in" whatever task that CPU was running. These probes keep a nesting
//! depth per context so that sched_waking can say `irq`, `softirq` or `timer` instead of
//! naming an innocent bystander as the waker. Each costs one per-CPU array update.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use zkstall_common::{IRQ_CTX_HARDIRQ, IRQ_CTX_SOFTIRQ, IRQ_CTX_TIMER};

use crate::maps::{IRQ_CTX, touch};

#[inline(always)]
fn enter(ctx: &TracePointContext, which: u32) -> u32 {
    touch(ctx);
    if let Some(p) = IRQ_CTX.get_ptr_mut(which) {
        // SAFETY: a per-CPU slot, only touched on this CPU.
        unsafe { *p = (*p).saturating_add(1) };
    }
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext, which: u32) -> u32 {
    touch(ctx);
    if let Some(p) = IRQ_CTX.get_ptr_mut(which) {
        // SAFETY: as above. Saturating: an exit whose entry happened before attach.
        unsafe { *p = (*p).saturating_sub(1) };
    }
    0
}

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
