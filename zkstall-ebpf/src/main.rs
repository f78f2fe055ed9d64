//! zkstall's kernel programs. Tracepoints only (kprobes and fentry are not available on
//! every kernel zkstall must run on). This file only wires the modules together; each probe
//! family lives in `probes/`, the maps in `maps.rs`, the ring-buffer writer in `emit.rs`.
#![no_std]
#![no_main]

mod emit;
mod maps;
mod probes;
mod rt;
