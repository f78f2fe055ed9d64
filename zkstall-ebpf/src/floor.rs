//! The floor of the bench (`cargo xtask bench`, `zkstall floor`): what any program on
//! zkstall's hooks costs before it does anything. Each program looks up one map and
//! returns, the floor issue 10 names. Userspace loads this small object once per BTF hook
//! (a tp_btf program is verified for one function) and attaches `floor_tp` to every
//! classic hook.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};

mod rt;

/// Runs, per CPU: the one lookup (and an add, so it is not optimised away).
#[map]
static FLOOR_RUNS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn run() {
    if let Some(n) = FLOOR_RUNS.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, only touched by this CPU.
        unsafe { *n += 1 };
    }
}

#[tracepoint]
pub fn floor_tp(_ctx: TracePointContext) -> u32 {
    run();
    0
}

/* The function named here is only the section's; userspace loads the program for each
 * hook's own function. */
#[btf_tracepoint(function = "sched_switch")]
pub fn floor_btf(_ctx: BtfTracePointContext) -> i32 {
    run();
    0
}
