//! zkstall's kernel programs. Tracepoints only (kprobes and fentry are not available on
//! every kernel zkstall must run on). This file only wires the modules together; each probe
//! family lives in `probes/`, the maps in `maps.rs`, the ring-buffer writer in `emit.rs`.
#![no_std]
#![no_main]

mod emit;
mod maps;
mod probes;

/// Several helpers zkstall uses are GPL-only; the kernel checks this section.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this, so it is never executed.
    loop {}
}
