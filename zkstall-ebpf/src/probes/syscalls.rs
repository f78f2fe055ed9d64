//! The fsync family (fsync, fdatasync, sync_file_range, syncfs, msync, sync) and the write
//! family (write, pwrite64, writev, pwritev, pwritev2) of the target processes.
//!
//! Each syscall has a `sys_enter_*` and a `sys_exit_*` tracepoint. Entry is filtered on the
//! target tgid first (one hash lookup is all a bystander pays), remembered by tid in
//! INFLIGHT with the thread's on/off-CPU totals, and announced to userspace (so it can
//! resolve the fd while it is open). Exit pairs with the entry by tid, which survives the
//! context switch, and leaves the timed call in the thread's THREADS entry, to be sent at
//! its next switch (see sched.rs: whether it went off CPU right on its way back to the
//! caller is part of what the caller measured).

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use zkstall_common::{
    ArgKind, CALL_ACCOUNTED, CALL_SWITCH_UNSEEN, CALL_WATCH_ENTER, CALL_WATCH_EXIT, Counter,
    EventKind, Inflight, SHORT_D, SHORT_RUNQ, SHORT_S, Syscall, SyscallEnterEvent,
    SyscallExitEvent, THREAD_ACCOUNTED, THREAD_OFF, THREAD_PENDING, THREAD_PENDING_FAST,
    ThreadState,
};

use crate::{
    emit::{emit, header},
    maps::{INFLIGHT, THREADS, btf_read, config, count, is_target, kread, stamp_call, watch_irqs},
    probes::sched::{flush_pending, send_pending, thread_entry},
};

/* TP_PROTO for syscalls: sys_enter_<name>(struct pt_regs *regs, long id) exposes the
 * arguments as 8-byte fields after `int __syscall_nr`; sys_exit_<name> exposes `long ret`.
 * Offsets are read from tracefs by userspace and arrive in CONFIG. */

/// inode.i_mode's file type bits, and the two types a write can wait on a disk through.
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFBLK: u16 = 0o060000;

/// The inode of the current task's open file `fd`: `Some(0)` when `fd` is not open, None
/// when it cannot tell (offsets missing from BTF, a read that failed).
///
/// task -> files -> fdt are BTF pointers (plain loads, see `btf_read`); `fdt->fd` is a
/// pointer to pointers, which the verifier types as a plain integer, so the file and its
/// inode are read through the helper.
#[inline(always)]
fn fd_inode(fd: u64) -> Option<u64> {
    use aya_ebpf::helpers::generated::bpf_get_current_task_btf;
    // Userspace clears the offsets where the kernel lacks the helper (before 5.11) or BTF:
    // the call below is then dead code, which the verifier removes before it would refuse
    // an unknown helper.
    if config!(kernel.task_files) == zkstall_common::NO_OFFSET {
        return None;
    }
    // SAFETY: a helper valid in tracing programs; it returns a BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let fdt = btf_read::<u64>(task, config!(kernel.task_files))
        .and_then(|files| btf_read::<u64>(files, config!(kernel.files_fdt)))?;
    let max = btf_read::<u32>(fdt, config!(kernel.fdt_max_fds))?;
    let fds = btf_read::<u64>(fdt, config!(kernel.fdt_fd))?;
    if fd >= max as u64 {
        // Not an open fd: the call fails at once (EBADF).
        return Some(0);
    }
    let file = kread::<u64>(fds + fd * 8, 0)?;
    if file == 0 {
        return Some(0);
    }
    kread::<u64>(file, config!(kernel.file_inode))
}

/// Whether a write to the current task's file descriptor `fd` may wait on storage: a
/// regular file or a block device. Most of a JVM's writes go elsewhere (ZooKeeper under
/// load: an eventfd write to wake its selector and a socket write per reply, for each
/// append to its log), and following those cost two map updates and a THREADS lookup
/// each, and made every one of them a "call in flight" for `--requests around-calls`.
/// True when it cannot tell, so that a write is never lost for want of knowing. A fd that
/// is not open answers no.
#[inline(always)]
fn writes_to_storage(fd: u64) -> bool {
    match fd_inode(fd) {
        None => true,
        Some(0) => false,
        Some(inode) => match kread::<u16>(inode, config!(kernel.inode_mode)) {
            Some(mode) => matches!(mode & S_IFMT, S_IFREG | S_IFBLK),
            None => true,
        },
    }
}

/// The file behind `fd` as (its filesystem's kernel dev_t, its inode number); zeros when
/// not known.
#[inline(always)]
fn file_id(fd: u64) -> (u32, u64) {
    let Some(inode) = fd_inode(fd).filter(|i| *i != 0) else {
        return (0, 0);
    };
    let ino = kread::<u64>(inode, config!(kernel.inode_ino)).unwrap_or(0);
    let dev = kread::<u64>(inode, config!(kernel.inode_sb))
        .and_then(|sb| kread::<u32>(sb, config!(kernel.sb_dev)))
        .unwrap_or(0);
    (dev, ino)
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, sc: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    // `sc` is a constant at every call site, so this is a fixed-offset read.
    let off = config!(arg_offset[sc as usize]);
    let arg = if off == 0 {
        0
    } else {
        // SAFETY: `off` is a field offset inside this tracepoint's record, read from tracefs.
        match unsafe { ctx.read_at::<u64>(off as usize) } {
            Ok(v) => v,
            Err(_) => {
                count(Counter::ReadError);
                0
            }
        }
    };
    // The write family's first argument is the fd.
    if sc.is_write() && off != 0 && !writes_to_storage(arg) {
        return 0;
    }
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = pid_tgid as u32;
    let mut inflight = Inflight {
        start_ns: now,
        arg,
        on_ns: 0,
        short_ns: [0; 3],
        syscall: sc as u32,
        tgid,
        flags: 0,
        _pad: 0,
    };
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // SAFETY: a valid map value pointer of this (running) thread.
        unsafe {
            // It ran on into another call: its previous exit is settled.
            flush_pending(st);
            // A return to CPU missed before this call: the call is accounted from here.
            back_on_cpu(st, now);
            if (*st).flags & THREAD_ACCOUNTED != 0 && (*st).flags & THREAD_OFF == 0 {
                inflight.on_ns = (*st).on_ns + now.saturating_sub((*st).on_since_ns);
                inflight.short_ns = (*st).short_ns;
                inflight.flags |= CALL_ACCOUNTED;
            }
        }
    }
    if INFLIGHT.insert(tid, inflight, 0).is_err() {
        count(Counter::InflightFull);
    }
    // After the insert: userspace's look at INFLIGHT either sees this call or began after
    // `now`, less the look's slack (see block.rs: which requests are sent one by one, and
    // Probes::look_for_calls). Only when requests are chosen at all.
    if config!(io_slow_ns) != 0 {
        stamp_call(CALL_WATCH_ENTER, now);
    }
    if sc.is_write() {
        // The write family is announced at exit only, and only when slow.
        return 0;
    }
    // `sc` is a constant: the file is read for the fd-taking calls only.
    let (file_dev, file_ino) = if matches!(sc.arg().1, ArgKind::Fd) && off != 0 {
        file_id(arg)
    } else {
        (0, 0)
    };
    emit(SyscallEnterEvent {
        hdr: header::<SyscallEnterEvent>(EventKind::SyscallEnter, now, pid_tgid),
        syscall: sc as u32,
        file_dev,
        arg,
        file_ino,
    });
    0
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, sc: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let tid = pid_tgid as u32;
    // SAFETY: the entry is copied out before it is removed below.
    let Some(start) = (unsafe { INFLIGHT.get(tid) }).copied() else {
        // A write not to storage is not followed from its entry (writes_to_storage).
        if !sc.is_write() {
            count(Counter::ExitWithoutEnter);
        }
        return 0;
    };
    // After the lookup: most exits of the write family have no entry, and need no clock.
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // Before the removal, for the same reason as the entry's.
    if config!(io_slow_ns) != 0 {
        stamp_call(CALL_WATCH_EXIT, now);
    }
    let _ = INFLIGHT.remove(tid);
    if start.syscall != sc as u32 {
        // A stale entry from a call whose exit we missed; this exit has no matching entry.
        count(Counter::ExitWithoutEnter);
        return 0;
    }
    // A fast write is held like any exit, in case the way back to its caller is slow
    // (flush_pending sends it only then); its name is read only if it is sent.
    let fast = sc.is_write() && now.saturating_sub(start.start_ns) < config!(write_min_ns);
    let off = config!(ret_offset) as usize;
    // SAFETY: `off` is the offset of `ret` in this tracepoint's record, read from tracefs.
    let ret = match unsafe { ctx.read_at::<i64>(off) } {
        Ok(v) => v,
        Err(_) => {
            count(Counter::ReadError);
            0
        }
    };
    let Some(st) = thread_entry(tid, tgid) else {
        if fast {
            return 0;
        }
        // No room to hold it: sent at once, without the after-return wait.
        emit(SyscallExitEvent {
            hdr: header::<SyscallExitEvent>(EventKind::SyscallExit, now, pid_tgid),
            syscall: sc as u32,
            flags: start.flags & !CALL_ACCOUNTED,
            start_ns: start.start_ns,
            ret,
            arg: start.arg,
            on_cpu_ns: 0,
            short_ns: [0; 3],
            after_ns: 0,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        });
        return 0;
    };
    // SAFETY: a valid map value pointer of this (running) thread.
    unsafe { hold_exit(st, &start, sc, now, pid_tgid, ret, fast) };
    0
}

/// Holds a watched call's exit in its thread's `pending` (sending any exit held before)
/// until the thread is past its caller's clock read (see probes/sched.rs): the call's
/// accounting since its entry, and the CPU budget of its way back from now.
///
/// # Safety
/// `st` must be a valid THREADS value pointer of the running thread.
#[inline(always)]
unsafe fn hold_exit(
    st: *mut ThreadState,
    start: &Inflight,
    sc: Syscall,
    now: u64,
    pid_tgid: u64,
    ret: i64,
    fast: bool,
) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        // The interrupt clock is started again for this exit below.
        send_pending(st);
        let flags = (*st).flags;
        let accounted = start.flags & CALL_ACCOUNTED != 0
            && flags & THREAD_ACCOUNTED != 0
            && flags & THREAD_OFF == 0;
        let p = &raw mut (*st).pending;
        (*p).hdr = header::<SyscallExitEvent>(EventKind::SyscallExit, now, pid_tgid);
        (*p).syscall = sc as u32;
        (*p).flags = if accounted {
            start.flags
        } else {
            start.flags & !CALL_ACCOUNTED
        };
        if flags & THREAD_OFF != 0 {
            // A return to CPU within the call was missed (one before it was repaired at
            // the entry): one of its off-CPU intervals is lost.
            (*p).flags |= CALL_SWITCH_UNSEEN;
        }
        back_on_cpu(st, now);
        (*p).start_ns = start.start_ns;
        (*p).ret = ret;
        (*p).arg = start.arg;
        (*p).after_ns = 0;
        if !fast {
            (*p).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        }
        if accounted {
            let on_now = (*st).on_ns + now.saturating_sub((*st).on_since_ns);
            (*p).on_cpu_ns = on_now.saturating_sub(start.on_ns);
            (*p).short_ns[SHORT_D] =
                (*st).short_ns[SHORT_D].saturating_sub(start.short_ns[SHORT_D]);
            (*p).short_ns[SHORT_S] =
                (*st).short_ns[SHORT_S].saturating_sub(start.short_ns[SHORT_S]);
            (*p).short_ns[SHORT_RUNQ] =
                (*st).short_ns[SHORT_RUNQ].saturating_sub(start.short_ns[SHORT_RUNQ]);
        } else {
            (*p).on_cpu_ns = 0;
            (*p).short_ns = [0; 3];
        }
        if flags & THREAD_ACCOUNTED == 0 {
            // First sight of this thread: it is running now; account from here on.
            (*st).on_since_ns = now;
            (*st).flags |= THREAD_ACCOUNTED;
        }
        (*st).after_cpu_ns = 0;
        watch_irqs(st);
        (*st).flags |= if fast {
            THREAD_PENDING | THREAD_PENDING_FAST
        } else {
            THREAD_PENDING
        };
    }
}

/// A thread running a syscall program is on CPU. If its state still says off CPU, the
/// switch that brought it back ran no program: the interval is lost (it was never sent);
/// resume the accounting from now so that later intervals are right.
///
/// # Safety
/// `st` must be a valid THREADS value pointer of the running thread.
#[inline(always)]
unsafe fn back_on_cpu(st: *mut ThreadState, now: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if (*st).flags & THREAD_OFF != 0 {
            count(Counter::SwitchUnseen);
            (*st).flags &= !THREAD_OFF;
            (*st).on_since_ns = now;
        }
    }
}

/// Defines the entry and exit programs of one syscall; the program names must match
/// `Syscall::programs` in zkstall-common (userspace looks them up by those names).
macro_rules! syscall_probes {
    ($($sc:ident => $enter:ident, $exit:ident;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            on_enter(&ctx, Syscall::$sc)
        }
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            on_exit(&ctx, Syscall::$sc)
        }
    )*};
}

syscall_probes! {
    Fsync => enter_fsync, exit_fsync;
    Fdatasync => enter_fdatasync, exit_fdatasync;
    SyncFileRange => enter_sync_file_range, exit_sync_file_range;
    Syncfs => enter_syncfs, exit_syncfs;
    Msync => enter_msync, exit_msync;
    Sync => enter_sync, exit_sync;
    Write => enter_write, exit_write;
    Pwrite64 => enter_pwrite64, exit_pwrite64;
    Writev => enter_writev, exit_writev;
    Pwritev => enter_pwritev, exit_pwritev;
    Pwritev2 => enter_pwritev2, exit_pwritev2;
}
