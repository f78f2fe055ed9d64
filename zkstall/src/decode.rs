//! Turning ring-buffer records into typed events: a pure, checked function. A short,
//! unknown or inconsistent record is an error, never a panic or a transmute.

use thiserror::Error;
use zkstall_common::{
    COMM_LEN, EventHeader, EventKind, Syscall, SyscallEnterEvent, SyscallExitEvent,
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
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
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
