//! HotSpot's USDT probes (uprobes on libjvm.so, attached per traced JVM): Java threads
//! starting and stopping (their full Java names, which the kernel's 15-character comm
//! cuts, or never has on JDK 8), and safepoints, VM operations and GCs (what a thread
//! parked right after a syscall waited for). One program serves every probe: the attach
//! cookie says which probe fired and how to read its arguments (USDT_SPECS, filled by
//! userspace from the ELF notes), as libbpf's usdt.bpf.h does.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, generated::bpf_get_attach_cookie,
    },
    macros::{map, uprobe},
    maps::Array,
    programs::ProbeContext,
};
use zkstall_common::{
    EventKind, JVM_NAME_LEN, JvmEvent, JvmProbe, USDT_ARG_CONST, USDT_ARG_MEM, USDT_ARG_REG,
    USDT_SPEC_SLOTS, UsdtArgSpec, UsdtSpec,
};

use crate::emit::{emit, header};

#[map]
static USDT_SPECS: Array<UsdtSpec> = Array::with_max_entries(USDT_SPEC_SLOTS, 0);

/// A register of the probed instruction, by its x86_64 `pt_regs` slot. Context reads must
/// be at constant offsets (the verifier refuses a computed one), hence the match.
#[inline(always)]
fn reg(ctx: &ProbeContext, slot: u8) -> u64 {
    // SAFETY: `regs` is the program's context, valid for the whole run; each arm reads one
    // field at a constant offset.
    let r = unsafe { &*ctx.regs };
    match slot {
        0 => r.r15,
        1 => r.r14,
        2 => r.r13,
        3 => r.r12,
        4 => r.rbp,
        5 => r.rbx,
        6 => r.r11,
        7 => r.r10,
        8 => r.r9,
        9 => r.r8,
        10 => r.rax,
        11 => r.rcx,
        12 => r.rdx,
        13 => r.rsi,
        14 => r.rdi,
        16 => r.rip,
        19 => r.rsp,
        _ => 0,
    }
}

/// One USDT argument, sign- or zero-extended from its size.
#[inline(always)]
fn arg(ctx: &ProbeContext, a: &UsdtArgSpec) -> u64 {
    let raw = match a.loc {
        USDT_ARG_REG => reg(ctx, a.reg),
        USDT_ARG_MEM => {
            let at = reg(ctx, a.reg).wrapping_add(a.off as i64 as u64);
            // SAFETY: a read of user memory through the helper, which fails cleanly.
            unsafe { bpf_probe_read_user(at as *const u64) }.unwrap_or(0)
        }
        USDT_ARG_CONST => a.value as u64,
        _ => 0,
    };
    match a.size {
        1 => raw as u8 as u64,
        -1 => raw as i8 as i64 as u64,
        2 => raw as u16 as u64,
        -2 => raw as i16 as i64 as u64,
        4 => raw as u32 as u64,
        -4 => raw as i32 as i64 as u64,
        _ => raw,
    }
}

/* A HotSpot USDT probe: thread__start/stop(char *name, int len, long java_tid,
 * pid_t native_tid, bool daemon), safepoint__begin/end(), vmops__begin/end(char *name,
 * int len, int mode), gc__begin(bool full), gc__end(). Attached only to traced JVMs. */
#[uprobe]
pub fn jvm_usdt(ctx: ProbeContext) -> u32 {
    // SAFETY: the context pointer the program was given.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.regs.cast()) };
    let Some(spec) = USDT_SPECS.get(cookie as u32) else {
        return 0;
    };
    let Some(probe) = JvmProbe::from_u32(spec.probe) else {
        return 0;
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut ev = JvmEvent {
        hdr: header::<JvmEvent>(EventKind::Jvm, now, bpf_get_current_pid_tgid()),
        probe: spec.probe,
        name_len: 0,
        a: 0,
        b: 0,
        name: [0; JVM_NAME_LEN],
    };
    let named = match probe {
        JvmProbe::ThreadStart | JvmProbe::ThreadStop => {
            ev.a = arg(&ctx, &spec.args[2]);
            ev.b = arg(&ctx, &spec.args[3]);
            true
        }
        JvmProbe::VmopBegin | JvmProbe::VmopEnd => {
            ev.a = arg(&ctx, &spec.args[2]);
            true
        }
        JvmProbe::GcBegin => {
            ev.a = arg(&ctx, &spec.args[0]);
            false
        }
        _ => false,
    };
    if named {
        let ptr = arg(&ctx, &spec.args[0]);
        ev.name_len = arg(&ctx, &spec.args[1]) as u32;
        // The copy stops at the NUL (HotSpot's names are C strings) or the buffer's end,
        // keeping one byte for the terminator.
        let (buf, _) = ev.name.split_at_mut(JVM_NAME_LEN - 1);
        // SAFETY: a read of user memory through the helper, which fails cleanly.
        let _ = unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, buf) };
    }
    emit(ev);
    0
}
