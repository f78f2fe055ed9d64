//! Builds the kernel programs (zkstall-ebpf) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR, where src/probes embeds it;
//! and generates the Rust types of Perfetto's trace format (proto/, parsed by protox: no
//! protoc needed) that `zkstall export` writes.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    perfetto_protos()?;
    if std::env::var_os("AYA_BUILD_SKIP").is_none() && which("bpf-linker").is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH: the eBPF programs cannot be linked.\n\
             Run `cargo xtask setup` (installs the nightly's rust-src and builds bpf-linker \
             against the nightly's LLVM), then build again."
        ));
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("zkstall crate has no parent directory")?
        .join("zkstall-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "zkstall-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; if the nightly toolchain or its rust-src is \
         missing, run `cargo xtask setup`",
    )
}

fn perfetto_protos() -> anyhow::Result<()> {
    let proto = "proto/perfetto_trace_subset.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).context("parsing the Perfetto protos")?;
    prost_build::Config::new()
        .compile_fds(fds)
        .context("generating the Perfetto types")
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
