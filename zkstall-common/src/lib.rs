//! The wire format shared by zkstall's eBPF programs and its userspace agent.
//!
//! Every record the kernel side writes into the ring buffer starts with an [`EventHeader`];
//! userspace decodes `kind` with a checked `TryFrom` and never transmutes. All records are
//! `#[repr(C)]`, `Copy`, made of fixed-width integers with explicit padding, and their sizes
//! are asserted at compile time so that both sides fail to build if they drift apart.
#![no_std]

use core::mem::size_of;

/// Map, global and program names, defined once and used by both sides so that a typo is a
/// compile error rather than a load-time "map not found".
pub mod names {
    /// Ring buffer carrying every record to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// tgid -> 1 for every traced process; userspace fills it.
    pub const TARGETS: &str = "TARGETS";
    /// tid -> the syscall the thread is in (LRU, so a lost exit cannot leak an entry).
    pub const INFLIGHT: &str = "INFLIGHT";
    /// Per-CPU counters of drops and errors, indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Load-time configuration: tracepoint field offsets read from tracefs.
    pub const CONFIG: &str = "CONFIG";
}

/// Size of the ring buffer in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;
/// How many processes can be traced at once.
pub const MAX_TARGETS: u32 = 1024;
/// How many threads can be inside a watched syscall at once.
pub const MAX_INFLIGHT: u32 = 16384;
/// Length of a task's comm, including the terminating NUL (the kernel's TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// What a record is. On the wire it is a `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    SyscallEnter = 1,
    SyscallExit = 2,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::SyscallEnter),
            2 => Ok(Self::SyscallExit),
            other => Err(other),
        }
    }
}

/// The watched syscalls. On the wire a `u32`; also the index into [`Config::arg_offset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Syscall {
    Fsync = 0,
    Fdatasync = 1,
    SyncFileRange = 2,
    Syncfs = 3,
    Msync = 4,
    Sync = 5,
}

/// Number of [`Syscall`] variants; sizes the per-syscall tables.
pub const SYSCALL_COUNT: usize = 6;

/// What the first argument of a watched syscall is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A file descriptor (`fd` field of the tracepoint).
    Fd,
    /// A user address (`start` of msync).
    Addr,
    /// No argument (sync).
    None,
}

impl Syscall {
    pub const ALL: [Syscall; SYSCALL_COUNT] = [
        Syscall::Fsync,
        Syscall::Fdatasync,
        Syscall::SyncFileRange,
        Syscall::Syncfs,
        Syscall::Msync,
        Syscall::Sync,
    ];

    /// The syscall's name, as in `syscalls:sys_enter_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Fsync => "fsync",
            Syscall::Fdatasync => "fdatasync",
            Syscall::SyncFileRange => "sync_file_range",
            Syscall::Syncfs => "syncfs",
            Syscall::Msync => "msync",
            Syscall::Sync => "sync",
        }
    }

    /// The tracepoint field holding the argument zkstall records, and what it is.
    pub const fn arg(self) -> (&'static str, ArgKind) {
        match self {
            Syscall::Fsync | Syscall::Fdatasync | Syscall::SyncFileRange | Syscall::Syncfs => {
                ("fd", ArgKind::Fd)
            }
            Syscall::Msync => ("start", ArgKind::Addr),
            Syscall::Sync => ("", ArgKind::None),
        }
    }

    /// Names of the eBPF programs attached to `sys_enter_<name>` and `sys_exit_<name>`.
    pub const fn programs(self) -> (&'static str, &'static str) {
        match self {
            Syscall::Fsync => ("enter_fsync", "exit_fsync"),
            Syscall::Fdatasync => ("enter_fdatasync", "exit_fdatasync"),
            Syscall::SyncFileRange => ("enter_sync_file_range", "exit_sync_file_range"),
            Syscall::Syncfs => ("enter_syncfs", "exit_syncfs"),
            Syscall::Msync => ("enter_msync", "exit_msync"),
            Syscall::Sync => ("enter_sync", "exit_sync"),
        }
    }
}

impl TryFrom<u32> for Syscall {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Syscall::ALL.get(v as usize).copied().ok_or(v)
    }
}

/// Indexes into the per-CPU [`names::COUNTERS`] array. Every dropped record or failed
/// operation in the kernel increments one of these; userspace sums them over CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// A record could not be reserved in the ring buffer (userspace too slow): lost.
    RingbufFull = 0,
    /// The INFLIGHT map refused an entry: that call's exit cannot be timed.
    InflightFull = 1,
    /// A tracepoint field could not be read.
    ReadError = 2,
    /// A target thread left a watched syscall we never saw it enter (tracing started
    /// while it was inside, or its entry was evicted).
    ExitWithoutEnter = 3,
}

pub const COUNTER_COUNT: u32 = 4;

impl Counter {
    pub const ALL: [Counter; COUNTER_COUNT as usize] = [
        Counter::RingbufFull,
        Counter::InflightFull,
        Counter::ReadError,
        Counter::ExitWithoutEnter,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufFull => "ringbuf_full",
            Counter::InflightFull => "inflight_full",
            Counter::ReadError => "read_error",
            Counter::ExitWithoutEnter => "exit_without_enter",
        }
    }
}

/// Load-time configuration written into the `CONFIG` global by userspace. Offsets come from
/// the tracepoints' tracefs `format` files, never from a hard-coded kernel layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Config {
    /// Offset of each syscall's recorded argument in its `sys_enter_*` record, indexed by
    /// [`Syscall`]; 0 means "no argument".
    pub arg_offset: [u32; SYSCALL_COUNT],
    /// Offset of `ret` in the `sys_exit_*` records (all share one layout).
    pub ret_offset: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Config>() == 32);

/// The start of every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EventHeader {
    /// An [`EventKind`].
    pub kind: u32,
    /// Size of the whole record in bytes.
    pub size: u32,
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
}
const _: () = assert!(size_of::<EventHeader>() == 24);

/// A target thread entered a watched syscall. Sent so that userspace can resolve the fd to
/// a path while the call is in progress (the fd is certainly open then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SyscallEnterEvent {
    pub hdr: EventHeader,
    /// A [`Syscall`].
    pub syscall: u32,
    pub _pad: u32,
    /// The fd (as the raw 64-bit argument) or the msync address; 0 for sync.
    pub arg: u64,
}
const _: () = assert!(size_of::<SyscallEnterEvent>() == 40);

/// A target thread left a watched syscall. Timed in the kernel: `hdr.ts_ns` is the exit,
/// `start_ns` the entry, so a lost enter record does not lose the duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SyscallExitEvent {
    pub hdr: EventHeader,
    /// A [`Syscall`].
    pub syscall: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC nanoseconds at entry.
    pub start_ns: u64,
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Same as [`SyscallEnterEvent::arg`].
    pub arg: u64,
    /// The thread's comm at exit (NUL-padded): the JVM's thread name, 15 bytes at most.
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(size_of::<SyscallExitEvent>() == 72);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] integers with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
}
