//! Moves records from the kernel's ring buffer into a bounded channel, on a thread of its
//! own, so that nothing the analysis does (/proc reads, symbolization, output) ever holds
//! up draining. It does nothing else: decoding is a pure function elsewhere.
//!
//! Records travel in batches (up to [`BATCH_RECORDS`] records in one buffer, each framed by
//! its length): one allocation and one channel hand-off per batch, not per record, which
//! at 100k+ block requests a second was a large part of the agent's cost.
//!
//! When the analysis falls behind and the channel is full, the reader sheds the batch
//! (every record in it counted, with its timestamp) instead of waiting: the kernel's ring buffer then never
//! fills because of us, memory stays bounded, and every loss is known with the time it
//! happened, so verdicts over that time say they are incomplete.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::sync::mpsc;

/// Capacity of the channel between the reader and the pipeline, in records (a few tens of
/// MB at most).
pub const CHANNEL_RECORDS: usize = 65536;

/// Records in one batch at most.
pub const BATCH_RECORDS: usize = 256;

/// The channel's capacity in batches for a bound of `records` records.
pub fn channel_batches(records: usize) -> usize {
    (records / BATCH_RECORDS).max(2)
}

/// Kernel records, each framed by its length (u32, little endian).
#[derive(Clone, Debug, Default)]
pub struct Batch(Bytes);

impl Batch {
    /// The records, in the order the ring buffer gave them.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let rec = rest.get(4..4 + len)?;
            rest = &rest[4 + len..];
            Some(rec)
        })
    }
}

/// A batch being filled.
#[derive(Default)]
struct Filling {
    buf: BytesMut,
    records: usize,
}

impl Filling {
    fn push(&mut self, rec: &[u8]) {
        self.buf.put_u32_le(rec.len() as u32);
        self.buf.put_slice(rec);
        self.records += 1;
    }

    fn take(&mut self) -> Option<Batch> {
        if self.records == 0 {
            return None;
        }
        self.records = 0;
        Some(Batch(self.buf.split().freeze()))
    }
}

/// The kernel side only wakes the reader when a lot is pending (see zkstall-ebpf's
/// emit.rs); in between, the reader drains the ring this often.
pub const DRAIN_EVERY_MS: i32 = 10;

/// What the reader shed, and when (the records' own timestamps).
#[derive(Debug, Default)]
pub struct Shed {
    pub records: AtomicU64,
    pub first_ns: AtomicU64,
    pub last_ns: AtomicU64,
}

impl Shed {
    fn note(&self, rec: &[u8]) {
        let ts = rec
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        self.records.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .first_ns
            .compare_exchange(0, ts, Ordering::Relaxed, Ordering::Relaxed);
        self.last_ns.fetch_max(ts, Ordering::Relaxed);
    }

    /// (records shed since the last call, first and last timestamp among them).
    pub fn take(&self) -> Option<(u64, u64, u64)> {
        let n = self.records.swap(0, Ordering::Relaxed);
        let first = self.first_ns.swap(0, Ordering::Relaxed);
        let last = self.last_ns.swap(0, Ordering::Relaxed);
        (n > 0).then_some((n, first, last))
    }
}

pub struct Reader {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<std::io::Result<()>>>,
    pub shed: Arc<Shed>,
}

impl Reader {
    /// Starts draining `ring` into `tx`.
    pub fn spawn(ring: RingBuf<MapData>, tx: mpsc::Sender<Batch>) -> std::io::Result<Reader> {
        let stop = Arc::new(AtomicBool::new(false));
        let shed = Arc::new(Shed::default());
        let (s, sh) = (stop.clone(), shed.clone());
        let join = std::thread::Builder::new()
            .name("zkstall-reader".into())
            .spawn(move || run(ring, tx, s, sh))?;
        Ok(Reader {
            stop,
            join: Some(join),
            shed,
        })
    }

    /// Asks the reader to drain what is left and end (it drops its sender then).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the reader to end.
    pub fn join(mut self) -> std::io::Result<()> {
        match self.join.take().map(|j| j.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the ring-buffer reader panicked")),
            None => Ok(()),
        }
    }
}

fn run(
    mut ring: RingBuf<MapData>,
    tx: mpsc::Sender<Batch>,
    stop: Arc<AtomicBool>,
    shed: Arc<Shed>,
) -> std::io::Result<()> {
    let fd = ring.as_raw_fd();
    let mut filling = Filling::default();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        loop {
            let item = ring.next();
            let full = match &item {
                Some(rec) => {
                    filling.push(rec);
                    filling.records >= BATCH_RECORDS
                }
                None => true,
            };
            let empty = item.is_none();
            drop(item);
            if full && let Some(batch) = filling.take() {
                if stopping {
                    // The last records: wait for room rather than shed them.
                    if tx.blocking_send(batch).is_err() {
                        return Ok(());
                    }
                } else {
                    match tx.try_send(batch) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(batch)) => {
                            batch.records().for_each(|r| shed.note(r))
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                    }
                }
            }
            if empty {
                break;
            }
        }
        if stopping {
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call; the fd is owned by
        // `ring`, which outlives it.
        let rc = unsafe { libc::poll(&mut pfd, 1, DRAIN_EVERY_MS) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_records_in_order_and_a_torn_one_stops_cleanly() {
        let mut f = Filling::default();
        assert!(f.take().is_none(), "an empty batch is not sent");
        let recs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 16 + i as usize * 8]).collect();
        for r in &recs {
            f.push(r);
        }
        let b = f.take().unwrap();
        assert_eq!(
            b.records().collect::<Vec<_>>(),
            recs.iter().map(|r| &r[..]).collect::<Vec<_>>()
        );
        // The filling starts over.
        f.push(&[9; 24]);
        assert_eq!(f.take().unwrap().records().count(), 1);
        // A buffer cut short yields the whole records before the cut, and no panic.
        let cut = Batch(b.0.slice(..b.0.len() - 3));
        assert_eq!(cut.records().count(), 4);
        assert_eq!(Batch(Bytes::from_static(&[1, 0])).records().count(), 0);
    }

    #[test]
    fn the_channel_bound_in_batches_keeps_the_bound_in_records() {
        assert_eq!(
            channel_batches(CHANNEL_RECORDS) * BATCH_RECORDS,
            CHANNEL_RECORDS
        );
        assert_eq!(channel_batches(1), 2);
    }
}
