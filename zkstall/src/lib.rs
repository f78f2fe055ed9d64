//! zkstall: explains storage stalls of JVM services (ZooKeeper first) from the kernel's
//! point of view.
//!
//! The modules follow the data, in this order:
//!
//! ```text
//!  targets      which processes to trace (ZooKeeper JVMs found in /proc, or --pid)
//!  probes       tracefs formats -> offsets, load + attach the eBPF programs, target map,
//!               kernel drop counters
//!    -> ring buffer
//!  reader       tokio AsyncFd on the ring buffer; only moves bytes (bounded channel)
//!  decode       &[u8] -> Event, pure and checked
//!  enrich       fd -> path + device, dev -> disk name, tid -> thread name (bounded caches)
//!  model        enter/exit pairs -> timed calls (bounded)
//!  history      recent I/O, off-CPU intervals, throttling, commits (bounded by time/count)
//!  attribution  per slow call: verdict, evidence, contenders, thread timeline
//!  recording    the same stream to and from a file (trace --output, report)
//!  sinks        text and JSON lines, written against any `io::Write`
//!  commands     check, trace, demo (and the hidden workload the demo and tests drive)
//! ```
//!
//! `clock` holds the one clock used end to end (CLOCK_MONOTONIC nanoseconds, as
//! `bpf_ktime_get_ns` returns) and its mapping to wall-clock time.

pub mod attribution;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod decode;
pub mod enrich;
pub mod history;
pub mod model;
pub mod pipeline;
pub mod probes;
pub mod reader;
pub mod recording;
pub mod sinks;
pub mod targets;
pub mod threads_now;

#[cfg(test)]
mod fuzz_tests;
