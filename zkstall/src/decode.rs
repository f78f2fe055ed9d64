//! Turning ring-buffer records into typed events: a pure, checked function. A short,
//! unknown or inconsistent record is an error, never a panic or a transmute.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zkstall_common::{
    BLOCKED_AFTER_CALL, BLOCKED_OPEN, BLOCKED_SEEDED, BlockedEvent, CALL_ACCOUNTED, CALL_AFTER,
    CALL_FAST, CALL_START_BOUND, CALL_SWITCH_UNSEEN, COMM_LEN, DirtyEvent, EventHeader, EventKind,
    IoEvent, JournalEvent, JournalPhase, JournalStatsEvent, LowSpaceEvent, MAX_FRAMES,
    RQ_FROM_GETRQ, RQ_KTHREAD, RQ_LATE, RQ_OPEN, RQ_PARTIAL, RQ_UNMATCHED, ReclaimEvent, SHORT_D,
    SHORT_RUNQ, SHORT_S, SYSCALL_ENTER_V1_SIZE, Syscall, SyscallEnterEvent, SyscallExitEvent,
    ThreadChange, ThreadEvent, ThrottleEvent, WakerCtx, WritebackEvent,
};

use crate::{clock::MonoNs, enrich::DevId};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {want} its kind needs")]
    Short { got: usize, want: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown syscall id {0}")]
    UnknownSyscall(u32),
    #[error("unknown {0} value {1}")]
    UnknownValue(&'static str, u32),
    #[error("record says it has {said} bytes, but {got} arrived")]
    SizeMismatch { said: u32, got: usize },
}

/// Who an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
}

/// A thread's scheduling state when it went off CPU (sched_switch's `prev_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchedState {
    /// Runnable: preempted, or yielded (`R`). Its whole interval is run-queue wait.
    #[serde(rename = "R")]
    Runnable,
    /// Uninterruptible sleep (`D`): waiting for I/O or a kernel lock.
    #[serde(rename = "D")]
    DiskSleep,
    /// Interruptible sleep (`S`): futex, poll, sleep...
    #[serde(rename = "S")]
    Sleep,
    /// Idle kernel wait (`I`, TASK_IDLE).
    #[serde(rename = "I")]
    Idle,
    /// Stopped or traced (`T`, `t`).
    #[serde(rename = "T")]
    Stopped,
    /// Anything else (exiting, parked).
    #[serde(rename = "?")]
    Other,
}

impl SchedState {
    /// From sched_switch's report-encoded prev_state.
    pub fn from_report(state: u64) -> SchedState {
        if state & 0x2 != 0 {
            SchedState::DiskSleep
        } else if state & 0x1 != 0 {
            SchedState::Sleep
        } else if state & 0x80 != 0 {
            SchedState::Idle
        } else if state & 0xc != 0 {
            SchedState::Stopped
        } else if state & 0xff == 0 {
            SchedState::Runnable
        } else {
            SchedState::Other
        }
    }

    /// The ps(1) letter.
    pub fn letter(self) -> &'static str {
        match self {
            SchedState::Runnable => "R",
            SchedState::DiskSleep => "D",
            SchedState::Sleep => "S",
            SchedState::Idle => "I",
            SchedState::Stopped => "T",
            SchedState::Other => "?",
        }
    }

    /// From /proc/<tid>/stat's state letter.
    pub fn from_letter(c: char) -> SchedState {
        match c {
            'R' => SchedState::Runnable,
            'D' => SchedState::DiskSleep,
            'S' => SchedState::Sleep,
            'I' => SchedState::Idle,
            'T' | 't' => SchedState::Stopped,
            _ => SchedState::Other,
        }
    }
}

impl std::fmt::Display for SchedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.letter())
    }
}

/// The on/off-CPU split of a call, measured in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accounting {
    pub on_cpu_ns: u64,
    /// Off-CPU time in intervals too short to be sent one by one.
    pub short_d_ns: u64,
    pub short_s_ns: u64,
    pub short_runq_ns: u64,
}

/// A watched syscall that returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub task: Task,
    pub start: MonoNs,
    pub end: MonoNs,
    pub syscall: Syscall,
    pub ret: i64,
    pub arg: u64,
    pub comm: String,
    /// The start is only a bound: the call was already running when tracing began.
    pub start_bound: bool,
    /// None when the thread's accounting did not cover the whole call.
    pub accounting: Option<Accounting>,
    /// The thread went off CPU right after the return, for this long.
    pub after_ns: Option<u64>,
    /// A return to CPU within the call ran no probe: one off-CPU interval is missing.
    pub switch_unseen: bool,
    /// A write faster than the threshold in the kernel, sent for its slow way back.
    pub fast: bool,
}

/// Who woke a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waker {
    Task { task: Task, comm: String },
    Irq,
    Softirq,
    Timer,
}

/// An off-CPU interval of a target thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffCpu {
    pub task: Task,
    pub off: MonoNs,
    pub on: MonoNs,
    pub wake: Option<MonoNs>,
    pub state: SchedState,
    /// The syscall it was inside (None: not in a syscall, or not known).
    pub syscall: Option<i64>,
    pub waker: Option<Waker>,
    /// Kernel stack at switch-out (D only), innermost first.
    pub frames: Vec<u64>,
    /// It began right after a watched syscall returned.
    pub after_call: bool,
    /// It began before tracing (seeded from /proc): `off` is a bound.
    pub seeded: bool,
    /// Still off CPU when tracing ended: `on` is the end of tracing.
    pub open: bool,
}

/// A block request on a watched disk completed (or part of it, or still in flight at the
/// end).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoDone {
    /// Who submitted it (pid 0: not known).
    pub submitter: Task,
    pub comm: Comm,
    /// The submitter is a kernel thread relaying others' I/O.
    pub kthread: bool,
    /// Seen at block_getrq in its submitter's context.
    pub from_getrq: bool,
    /// Never seen before its completion (queued before its disk was watched).
    pub unmatched: bool,
    /// Not followed from its start by choice (RQ_LATE, `--requests around-calls`).
    pub late: bool,
    /// This completion covers part of it; more follow.
    pub partial: bool,
    /// Still in flight at the end of tracing (`completed` is the end of tracing).
    pub open: bool,
    /// Kernel dev_t of the disk, and of the partition when the block layer named it.
    pub disk: DevId,
    pub part: Option<DevId>,
    pub sector: u64,
    pub bytes: u32,
    /// Bytes completed by this completion.
    pub nr_bytes: u32,
    pub cmd_flags: u32,
    pub status: u32,
    pub requeues: u16,
    pub queued: Option<MonoNs>,
    pub inserted: Option<MonoNs>,
    pub issued: Option<MonoNs>,
    pub completed: MonoNs,
    /// The inode a flusher was writing back when it submitted this (0: none), and that
    /// inode's bdi.
    pub ino: u64,
    pub wb_bdi: String,
    pub task_cgroup: u64,
    pub blk_cgroup: u64,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SyscallEnter {
        task: Task,
        ts: MonoNs,
        syscall: Syscall,
        arg: u64,
        /// The fd's file as the kernel knows it: (its filesystem's kernel dev_t, inode).
        file_id: Option<(u32, u64)>,
    },
    SyscallExit(Exit),
    Io(IoDone),
    Blocked(OffCpu),
    Thread {
        actor: Task,
        ts: MonoNs,
        change: ThreadChange,
        tid: u32,
        comm: String,
    },
    Dirty {
        task: Task,
        ts: MonoNs,
        comm: String,
        cgroup_id: u64,
        ino: u64,
        pages: u32,
        bdi: String,
    },
    Writeback {
        task: Task,
        ts: MonoNs,
        start: Option<MonoNs>,
        ino: u64,
        pages: u64,
        bdi: String,
    },
    Throttle {
        task: Task,
        ts: MonoNs,
        comm: String,
        pause_ms: i64,
        paused_ms: u64,
        dirty: u64,
        limit: u64,
        bdi: String,
    },
    Journal {
        task: Task,
        ts: MonoNs,
        dev: u32,
        transaction: u32,
        phase: JournalPhase,
    },
    JournalStats {
        dev: u32,
        transaction: u32,
        handles: u32,
        blocks: u32,
        blocks_logged: u32,
    },
    /// A HotSpot USDT probe fired in a traced JVM.
    Jvm {
        task: Task,
        ts: MonoNs,
        probe: zkstall_common::JvmProbe,
        /// A thread's Java name or a VM operation's name ("" for the others).
        name: String,
        /// Thread probes: the Java thread id and the OS thread id; vmops: the mode; gc:
        /// full (1) or not.
        a: u64,
        b: u64,
    },
    /// A CPU's heartbeat did not run from `from` to `to`.
    HostGap {
        cpu: u32,
        from: MonoNs,
        to: MonoNs,
    },
    /// A target thread queued writeback of a filesystem for low free space.
    LowSpace {
        task: Task,
        ts: MonoNs,
        /// The filesystem's device (kernel dev_t).
        sb_dev: u32,
        nr_pages: i64,
    },
    /// A target thread reclaimed memory itself.
    Reclaim {
        task: Task,
        start: MonoNs,
        end: MonoNs,
        nr_reclaimed: u64,
        /// Its memory cgroup's limit (else: the system's shortage).
        memcg: bool,
    },
}

/// A wire record: one of the `#[repr(C)]` structs of zkstall-common.
pub trait Record: Copy {}
impl Record for SyscallEnterEvent {}
impl Record for SyscallExitEvent {}
impl Record for IoEvent {}
impl Record for BlockedEvent {}
impl Record for ThreadEvent {}
impl Record for DirtyEvent {}
impl Record for WritebackEvent {}
impl Record for ThrottleEvent {}
impl Record for JournalEvent {}
impl Record for JournalStatsEvent {}
impl Record for ReclaimEvent {}
impl Record for LowSpaceEvent {}
impl Record for zkstall_common::HostGapEvent {}
impl Record for zkstall_common::JvmEvent {}
impl Record for EventHeader {}

/// The bytes of a wire record, as the kernel writes them (to synthesize records from the
/// kernel's maps at the end of tracing, and in tests).
pub fn record_bytes<T: Record>(v: &T) -> Vec<u8> {
    // SAFETY: `T` is one of the wire records: #[repr(C)] integers and byte arrays with
    // explicit padding fields, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// Copies a `T` out of the front of `buf` after checking its length.
fn read<T: Copy>(buf: &[u8]) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if buf.len() < want {
        return Err(DecodeError::Short {
            got: buf.len(),
            want,
        });
    }
    // SAFETY: the length was checked; T is one of the #[repr(C)] wire records made only of
    // integers and byte arrays, for which every bit pattern is valid; read_unaligned copes
    // with any alignment of `buf`.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<T>()) })
}

/// Reads a `T` from a record that may be as short as `min` bytes (an older layout, whose
/// later fields were added since): what is missing reads as zeros.
fn read_padded<T: Copy + Default>(buf: &[u8], min: usize) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    if buf.len() >= want || buf.len() < min {
        return read(buf);
    }
    let mut v = T::default();
    // SAFETY: `buf` is shorter than T; T is a #[repr(C)] wire record made only of integers,
    // for which every bit pattern is valid; the bytes are copied over its first part.
    unsafe {
        std::ptr::copy_nonoverlapping(buf.as_ptr(), (&raw mut v).cast::<u8>(), buf.len());
    }
    Ok(v)
}

/// A NUL-padded comm as a string.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    cstr(comm)
}

/// A comm kept inline, as a `str`: every block request carries one, and a heap string for
/// each was a visible part of `report`'s time. Not UTF-8 (rare): the lossy text, boxed.
#[derive(Clone, PartialEq, Eq)]
pub enum Comm {
    Inline { len: u8, bytes: [u8; COMM_LEN] },
    Lossy(Box<str>),
}

impl Comm {
    pub fn new(raw: &[u8; COMM_LEN]) -> Comm {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        match std::str::from_utf8(&raw[..end]) {
            Ok(_) => Comm::Inline {
                len: end as u8,
                bytes: *raw,
            },
            Err(_) => Comm::Lossy(String::from_utf8_lossy(&raw[..end]).into()),
        }
    }
}

impl std::ops::Deref for Comm {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Comm::Inline { len, bytes } => {
                let b = &bytes[..(*len as usize).min(COMM_LEN)];
                // SAFETY: `new` checked these bytes are UTF-8, and they never change.
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            Comm::Lossy(s) => s,
        }
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// A NUL-padded byte string as a string.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match std::str::from_utf8(&bytes[..end]) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(&bytes[..end]).into_owned(),
    }
}

fn nonzero(ns: u64) -> Option<MonoNs> {
    (ns != 0).then_some(MonoNs(ns))
}

/// The header of a kernel record (its kind and time), without decoding the rest: what the
/// reader needs of a record it sheds or keeps.
pub fn header(buf: &[u8]) -> Option<EventHeader> {
    read(buf).ok()
}

pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    let hdr: EventHeader = read(buf)?;
    if (hdr.size as usize) != buf.len() {
        return Err(DecodeError::SizeMismatch {
            said: hdr.size,
            got: buf.len(),
        });
    }
    let kind = EventKind::try_from(hdr.kind).map_err(DecodeError::UnknownKind)?;
    let task = Task {
        pid: hdr.tgid,
        tid: hdr.tid,
    };
    match kind {
        EventKind::SyscallEnter => {
            let e: SyscallEnterEvent = read_padded(buf, SYSCALL_ENTER_V1_SIZE)?;
            let syscall = Syscall::try_from(e.syscall).map_err(DecodeError::UnknownSyscall)?;
            Ok(Event::SyscallEnter {
                task,
                ts: MonoNs(hdr.ts_ns),
                syscall,
                arg: e.arg,
                file_id: (e.file_ino != 0).then_some((e.file_dev, e.file_ino)),
            })
        }
        EventKind::SyscallExit => {
            let e: SyscallExitEvent = read(buf)?;
            let syscall = Syscall::try_from(e.syscall).map_err(DecodeError::UnknownSyscall)?;
            Ok(Event::SyscallExit(Exit {
                task,
                start: MonoNs(e.start_ns),
                end: MonoNs(hdr.ts_ns),
                syscall,
                ret: e.ret,
                arg: e.arg,
                comm: comm_str(&e.comm),
                start_bound: e.flags & CALL_START_BOUND != 0,
                accounting: (e.flags & CALL_ACCOUNTED != 0).then_some(Accounting {
                    on_cpu_ns: e.on_cpu_ns,
                    short_d_ns: e.short_ns[SHORT_D],
                    short_s_ns: e.short_ns[SHORT_S],
                    short_runq_ns: e.short_ns[SHORT_RUNQ],
                }),
                after_ns: (e.flags & CALL_AFTER != 0).then_some(e.after_ns),
                switch_unseen: e.flags & CALL_SWITCH_UNSEEN != 0,
                fast: e.flags & CALL_FAST != 0,
            }))
        }
        EventKind::Io => {
            let e: IoEvent = read(buf)?;
            let r = e.rq;
            Ok(Event::Io(IoDone {
                submitter: task,
                comm: Comm::new(&r.comm),
                kthread: r.flags & RQ_KTHREAD != 0,
                from_getrq: r.flags & RQ_FROM_GETRQ != 0,
                unmatched: r.flags & RQ_UNMATCHED != 0,
                late: r.flags & RQ_LATE != 0,
                partial: r.flags & RQ_PARTIAL != 0,
                open: r.flags & RQ_OPEN != 0,
                disk: DevId::from_kernel(r.disk),
                part: (r.part != 0).then(|| DevId::from_kernel(r.part)),
                sector: r.sector,
                bytes: r.bytes,
                nr_bytes: e.nr_bytes,
                cmd_flags: r.cmd_flags,
                status: e.status,
                requeues: r.requeues,
                queued: nonzero(r.queued_ns),
                inserted: nonzero(r.insert_ns),
                issued: nonzero(r.issue_ns),
                completed: MonoNs(hdr.ts_ns),
                ino: r.ino,
                wb_bdi: cstr(&r.wb_bdi),
                task_cgroup: r.task_cgroup,
                blk_cgroup: r.blk_cgroup,
            }))
        }
        EventKind::Blocked => {
            let e: BlockedEvent = read(buf)?;
            let waker = match WakerCtx::from_u32(e.waker_ctx) {
                Some(WakerCtx::Irq) => Some(Waker::Irq),
                Some(WakerCtx::Softirq) => Some(Waker::Softirq),
                Some(WakerCtx::Timer) => Some(Waker::Timer),
                _ if e.waker_tid != 0 => Some(Waker::Task {
                    task: Task {
                        pid: e.waker_tgid,
                        tid: e.waker_tid,
                    },
                    comm: comm_str(&e.waker_comm),
                }),
                _ => None,
            };
            let n = (e.nframes as usize).min(MAX_FRAMES);
            Ok(Event::Blocked(OffCpu {
                task,
                off: MonoNs(e.off_ns),
                on: MonoNs(hdr.ts_ns),
                wake: nonzero(e.wake_ns),
                state: SchedState::from_report(e.state),
                // -1 outside a syscall; anything else out of range is not a syscall number.
                syscall: (e.syscall >= 0 && e.syscall < 4096).then_some(e.syscall),
                waker,
                frames: e.frames[..n].iter().copied().filter(|&f| f != 0).collect(),
                after_call: e.flags & BLOCKED_AFTER_CALL != 0,
                seeded: e.flags & BLOCKED_SEEDED != 0,
                open: e.flags & BLOCKED_OPEN != 0,
            }))
        }
        EventKind::Thread => {
            let e: ThreadEvent = read(buf)?;
            let change = match e.change {
                1 => ThreadChange::New,
                2 => ThreadChange::Exit,
                3 => ThreadChange::Rename,
                v => return Err(DecodeError::UnknownValue("thread change", v)),
            };
            Ok(Event::Thread {
                actor: task,
                ts: MonoNs(hdr.ts_ns),
                change,
                tid: e.tid,
                comm: comm_str(&e.comm),
            })
        }
        EventKind::Dirty => {
            let e: DirtyEvent = read(buf)?;
            Ok(Event::Dirty {
                task,
                ts: MonoNs(hdr.ts_ns),
                comm: comm_str(&e.comm),
                cgroup_id: e.cgroup_id,
                ino: e.ino,
                pages: e.pages,
                bdi: cstr(&e.bdi),
            })
        }
        EventKind::Writeback => {
            let e: WritebackEvent = read(buf)?;
            Ok(Event::Writeback {
                task,
                ts: MonoNs(hdr.ts_ns),
                start: nonzero(e.start_ns),
                ino: e.ino,
                pages: e.wrote,
                bdi: cstr(&e.bdi),
            })
        }
        EventKind::Throttle => {
            let e: ThrottleEvent = read(buf)?;
            Ok(Event::Throttle {
                task,
                ts: MonoNs(hdr.ts_ns),
                comm: comm_str(&e.comm),
                pause_ms: e.pause_ms,
                paused_ms: e.paused_ms,
                dirty: e.dirty,
                limit: e.limit,
                bdi: cstr(&e.bdi),
            })
        }
        EventKind::Journal => {
            let e: JournalEvent = read(buf)?;
            let phase = JournalPhase::try_from(e.phase)
                .map_err(|v| DecodeError::UnknownValue("journal phase", v))?;
            Ok(Event::Journal {
                task,
                ts: MonoNs(hdr.ts_ns),
                dev: e.dev,
                transaction: e.transaction,
                phase,
            })
        }
        EventKind::Jvm => {
            let e: zkstall_common::JvmEvent = read(buf)?;
            let probe = zkstall_common::JvmProbe::from_u32(e.probe)
                .ok_or(DecodeError::UnknownValue("JVM probe", e.probe))?;
            Ok(Event::Jvm {
                task,
                ts: MonoNs(hdr.ts_ns),
                probe,
                name: cstr(&e.name),
                a: e.a,
                b: e.b,
            })
        }
        EventKind::HostGap => {
            let e: zkstall_common::HostGapEvent = read(buf)?;
            Ok(Event::HostGap {
                cpu: e.cpu,
                from: MonoNs(e.last_ns),
                to: MonoNs(hdr.ts_ns),
            })
        }
        EventKind::LowSpace => {
            let e: LowSpaceEvent = read(buf)?;
            Ok(Event::LowSpace {
                task,
                ts: MonoNs(hdr.ts_ns),
                sb_dev: e.sb_dev,
                nr_pages: e.nr_pages,
            })
        }
        EventKind::Reclaim => {
            let e: ReclaimEvent = read(buf)?;
            Ok(Event::Reclaim {
                task,
                start: MonoNs(e.start_ns),
                end: MonoNs(hdr.ts_ns),
                nr_reclaimed: e.nr_reclaimed,
                memcg: e.memcg != 0,
            })
        }
        EventKind::JournalStats => {
            let e: JournalStatsEvent = read(buf)?;
            Ok(Event::JournalStats {
                dev: e.dev,
                transaction: e.transaction,
                handles: e.handle_count,
                blocks: e.blocks,
                blocks_logged: e.blocks_logged,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_comm_reads_as_the_heap_one_did() {
        let mut raw = [0u8; COMM_LEN];
        raw[..2].copy_from_slice(b"dd");
        assert_eq!(&*Comm::new(&raw), comm_str(&raw));
        assert_eq!(Comm::new(&raw).to_string(), "dd");
        // All 16 bytes used (no NUL), and bytes that are not UTF-8: the same text as before.
        let full = *b"0123456789abcdef";
        assert_eq!(&*Comm::new(&full), comm_str(&full));
        let mut bad = [0u8; COMM_LEN];
        bad[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(&*Comm::new(&bad), comm_str(&bad));
        assert!(matches!(Comm::new(&bad), Comm::Lossy(_)));
        assert_eq!(&*Comm::new(&[0u8; COMM_LEN]), "");
    }

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over the plain wire records.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn hdr<T>(kind: EventKind, ts: u64) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            size: size_of::<T>() as u32,
            ts_ns: ts,
            tgid: 10,
            tid: 11,
        }
    }

    #[test]
    fn round_trips_an_exit() {
        let mut comm = [0u8; COMM_LEN];
        comm[..12].copy_from_slice(b"SyncThread:1");
        let rec = SyscallExitEvent {
            hdr: hdr::<SyscallExitEvent>(EventKind::SyscallExit, 2_000),
            syscall: Syscall::Fdatasync as u32,
            flags: CALL_ACCOUNTED | CALL_AFTER,
            start_ns: 1_000,
            ret: 0,
            arg: 7,
            on_cpu_ns: 300,
            short_ns: [100, 200, 50],
            after_ns: 40,
            comm,
        };
        assert_eq!(
            decode(&bytes_of(&rec)).unwrap(),
            Event::SyscallExit(Exit {
                task: Task { pid: 10, tid: 11 },
                start: MonoNs(1_000),
                end: MonoNs(2_000),
                syscall: Syscall::Fdatasync,
                ret: 0,
                arg: 7,
                comm: "SyncThread:1".into(),
                start_bound: false,
                accounting: Some(Accounting {
                    on_cpu_ns: 300,
                    short_d_ns: 100,
                    short_s_ns: 200,
                    short_runq_ns: 50
                }),
                after_ns: Some(40),
                switch_unseen: false,
                fast: false,
            })
        );
        let mut bare = rec;
        bare.flags = CALL_START_BOUND;
        let Event::SyscallExit(x) = decode(&bytes_of(&bare)).unwrap() else {
            panic!()
        };
        assert!(x.start_bound && x.accounting.is_none() && x.after_ns.is_none());
        assert!(!x.switch_unseen && !x.fast);
        let mut gap = rec;
        gap.flags = CALL_SWITCH_UNSEEN;
        let Event::SyscallExit(x) = decode(&bytes_of(&gap)).unwrap() else {
            panic!()
        };
        assert!(x.switch_unseen && x.accounting.is_none());
    }

    #[test]
    fn round_trips_an_enter() {
        let rec = SyscallEnterEvent {
            hdr: hdr::<SyscallEnterEvent>(EventKind::SyscallEnter, 5),
            syscall: Syscall::Msync as u32,
            file_dev: 0,
            arg: 0x7f00_0000_1000,
            file_ino: 0,
        };
        assert_eq!(
            decode(&bytes_of(&rec)).unwrap(),
            Event::SyscallEnter {
                task: Task { pid: 10, tid: 11 },
                ts: MonoNs(5),
                syscall: Syscall::Msync,
                arg: 0x7f00_0000_1000,
                file_id: None,
            }
        );
        let mut rec = rec;
        rec.syscall = Syscall::Fdatasync as u32;
        rec.arg = 7;
        rec.file_dev = (7 << 20) | 3;
        rec.file_ino = 12;
        let Event::SyscallEnter { file_id, .. } = decode(&bytes_of(&rec)).unwrap() else {
            panic!()
        };
        assert_eq!(file_id, Some(((7 << 20) | 3, 12)));
        // As recordings made before the file's identity was sent carry it: 40 bytes.
        let mut old = bytes_of(&rec);
        old.truncate(SYSCALL_ENTER_V1_SIZE);
        old[4..8].copy_from_slice(&(SYSCALL_ENTER_V1_SIZE as u32).to_le_bytes());
        assert_eq!(
            decode(&old).unwrap(),
            Event::SyscallEnter {
                task: Task { pid: 10, tid: 11 },
                ts: MonoNs(5),
                syscall: Syscall::Fdatasync,
                arg: 7,
                file_id: None,
            }
        );
    }

    #[test]
    fn round_trips_an_io_completion() {
        let mut comm = [0u8; COMM_LEN];
        comm[..2].copy_from_slice(b"dd");
        let rec = IoEvent {
            hdr: hdr::<IoEvent>(EventKind::Io, 900),
            rq: zkstall_common::Request {
                queued_ns: 90,
                insert_ns: 100,
                issue_ns: 0,
                sector: 2048,
                ino: 12,
                wb_bdi: *b"7:3\0\0\0\0\0\0\0\0\0\0\0\0\0",
                task_cgroup: 7,
                blk_cgroup: 8,
                disk: (7 << 20) | 3,
                part: (259 << 20) | 1,
                tgid: 10,
                tid: 11,
                bytes: 65536,
                done_bytes: 65536,
                cmd_flags: 1 | (1 << 11),
                requeues: 1,
                flags: RQ_KTHREAD | RQ_FROM_GETRQ,
                comm,
            },
            nr_bytes: 65536,
            status: 0,
        };
        let Event::Io(io) = decode(&bytes_of(&rec)).unwrap() else {
            panic!("not io")
        };
        assert_eq!(
            (io.submitter.pid, io.submitter.tid, io.bytes, io.ino),
            (10, 11, 65536, 12)
        );
        assert_eq!(io.disk, DevId { major: 7, minor: 3 });
        assert_eq!(
            io.part,
            Some(DevId {
                major: 259,
                minor: 1
            })
        );
        assert_eq!(io.issued, None, "0 means not seen");
        assert_eq!((io.queued, io.completed), (Some(MonoNs(90)), MonoNs(900)));
        assert_eq!((&*io.comm, io.wb_bdi.as_str()), ("dd", "7:3"));
        assert!(io.kthread && io.from_getrq && !io.unmatched && !io.partial && !io.open);
    }

    #[test]
    fn blocked_records_keep_only_real_syscalls_wakers_and_frames() {
        let mut rec = BlockedEvent {
            hdr: hdr::<BlockedEvent>(EventKind::Blocked, 500),
            off_ns: 100,
            wake_ns: 450,
            state: 2,
            syscall: -1,
            ..Default::default()
        };
        let Event::Blocked(b) = decode(&bytes_of(&rec)).unwrap() else {
            panic!("not blocked")
        };
        assert_eq!(
            (b.syscall, &b.waker, b.wake),
            (None, &None, Some(MonoNs(450)))
        );
        assert_eq!(b.state, SchedState::DiskSleep);
        assert!(b.frames.is_empty());
        rec.syscall = 75;
        rec.waker_tid = 99;
        rec.waker_tgid = 98;
        rec.nframes = 2;
        rec.frames[0] = 0xffff_ffff_8100_0000;
        rec.frames[1] = 0xffff_ffff_8100_0010;
        rec.flags = BLOCKED_AFTER_CALL;
        let Event::Blocked(b) = decode(&bytes_of(&rec)).unwrap() else {
            panic!("not blocked")
        };
        assert_eq!(b.syscall, Some(75));
        assert!(matches!(
            b.waker,
            Some(Waker::Task {
                task: Task { pid: 98, tid: 99 },
                ..
            })
        ));
        assert_eq!(b.frames.len(), 2);
        assert!(b.after_call && !b.seeded && !b.open);
        rec.waker_ctx = WakerCtx::Timer as u32;
        rec.nframes = 999; // out of range: clamped, never a panic
        let Event::Blocked(b) = decode(&bytes_of(&rec)).unwrap() else {
            panic!("not blocked")
        };
        assert_eq!(b.waker, Some(Waker::Timer));
        assert_eq!(b.frames.len(), 2, "zero frames are dropped");
    }

    #[test]
    fn states_follow_the_report_encoding() {
        assert_eq!(SchedState::from_report(0x2), SchedState::DiskSleep);
        assert_eq!(SchedState::from_report(0x1), SchedState::Sleep);
        assert_eq!(SchedState::from_report(0x100), SchedState::Runnable);
        assert_eq!(SchedState::from_report(0), SchedState::Runnable);
        assert_eq!(SchedState::from_report(0x80), SchedState::Idle);
        assert_eq!(SchedState::from_letter('D'), SchedState::DiskSleep);
    }

    #[test]
    fn rejects_bad_records_without_panicking() {
        assert!(matches!(decode(&[1, 2, 3]), Err(DecodeError::Short { .. })));
        let mut h = hdr::<SyscallEnterEvent>(EventKind::SyscallEnter, 5);
        h.kind = 99;
        h.size = size_of::<EventHeader>() as u32;
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        let rec = SyscallEnterEvent {
            hdr: hdr::<SyscallEnterEvent>(EventKind::SyscallEnter, 5),
            syscall: 42,
            ..Default::default()
        };
        assert_eq!(
            decode(&bytes_of(&rec)),
            Err(DecodeError::UnknownSyscall(42))
        );
        let mut truncated = bytes_of(&rec);
        truncated.truncate(30);
        assert!(matches!(
            decode(&truncated),
            Err(DecodeError::SizeMismatch { .. })
        ));
        // Every prefix of a valid record is rejected cleanly.
        let full = bytes_of(&rec);
        for n in 0..full.len() {
            assert!(decode(&full[..n]).is_err());
        }
    }

    #[test]
    fn comm_stops_at_nul_and_tolerates_full_length() {
        assert_eq!(comm_str(b"java\0\0\0\0\0\0\0\0\0\0\0\0"), "java");
        assert_eq!(comm_str(b"QuorumPeer[myid\0"), "QuorumPeer[myid");
        assert_eq!(comm_str(b"0123456789abcdef"), "0123456789abcdef");
    }
}
