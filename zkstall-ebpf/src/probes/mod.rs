//! One module per probe family.
pub mod block;
pub mod heartbeat;
pub mod irq;
pub mod journal;
pub mod jvm;
pub mod reclaim;
pub mod sched;
pub mod syscalls;
pub mod writeback;
