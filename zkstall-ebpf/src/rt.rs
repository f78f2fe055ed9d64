//! What each object this crate builds carries (zkstall's programs, the bench's floor): the
//! license section, and a panic handler no program can reach.

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
