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
//! happened, so verdicts over that time say they are incomplete. The few records a call's
//! report cannot do without ([`vital`]: a call's entry and exit, a thread's change, a JVM
//! pause, a host gap) are kept out of a shed batch, up to [`KEPT_RECORDS`], and sent ahead
//! of the next batch the channel takes: a stall during a flood is then still reported
//! (its evidence marked incomplete), not lost with the flood's records.

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

/// Vital records kept out of shed batches, at most (each ~100 bytes: ~2 MB).
pub const KEPT_RECORDS: usize = 16384;

/// Whether a record is one a call's report cannot do without, and rare: a watched call's
/// entry or exit (the call itself), a thread's change (its name, its exit), a JVM pause,
/// a gap of the host's clock. The flood's kinds (requests, off-CPU intervals, page
/// dirtying) are not.
fn vital(rec: &[u8]) -> bool {
    use zkstall_common::EventKind as K;
    let kind = crate::decode::header(rec).and_then(|h| K::try_from(h.kind).ok());
    matches!(
        kind,
        Some(K::SyscallEnter | K::SyscallExit | K::Thread | K::Jvm | K::HostGap)
    )
}

/// What the reader hands the channel: the batches, with the vital records of the shed
/// ones ahead of them.
#[derive(Default)]
struct Outbox {
    /// Vital records of shed batches, oldest first, waiting for room.
    kept: Filling,
}

impl Outbox {
    /// The batch to send now: the kept records, then `filling`'s (none when both are
    /// empty).
    fn next(&mut self, filling: &mut Filling) -> Option<Batch> {
        if self.kept.records == 0 {
            return filling.take();
        }
        self.kept.buf.extend_from_slice(&filling.buf);
        self.kept.records += filling.records;
        filling.buf.clear();
        filling.records = 0;
        self.kept.take()
    }

    /// A batch the channel had no room for: its vital records are kept (while there is
    /// room), the rest shed and counted.
    fn shed(&mut self, batch: &Batch, shed: &Shed) {
        for r in batch.records() {
            if vital(r) && self.kept.records < KEPT_RECORDS {
                self.kept.push(r);
            } else {
                shed.note(r);
            }
        }
    }

    /// Sends what is ready without waiting; false once the channel is closed.
    fn try_send(&mut self, filling: &mut Filling, tx: &mpsc::Sender<Batch>, shed: &Shed) -> bool {
        let Some(batch) = self.next(filling) else {
            return true;
        };
        match tx.try_send(batch) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.shed(&batch, shed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
        let ts = crate::decode::header(rec).map_or(0, |h| h.ts_ns);
        self.records.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .first_ns
            .compare_exchange(0, ts, Ordering::Relaxed, Ordering::Relaxed);
        self.last_ns.fetch_max(ts, Ordering::Relaxed);
    }

    /// Whether records were shed since the last [`Shed::take`]. What the reader shed
    /// before it sent a batch is seen by whoever received that batch.
    pub fn pending(&self) -> bool {
        self.records.load(Ordering::Relaxed) > 0
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
    let mut outbox = Outbox::default();
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
            if full {
                if stopping {
                    // The last records: wait for room rather than shed them.
                    if let Some(batch) = outbox.next(&mut filling)
                        && tx.blocking_send(batch).is_err()
                    {
                        return Ok(());
                    }
                } else if !outbox.try_send(&mut filling, &tx, &shed) {
                    return Ok(());
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

    /// A record of `kind` stamped `ts`, as the kernel frames it (header first).
    fn record(kind: zkstall_common::EventKind, ts: u64) -> Vec<u8> {
        crate::decode::record_bytes(&zkstall_common::EventHeader {
            kind: kind as u32,
            size: size_of::<zkstall_common::EventHeader>() as u32,
            ts_ns: ts,
            tgid: 0,
            tid: 0,
        })
    }

    fn stamps(b: &Batch) -> Vec<u64> {
        b.records()
            .map(|r| crate::decode::header(r).unwrap().ts_ns)
            .collect()
    }

    /// A flood while the channel is full: its requests are shed and counted, a call's
    /// entry and exit in it are kept and sent, in order, ahead of the next batch the
    /// channel takes.
    #[test]
    fn a_full_channel_sheds_the_flood_but_keeps_the_calls() {
        use zkstall_common::EventKind as K;
        let (tx, mut rx) = mpsc::channel::<Batch>(1);
        let shed = Shed::default();
        let mut out = Outbox::default();
        let mut f = Filling::default();
        f.push(&record(K::Io, 1));
        assert!(out.try_send(&mut f, &tx, &shed));
        // The channel is full now: this batch is shed but for the call's records.
        for (k, ts) in [
            (K::Io, 2),
            (K::SyscallEnter, 3),
            (K::Io, 4),
            (K::Blocked, 5),
        ] {
            f.push(&record(k, ts));
        }
        assert!(out.try_send(&mut f, &tx, &shed));
        for (k, ts) in [(K::Io, 6), (K::SyscallExit, 7), (K::Thread, 8)] {
            f.push(&record(k, ts));
        }
        assert!(out.try_send(&mut f, &tx, &shed));
        assert_eq!(shed.take(), Some((4, 2, 6)));
        assert_eq!(stamps(&rx.try_recv().unwrap()), vec![1]);
        // Room again: the kept records first, then the new batch.
        f.push(&record(K::Io, 9));
        assert!(out.try_send(&mut f, &tx, &shed));
        assert_eq!(stamps(&rx.try_recv().unwrap()), vec![3, 7, 8, 9]);
        assert_eq!(shed.take(), None);
        // Nothing waiting, nothing new: nothing sent.
        assert!(out.try_send(&mut f, &tx, &shed));
        assert!(rx.try_recv().is_err());
        // At most KEPT_RECORDS are kept; the rest are shed too.
        f.push(&record(K::Io, 10));
        assert!(out.try_send(&mut f, &tx, &shed));
        for i in 0..KEPT_RECORDS as u64 + 5 {
            f.push(&record(K::SyscallExit, 100 + i));
        }
        assert!(out.try_send(&mut f, &tx, &shed));
        assert_eq!(out.kept.records, KEPT_RECORDS);
        assert_eq!(shed.take().map(|s| s.0), Some(5));
        drop(rx);
        assert!(
            !out.try_send(&mut f, &tx, &shed),
            "a closed channel ends the reader"
        );
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
