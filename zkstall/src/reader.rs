//! Moves records from the kernel's ring buffer into a bounded channel, on a thread of its
//! own, so that nothing the analysis does (/proc reads, symbolization, output) ever holds
//! up draining. It does nothing else: decoding is a pure function elsewhere.
//!
//! When the analysis falls behind and the channel is full, the reader sheds the record
//! (counted, with its timestamp) instead of waiting: the kernel's ring buffer then never
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
use bytes::Bytes;
use tokio::sync::mpsc;

/// Capacity of the channel between the reader and the pipeline, in records (a few tens of
/// MB at most).
pub const CHANNEL_RECORDS: usize = 65536;

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
    pub fn spawn(ring: RingBuf<MapData>, tx: mpsc::Sender<Bytes>) -> std::io::Result<Reader> {
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
    tx: mpsc::Sender<Bytes>,
    stop: Arc<AtomicBool>,
    shed: Arc<Shed>,
) -> std::io::Result<()> {
    let fd = ring.as_raw_fd();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while let Some(item) = ring.next() {
            let rec = Bytes::copy_from_slice(&item);
            drop(item);
            if stopping {
                // The last records: wait for room rather than shed them.
                if tx.blocking_send(rec).is_err() {
                    return Ok(());
                }
                continue;
            }
            match tx.try_send(rec) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(rec)) => shed.note(&rec),
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
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
