//! `cargo xtask vm-test`: `zkstall check` and the root test tiers under a distribution
//! kernel (Debian 12's 6.1 by default), booted in qemu by virtme-ng with the host's
//! filesystem as the guest's root.
//!
//! Everything is built on the host (the zkstall binary and the test executables); the guest
//! only runs them, with `ZKSTALL_BIN` and `CI=true` set, so it compiles nothing. What the
//! guest sees:
//!
//! - `/`: the host's root, read-only over 9p, with virtme-ng's tmpfs overlays on /etc,
//!   /var, /tmp, ... (writes there stay in the guest). The work tree is read through it.
//! - `/var/tmp` (where the tests put scratch directories and loop images): a fresh ext4 on
//!   a virtio disk backed by a sparse scratch image on the host, so fsync, loop devices and
//!   jbd2 work as on a real machine (a tmpfs would make every fsync free).
//! - `target/vm-test/<kernel>/share` (read-write, 9p): the generated guest script, and what
//!   it writes back: one line per step with its exit status and time, then the final status.
//! - `/dev/vdb` (`ZKSTALL_VM_STOP_DISK`): a bare virtio disk the hypervisor can stop. Its
//!   image lies on an ext4 of the host's own ([`HostStopDisk`]); a test writes `freeze` or
//!   `thaw` into `share/stop-request`, and the host freezes or thaws that filesystem, so
//!   qemu's writes to the image block and the guest's requests stay in flight with no
//!   completion (a SAN or hypervisor storage stall, on a disk that is not a loop device),
//!   then acknowledges in `share/stop-ack`. Tests that need it are `#[ignore]`d natively
//!   and run here (`--include-ignored`).
//!
//! The kernel image and its modules come from Debian's package, unpacked under
//! `~/.cache/zkstall/kernels/<version>` (not installed: see [`ensure_kernel`]); virtme-ng
//! links that module tree at /lib/modules/<version> in the guest, where the script loads
//! the modules the tests need (ext4 with jbd2, loop, virtio_blk). virtme-ng itself lives in
//! a venv under `~/.cache/zkstall/vng-venv`.
//!
//! KVM is used when a quick probe boot shows it works; otherwise TCG (nested KVM with
//! `-cpu host` is refused on some hosts: an MSR write fails and qemu aborts, or the guest
//! hangs before printing anything). The whole run has a timeout; qemu is started in its
//! own process group, which is killed on timeout, on Ctrl-C and after every run, so no qemu
//! is left behind. Loop devices and mounts exist only inside the guest, but for the one
//! holding `/dev/vdb`'s image, which the run releases at its end (and a later run finds and
//! releases if an interrupted one left it).

use std::{
    collections::BTreeMap,
    env,
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, output, run};

/// Debian 12's kernel (bookworm), the oldest distribution kernel installable here.
pub const DEFAULT_KERNEL: &str = "6.1.0-47-amd64";

/// The virtme-ng release this was written against (PyPI).
const VIRTME_NG_VERSION: &str = "1.42";

/// The test tiers that need root and a kernel, in the order they run: each is one test
/// executable of the `zkstall-tests` crate.
pub const TIERS: &[&str] = &[
    "check",
    "fsync",
    "observe",
    "verdicts",
    "zookeeper",
    "shapes",
];

/// Tests that cannot show what they test on an emulated (TCG) CPU, skipped there (not under
/// KVM), each with the reason, which the run prints.
const TCG_SKIPS: &[(&str, &str, &str)] = &[
    (
        "fsync",
        "a_jvms_threads_have_their_whole_java_names_and_its_safepoints_prove_jvm_pauses",
        "its JVM compiles its program from source and starts in minutes on an emulated CPU, \
         and jcmd Thread.print does not answer within zkstall's 10 s there; HotSpot's probes \
         are attached the same way on 6.1 (uprobes with attach cookies, checked by `check`)",
    ),
    (
        "verdicts",
        "a_writer_over_the_dirty_limit_is_dirty_throttle",
        "an emulated CPU copies a 1 MiB write() in ~20-50 ms, slower than the loop device \
         writes it back, so the writer never gets over the dirty limit: balance_dirty_pages \
         computes no pause (0 or negative ones) and there is no throttling to find; the \
         throttle signal itself is tested by observe's \
         a_writer_over_a_low_dirty_limit_shows_balance_dirty_pages_pauses",
    ),
    (
        "verdicts",
        "a_preemption_right_after_a_fast_append_is_the_appends_wait",
        "Debian's 6.1 kernel preempts voluntarily, at a might_sleep() inside the append's \
         inotify event (the event that wakes the hog): the hog then preempts the thread \
         inside its write, which is (truthfully) reported as a 601 ms write, not as a fast \
         write with the wait on its way back",
    ),
    (
        "verdicts",
        "a_thread_kept_off_the_cpu_is_cpu_starvation",
        "on the emulated disk each fdatasync's jbd2 commit takes 100-300 ms by itself, above \
         the test's 200 ms threshold, so its slow calls are (truthfully) journal waits and the \
         RT hog's effect cannot be told apart",
    ),
    (
        "verdicts",
        "a_cgroup_io_limit_on_the_disk_is_io_throttled",
        "the io.max limit is seen and named (io_throttled verdicts do come out on 6.1), but \
         emulated, most calls pass the 30 ms threshold on their own journal commits \
         (journal_wait), below the test's 3/4 share",
    ),
    (
        "verdicts",
        "a_memory_cgroup_at_its_limit_is_memory_reclaim",
        "an emulated CPU spends the 20 ms threshold copying each write (unknown: on CPU), and \
         the slow writer does not drive its memory cgroup into reclaim",
    ),
    (
        "verdicts",
        "xfs_log_forces_behind_a_writer_are_contention_naming_it",
        "passed once under multi-threaded TCG; single-threaded, the fdatasyncs' own XFS log \
         forces take 100-200 ms, so slow calls without the writer behind them pass the \
         threshold",
    ),
    (
        "verdicts",
        "a_competing_dd_with_conv_fsync_is_contention_naming_dd",
        "emulated, fdatasyncs pass the 50 ms threshold on their own journal commits, and dd's \
         writeback reaches the device in bursts: a slow call between bursts waits on a commit \
         full of dd's handles with no dd bytes on the device, so dd is not its top contender",
    ),
    (
        "verdicts",
        "a_competing_dd_is_contention_naming_dd_with_requests_around_calls",
        "the same test with --requests around-calls, for the same reason",
    ),
    (
        "verdicts",
        "a_flood_on_the_disk_under_the_loop_device_is_contention_naming_the_flood",
        "emulated, the fdatasyncs' own journal commits take 8-38 ms, over the test's 10 ms threshold, before fio writes anything: in one run 118 of 320 slow calls were such journal waits (and 202 were named fio's), below the test's 3/4 share",
    ),
];

/// Host packages the VM needs (the guest runs the host's userspace, so it also needs what
/// the native tests need: `crate::APT_PACKAGES`).
const VM_APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "command -v qemu-system-x86_64"),
    // virtme-ng puts busybox in the guest's initramfs: it must be the static one.
    (
        "busybox-static",
        "dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'",
    ),
    ("kmod", "command -v depmod && command -v modprobe"), // module tree, modprobe in the guest
    (
        "python3-venv",
        "/usr/bin/python3 -c 'import ensurepip, venv'",
    ), // virtme-ng's venv
    ("file", "command -v file"), // virtme-ng reads the kernel's version with it
];

pub struct Options {
    pub kernel: String,
    pub accel: Accel,
    pub tiers: Vec<String>,
    pub timeout: Duration,
    pub memory: String,
    pub cpus: u32,
    /// Passed to every test executable (a libtest name filter and/or options).
    pub test_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if a probe boot works, else TCG.
    Auto,
    Kvm,
    Tcg,
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/zkstall")
}

/// Set by SIGINT/SIGTERM while the VM runs: the run loop then kills qemu and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn run_vm_tests(root: &Path, zkstall_bin: &Path, opts: &Options) -> Result<()> {
    for t in &opts.tiers {
        if !TIERS.contains(&t.as_str()) {
            bail!("unknown tier {t:?}; the tiers are {}", TIERS.join(", "));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("vm-test installs packages and runs qemu as root: run `sudo -E cargo xtask vm-test`");
    }
    crate::apt_install(VM_APT_PACKAGES)?;
    let kimg = ensure_kernel(&opts.kernel)?;
    let vng_bin = ensure_vng()?;
    let tests = build_test_executables(root)?;

    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let run_dir = target.join("vm-test").join(&opts.kernel);
    let share = run_dir.join("share");
    let _ = fs::remove_dir_all(&share);
    fs::create_dir_all(&share).with_context(|| format!("creating {}", share.display()))?;

    let (use_kvm, why) = match opts.accel {
        Accel::Kvm => (true, "asked for (--accel kvm)".to_string()),
        Accel::Tcg => (false, "asked for (--accel tcg)".to_string()),
        Accel::Auto => kvm_probe(&kimg),
    };
    let accel = if use_kvm { "kvm" } else { "tcg" };
    eprintln!("xtask: accelerator {accel}: {why}");

    // The guest reads what it runs from a copy, so that building on the host while the VM
    // runs (for minutes under TCG) changes nothing under its feet.
    let bin_dir = run_dir.join("bin");
    let _ = fs::remove_dir_all(&bin_dir);
    fs::create_dir_all(&bin_dir)?;
    let zkstall_copy = bin_dir.join("zkstall");
    fs::copy(zkstall_bin, &zkstall_copy)
        .with_context(|| format!("copying {}", zkstall_bin.display()))?;
    let mut test_copies = BTreeMap::new();
    for t in &opts.tiers {
        let copy = bin_dir.join(t);
        fs::copy(&tests[t], &copy).with_context(|| format!("copying {}", tests[t].display()))?;
        test_copies.insert(t.clone(), copy);
    }
    if !use_kvm {
        for (tier, test, why) in TCG_SKIPS {
            if opts.tiers.iter().any(|t| t == tier) {
                eprintln!("xtask: skipping {tier}::{test} under TCG: {why}");
            }
        }
    }
    let script = guest_script(&share, &zkstall_copy, &test_copies, opts, use_kvm)?;
    let script_path = share.join("guest.sh");
    fs::write(&script_path, script)?;

    let scratch = run_dir.join("scratch.img");
    let stop_disk = HostStopDisk::new(&run_dir)?;
    let vng_command = || {
        let mut cmd = Command::new(&vng_bin);
        cmd.env(
            "PATH",
            path_with(vng_bin.parent().unwrap_or(Path::new("/"))),
        )
        .args(["--name", "zkstall-vm", "--verbose"])
        .arg("--run")
        .arg(&kimg)
        .args(["--cpus", &opts.cpus.to_string(), "--memory", &opts.memory])
        .arg("--disk")
        .arg(&scratch)
        .arg("--disk")
        .arg(&stop_disk.image)
        .arg("--rwdir")
        .arg(&share)
        // Warnings and worse from the guest kernel reach the log; its info chatter (every
        // loop device and mount of the tests) does not.
        .args(["--append", "loglevel=5"])
        .arg("--exec")
        .arg(format!("bash {}", script_path.display()))
        .current_dir(root);
        // qemu's block I/O runs in a pool of threads (64 by default) shared by both
        // disks. A test that stops the second disk (the host freezes its filesystem)
        // leaves every thread writing to it asleep in the host kernel, up to as many as
        // the guest has requests in flight there (hundreds): the first disk, where the
        // guest's /var/tmp is, then stops too, and the guest with it (seen once: jbd2 of
        // both disks and the test's own thread hung for over 120 s). Room for all of them.
        let pool = "-object main-loop,id=zkstall-main-loop,thread-pool-max=1024";
        if use_kvm {
            cmd.arg(format!("--qemu-opts={pool}"));
        } else {
            // Single-threaded TCG: with one host thread per vCPU (MTTCG), attaching
            // tracepoints (text_poke_bp's cross-CPU code patching and IPIs) left guests in
            // RCU stalls and soft lockups; one thread running both vCPUs in turn avoids it.
            cmd.args([
                "--disable-kvm".to_string(),
                format!("--qemu-opts=-accel tcg,thread=single {pool}"),
            ]);
        }
        cmd
    };
    // A TCG guest can freeze (both vCPU threads spinning, the guest's 30 s process
    // snapshots stop; once with "soft lockup ... in do_exit" reports): seen 3 times in ~12
    // runs on a loaded 2-core host. Such a run is stopped (at the lockup report, or after 5
    // minutes without a sign of life) and tried once more.
    let console = run_dir.join("console.log");
    let mut attempt = 1;
    loop {
        for f in ["results.tsv", "status", "ps.log", "ps.tmp"] {
            let _ = fs::remove_file(share.join(f));
        }
        // The guest's /var/tmp: a sparse image, formatted in the guest.
        let _ = fs::remove_file(&scratch);
        let f = fs::File::create(&scratch)?;
        f.set_len(16 << 30)?;
        drop(f);
        let mut cmd = vng_command();
        let started = Instant::now();
        let service = stop_disk.serve(&share);
        let outcome = run_bounded(&mut cmd, &console, &share, opts.timeout, service);
        let _ = fs::remove_file(&scratch);
        let wall = started.elapsed();

        let results = fs::read_to_string(share.join("results.tsv")).unwrap_or_default();
        let status = fs::read_to_string(share.join("status")).ok();
        print_summary(&opts.kernel, accel, &why, &results, wall);
        eprintln!("xtask: guest console log: {}", console.display());
        if !matches!(outcome, Ok(Ended::Exited)) || status.is_none() {
            // The last snapshot of the guest's processes (see guest_script).
            if let Ok(ps) = fs::read_to_string(share.join("ps.tmp")) {
                eprintln!("xtask: the guest's last process snapshot:\n{ps}");
            }
        }
        match outcome? {
            Ended::Stalled if attempt == 1 => {
                eprintln!(
                    "xtask: the guest locked up or showed no sign of life for {} s: stopped; trying once more",
                    STALL.as_secs()
                );
                attempt += 1;
                continue;
            }
            Ended::Stalled => bail!(
                "the guest locked up again (or no sign of life for {} s); see {}",
                STALL.as_secs(),
                console.display()
            ),
            Ended::Exited => {}
        }
        return match status.as_deref().map(str::trim) {
            Some("0") => Ok(()),
            Some(st) => bail!(
                "tests failed under {} ({accel}): guest status {st}",
                opts.kernel
            ),
            None => bail!(
                "the guest did not report a status (it crashed or was killed before the end); see {}",
                console.display()
            ),
        };
    }
}

/// The guest's second disk (`/dev/vdb`): a sparse image on an ext4 of the host's own (a
/// loop device over a file under the run directory), which the host freezes and thaws
/// when a test in the guest asks (see the module's comment). Dropping it thaws, unmounts
/// and detaches everything.
struct HostStopDisk {
    mount: PathBuf,
    loop_dev: String,
    image: PathBuf,
}

impl HostStopDisk {
    fn new(run_dir: &Path) -> Result<HostStopDisk> {
        let mount = run_dir.join("stop-host");
        let backing = run_dir.join("stop-host.img");
        // A leftover of an interrupted run: thawed and released first.
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&mount)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount")
            .arg(&mount)
            .stderr(Stdio::null())
            .status();
        for dev in output(Command::new("losetup").arg("-j").arg(&backing))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').next())
        {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        let _ = fs::remove_file(&backing);
        let f = fs::File::create(&backing)?;
        f.set_len(1280 << 20)?;
        drop(f);
        let loop_dev = output(Command::new("losetup").args(["-f", "--show"]).arg(&backing))
            .context("losetup for the guest's stoppable disk")?
            .trim()
            .to_string();
        let disk = HostStopDisk {
            mount: mount.clone(),
            loop_dev: loop_dev.clone(),
            image: mount.join("vdb.img"),
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F", &loop_dev]))?;
        fs::create_dir_all(&mount)?;
        run(Command::new("mount").arg(&loop_dev).arg(&mount))?;
        let f = fs::File::create(&disk.image)?;
        f.set_len(1 << 30)?;
        Ok(disk)
    }

    /// Serves the guest's freeze and thaw requests until the returned handle is stopped.
    fn serve(&self, share: &Path) -> StopService {
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let (mount, share, flag) = (self.mount.clone(), share.to_path_buf(), done.clone());
        let is_frozen = frozen.clone();
        let _ = fs::remove_file(share.join("stop-request"));
        let _ = fs::remove_file(share.join("stop-ack"));
        let thread = std::thread::spawn(move || {
            let request = share.join("stop-request");
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let Ok(what) = fs::read_to_string(&request) else {
                    continue;
                };
                let what = what.trim().to_string();
                let arg = match what.as_str() {
                    "freeze" => "-f",
                    "thaw" => "-u",
                    _ => continue,
                };
                let _ = fs::remove_file(&request);
                let ok = Command::new("fsfreeze")
                    .arg(arg)
                    .arg(&mount)
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    is_frozen.store(what == "freeze", Ordering::SeqCst);
                }
                eprintln!(
                    "xtask: the guest asked to {what} its stoppable disk: {}",
                    if ok { "done" } else { "failed" }
                );
                let ack = share.join("stop-ack.tmp");
                if fs::write(&ack, if ok { what } else { format!("failed {what}") }).is_ok() {
                    let _ = fs::rename(&ack, share.join("stop-ack"));
                }
            }
            let _ = Command::new("fsfreeze")
                .arg("-u")
                .arg(&mount)
                .stderr(Stdio::null())
                .status();
        });
        StopService {
            done,
            frozen,
            thread,
        }
    }
}

impl Drop for HostStopDisk {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.mount)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .status();
        if let Some(dir) = self.mount.parent() {
            let _ = fs::remove_file(dir.join("stop-host.img"));
        }
    }
}

/// The host's side of the guest's stop requests; stopping it thaws the disk.
struct StopService {
    done: std::sync::Arc<AtomicBool>,
    /// The disk is frozen now (the guest's last request that succeeded was a freeze).
    frozen: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl StopService {
    fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    fn stop(self) {
        self.done.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(p) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&p));
    }
    env::join_paths(dirs).unwrap_or_default()
}

/// Debian's kernel image and modules for `version`, unpacked under the cache directory;
/// returns the image.
///
/// The package is downloaded and unpacked rather than installed: installing a
/// linux-image package pulls in initramfs-tools and udev (upgrading systemd's libraries
/// with it) and runs the kernel postinst hooks (update-initramfs, a bootloader update if
/// one is installed), none of which the guest needs, and all of which change the host's
/// boot setup. Unpacked, nothing outside the cache directory changes. `depmod` then builds
/// the module index the package would have built on installation.
pub fn ensure_kernel(version: &str) -> Result<PathBuf> {
    let dir = cache_dir().join("kernels").join(version);
    let image = dir.join(format!("boot/vmlinuz-{version}"));
    let moddep = dir.join(format!("lib/modules/{version}/modules.dep"));
    if image.is_file() && moddep.is_file() {
        return Ok(image);
    }
    let downloads = cache_dir().join("kernels/downloads");
    fs::create_dir_all(&downloads)?;
    let candidates = [
        format!("linux-image-{version}-unsigned"),
        format!("linux-image-{version}"),
    ];
    let download = |pkg: &str| {
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", pkg])
            .current_dir(&downloads)
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut got = candidates.iter().find(|p| download(p));
    if got.is_none() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        got = candidates.iter().find(|p| download(p));
    }
    let Some(pkg) = got else {
        bail!(
            "no Debian package for kernel {version} ({}); `apt-cache search linux-image-` lists the available ones",
            candidates.join(" or ")
        );
    };
    let deb = fs::read_dir(&downloads)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
        })
        .with_context(|| format!("apt-get download left no {pkg}_*.deb"))?;
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    eprintln!("xtask: unpacking {}", deb.display());
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    run(Command::new("depmod").arg("-b").arg(&partial).arg(version))?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&partial, &dir)?;
    let _ = fs::remove_file(&deb);
    if !image.is_file() || !moddep.is_file() {
        bail!("{pkg} has no {} or modules", image.display());
    }
    Ok(image)
}

/// virtme-ng in its own venv; returns its `vng`.
fn ensure_vng() -> Result<PathBuf> {
    let venv = cache_dir().join("vng-venv");
    let vng = venv.join("bin/vng");
    if output(Command::new(&vng).arg("--version")).is_some_and(|v| v.contains(VIRTME_NG_VERSION)) {
        return Ok(vng);
    }
    eprintln!(
        "xtask: installing virtme-ng {VIRTME_NG_VERSION} in {}",
        venv.display()
    );
    // Debian's python3 (with python3-venv), not whatever `python3` a shell profile puts first.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .arg(format!("virtme-ng=={VIRTME_NG_VERSION}")))?;
    Ok(vng)
}

/// Does KVM boot this kernel here? A kernel with no root device panics at the end of its
/// boot; with `panic=-1 -no-reboot` qemu then exits. Under working KVM that takes about a
/// second; 30 s without the panic means KVM does not work (the guest hangs, or qemu aborts
/// on a refused MSR write). The answer is kept for this host boot (boot_id).
fn kvm_probe(kimg: &Path) -> (bool, String) {
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return (false, "/dev/kvm cannot be opened".into());
    }
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let key = format!("{} {}", boot_id.trim(), kimg.display());
    let cache = cache_dir().join("kvm-probe");
    if let Ok(text) = fs::read_to_string(&cache)
        && let Some((k, v)) = text.split_once('\n')
        && k == key
    {
        let ok = v.starts_with("yes");
        return (
            ok,
            format!("{} (probed earlier in this host boot)", v.trim()),
        );
    }
    let (ok, why) = kvm_probe_boot(kimg);
    let verdict = format!("{}: {why}", if ok { "yes" } else { "no" });
    let _ = fs::write(&cache, format!("{key}\n{verdict}\n"));
    (ok, verdict)
}

fn kvm_probe_boot(kimg: &Path) -> (bool, String) {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-machine",
        "accel=kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-smp",
        "1",
    ])
    .args([
        "-display",
        "none",
        "-vga",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(kimg)
    .args(["-append", "console=ttyS0 panic=-1"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let started = Instant::now();
    let Ok(mut child) = cmd.spawn() else {
        return (false, "qemu-system-x86_64 did not start".into());
    };
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = started + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pgid = child.id() as i32;
    // SAFETY: signalling the process group we created for the probe.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let text = reader.join().unwrap_or_default();
    let secs = started.elapsed().as_secs_f64();
    if text.contains("Kernel panic") {
        (
            true,
            format!("a probe boot reached the kernel's end of boot in {secs:.1} s"),
        )
    } else {
        let last = text
            .lines()
            .map(str::trim)
            .rfind(|l| l.contains("qemu") || l.contains("error") || l.contains("MSR"))
            .unwrap_or("no kernel output")
            .chars()
            .take(160)
            .collect::<String>();
        (
            false,
            format!(
                "a probe boot with -cpu host did not get to the end of the kernel's boot ({secs:.0} s; {last})"
            ),
        )
    }
}

/// Builds the test executables (without running them) and returns them by name.
fn build_test_executables(root: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "zkstall-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(root)
    .stdout(Stdio::piped());
    eprintln!("xtask: running {cmd:?}");
    let out = cmd.output().context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test executables failed: {}", out.status);
    }
    let mut exes = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let is_test = v["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test,
            v["target"]["name"].as_str(),
            v["executable"].as_str(),
        ) {
            exes.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    for t in TIERS {
        if !exes.contains_key(*t) {
            bail!("cargo built no test executable named {t}");
        }
    }
    Ok(exes)
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script the guest runs: modules, the scratch filesystem, `zkstall check`, then each
/// tier's executable; each step appends `name<TAB>exit status<TAB>seconds` to results.tsv.
fn guest_script(
    share: &Path,
    zkstall_bin: &Path,
    tests: &BTreeMap<String, PathBuf>,
    opts: &Options,
    use_kvm: bool,
) -> Result<String> {
    let q = |p: &Path| sh_quote(&p.to_string_lossy());
    let args: Vec<String> = opts.test_args.iter().map(|a| sh_quote(a)).collect();
    let mut s = String::new();
    writeln!(
        s,
        r#"#!/bin/bash
# Generated by `cargo xtask vm-test` (xtask/src/vm.rs); runs inside the guest.
set -u
SHARE={share}
export CI=true ZKSTALL_BIN={bin} RUST_BACKTRACE=1 TZ=UTC
# The disk the hypervisor can stop (see HostStopDisk in xtask/src/vm.rs).
export ZKSTALL_VM_STOP_DISK=/dev/vdb ZKSTALL_VM_STOP_SHARE="$SHARE"
{slice}RESULTS="$SHARE/results.tsv"
: > "$RESULTS"
status=0
printf 'boot\t0\t%s\n' "$(cut -d' ' -f1 /proc/uptime)" >> "$RESULTS"
echo "zkstall-vm: guest up: $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {{print $2 / 1024}}' /proc/meminfo) MiB, up $(cut -d' ' -f1 /proc/uptime) s"

# step NAME COMMAND...: runs it, records its exit status and time.
step() {{
    local name=$1; shift
    echo "zkstall-vm: === $name: $*"
    local t0 t1 rc
    t0=$(date +%s%N)
    "$@"
    rc=$?
    t1=$(date +%s%N)
    local ms=$(( (t1 - t0) / 1000000 ))
    printf '%s\t%s\t%d.%03d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >> "$RESULTS"
    echo "zkstall-vm: === $name: exit $rc after $((ms / 1000)).$((ms % 1000 / 100)) s"
    [ "$rc" = 0 ] || status=1
    return $rc
}}

finish() {{
    sync
    echo "$status" > "$SHARE/status"
    sync
    echo "zkstall-vm: status $status"
    exit "$status"
}}

# Every 30 s, what runs (and where D-state tasks wait) goes to ps.log: when a step hangs,
# the host shows the last snapshot.
(
    while sleep 30; do
        {{
            echo "--- up $(cut -d' ' -f1 /proc/uptime) s"
            ps -eo pid,ppid,stat,etime,time,wchan:32,args --sort=start_time | grep -v ' \[.*\]$' | cut -c1-220
            for t in /proc/[0-9]*/task/[0-9]*; do
                grep -qs '^State:.*D' "$t/status" && echo "D $t $(cat "$t/comm"): $(tr '\n' ' ' < "$t/stack" 2>/dev/null)"
            done
        }} > "$SHARE/ps.tmp" 2>&1
        cat "$SHARE/ps.tmp" >> "$SHARE/ps.log"
    done
) &

# Debian builds these as modules; the tests need ext4 (and its jbd2 journal: the journal
# signal's tracepoints appear only once jbd2 is loaded), XFS, loop devices, and the scratch
# disk.
step modules modprobe -a virtio_blk loop jbd2 ext4 xfs || finish
# The scratch disk (the only virtio disk) becomes /var/tmp, where tests put scratch
# directories and loop images.
scratch() {{
    local dev=/dev/vda
    for _ in $(seq 50); do [ -b $dev ] && break; sleep 0.1; done
    mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 $dev && mount $dev /var/tmp && chmod 1777 /var/tmp
}}
step scratch scratch || finish
step zkstall-check "$ZKSTALL_BIN" check
"#,
        share = q(share),
        bin = q(zkstall_bin),
        slice = if use_kvm {
            ""
        } else {
            // Single-threaded TCG runs each vCPU until qemu kicks it (TCG_KICK_PERIOD,
            // 100 ms) while the other stands still: a thread can lose that much unseen
            // (tests' unseen_cpu_slice).
            "export ZKSTALL_VM_CPU_SLICE_MS=100\n"
        },
    )?;
    for t in &opts.tiers {
        let exe = &tests[t];
        let mut skips = String::new();
        if !use_kvm {
            for (_, test, _) in TCG_SKIPS.iter().filter(|(tier, ..)| tier == t) {
                write!(skips, " --skip {}", sh_quote(test))?;
            }
        }
        // --include-ignored: the tests that need this VM's stoppable disk are ignored
        // natively and run here.
        writeln!(
            s,
            "step {t} {}{skips} --include-ignored {}",
            q(exe),
            args.join(" ")
        )?;
    }
    writeln!(s, "finish")?;
    Ok(s)
}

/// Runs vng with a deadline, copying its output to ours and to `log`. qemu runs in the
/// child's process group, which is killed at the end whatever happened.
/// How a VM run ended (other than by its timeout or an interruption: errors).
enum Ended {
    Exited,
    /// No output and no process snapshot from the guest for [`STALL`]: killed.
    Stalled,
}

/// Set when the guest kernel reports a soft lockup or an RCU stall.
static LOCKUP: AtomicBool = AtomicBool::new(false);

/// A guest silent this long has frozen: it prints a process snapshot every 30 s.
const STALL: Duration = Duration::from_secs(300);

/// Runs the VM until it ends, stalls or times out. `stop_disk` is the host's side of the
/// guest's stoppable disk: it is stopped (thawing the disk) as soon as the VM is killed,
/// before waiting for its output to end: qemu's I/O threads writing to a frozen disk stay
/// in the kernel, holding its output pipes open, until it is thawed (seen once: a guest
/// that froze with its disk stopped left the run waiting forever).
fn run_bounded(
    cmd: &mut Command,
    log: &Path,
    share: &Path,
    timeout: Duration,
    stop_disk: StopService,
) -> Result<Ended> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    eprintln!("xtask: running {cmd:?}");
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    LOCKUP.store(false, Ordering::SeqCst);
    let mut child = cmd.spawn().context("starting vng")?;
    let pgid = child.id() as i32;
    let log_file = fs::File::create(log)?;
    let spawned = Instant::now();
    let last_output = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let copiers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|r| {
        let mut log = log_file.try_clone().expect("log file");
        let last_output = last_output.clone();
        std::thread::spawn(move || {
            // Serial consoles end lines with \r\n; keep the log plain.
            for line in BufReader::new(r).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).replace('\r', "");
                println!("{line}");
                // The log has the host's clock: seconds since qemu started.
                let _ = writeln!(log, "[{:8.2}] {line}", spawned.elapsed().as_secs_f64());
                last_output.store(spawned.elapsed().as_secs(), Ordering::Relaxed);
                if line.contains("BUG: soft lockup") || line.contains("self-detected stall") {
                    LOCKUP.store(true, Ordering::SeqCst);
                }
            }
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let result = loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    // Without udev in the guest, virtme-ng cannot pass the script's exit
                    // status out and exits non-zero whatever it was: the status file is
                    // what counts.
                    eprintln!("xtask: vng exited with {st}");
                }
                break Ok(Ended::Exited);
            }
            Ok(None) => {}
            Err(e) => break Err(anyhow::anyhow!("waiting for vng: {e}")),
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            break Err(anyhow::anyhow!("interrupted: the VM was stopped"));
        }
        // Signs of life: the guest's 30 s process snapshots once they have begun, its
        // output before that. A kernel that reports a soft lockup or an RCU stall is not
        // going to finish the tests (it may go on printing that every 30 s).
        let snapshot_age = fs::metadata(share.join("ps.log"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        let output_age = spawned
            .elapsed()
            .saturating_sub(Duration::from_secs(last_output.load(Ordering::Relaxed)));
        if snapshot_age.unwrap_or(output_age) > STALL || LOCKUP.load(Ordering::SeqCst) {
            break Ok(Ended::Stalled);
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "the VM run exceeded its timeout of {} s and was killed",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if matches!(result, Ok(Ended::Stalled)) {
        // Where qemu's threads are while the guest shows no life (follow-up 58: guests
        // that froze right after a freeze request), before they are killed.
        let dump = host_threads(pgid);
        let frozen = stop_disk.frozen();
        eprintln!(
            "xtask: the guest shows no life; the stoppable disk is {}; its host threads:\n{dump}",
            if frozen { "frozen" } else { "not frozen" }
        );
        if let Ok(mut log) = fs::OpenOptions::new().append(true).open(log) {
            let _ = writeln!(
                log,
                "xtask: no life; stoppable disk frozen: {frozen}; host threads:\n{dump}"
            );
        }
    }
    // SAFETY: signalling the process group we created for vng and its qemu.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let grace = Instant::now() + Duration::from_secs(5);
    while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above; ESRCH (nothing left) is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    stop_disk.stop();
    let _ = child.wait();
    for c in copiers {
        let _ = c.join();
    }
    // SAFETY: restoring the default dispositions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
    result
}

/// The threads of process group `pgid` (vng and its qemu), grouped by what they wait in:
/// state, wchan and the top of their kernel stack, with a count and the tids of each
/// group (the first 8).
fn host_threads(pgid: i32) -> String {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return "  (no /proc)".into();
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // stat: "pid (comm) state ppid pgrp ...", comm may hold spaces and parentheses.
        let Ok(stat) = fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<i32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let read = |f: &str| fs::read_to_string(t.path().join(f)).unwrap_or_default();
            let comm = read("comm").trim().to_string();
            let state = read("stat")
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                .unwrap_or_default();
            let wchan = read("wchan");
            let stack: Vec<String> = read("stack")
                .lines()
                .take(6)
                .filter_map(|l| l.split_whitespace().nth(1))
                .map(|f| f.split('+').next().unwrap_or(f).to_string())
                .collect();
            let key = format!(
                "{comm} {state} wchan={} stack={}",
                if wchan.is_empty() { "-" } else { wchan.trim() },
                stack.join("<")
            );
            groups
                .entry(key)
                .or_default()
                .push(format!("{pid}/{}", t.file_name().to_string_lossy()));
        }
    }
    if groups.is_empty() {
        return "  (none found)".into();
    }
    groups
        .iter()
        .map(|(k, tids)| {
            let shown: Vec<&str> = tids.iter().take(8).map(String::as_str).collect();
            format!("  {:4} x {k}  [{}]", tids.len(), shown.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn print_summary(kernel: &str, accel: &str, why: &str, results: &str, wall: Duration) {
    println!();
    println!("vm-test on {kernel} ({accel}: {why})");
    for line in results.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(rc), Some(secs)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if name == "boot" {
            println!(
                "  {:<14} {:>8} s  (guest uptime when the script started)",
                name, secs
            );
        } else {
            let res = if rc == "0" { "ok" } else { "FAILED" };
            println!("  {name:<14} {secs:>8} s  {res} (exit {rc})");
        }
    }
    println!(
        "  {:<14} {:>8.1} s  (host wall clock, boot to power-off)",
        "total",
        wall.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_group_s_threads_are_grouped_by_where_they_wait() {
        // SAFETY: plain syscall.
        let pgid = unsafe { libc::getpgrp() };
        let dump = host_threads(pgid);
        let me = fs::read_to_string("/proc/self/comm").unwrap();
        assert!(dump.contains(me.trim()), "{dump}");
        assert!(dump.contains(" x "), "{dump}");
        assert_eq!(host_threads(i32::MAX), "  (none found)");
    }
}
