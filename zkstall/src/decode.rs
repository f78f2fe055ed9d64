//! Turning ring-buffer records into typed events: a pure, checked function. A short,
//! unknown or inconsistent record is an error, never a panic or a transmute.

use thiserror::Error;
use zkstall_common::{
    BlockedEvent, COMM_LEN, DirtyEvent, EventHeader, EventKind, IoEvent, JournalEvent,
    JournalPhase, JournalStatsEvent, Syscall, SyscallEnterEvent, SyscallExitEvent, ThreadChange,
    ThreadEvent, ThrottleEvent, WritebackEvent,
};

use crate::clock::MonoNs;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SyscallEnter {
        task: Task,
        ts: MonoNs,
        syscall: Syscall,
        arg: u64,
    },
    SyscallExit {
        task: Task,
        start: MonoNs,
        end: MonoNs,
        syscall: Syscall,
        ret: i64,
        arg: u64,
        comm: String,
    },
    /// A block request completed; `task` queued it.
    Io {
        task: Task,
        comm: String,
        cgroup_id: u64,
        /// Kernel dev_t (major << 20 | minor).
        dev: u32,
        sector: u64,
        bytes: u32,
        rwbs: String,
        error: i32,
        requeues: u32,
        /// None when the request was not seen before its completion.
        insert: Option<MonoNs>,
        /// None when the issue was not seen (e.g. requeued and not reissued).
        issue: Option<MonoNs>,
        complete: MonoNs,
        /// The inode being written back when it was queued (0: none).
        ino: u64,
    },
    /// A target thread was off CPU from `off` to `on`.
    Blocked {
        task: Task,
        off: MonoNs,
        on: MonoNs,
        wake: Option<MonoNs>,
        state: u64,
        syscall: Option<i64>,
        waker: Option<(Task, String)>,
        stack_id: Option<u32>,
    },
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

/// A NUL-padded comm as a string.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    cstr(comm)
}

/// A NUL-padded byte string as a string.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn nonzero(ns: u64) -> Option<MonoNs> {
    (ns != 0).then_some(MonoNs(ns))
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
            let e: SyscallEnterEvent = read(buf)?;
            let syscall = Syscall::try_from(e.syscall).map_err(DecodeError::UnknownSyscall)?;
            Ok(Event::SyscallEnter {
                task,
                ts: MonoNs(hdr.ts_ns),
                syscall,
                arg: e.arg,
            })
        }
        EventKind::SyscallExit => {
            let e: SyscallExitEvent = read(buf)?;
            let syscall = Syscall::try_from(e.syscall).map_err(DecodeError::UnknownSyscall)?;
            Ok(Event::SyscallExit {
                task,
                start: MonoNs(e.start_ns),
                end: MonoNs(hdr.ts_ns),
                syscall,
                ret: e.ret,
                arg: e.arg,
                comm: comm_str(&e.comm),
            })
        }
        EventKind::Io => {
            let e: IoEvent = read(buf)?;
            Ok(Event::Io {
                task,
                comm: comm_str(&e.comm),
                cgroup_id: e.cgroup_id,
                dev: e.dev,
                sector: e.sector,
                bytes: e.bytes,
                rwbs: cstr(&e.rwbs),
                error: e.error,
                requeues: e.requeues,
                insert: nonzero(e.insert_ns),
                issue: nonzero(e.issue_ns),
                complete: MonoNs(hdr.ts_ns),
                ino: e.ino,
            })
        }
        EventKind::Blocked => {
            let e: BlockedEvent = read(buf)?;
            let waker = (e.waker_tid != 0).then(|| {
                (
                    Task {
                        pid: e.waker_tgid,
                        tid: e.waker_tid,
                    },
                    comm_str(&e.waker_comm),
                )
            });
            Ok(Event::Blocked {
                task,
                off: MonoNs(e.off_ns),
                on: MonoNs(hdr.ts_ns),
                wake: nonzero(e.wake_ns),
                state: e.state,
                // orig_ax is -1 (or an IRQ vector, negative) outside a syscall.
                syscall: (e.syscall >= 0 && e.syscall < 4096).then_some(e.syscall),
                waker,
                stack_id: u32::try_from(e.stack_id).ok(),
            })
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
            _pad: 0,
            start_ns: 1_000,
            ret: 0,
            arg: 7,
            comm,
        };
        assert_eq!(
            decode(&bytes_of(&rec)).unwrap(),
            Event::SyscallExit {
                task: Task { pid: 10, tid: 11 },
                start: MonoNs(1_000),
                end: MonoNs(2_000),
                syscall: Syscall::Fdatasync,
                ret: 0,
                arg: 7,
                comm: "SyncThread:1".into(),
            }
        );
    }

    #[test]
    fn round_trips_an_enter() {
        let rec = SyscallEnterEvent {
            hdr: hdr::<SyscallEnterEvent>(EventKind::SyscallEnter, 5),
            syscall: Syscall::Msync as u32,
            _pad: 0,
            arg: 0x7f00_0000_1000,
        };
        assert_eq!(
            decode(&bytes_of(&rec)).unwrap(),
            Event::SyscallEnter {
                task: Task { pid: 10, tid: 11 },
                ts: MonoNs(5),
                syscall: Syscall::Msync,
                arg: 0x7f00_0000_1000
            }
        );
    }

    #[test]
    fn round_trips_an_io_completion() {
        let mut comm = [0u8; COMM_LEN];
        comm[..2].copy_from_slice(b"dd");
        let rec = IoEvent {
            hdr: hdr::<IoEvent>(EventKind::Io, 900),
            dev: (7 << 20) | 3,
            error: 0,
            sector: 2048,
            bytes: 65536,
            requeues: 1,
            rwbs: *b"WS\0\0\0\0\0\0",
            insert_ns: 100,
            issue_ns: 0,
            ino: 12,
            cgroup_id: 7,
            comm,
        };
        let Event::Io {
            task,
            dev,
            bytes,
            rwbs,
            issue,
            complete,
            comm,
            ino,
            ..
        } = decode(&bytes_of(&rec)).unwrap()
        else {
            panic!("not io")
        };
        assert_eq!(
            (task.pid, task.tid, dev, bytes, ino),
            (10, 11, (7 << 20) | 3, 65536, 12)
        );
        assert_eq!(rwbs, "WS");
        assert_eq!(issue, None, "0 means not seen");
        assert_eq!(complete, MonoNs(900));
        assert_eq!(comm, "dd");
    }

    #[test]
    fn blocked_records_keep_only_real_syscalls_and_wakers() {
        let rec = BlockedEvent {
            hdr: hdr::<BlockedEvent>(EventKind::Blocked, 500),
            off_ns: 100,
            wake_ns: 450,
            state: 2,
            syscall: -1,
            waker_tgid: 0,
            waker_tid: 0,
            waker_comm: [0; COMM_LEN],
            stack_id: -1,
        };
        let Event::Blocked {
            syscall,
            waker,
            stack_id,
            wake,
            ..
        } = decode(&bytes_of(&rec)).unwrap()
        else {
            panic!("not blocked")
        };
        assert_eq!(
            (syscall, waker, stack_id, wake),
            (None, None, None, Some(MonoNs(450)))
        );
        let mut with = rec;
        with.syscall = 75;
        with.waker_tid = 99;
        with.waker_tgid = 98;
        with.stack_id = 4;
        let Event::Blocked {
            syscall,
            waker,
            stack_id,
            ..
        } = decode(&bytes_of(&with)).unwrap()
        else {
            panic!("not blocked")
        };
        assert_eq!(syscall, Some(75));
        assert_eq!(waker.map(|(t, _)| (t.pid, t.tid)), Some((98, 99)));
        assert_eq!(stack_id, Some(4));
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
            _pad: 0,
            arg: 0,
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
