//! Rebuild the kernel object when bpf-linker changes (it does the final link); aya-template
//! does the same.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
