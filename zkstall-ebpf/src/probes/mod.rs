//! One module per probe family.
pub mod syscalls;
