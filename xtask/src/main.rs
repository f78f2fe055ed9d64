//! Developer tasks. xtask orchestrates (toolchain set-up, root tests, the demo); the build
//! itself stays plain cargo.
//!
//!   cargo xtask setup            install what building and testing need (idempotent)
//!   cargo xtask build [--release]
//!   cargo xtask test [ARGS]      set up, build, run every test (root tests need root)
//!   cargo xtask demo             set up, build, trace a real ZooKeeper through two injected stalls
//!   cargo xtask lint             rustfmt check, clippy on userspace, clippy on the eBPF crate
//!   cargo xtask bench            bystander cost of zkstall, as with/without ratios
//!   cargo xtask vm-test [--kernel 6.1.0-47-amd64] [-- TEST ARGS]
//!                                check + root test tiers under a distribution kernel in qemu

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "zkstall developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the nightly's rust-src, bpf-linker (against the nightly's LLVM) and the
    /// Debian packages the tests use. Quick when everything is there.
    Setup,
    /// Build everything; leaves target/<profile>/zkstall.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run the whole test suite (unit, replay and root tests).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job on a real ZooKeeper (needs root): Debian's zookeeper on a loop-mounted
    /// ext4 under write load, a competing writer then a device that stops, traced by
    /// zkstall, then the recording reported. Everything is cleaned up.
    Demo,
    /// rustfmt --check, then clippy in two passes: userspace, and the eBPF crate.
    Lint,
    /// Measure what zkstall costs bystanders: a context-switch-heavy load and a small-block
    /// I/O load, each without and with zkstall attached, as ratios (needs root).
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 4)]
        seconds: u64,
        /// Alternating without/with rounds per row (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Leave out the ZooKeeper rows (creates/s, idle memory, recording sizes, crossing
        /// latency).
        #[arg(long)]
        no_zookeeper: bool,
    },
    /// Set up, build, then boot a distribution kernel (Debian 12's 6.1 by default) in qemu
    /// with virtme-ng and run `zkstall check` and the root test tiers inside (needs root).
    /// The guest shares the host's filesystem and runs the binaries built here.
    VmTest {
        /// Debian kernel release (its linux-image package is downloaded and unpacked).
        #[arg(long, default_value = vm::DEFAULT_KERNEL)]
        kernel: String,
        /// Accelerator: KVM if a probe boot works (auto), or force one.
        #[arg(long, value_enum, default_value = "auto")]
        accel: vm::Accel,
        /// Test tiers to run, comma-separated: check, fsync, observe, verdicts, zookeeper,
        /// shapes.
        /// zookeeper is not in the default: under TCG its JVMs start too slowly for its
        /// scenarios (see README, "Kernels tested").
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "check,fsync,observe,verdicts,shapes"
        )]
        tiers: Vec<String>,
        /// Limit for the whole VM run, boot to power-off, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Guest memory (qemu -m).
        #[arg(long, default_value = "4G")]
        memory: String,
        /// Guest CPUs (at least 2: the CPU-starvation tests take CPU 1).
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Test the debug build of zkstall instead of the release build.
        #[arg(long)]
        debug: bool,
        /// Extra arguments for every test executable (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

mod bench;
mod demo;
mod vm;

/// bpf-linker release known to build against the nightly's libLLVM (../shared/platform.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and the demo need, each with a shell test proving it is
/// installed.
const APT_PACKAGES: &[(&str, &str)] = &[
    ("util-linux", "command -v setpriv"), // drop privileges in the "no root" tests
    ("mount", "command -v losetup"),      // loop devices for the block and writeback tests
    ("util-linux", "command -v fsfreeze"), // freeze a filesystem under a blocked thread
    ("util-linux", "command -v taskset"), // pin ZooKeeper to one CPU (CPU starvation)
    ("util-linux", "command -v chrt"),    // a real-time CPU hog
    ("e2fsprogs", "command -v mkfs.ext4"), // ext4 (with its jbd2 journal) on the loop devices
    ("coreutils", "command -v dd"),
    ("fdisk", "command -v sfdisk"), // partition tables on loop devices (partx registers them)
    ("fio", "command -v fio"),      // floods of small random writes (neighbour disks, bench)
    ("xfsprogs", "command -v mkfs.xfs"), // XFS: log forces instead of jbd2 commits
    ("prometheus", "command -v promtool"), // the agent's metrics scraped, its rules checked
    ("systemd", "command -v systemd-analyze"), // the agent's unit verified
    (
        "python3-venv",
        "/usr/bin/python3 -c 'import ensurepip, venv'",
    ), // Perfetto's protos
    ("default-jre-headless", "command -v java"), // a real JVM; ZooKeeper's runtime
    // The real thing (3.8 on Debian 12); checked by package: its jar comes from
    // libzookeeper-java, which can be present without it.
    (
        "zookeeper",
        "dpkg-query -W -f='${Status}' zookeeper 2>/dev/null | grep -q 'ok installed'",
    ),
];

/// Errors are printed as their chain of causes, without a backtrace (CI sets
/// RUST_BACKTRACE for the tests' panics; xtask's own stack says nothing a failed step's
/// message does not, and it would bury the failures at the end of CI's log).
fn main() -> std::process::ExitCode {
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::Setup => setup(),
        Cmd::Build { release } => {
            setup()?;
            let bin = build(&root, release)?;
            println!("built {}", bin.display());
            Ok(())
        }
        Cmd::Test { args } => {
            setup()?;
            let bin = build(&root, false)?;
            let mut cmd = cargo();
            // --no-fail-fast: every test binary runs and reports, not only up to the first
            // failure (CI's log then shows everything that is wrong at once).
            cmd.args(["test", "--no-fail-fast"])
                .args(&args)
                .env("ZKSTALL_BIN", &bin)
                .env("ZKSTALL_PYTHON", ensure_perfetto_python()?);
            run(&mut cmd)
        }
        Cmd::Demo => {
            setup()?;
            // ZKSTALL_DEMO_BIN: run the demo with another build (to compare versions).
            let bin = match std::env::var_os("ZKSTALL_DEMO_BIN") {
                Some(b) => PathBuf::from(b),
                None => build(&root, true)?,
            };
            demo::run(&bin, &root)
        }
        Cmd::Bench {
            seconds,
            rounds,
            no_zookeeper,
        } => {
            setup()?;
            // The alternative each row is compared with, and perf's scheduler benchmark.
            apt_install(&[
                ("bpftrace", "command -v bpftrace"),
                ("linux-perf", "command -v perf"),
                // Reads the kernel's per-program BPF time (the bpf_stats rows).
                ("bpftool", "command -v bpftool"),
            ])?;
            // ZKSTALL_BENCH_BIN: measure another build (a before/after pair with the same
            // harness).
            let bin = match std::env::var_os("ZKSTALL_BENCH_BIN") {
                Some(b) => PathBuf::from(b),
                None => build(&root, true)?,
            };
            bench::run(&bin, seconds, rounds, !no_zookeeper)
        }
        Cmd::VmTest {
            kernel,
            accel,
            tiers,
            timeout,
            memory,
            cpus,
            debug,
            args,
        } => {
            setup()?;
            // The release build by default: under emulation the tracer's speed relative to
            // the traced workload is what several tests depend on (see vm.rs).
            let bin = build(&root, !debug)?;
            vm::run_vm_tests(
                &root,
                &bin,
                &vm::Options {
                    kernel,
                    accel,
                    tiers,
                    timeout: std::time::Duration::from_secs(timeout),
                    memory,
                    cpus,
                    test_args: args,
                },
            )
        }
        Cmd::Lint => {
            setup()?;
            // rustfmt and clippy are not in a minimal profile: added where missing.
            for (toolchain, components) in [
                (None, &["rustfmt", "clippy"][..]),
                (Some("nightly"), &["clippy"][..]),
            ] {
                let mut list = Command::new("rustup");
                list.args(["component", "list", "--installed"]);
                if let Some(t) = toolchain {
                    list.args(["--toolchain", t]);
                }
                let installed = output(&mut list).unwrap_or_default();
                for c in components {
                    if !installed.lines().any(|l| l.starts_with(c)) {
                        eprintln!(
                            "xtask: adding {c} to the {} toolchain",
                            toolchain.unwrap_or("default")
                        );
                        let mut add = Command::new("rustup");
                        add.args(["component", "add", c]);
                        if let Some(t) = toolchain {
                            add.args(["--toolchain", t]);
                        }
                        run(&mut add)?;
                    }
                }
            }
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            // The eBPF crate is linted on its own (linting both at once compiles the panic
            // handler twice, as aya-template's test.sh notes).
            run(nightly_cargo()
                .args([
                    "clippy",
                    "-p",
                    "zkstall-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                ])
                .args(["-Z", "build-std=core", "--", "-D", "warnings"]))
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
}

/// PATH with cargo's bin directory first, so a freshly installed bpf-linker is found.
fn path_with_cargo_bin() -> OsString {
    let bin = cargo_home().join("bin");
    let mut dirs = vec![bin.clone()];
    if let Some(p) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&p).filter(|d| *d != bin));
    }
    env::join_paths(dirs).unwrap_or_default()
}

fn cargo() -> Command {
    let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.env("PATH", path_with_cargo_bin());
    c
}

/// Cargo of the nightly toolchain. Through rustup, not `cargo +nightly`: xtask runs under
/// the stable cargo binary itself ($CARGO), which does not understand `+toolchain`.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .env("PATH", path_with_cargo_bin());
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO"] {
        c.env_remove(var);
    }
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn build(root: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "zkstall"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("zkstall");
    if !bin.is_file() {
        bail!("the build did not leave {}", bin.display());
    }
    Ok(bin)
}

fn setup() -> Result<()> {
    // 1. The nightly toolchain (aya-build compiles the eBPF crate with it) and its rust-src
    //    (for -Z build-std=core).
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]));
    let vv = match vv {
        Some(v) => v,
        None => {
            eprintln!("xtask: installing the nightly toolchain");
            run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
                .context("the nightly toolchain is missing and could not be installed; install it with `rustup toolchain install nightly`")?;
            output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
                .context("nightly rustc does not run")?
        }
    };
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }

    // 2. bpf-linker, built against the nightly's own libLLVM (no prebuilt binary and no
    //    system LLVM of the right version are available). The llvm-NN feature must match
    //    the nightly's LLVM major version.
    let llvm_major: u32 = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("cannot read the LLVM version from `rustc +nightly -vV`")?;
    let linker = cargo_home().join("bin/bpf-linker");
    let linker_ok = output(Command::new(&linker).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !linker_ok {
        install_bpf_linker(llvm_major)?;
    }

    // 3. Debian packages.
    apt_install(APT_PACKAGES)?;

    // 4. Perfetto's own trace protos as Python modules (the `perfetto` PyPI package), in
    //    a venv: the export tests decode zkstall's traces with them.
    ensure_perfetto_python().map(|_| ())
}

/// The `perfetto` PyPI release whose protos the export tests decode with.
const PERFETTO_PY_VERSION: &str = "0.59.1";

/// A venv with `perfetto` and `protobuf`; returns its python (also given to the tests as
/// ZKSTALL_PYTHON).
fn ensure_perfetto_python() -> Result<PathBuf> {
    let venv = PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(".cache/zkstall/perfetto-venv");
    let python = venv.join("bin/python");
    let probe = format!(
        "import importlib.metadata as m, perfetto.protos.perfetto.trace.perfetto_trace_pb2; assert m.version('perfetto') == '{PERFETTO_PY_VERSION}'"
    );
    if output(Command::new(&python).args(["-c", &probe])).is_some() {
        return Ok(python);
    }
    eprintln!(
        "xtask: installing perfetto {PERFETTO_PY_VERSION} (Python) in {}",
        venv.display()
    );
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .arg(format!("perfetto=={PERFETTO_PY_VERSION}"))
        .arg("protobuf"))?;
    output(Command::new(&python).args(["-c", &probe]))
        .context("perfetto's protos do not import in the venv just made")?;
    Ok(python)
}

/// Installs the packages whose probe fails (idempotent: quick when all are there).
fn apt_install(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, probe)| output(Command::new("sh").args(["-c", probe])).is_none())
        .map(|(pkg, _)| *pkg)
        .fold(Vec::new(), |mut v, p| {
            if !v.contains(&p) {
                v.push(p);
            }
            v
        });
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    Ok(())
}

fn install_bpf_linker(llvm_major: u32) -> Result<()> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("rustup run nightly rustc --print sysroot")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    // The real library (libLLVM.so.22.1-rust-...), not the libLLVM-22-rust-...so stub.
    let lib = std::fs::read_dir(&lib_dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: the nightly toolchain ships no LLVM library",
                lib_dir.display()
            )
        })?;
    // A stable directory outside the workspace: the linker keeps an rpath to it.
    let prefix = PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
        .join(format!(".cache/zkstall/llvm-{llvm_major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {llvm_major} (about a minute)"
    );
    run(nightly_cargo()
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .arg("--root")
        .arg(cargo_home())
        .env("LLVM_PREFIX", &prefix))
    .context("building bpf-linker failed")
}
