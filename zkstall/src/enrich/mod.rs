//! Enrichment: turning kernel identifiers into names a person can act on. Every cache here
//! is bounded; a miss costs a few reads of /proc or /sys.
//!
//! - `files`: fd (or msync address) -> absolute path, device number, inode
//! - `devices`: device number -> disk name (loop0, sdb, nvme0n1p1)
//! - `diskstats`: the block layer's own count of completed requests per disk
//! - `topology`: a file's device -> the disks serving it (partition, dm/md, loop backing)
//! - `threads`: tid -> thread name (the JVM's `SyncThread:1`)
//! - `cgroups`: cgroup id -> path (containers, systemd units)
//! - `symbols`: kernel stack addresses -> function names

pub mod cgroups;
pub mod devices;
pub mod diskstats;
pub mod facts;
pub mod files;
pub mod java;
pub mod symbols;
pub mod threads;
pub mod topology;

pub use cgroups::{Cgroups, IoLimit, MemLimit, ProcCgroups};
pub use devices::Devices;
pub use facts::{Enricher, Fact, Live, Replay, stack_key};
pub use files::{DevId, FileInfo, Files};
pub use symbols::Symbols;

pub use threads::Threads;
pub use topology::{DiskDev, DiskPath, FileDev, Layer, LayerKind, PartRange, Topology};

/// Inserts into a bounded map: when full, it is cleared first. Crude, but the working sets
/// (open files, threads and devices of a few JVMs) are far below the bounds, so clearing
/// only happens under pathological churn, and costs re-resolution, not correctness.
pub fn bounded_insert<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
    cap: usize,
    k: K,
    v: V,
) {
    if map.len() >= cap && !map.contains_key(&k) {
        map.clear();
    }
    map.insert(k, v);
}
