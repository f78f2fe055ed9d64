//! Rebuild the kernel object when bpf-linker changes (it does the final link); aya-template
//! does the same.
fn main() {
    // aya-build passes --cfg bpf_target_arch="<arch>" (probes/sched.rs uses it for the
    // pt_regs layout); declare it so rustc's cfg check knows it.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
