//! Moves records from the kernel's ring buffer into a bounded channel. It does nothing
//! else: decoding is a pure function elsewhere. When the consumer falls behind, the channel
//! fills, this task waits, the ring buffer fills, and the kernel counts what it drops: memory
//! stays bounded and nothing is lost silently.

use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};

/// Capacity of the channel between the reader and the pipeline, in records.
pub const CHANNEL_RECORDS: usize = 8192;

/// The kernel side only wakes the reader when a lot is pending (see zkstall-ebpf's
/// emit.rs); in between, the reader drains the ring this often.
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Reads `ring` until `stop` turns true, then drains what is left and returns.
/// Dropping `tx` at the end tells the consumer that the stream is complete.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
    // RingBuf is dropped, and it is dropped only together with this AsyncFd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                while let Some(rec) = next(fd.get_mut()) {
                    if tx.send(rec).await.is_err() {
                        return Ok(());
                    }
                }
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                while let Some(rec) = next(guard.get_inner_mut()) {
                    if tx.send(rec).await.is_err() {
                        return Ok(());
                    }
                }
                guard.clear_ready();
            }
        }
    }
    // Final drain: what the kernel wrote before the programs were detached.
    let ring = fd.get_mut();
    while let Some(rec) = next(ring) {
        if tx.send(rec).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn next(ring: &mut RingBuf<MapData>) -> Option<Bytes> {
    ring.next().map(|item| Bytes::copy_from_slice(&item))
}
