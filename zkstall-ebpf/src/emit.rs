//! Writing records into the ring buffer. A failed reservation is counted, never silent.

use zkstall_common::{Counter, EventHeader, EventKind};

use crate::maps::{EVENTS, count};

/// Copies `rec` into the ring buffer. When the buffer is full the record is dropped and
/// [`Counter::RingbufFull`] incremented.
#[inline(always)]
pub fn emit<T: 'static>(rec: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(rec);
            entry.submit(0);
        }
        None => count(Counter::RingbufFull),
    }
}

/// The header every record starts with.
#[inline(always)]
pub fn header<T>(kind: EventKind, ts_ns: u64, pid_tgid: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        size: core::mem::size_of::<T>() as u32,
        ts_ns,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    }
}
