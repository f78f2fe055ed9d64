//! Shared helpers for zkstall's integration tests: finding the binary, deciding whether
//! root tests can run, and child processes that are killed even when a test fails.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The zkstall binary under test: `$ZKSTALL_BIN`, else the workspace's debug build.
pub fn zkstall_bin() -> PathBuf {
    let path = std::env::var_os("ZKSTALL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/zkstall")
        });
    assert!(
        path.is_file(),
        "zkstall binary not found at {}: run the tests with `cargo xtask test` (it builds it), or build it with `cargo build -p zkstall`",
        path.display()
    );
    path
}

/// What a scenario could leave behind: attached loop devices (with their backing files),
/// mount points, and processes of the loads tests start (fio, dd, java, bpftrace), by pid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    loops: std::collections::BTreeMap<String, String>,
    mounts: std::collections::BTreeSet<String>,
    procs: std::collections::BTreeMap<u32, String>,
}

/// The comms of the loads scenarios start, which must not outlive them.
const LOAD_COMMS: &[&str] = &["fio", "dd", "java", "bpftrace"];

impl Leftovers {
    pub fn now() -> Leftovers {
        let mut l = Leftovers::default();
        if let Ok(dir) = std::fs::read_dir("/sys/block") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                    l.loops.insert(name, b.trim().to_string());
                }
            }
        }
        // tracefs is not a leftover: zkstall mounts it where the system has not (a fresh
        // machine) and leaves it for the next run, as the kernel's own tools do.
        if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
            l.mounts = m
                .lines()
                .filter(|x| x.split_whitespace().nth(2) != Some("tracefs"))
                .filter_map(|x| x.split_whitespace().nth(1).map(str::to_string))
                .collect();
        }
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    continue;
                };
                // A zombie is reaped by its parent; only a live process is a leftover.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                let comm = &stat[open + 1..close];
                let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
                if state != "Z" && LOAD_COMMS.contains(&comm) {
                    l.procs.insert(pid, comm.to_string());
                }
            }
        }
        l
    }

    /// What is in `self` and was not in `before`, as one line per kind; empty if nothing.
    pub fn added_since(&self, before: &Leftovers) -> Vec<String> {
        let mut out = Vec::new();
        let loops: Vec<String> = self
            .loops
            .iter()
            .filter(|(k, v)| before.loops.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} (backing {v})"))
            .collect();
        if !loops.is_empty() {
            out.push(format!("loop devices still attached: {}", loops.join(", ")));
        }
        let mounts: Vec<&String> = self.mounts.difference(&before.mounts).collect();
        if !mounts.is_empty() {
            out.push(format!("still mounted: {mounts:?}"));
        }
        let procs: Vec<String> = self
            .procs
            .iter()
            .filter(|(p, _)| !before.procs.contains_key(p))
            .map(|(p, c)| format!("{c} (pid {p})"))
            .collect();
        if !procs.is_empty() {
            out.push(format!("processes still running: {}", procs.join(", ")));
        }
        out
    }
}

/// Held by each root scenario for its whole run (take it first, so it is dropped
/// last): one scenario at a time per test binary, and at the end a check that it left
/// nothing behind: no loop device, mount, or fio/dd/java/bpftrace process that was not
/// there when it began. A leak fails the scenario that caused it, not a later one whose
/// numbers it would skew. Detaching and reaping can lag a moment: it waits up to 10 s for
/// them to settle first. When the scenario already failed, a leak is only printed.
pub struct Serial {
    _lock: std::sync::MutexGuard<'static, ()>,
    test: String,
    before: Leftovers,
}

/// Takes `lock` (the test binary's one lock) for the current test.
pub fn serial(lock: &'static std::sync::Mutex<()>) -> Serial {
    let lock = lock.lock().unwrap_or_else(|e| e.into_inner());
    Serial {
        _lock: lock,
        test: std::thread::current()
            .name()
            .unwrap_or("a scenario")
            .to_string(),
        before: Leftovers::now(),
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = loop {
            let left = Leftovers::now().added_since(&self.before);
            if left.is_empty() || Instant::now() >= deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if left.is_empty() {
            return;
        }
        let msg = format!("{} left behind: {}", self.test, left.join("; "));
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}

/// True when this process can load BPF programs (root). Otherwise: under CI=true the test
/// fails loudly (CI must run as root); on a developer's machine it prints why it is skipped.
pub fn can_run_root_tests(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let bpf = std::path::Path::new("/sys/fs/bpf").exists()
        || std::path::Path::new("/sys/kernel/btf").exists();
    if root && bpf {
        return true;
    }
    let why = if !root {
        "not running as root"
    } else {
        "this kernel shows no BPF support"
    };
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} needs root and BPF, and CI must provide both: {why}");
    }
    eprintln!("SKIPPED {test}: {why} (run `sudo -E cargo xtask test`)");
    false
}

/// A child process that is killed and reaped when dropped (so a failing test leaves
/// nothing running).
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc { child, name }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `go` on its stdin (piped): the workloads start their work on it, once the
    /// tracer is attached.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(b"go\n").expect("writing go");
    }

    /// Waits up to `limit` for the process to exit by itself; panics (after killing it)
    /// if it does not.
    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a child's stderr on a thread; lines arrive on the returned channel.
pub fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads all of `r` (a child's stdout) on a thread, while the child runs: a child whose
/// output fills the pipe before anyone reads it blocks in write() and never exits (seen:
/// `trace --events -t 0` printing a busy host disk's requests).
pub fn read_all_of(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for a line containing `needle`; returns every line read so far.
pub fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no line containing {needle:?} within {limit:?}; got: {seen:#?}"),
        }
    }
}

/// Now on CLOCK_MONOTONIC, in nanoseconds: the clock of zkstall's `start_ns` (the kernel's
/// `bpf_ktime_get_ns`). Tests bracket what they inject with it and compare the kernel's
/// measurements against those brackets, never against how long a sleep of their own took:
/// on a slow machine (a guest under emulation) starting `fsfreeze` alone takes a noticeable
/// fraction of a second.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The interval `[start_ns, start_ns + duration_ms]` of a zkstall record, in ns.
pub fn interval_ns(r: &serde_json::Value) -> (u64, u64) {
    let start = r["start_ns"].as_u64().expect("start_ns");
    let ms = r["duration_ms"].as_f64().expect("duration_ms");
    (start, start + (ms * 1e6).round() as u64)
}

/// True when the record's interval overlaps `[from_ns, to_ns]` (CLOCK_MONOTONIC).
pub fn overlaps(r: &serde_json::Value, from_ns: u64, to_ns: u64) -> bool {
    let (start, end) = interval_ns(r);
    start <= to_ns && end >= from_ns
}

/// Threads whose names start with a prefix, pinned to some CPUs; their earlier affinity is
/// restored on drop (kernel threads of the host's own filesystems are pinned too).
pub struct PinnedThreads {
    saved: Vec<(u32, String)>,
}

impl PinnedThreads {
    /// Pins every thread named `prefix*` to `cpus` (a taskset list, e.g. "0").
    pub fn named(prefix: &str, cpus: &str) -> PinnedThreads {
        let mut saved = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if !comm.trim_end().starts_with(prefix) {
                continue;
            }
            // "pid 123's current affinity list: 0,1"
            let Ok(out) = Command::new("taskset")
                .args(["-pc", &pid.to_string()])
                .output()
            else {
                continue;
            };
            let before = String::from_utf8_lossy(&out.stdout)
                .rsplit(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if before.is_empty() {
                continue;
            }
            sh("taskset", &["-pc", cpus, &pid.to_string()]);
            saved.push((pid, before));
        }
        assert!(!saved.is_empty(), "no thread named {prefix}*");
        PinnedThreads { saved }
    }
}

impl Drop for PinnedThreads {
    fn drop(&mut self) {
        for (pid, cpus) in &self.saved {
            let _ = Command::new("taskset")
                .args(["-pc", cpus, &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Device interrupts steered to some CPUs (a hex mask, e.g. "1" for CPU 0), so their
/// completions (and the softirqs after them) do not share a CPU a test hogs; every IRQ's
/// earlier mask is restored on drop. IRQs that cannot be moved are left alone.
pub struct IrqAffinity {
    saved: Vec<(PathBuf, String)>,
}

impl IrqAffinity {
    pub fn all_to(mask: &str) -> IrqAffinity {
        let mut saved = Vec::new();
        for entry in std::fs::read_dir("/proc/irq")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path().join("smp_affinity");
            let Ok(before) = std::fs::read_to_string(&p) else {
                continue;
            };
            if std::fs::write(&p, mask).is_ok() {
                saved.push((p, before.trim().to_string()));
            }
        }
        IrqAffinity { saved }
    }
}

impl Drop for IrqAffinity {
    fn drop(&mut self) {
        for (p, mask) in &self.saved {
            let _ = std::fs::write(p, mask);
        }
    }
}

/// The median of some values (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A command running the zkstall binary with piped output.
pub fn zkstall(args: &[&str]) -> Command {
    let mut c = Command::new(zkstall_bin());
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// A scratch directory on a real (non-tmpfs) filesystem, so fsync does real work.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let base = PathBuf::from("/var/tmp");
    let dir = base.join(format!("{prefix}-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&dir).expect("creating a scratch dir in /var/tmp");
    dir
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Removes a directory when dropped.
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Parses JSON lines, panicking with the offending line.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a sparse image file; detached (and the image removed) on drop.
pub struct LoopDev {
    pub dev: PathBuf,
    image: PathBuf,
}

impl LoopDev {
    pub fn new(mib: u64) -> LoopDev {
        let image = scratch_dir("zkstall-loop").join("disk.img");
        let f = std::fs::File::create(&image).expect("creating the image");
        f.set_len(mib << 20).expect("sizing the image");
        drop(f);
        let dev = sh("losetup", &["-f", "--show", image.to_str().unwrap()]);
        LoopDev {
            dev: PathBuf::from(dev.trim()),
            image,
        }
    }

    /// A loop device over an image file at `image` (on another filesystem, for instance).
    pub fn over(image: &std::path::Path, mib: u64) -> LoopDev {
        let f = std::fs::File::create(image).expect("creating the image");
        f.set_len(mib << 20).expect("sizing the image");
        drop(f);
        let dev = sh("losetup", &["-f", "--show", image.to_str().unwrap()]);
        LoopDev {
            dev: PathBuf::from(dev.trim()),
            image: image.to_path_buf(),
        }
    }

    /// The device number as zkstall prints it ("7:3").
    pub fn majmin(&self) -> String {
        use std::os::unix::fs::MetadataExt as _;
        let rdev = std::fs::metadata(&self.dev).expect("stat loop dev").rdev();
        format!("{}:{}", libc::major(rdev), libc::minor(rdev))
    }

    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.image);
        if let Some(dir) = self.image.parent()
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("zkstall-loop"))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// An ext4 filesystem made on a device and mounted; unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    /// ext4 as a production host has it: its inode tables and journal written at mkfs,
    /// not by the kernel's ext4lazyinit thread in the background of the test (seen in the
    /// 6.1 guest: 14 MB it wrote to a fresh partition's disk in the 30 s before a commit
    /// made it the top writer there, named over the test's dd).
    pub fn ext4(dev: &std::path::Path) -> Mount {
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                dev.to_str().unwrap(),
            ],
        );
        let dir = scratch_dir("zkstall-mnt");
        sh("mount", &[dev.to_str().unwrap(), dir.to_str().unwrap()]);
        Mount { dir }
    }

    /// XFS: fsync waits on log forces, not jbd2 commits.
    pub fn xfs(dev: &std::path::Path) -> Mount {
        sh("mkfs.xfs", &["-q", "-f", dev.to_str().unwrap()]);
        let dir = scratch_dir("zkstall-mnt");
        sh("mount", &[dev.to_str().unwrap(), dir.to_str().unwrap()]);
        Mount { dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Never leave a frozen fs behind (a freeze guard should have thawed it already).
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A stopped disk or frozen filesystem that can be started again (and is, on drop).
pub trait Stopped {
    fn thaw(&mut self);
}

impl Stopped for Freeze {
    fn thaw(&mut self) {
        Freeze::thaw(self)
    }
}

impl Stopped for HostFreeze<'_> {
    fn thaw(&mut self) {
        HostFreeze::thaw(self)
    }
}

/// A frozen filesystem (fsfreeze -f); thawed on drop, so a failing test never leaves it
/// frozen.
pub struct Freeze {
    dir: PathBuf,
    thawed: bool,
}

impl Freeze {
    pub fn new(dir: &std::path::Path) -> Freeze {
        sh("fsfreeze", &["-f", dir.to_str().unwrap()]);
        Freeze {
            dir: dir.to_path_buf(),
            thawed: false,
        }
    }

    pub fn thaw(&mut self) {
        if !self.thawed {
            sh("fsfreeze", &["-u", self.dir.to_str().unwrap()]);
            self.thawed = true;
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        if !self.thawed {
            let _ = Command::new("fsfreeze").arg("-u").arg(&self.dir).status();
        }
    }
}

/// vm.dirty_* sysctls, restored on drop. Writing a *_bytes knob zeroes its *_ratio twin,
/// so both are saved and the one that was in effect is written back.
pub struct DirtyLimits {
    saved: Vec<(&'static str, String)>,
}

const DIRTY_KNOBS: [&str; 4] = [
    "dirty_ratio",
    "dirty_bytes",
    "dirty_background_ratio",
    "dirty_background_bytes",
];

impl DirtyLimits {
    pub fn set(dirty_bytes: u64, background_bytes: u64) -> DirtyLimits {
        let saved = DIRTY_KNOBS
            .iter()
            .map(|k| {
                (
                    *k,
                    std::fs::read_to_string(format!("/proc/sys/vm/{k}"))
                        .expect("read sysctl")
                        .trim()
                        .to_string(),
                )
            })
            .collect();
        let guard = DirtyLimits { saved };
        std::fs::write(
            "/proc/sys/vm/dirty_background_bytes",
            background_bytes.to_string(),
        )
        .expect("set sysctl");
        std::fs::write("/proc/sys/vm/dirty_bytes", dirty_bytes.to_string()).expect("set sysctl");
        guard
    }
}

impl Drop for DirtyLimits {
    fn drop(&mut self) {
        for (ratio, bytes) in [
            ("dirty_ratio", "dirty_bytes"),
            ("dirty_background_ratio", "dirty_background_bytes"),
        ] {
            let get = |k: &str| {
                self.saved
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let (knob, value) = if get(bytes) != "0" {
                (bytes, get(bytes))
            } else {
                (ratio, get(ratio))
            };
            let _ = std::fs::write(format!("/proc/sys/vm/{knob}"), value);
        }
    }
}

/// A running `zkstall trace`, its stdout drained continuously (a full pipe would block it).
pub struct Tracer {
    pub proc: Proc,
    pub stderr: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
    /// What it printed so far, for scenarios that go on until it saw something.
    printed: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Tracer {
    /// The JSON records it printed so far.
    pub fn records_so_far(&self) -> Vec<serde_json::Value> {
        let s = self
            .printed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// `zkstall trace --events --format json` of `pid`, started and ready.
pub fn start_tracer(pid: u32, extra: &[&str]) -> Tracer {
    let mut args = vec!["--events", "--format", "json"];
    args.extend_from_slice(extra);
    start_tracer_with(pid, &args)
}

/// `zkstall trace --pid PID ARGS`, started and ready.
pub fn start_tracer_with(pid: u32, extra: &[&str]) -> Tracer {
    let pid = pid.to_string();
    let mut args = vec!["trace", "--pid", &pid, "--duration", "120s"];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn("zkstall trace", &mut zkstall(&args));
    let stderr = lines_of(proc.child.stderr.take().expect("stderr"));
    let out = proc.child.stdout.take().expect("stdout");
    let printed = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let so_far = printed.clone();
    let stdout = std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(out);
        let mut line = String::new();
        while std::io::BufRead::read_line(&mut r, &mut line).is_ok_and(|n| n > 0) {
            so_far
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&line);
            line.clear();
        }
        std::mem::take(&mut *so_far.lock().unwrap_or_else(|e| e.into_inner()))
    });
    // Generous: an emulated CPU (vm-test) verifies and attaches the programs slowly.
    wait_for_line(&stderr, "tracing 1 process", Duration::from_secs(90));
    Tracer {
        proc,
        stderr,
        stdout,
        printed,
    }
}

/// zkstall's summary record cut to what it said it lost, shed or missed (drops, sheds,
/// misses, unseen switches, exits without an entry, untimed calls, requests' counts): for a failing test's
/// message, to tell a miss from a loss zkstall reported. Null when there is no summary.
pub fn loss_summary(records: &[serde_json::Value]) -> serde_json::Value {
    records
        .iter()
        .find(|r| r["type"] == "summary")
        .map(|s| {
            let mut s = s.clone();
            if let Some(m) = s.as_object_mut() {
                m.retain(|k, _| {
                    k.contains("drop")
                        || k.contains("shed")
                        || k.contains("lost")
                        || k.contains("miss")
                        || k.contains("unseen")
                        || k.starts_with("io_")
                        || k.contains("stale")
                        || k.starts_with("map_")
                        || k == "exit_without_enter"
                        || k == "untimed"
                });
            }
            s
        })
        .unwrap_or_default()
}

/// Waits for the tracer to end by itself (its target exited) and returns its records.
pub fn finish_tracer(t: Tracer) -> Vec<serde_json::Value> {
    finish_tracer_raw(t).0
}

/// Like [`finish_tracer`], also returning the output as printed.
pub fn finish_tracer_raw(mut t: Tracer) -> (Vec<serde_json::Value>, String) {
    // A debug build under load can take a while to work through what it queued.
    let st = t.proc.wait_for_exit(Duration::from_secs(180));
    let out = t.stdout.join().expect("stdout reader");
    // For debugging a failure: ZKSTALL_TEST_DUMP=dir keeps every tracer's output there.
    if let Some(dir) = std::env::var_os("ZKSTALL_TEST_DUMP") {
        let p = PathBuf::from(dir).join(format!("trace-{}-{}.jsonl", t.proc.pid(), nanos()));
        let _ = std::fs::write(p, &out);
    }
    assert!(
        st.success(),
        "zkstall trace failed: {st}; stderr: {:?}",
        t.stderr.try_iter().collect::<Vec<_>>()
    );
    (json_lines(&out), out)
}

/// A process that just waits (a target for traces that look at device-wide events).
pub fn sleeper() -> Proc {
    Proc::spawn(
        "sleep",
        Command::new("sleep").arg("600").stdin(Stdio::null()),
    )
}

/// The CPUs unbound kernel workqueues (loop devices' and flushers' workers) may use;
/// restored on drop.
pub struct WorkqueueCpus {
    saved: String,
}

const WQ_CPUMASK: &str = "/sys/devices/virtual/workqueue/cpumask";

impl WorkqueueCpus {
    /// Restricts unbound workqueues to `mask` (hex, e.g. "1" for CPU 0).
    pub fn set(mask: &str) -> WorkqueueCpus {
        let saved = std::fs::read_to_string(WQ_CPUMASK)
            .expect("read workqueue cpumask")
            .trim()
            .to_string();
        std::fs::write(WQ_CPUMASK, mask).expect("set workqueue cpumask");
        WorkqueueCpus { saved }
    }
}

impl Drop for WorkqueueCpus {
    fn drop(&mut self) {
        let _ = std::fs::write(WQ_CPUMASK, &self.saved);
    }
}

/// Debian's ZooKeeper server classpath (package `zookeeper`).
pub const ZK_CLASSPATH: &str =
    "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";

/// ZooKeeper's log to stdout in the format its fsync warnings are parsed with, from our
/// own log4j configuration: nothing depends on /etc/zookeeper/conf.
pub const ZK_LOG4J: &str = "log4j.rootLogger=INFO, CONSOLE\nlog4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\nlog4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\nlog4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n\n";

/// A standalone ZooKeeper server on loopback with its data and transaction log under
/// `dir`, logging its own fsync measurements (fsync.warningthresholdms); killed on drop.
pub struct ZooKeeper {
    pub proc: Proc,
    pub port: u16,
    pub log: PathBuf,
}

/// One "fsync-ing the write ahead log in SyncThread:0 took 213ms" line.
#[derive(Clone, Debug)]
pub struct ZkFsyncWarning {
    pub thread: String,
    pub took_ms: u64,
    /// When it was logged (after the fsync returned: usually just after), Unix ms.
    pub logged_unix_ms: i64,
}

impl ZooKeeper {
    pub fn start(dir: &std::path::Path, warn_ms: u32, wrap: &[&str]) -> ZooKeeper {
        Self::start_with(dir, warn_ms, wrap, "", &[])
    }

    /// With extra zoo.cfg lines (`snapCount=...`) and JVM options.
    pub fn start_with(
        dir: &std::path::Path,
        warn_ms: u32,
        wrap: &[&str],
        extra_cfg: &str,
        jvm: &[&str],
    ) -> ZooKeeper {
        assert!(
            std::path::Path::new("/usr/share/java/zookeeper.jar").exists(),
            "Debian's zookeeper package is not installed: run `cargo xtask setup`"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for d in ["data", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={0}/data\ndataLogDir={0}/log\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nfsync.warningthresholdms={warn_ms}\n4lw.commands.whitelist=*\n{extra_cfg}\n",
                dir.display()
            ),
        )
        .unwrap();
        let log4j = dir.join("log4j.properties");
        std::fs::write(&log4j, ZK_LOG4J).unwrap();
        let log = dir.join("zookeeper.out");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = if wrap.is_empty() {
            Command::new("java")
        } else {
            let mut c = Command::new(wrap[0]);
            c.args(&wrap[1..]).arg("java");
            c
        };
        cmd.env("TZ", "UTC")
            .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
            .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
            .args(jvm)
            .args([
                "-Xmx256m",
                "-cp",
                ZK_CLASSPATH,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let proc = Proc::spawn("zookeeper", &mut cmd);
        let zk = ZooKeeper { proc, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zk.ruok() {
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start: {}",
                std::fs::read_to_string(&zk.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        zk
    }

    /// What the `srvr` four-letter command says (empty when it does not answer).
    fn srvr(&self) -> String {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"srvr").is_err() {
            return String::new();
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf
    }

    /// In an ensemble, a leader or a follower (`srvr` says its mode); standalone: up.
    pub fn serving(&self) -> bool {
        let buf = self.srvr();
        ["Mode: leader", "Mode: follower", "Mode: standalone"]
            .iter()
            .any(|m| buf.contains(m))
    }

    /// The last transaction id it applied (`srvr`'s Zxid), 0 when unknown.
    pub fn zxid(&self) -> u64 {
        self.srvr()
            .lines()
            .find_map(|l| l.strip_prefix("Zxid: 0x"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .unwrap_or(0)
    }

    fn ruok(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"ruok").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf == "imok"
    }

    /// A write load (async creates) for `seconds`, running in the background.
    pub fn load(&self, seconds: u32) -> Proc {
        self.load_with(seconds, 512)
    }

    /// The same, with `bytes` of payload per znode.
    pub fn load_with(&self, seconds: u32, bytes: u32) -> Proc {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/ZkLoad.java");
        Proc::spawn(
            "zk load",
            Command::new("java")
                .args(["-cp", ZK_CLASSPATH])
                .arg(src)
                .arg(format!("127.0.0.1:{}", self.port))
                .arg(seconds.to_string())
                .arg(bytes.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// Every fsync warning ZooKeeper logged so far.
    pub fn fsync_warnings(&self) -> Vec<ZkFsyncWarning> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse_zk_warning).collect()
    }
}

/// `2026-11-24 19:15:14,703 - WARN  [SyncThread:0:FileTxnLog@394] - fsync-ing the write
/// ahead log in SyncThread:0 took 22ms which will ...` (log4j ISO8601, UTC).
pub fn parse_zk_warning(line: &str) -> Option<ZkFsyncWarning> {
    let rest = line.split("fsync-ing the write ahead log in ").nth(1)?;
    let (thread, rest) = rest.split_once(" took ")?;
    let took_ms: u64 = rest.split("ms").next()?.parse().ok()?;
    // "YYYY-MM-DD HH:MM:SS,mmm"
    let ts = line.get(..23)?;
    let (date, time) = ts.split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, ms) = time.split_once(',')?;
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = ms.parse().ok()?;
    // Days since the epoch (civil calendar, Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let unix_ms = ((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms;
    Some(ZkFsyncWarning {
        thread: thread.to_string(),
        took_ms,
        logged_unix_ms: unix_ms,
    })
}

/// The zkstall record of the same call as a ZooKeeper warning: same thread, an
/// fdatasync whose end is when ZooKeeper logged, and the same duration (ZooKeeper
/// truncates to whole ms and adds the JNI transition of force(): `tolerance_ms`).
pub fn match_zk_warning<'a>(
    w: &ZkFsyncWarning,
    records: &'a [serde_json::Value],
    tolerance_ms: f64,
) -> Option<&'a serde_json::Value> {
    records
        .iter()
        .filter_map(|r| Some((zk_warning_lag(w, r, tolerance_ms)?, r)))
        .min_by(|a, b| a.0.abs().total_cmp(&b.0.abs()))
        .map(|(_, r)| r)
}

/// Each warning's record, one to one: a record explains at most one logged stall (two
/// warnings of back-to-back fsyncs could otherwise both claim the nearer record).
pub fn match_zk_warnings<'a>(
    warnings: &[ZkFsyncWarning],
    records: &'a [serde_json::Value],
    tolerance_ms: f64,
) -> Vec<Option<&'a serde_json::Value>> {
    let mut used = vec![false; records.len()];
    warnings
        .iter()
        .map(|w| {
            // The nearest in time of the records that fit (see zk_warning_lag).
            let (i, _) = records
                .iter()
                .enumerate()
                .filter(|(i, _)| !used[*i])
                .filter_map(|(i, r)| Some((i, zk_warning_lag(w, r, tolerance_ms)?)))
                .min_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))?;
            used[i] = true;
            Some(&records[i])
        })
        .collect()
}

/// When record `r` fits warning `w`: how long after the call's end ZooKeeper logged it (ms).
fn zk_warning_lag(w: &ZkFsyncWarning, r: &serde_json::Value, tolerance_ms: f64) -> Option<f64> {
    {
        // What the JVM measured lies between the syscall alone and the syscall plus the
        // wait right after it returned (zkstall counts a preemption in the first 50 µs of
        // CPU after the return, which may come just after ZooKeeper's closing nanoTime).
        let (Some(syscall), Some(start)) = (r["duration_ms"].as_f64(), r["start_unix_ms"].as_i64())
        else {
            return None;
        };
        let d = r["visible_ms"].as_f64().unwrap_or(syscall);
        // From a preemption right before the entry, when zkstall saw one (`before_ms`).
        let start = start as f64 - r["before_ms"].as_f64().unwrap_or(0.0);
        let end = start + d;
        // ZooKeeper's clock also counts the JVM's code around the syscall (FileChannel's
        // prologue and epilogue, between its nanoTime reads and fdatasync): on a
        // CPU-starved host a preemption there that zkstall cannot tie to the call is in
        // ZooKeeper's number and not in zkstall's. Then the syscall must lie inside
        // ZooKeeper's window, and ZooKeeper's number may exceed zkstall's by up to 15%
        // (at least 10 ms).
        let took = w.took_ms as f64;
        let zk_start = w.logged_unix_ms as f64 - took;
        let inside =
            start >= zk_start - tolerance_ms && end <= w.logged_unix_ms as f64 + tolerance_ms;
        let jvm_side = inside && took > d && took - d <= (0.15 * took).max(10.0);
        // ZooKeeper takes the log line's time after its closing nanoTime and a few more
        // steps (a counter, the message): usually within milliseconds of the return. A
        // thread that stalls right after the call (a page fault reclaiming in a memory
        // cgroup at its limit: seen here at 974 ms after a 27 ms fdatasync, the thread's
        // write before it having reclaimed for 995 ms) logs later, never earlier. The
        // duration must fit either way.
        let lag = w.logged_unix_ms as f64 - end;
        let fits = r["type"] == "fsync"
            && r["syscall"] == "fdatasync"
            && r["thread"].as_str() == Some(w.thread.as_str())
            && ((took >= syscall - tolerance_ms && took <= d + tolerance_ms) || jvm_side)
            && (-100.0..=2_000.0).contains(&lag);
        fits.then_some(lag)
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        // Proc's own drop kills it; this only makes the order explicit.
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

/// Takes CPU 1 with a real-time busy loop for `how_long`, then returns. The kernel's RT
/// throttling (sched_rt_runtime_us) still leaves others 5% of it, so nothing hangs; the
/// loop is ended by `timeout` even if this process dies.
pub fn rt_hog_on_cpu1(how_long: Duration) {
    let secs = format!("{:.3}", how_long.as_secs_f64());
    let mut hog = Proc::spawn(
        "rt hog",
        Command::new("timeout").args([
            &secs,
            "chrt",
            "-f",
            "10",
            "taskset",
            "-c",
            "1",
            "sh",
            "-c",
            "while :; do :; done",
        ]),
    );
    let _ = hog.wait_for_exit(how_long + Duration::from_secs(10));
}

/// A loop device with a partition table (MBR, via sfdisk) whose partitions are registered
/// with `partx -a` (kernels without partition-table parsers do not scan them). Partitions
/// and the device are removed on drop.
pub struct PartLoop {
    pub lo: LoopDev,
    pub parts: Vec<PathBuf>,
}

impl PartLoop {
    /// `sizes_mib`: one partition each, in order, from 1 MiB on.
    pub fn new(sizes_mib: &[u64]) -> PartLoop {
        let total: u64 = 2 + sizes_mib.iter().sum::<u64>();
        Self::with(LoopDev::new(total), sizes_mib)
    }

    /// The same over an image file at `image` (on another filesystem, for instance).
    pub fn over(image: &std::path::Path, sizes_mib: &[u64]) -> PartLoop {
        let total: u64 = 2 + sizes_mib.iter().sum::<u64>();
        Self::with(LoopDev::over(image, total), sizes_mib)
    }

    fn with(lo: LoopDev, sizes_mib: &[u64]) -> PartLoop {
        let parts = partition(&lo.dev, sizes_mib);
        PartLoop { lo, parts }
    }

    /// The partition's device number as zkstall prints it.
    pub fn majmin(&self, i: usize) -> String {
        majmin(&self.parts[i])
    }
}

/// The device number of the device node `dev` as zkstall prints it (`MAJ:MIN`).
pub fn majmin(dev: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let rdev = std::fs::metadata(dev).expect("stat a device node").rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// Writes an MBR partition table on `dev` (one partition per size, in order, from 1 MiB
/// on) and registers its partitions with `partx -a`; returns their device nodes.
fn partition(dev: &std::path::Path, sizes_mib: &[u64]) -> Vec<PathBuf> {
    let mut script = String::from("label: dos\n");
    let mut start = 1u64;
    for s in sizes_mib {
        script.push_str(&format!("start={}MiB, size={}MiB, type=83\n", start, s));
        start += s;
    }
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "-q"])
        .arg(dev)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // It warns that the kernel cannot re-read the table: partx does that.
        .stderr(Stdio::null())
        .spawn()
        .expect("sfdisk");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "sfdisk failed");
    // A kernel with partition-table parsers (the 6.1 guest's) may have read the table
    // itself as sfdisk closed the disk: partx then fails to add what exists, which is fine
    // when the partitions' nodes are there (checked below, with partx's words).
    let partx = Command::new("partx")
        .arg("-a")
        .arg(dev)
        .stdin(Stdio::null())
        .output()
        .expect("running partx");
    // The kernel names a partition of a disk whose name ends in a digit with a `p`
    // between (loop0p1), else not (vdb1).
    let sep = if dev
        .to_string_lossy()
        .ends_with(|c: char| c.is_ascii_digit())
    {
        "p"
    } else {
        ""
    };
    let parts: Vec<PathBuf> = (1..=sizes_mib.len())
        .map(|i| PathBuf::from(format!("{}{sep}{i}", dev.display())))
        .collect();
    // udev may be absent: make sure the nodes exist (partx created the devices).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !parts.iter().all(|p| p.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in &parts {
        assert!(
            p.exists(),
            "{} did not appear after partx -a ({}: {})",
            p.display(),
            partx.status,
            String::from_utf8_lossy(&partx.stderr).trim()
        );
    }
    parts
}

/// A partition table on a disk the test does not own (the guest's [`HostDisk`]): its
/// partitions are removed and the table wiped on drop, so the next test finds the bare
/// disk it expects.
pub struct PartDisk {
    pub dev: PathBuf,
    pub parts: Vec<PathBuf>,
}

impl PartDisk {
    pub fn new(dev: &std::path::Path, sizes_mib: &[u64]) -> PartDisk {
        // A table an interrupted run left: its partitions first.
        let _ = Command::new("partx")
            .arg("-d")
            .arg(dev)
            .stderr(Stdio::null())
            .status();
        let parts = partition(dev, sizes_mib);
        PartDisk {
            dev: dev.to_path_buf(),
            parts,
        }
    }
}

impl Drop for PartDisk {
    fn drop(&mut self) {
        let _ = Command::new("partx")
            .arg("-d")
            .arg(&self.dev)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("wipefs")
            .arg("-a")
            .arg(&self.dev)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PartLoop {
    fn drop(&mut self) {
        let _ = Command::new("partx")
            .arg("-d")
            .arg(&self.lo.dev)
            .stderr(Stdio::null())
            .status();
    }
}

/// A disk that can be stopped: a loop device (`inner`) over an image on a filesystem of
/// another loop device (`outer`); freezing the outer filesystem stops the inner device
/// from completing anything (a SAN or hypervisor stall, in miniature).
pub struct StoppableDisk {
    pub inner: LoopDev,
    pub outer_mnt: Mount,
    pub outer: LoopDev,
}

impl StoppableDisk {
    pub fn new(mib: u64) -> StoppableDisk {
        let outer = LoopDev::new(mib * 2 + 64);
        let outer_mnt = Mount::ext4(&outer.dev);
        let inner = LoopDev::over(&outer_mnt.dir.join("inner.img"), mib);
        StoppableDisk {
            inner,
            outer_mnt,
            outer,
        }
    }

    /// Stops the disk until the guard is dropped (or thawed).
    pub fn stop(&self) -> Freeze {
        Freeze::new(&self.outer_mnt.dir)
    }
}

/// The bare virtio disk of `cargo xtask vm-test`'s guest that the hypervisor can stop
/// (`ZKSTALL_VM_STOP_DISK`, see xtask/src/vm.rs): not a loop device, so a stop there has
/// no layer below it, as on a production disk. Tests using it are `#[ignore]`d natively
/// (they run in the guest, with `--include-ignored`).
pub struct HostDisk {
    pub dev: PathBuf,
    share: PathBuf,
}

impl HostDisk {
    /// The guest's stoppable disk; panics outside `cargo xtask vm-test`.
    pub fn from_env() -> HostDisk {
        let var = |name| {
            std::env::var_os(name).unwrap_or_else(|| {
                panic!("{name} is not set: this test runs in `cargo xtask vm-test`'s guest, on the disk the hypervisor can stop")
            })
        };
        HostDisk {
            dev: PathBuf::from(var("ZKSTALL_VM_STOP_DISK")),
            share: PathBuf::from(var("ZKSTALL_VM_STOP_SHARE")),
        }
    }

    /// The disk's kernel name (`vdb`).
    pub fn name(&self) -> String {
        self.dev
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Asks the host to `what` (freeze or thaw) the filesystem the disk's image is on, and
    /// waits for its answer.
    fn ask(&self, what: &str) {
        let ack = self.share.join("stop-ack");
        let _ = std::fs::remove_file(&ack);
        let tmp = self.share.join("stop-request.tmp");
        std::fs::write(&tmp, what).expect("writing the stop request");
        std::fs::rename(&tmp, self.share.join("stop-request")).expect("stop request");
        wait_until(
            &format!("the host to {what} the disk"),
            Duration::from_secs(20),
            || std::fs::read_to_string(&ack).is_ok_and(|a| !a.is_empty()),
        );
        let answer = std::fs::read_to_string(&ack).unwrap_or_default();
        assert_eq!(answer.trim(), what, "the host's answer");
    }

    /// Stops the disk until the guard is dropped (or thawed).
    pub fn stop(&self) -> HostFreeze<'_> {
        self.ask("freeze");
        HostFreeze {
            disk: self,
            thawed: false,
        }
    }
}

/// A stopped [`HostDisk`]; started again on drop, so a failing test never leaves it
/// stopped.
pub struct HostFreeze<'a> {
    disk: &'a HostDisk,
    thawed: bool,
}

impl HostFreeze<'_> {
    pub fn thaw(&mut self) {
        if !self.thawed {
            self.thawed = true;
            self.disk.ask("thaw");
        }
    }
}

impl Drop for HostFreeze<'_> {
    fn drop(&mut self) {
        if !self.thawed {
            self.thawed = true;
            // Not `ask`: no panic while unwinding.
            let _ = std::fs::write(self.disk.share.join("stop-request"), "thaw");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Waits until `f` holds, or panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of a thread (/proc/<tid>/stat).
pub fn thread_state(tid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The syscall number a thread is inside (/proc/<tid>/syscall), if any.
pub fn thread_syscall(tid: u32) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()?;
    s.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|n| *n >= 0)
}

/// The tid of the thread named `name` in process `pid`.
pub fn tid_named(pid: u32, name: &str) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim_end() == name).then_some(tid)
        })
}

/// Where a cgroup controller lives on this host: a v1 hierarchy of its own (hybrid hosts,
/// like this one: io and memory on v1, cgroup2 at /sys/fs/cgroup/unified), or cgroup2.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    pub root: PathBuf,
    pub v1: bool,
}

/// The mount of `controller` ("blkio" or "memory"), from /proc/self/mountinfo.
pub fn cgroup_root(controller: &str) -> Option<CgroupRoot> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut unified = None;
    for line in mi.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mp = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let opts = r.nth(1).unwrap_or("");
        if fstype == "cgroup" && opts.split(',').any(|o| o == controller) {
            return Some(CgroupRoot {
                root: PathBuf::from(mp),
                v1: true,
            });
        }
        if fstype == "cgroup2" && unified.is_none() {
            unified = Some(PathBuf::from(mp));
        }
    }
    let root = unified?;
    let v2_name = if controller == "blkio" {
        "io"
    } else {
        controller
    };
    std::fs::read_to_string(root.join("cgroup.controllers"))
        .ok()?
        .split_whitespace()
        .any(|c| c == v2_name)
        .then_some(CgroupRoot { root, v1: false })
}

/// A child cgroup for a test, under this process's own cgroup of that controller (v1) or
/// the cgroup2 root; removed on drop (its processes must be gone by then: tests declare it
/// before the processes they put in it).
pub struct TestCgroup {
    pub dir: PathBuf,
    /// Its path as /proc/<pid>/cgroup shows it.
    pub path: String,
    pub v1: bool,
}

impl TestCgroup {
    pub fn new(controller: &str, name: &str) -> Option<TestCgroup> {
        let root = cgroup_root(controller)?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let parent = if root.v1 {
            own.lines()
                .find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                    ctrls
                        .split(',')
                        .any(|c| c == controller)
                        .then(|| path.to_string())
                })
                .unwrap_or_else(|| "/".into())
        } else {
            "/".into()
        };
        let rel = format!(
            "{}/{name}-{}",
            parent.trim_end_matches('/'),
            std::process::id()
        );
        let dir = root.root.join(rel.trim_start_matches('/'));
        if !root.v1 {
            // Let children of the root use the controller.
            let v2_name = if controller == "blkio" {
                "io"
            } else {
                controller
            };
            let _ = std::fs::write(
                root.root.join("cgroup.subtree_control"),
                format!("+{v2_name}"),
            );
        }
        std::fs::create_dir_all(&dir).ok()?;
        Some(TestCgroup {
            dir,
            path: rel,
            v1: root.v1,
        })
    }

    /// Writes a control file (`blkio.throttle.write_bps_device`, `io.max`, ...).
    pub fn set(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value).unwrap_or_else(|e| {
            panic!(
                "writing {value:?} to {}: {e}",
                self.dir.join(file).display()
            )
        });
    }

    /// A wrapper (for `Command`) that runs the rest of its arguments inside this cgroup.
    pub fn wrap(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
                self.dir.display()
            ),
        ]
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Whatever is still in it (a test that failed early) goes back to the parent.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs"))
            && let Some(parent) = self.dir.parent()
        {
            for p in procs.lines() {
                let _ = std::fs::write(parent.join("cgroup.procs"), p);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A write-bandwidth limit on a disk for the writeback of pages dirtied by the processes
/// of `cg`, removed on drop. Flusher writeback is charged where the kernel charges it: on
/// a v1 blkio hierarchy (no cgroup writeback) to the root blkio cgroup, so the limit goes
/// there; on cgroup2 to the dirtier's cgroup, so it goes in `cg`'s io.max.
pub struct WritebackLimit {
    file: PathBuf,
    clear: String,
}

impl WritebackLimit {
    pub fn set(majmin: &str, bytes_per_s: u64, cg: &TestCgroup) -> WritebackLimit {
        let root = cgroup_root("blkio").expect("a blkio/io cgroup controller");
        let (file, value, clear) = if root.v1 {
            (
                root.root.join("blkio.throttle.write_bps_device"),
                format!("{majmin} {bytes_per_s}"),
                format!("{majmin} 0"),
            )
        } else {
            let _ = std::fs::write(
                cg.dir.parent().unwrap().join("cgroup.subtree_control"),
                "+io",
            );
            (
                cg.dir.join("io.max"),
                format!("{majmin} wbps={bytes_per_s}"),
                format!("{majmin} wbps=max"),
            )
        };
        std::fs::write(&file, &value)
            .unwrap_or_else(|e| panic!("writing {value:?} to {}: {e}", file.display()));
        WritebackLimit { file, clear }
    }
}

impl Drop for WritebackLimit {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.file, &self.clear);
    }
}

/// Others' traffic dominated the disk: more than the thread's, and more than a few blocks;
/// or discards (whose length is not data moved) more than a few, and more than the thread's
/// requests.
fn others_busy(l: &serde_json::Value) -> bool {
    let n = |k: &str| l[k].as_u64().unwrap_or(0);
    let others = n("bytes_others");
    (others > n("bytes_thread") && (others >= 1 << 20 || n("requests_others") >= 16))
        || (n("discards_others") >= 16 && n("discards_others") > n("requests_thread"))
}

/// The journal's loop device paused during the commit, held by the disk under it (busy or
/// throttling it) for half the pause or more, while others' I/O dominated that disk (more
/// than the loop device's own there) and it kept completing.
fn held_below_busy(ev: &serde_json::Value, layers: &[serde_json::Value]) -> bool {
    let d = &ev["journal"]["disk_during"];
    let f = |k: &str| d[k].as_f64().unwrap_or(0.0);
    let depth = d["depth"].as_u64().unwrap_or(0);
    d["kind"] == "loop"
        && d["complete"] == true
        && f("backing_held_ms") > 0.0
        && f("backing_held_ms") * 2.0 >= f("longest_completion_gap_ms")
        && layers.iter().any(|l| {
            l["depth"].as_u64() == Some(depth + 1)
                && l["complete"] == true
                && others_busy(l)
                // more than the loop device's own traffic there
                && l["bytes_others"].as_u64().unwrap_or(0)
                    > l["bytes_from_above"].as_u64().unwrap_or(0)
                // working through them, not paused itself (for 500 ms and half the hold)
                && {
                    let gap = l["longest_completion_gap_ms"].as_f64().unwrap_or(0.0);
                    gap < 500.0 || gap * 2.0 < f("backing_held_ms")
                }
        })
}

/// The journal's loop device held by the disk under it for any part of its pause during
/// the commit, while others' I/O dominated that disk over the call (more than the loop
/// device's own relayed there): the commit was not slow on its own.
fn busy_below(ev: &serde_json::Value, layers: &[serde_json::Value]) -> bool {
    let d = &ev["journal"]["disk_during"];
    let depth = d["depth"].as_u64().unwrap_or(0);
    let n = |l: &serde_json::Value, k: &str| l[k].as_u64().unwrap_or(0);
    d["kind"] == "loop"
        && d["backing_held_ms"].as_f64().unwrap_or(0.0) > 0.0
        && layers.iter().any(|l| {
            l["depth"].as_u64() == Some(depth + 1)
                && l["complete"] == true
                && others_busy(l)
                && n(l, "bytes_others") > n(l, "bytes_from_above")
        })
}

/// Checks that a reported call's verdict is one its own evidence supports, and that its
/// time split adds up to the call: the other direction of "every stall is explained".
pub fn assert_supported(r: &serde_json::Value) {
    let dur = r["visible_ms"]
        .as_f64()
        .or(r["duration_ms"].as_f64())
        .unwrap_or(0.0);
    let stage = |k: &str| r["stages"][k].as_f64().unwrap_or(0.0);
    let sum: f64 = r["stages"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_f64()).sum())
        .unwrap_or(0.0);
    assert!(
        (sum - dur).abs() <= 0.05 + dur * 0.001,
        "stages add up to {sum} for a {dur} ms call: {r}"
    );
    let ev = &r["evidence"];
    let layers = ev["layers"].as_array().cloned().unwrap_or_default();
    let headline = r["headline"].as_str().unwrap_or("");
    assert!(!headline.contains("own 0 B"), "{headline}");
    let verdict = r["verdict"].as_str().unwrap_or("");
    let incomplete: Vec<&str> = ev["incomplete"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    // A disk whose requests over the call are all known: its layer says so, and nothing
    // the evidence lists as missing is about it (or about every disk: lost records).
    let known = |l: &serde_json::Value| {
        let disk = l["disk"].as_str().unwrap_or("?");
        l["complete"] == true
            && !incomplete
                .iter()
                .any(|i| i.starts_with(disk) || i.starts_with("records were lost"))
    };
    // The journal's disk over its commit, which may have begun before the call (a history
    // not reaching back to the call's start says nothing about it): what was unseen or
    // lost during the call is.
    let known_during_commit = |l: &serde_json::Value| {
        let disk = l["disk"].as_str().unwrap_or("?");
        let unseen = format!("{disk}: completions the probes did not see");
        l["complete"] == true
            && !incomplete
                .iter()
                .any(|i| i.starts_with(&unseen) || i.starts_with("records were lost"))
    };
    // The journal names a call only when the call waited on it no less than on its own
    // I/O (the commit's requests queued behind others' are the journal's wait).
    let journal_ms = ev["journal_wait_ms"].as_f64().unwrap_or(0.0);
    let own_device_ms = (stage("device_queue") - (journal_ms - stage("journal_wait"))).max(0.0)
        + stage("device_service")
        + stage("writeback_wait")
        + stage("queue_held")
        + stage("io_throttle");
    let journal_leads = journal_ms > 0.0 && journal_ms + 0.01 >= own_device_ms;
    let by_journal = r["via"] == "journal" || verdict == "journal_wait";
    assert!(
        !by_journal || journal_leads,
        "named by the journal ({journal_ms} ms) but waited longer on its own I/O ({own_device_ms} ms): {r}"
    );
    let ok = match verdict {
        "device_stall" => {
            // A stopped layer whose history is whole: nothing it missed on that disk (a
            // gap in another disk's, below a layer that stopped, changes nothing). Or a
            // bare disk whose only unknowns are a few requests in flight nobody followed:
            // too few for a flood of others' (8 in flight) to explain the pause.
            let few_unfollowed = |l: &serde_json::Value| {
                let disk = l["disk"].as_str().unwrap_or("?");
                let n = |k: &str| l[k].as_u64().unwrap_or(0);
                l["complete_but_unfollowed"] == true
                    && l["kind"] == "disk"
                    && n("inflight_max") + n("unfollowed") < 8
                    && incomplete.iter().all(|i| {
                        !i.starts_with(disk)
                            || i.contains("request(s) in flight now that the probes did not follow")
                    })
                    && !incomplete
                        .iter()
                        .any(|i| i.starts_with("records were lost"))
            };
            layers.iter().any(|l| {
                let gap = l["longest_completion_gap_ms"].as_f64().unwrap_or(0.0);
                (known(l) || few_unfollowed(l))
                    && gap >= 500.0
                    && gap >= 0.5 * dur
                    && l["inflight_max"].as_u64().unwrap_or(0) > 0
            })
        }
        "device_contention" => {
            // Others' traffic dominated a disk under the file (or the journal's disk during
            // the commit it waited on): see `others_busy`. Whose requests are all known: a
            // flood named over a window with completions unseen may have been a stop.
            // (or, for a loop device whose commit flush wrote back its backing file, the
            // data others wrote to it just before)
            let bw = &ev["journal"]["backing_writers"];
            let backing = bw["bytes_others"].as_u64().unwrap_or(0)
                > bw["bytes_thread"].as_u64().unwrap_or(0)
                && (bw["bytes_others"].as_u64().unwrap_or(0) >= 1 << 20
                    || bw["requests_others"].as_u64().unwrap_or(0) >= 16);
            // Via the journal: the journal's disk during the commit (its top layer during
            // the call for an XFS log force); otherwise any disk under the file.
            let journal_disk = match &ev["journal"]["disk_during"] {
                serde_json::Value::Null => layers.first().map(|l| (l, known(l))),
                d => Some((d, known_during_commit(d))),
            };
            // (or the disk under the journal's loop device, when that device's pause during
            // the commit was held from below for half of it or more)
            let below = held_below_busy(ev, &layers);
            r["contenders"].as_array().is_some_and(|c| !c.is_empty())
                && if r["via"] == "journal" {
                    journal_disk.is_some_and(|(d, known)| known && others_busy(d))
                        || backing
                        || below
                } else {
                    layers.iter().any(|l| known(l) && others_busy(l))
                }
        }
        // "Slow on its own" says no disk under the file stalled or was contended: that
        // needs every disk's requests known.
        "journal_wait" => {
            ev["journal_wait_ms"].as_f64().unwrap_or(0.0) >= 0.3 * dur
                && !layers.is_empty()
                && layers.iter().all(known)
                && (ev["journal"]["disk_during"].is_null()
                    || known_during_commit(&ev["journal"]["disk_during"]))
                && !held_below_busy(ev, &layers)
                && !busy_below(ev, &layers)
        }
        "dirty_throttle" => {
            ev["throttle_pause_ms"]
                .as_f64()
                .unwrap_or(0.0)
                .max(stage("dirty_throttle"))
                >= 0.3 * dur
        }
        "fs_blocked" => stage("fs_wait") >= 0.3 * dur,
        "cpu_starvation" => {
            stage("run_queue") >= 0.5 * dur
                // The commit it waited on could not get its thread a CPU; counted from the
                // call's wait on when the commit began only later and the call waited on
                // the journal for at least half of it.
                || (r["via"] == "journal" && {
                    let j = &ev["journal"];
                    let f = |k: &str| j[k].as_f64().unwrap_or(0.0);
                    let waited = ev["journal_wait_ms"].as_f64().unwrap_or(0.0);
                    let early = if waited >= 0.5 * dur {
                        (f("thread_runq_before_ms"), f("start_delay_ms"))
                    } else {
                        (0.0, 0.0)
                    };
                    j["duration_ms"].is_number()
                        && waited >= 0.3 * dur
                        && f("thread_runq_ms") + early.0 >= 0.5 * (f("duration_ms") + early.1)
                })
                || (r["via"] == "jvm_pause"
                    && stage("after_return") >= 0.5 * dur
                    && ev["after_others_runq_ms"].as_f64().unwrap_or(0.0)
                        >= 0.5 * stage("after_return"))
        }
        // A pause of the JVM: held after the return, with the JVM's other threads stopped
        // too (a safepoint), not a wait of its own.
        "jvm_pause" => {
            ev["after_syscall_ms"].is_number()
                && stage("after_return") >= 0.5 * dur
                && ev["other_threads_stopped"].as_u64().is_some()
        }
        "own_io" => {
            // Its own I/O, with others' less than it or below the contention thresholds.
            let own = ev["bytes_target"].as_u64().unwrap_or(0);
            let top = layers.first().cloned().unwrap_or_default();
            let others = top["bytes_others"].as_u64().unwrap_or(0);
            own > 0
                && known(&top)
                && (own >= others
                    || (others < 1 << 20 && top["requests_others"].as_u64().unwrap_or(0) < 16))
        }
        // A limit on a disk under the file, and the call waited for its I/O.
        "io_throttled" => {
            let waited = stage("writeback_wait")
                + stage("io_throttle")
                + stage("device_queue")
                + stage("device_service")
                + stage("short_device_waits");
            ev["io_limit"].is_object()
                && layers
                    .iter()
                    .any(|l| l["disk"] == ev["io_limit"]["disk_name"])
                && waited >= 0.3 * dur
        }
        "memory_reclaim" => {
            stage("reclaim") >= 0.3 * dur
                || (r["via"] == "jvm_pause"
                    && stage("after_return") >= 0.5 * dur
                    && ev["after_others_reclaim"]["ms"].as_f64().unwrap_or(0.0)
                        >= 0.5 * stage("after_return"))
        }
        "low_space" => stage("low_space") >= 0.3 * dur,
        "host_freeze" => ev["host_freeze"]["frozen_ms"].as_f64().unwrap_or(0.0) >= 0.5 * dur,
        // A catch-all says where the time went as far as known: never a stall it could not
        // see, and never a cause its own numbers name.
        "unknown" => {
            !headline.contains("stopped completing")
                && (headline.contains("no traced signal") || headline.contains("no cause"))
        }
        other => panic!("unknown verdict {other:?}: {r}"),
    };
    assert!(ok, "{verdict} is not what its evidence shows: {r}");
}

/// Python with Perfetto's protos (the `perfetto` PyPI package): `$ZKSTALL_PYTHON` (set by
/// `cargo xtask test`), else the venv `cargo xtask setup` makes. Missing: fails under CI,
/// skips with the reason on a developer's machine.
pub fn perfetto_python(test: &str) -> Option<PathBuf> {
    let py = std::env::var_os("ZKSTALL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/zkstall/perfetto-venv/bin/python")
        });
    let ok = Command::new(&py)
        .args([
            "-c",
            "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    let why = format!(
        "no Python with the perfetto package at {} (run `cargo xtask setup`)",
        py.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}

/// A script of tests/py run with `python`, its stdout as JSON.
pub fn python_json(
    python: &std::path::Path,
    script: &str,
    args: &[&std::path::Path],
) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{script} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON: {e}"))
}

/// A workload (already running its calls) and a tracer reporting calls >= `threshold`.
pub struct Scenario {
    work: Proc,
    tracer: Tracer,
    /// The workload's own per-call lines (it times each call itself).
    own: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    /// The trace's `--threshold`, when given with a unit.
    threshold: Option<Duration>,
}

impl Scenario {
    pub fn start(
        dir: &std::path::Path,
        threshold: &str,
        workload_args: &[&str],
        wrap: &[&str],
    ) -> Scenario {
        Self::start_with(
            dir,
            &["--threshold", threshold, "--format", "json"],
            workload_args,
            wrap,
        )
    }

    pub fn start_with(
        dir: &std::path::Path,
        trace_args: &[&str],
        workload_args: &[&str],
        wrap: &[&str],
    ) -> Scenario {
        let exe = zkstall_bin();
        let mut cmd = if wrap.is_empty() {
            Command::new(&exe)
        } else {
            let mut c = Command::new(wrap[0]);
            c.args(&wrap[1..]).arg(&exe);
            c
        };
        cmd.args(["workload", "--thread-name", "SyncThread:1"])
            .args(workload_args)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut work = Proc::spawn("workload", &mut cmd);
        let mut out = std::io::BufReader::new(work.child.stdout.take().unwrap());
        let mut ready = String::new();
        std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
        // Keep its per-call lines (and drain them, so it never blocks on a full pipe).
        let own = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = own.clone();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(out).map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    keep.lock().unwrap().push(v);
                }
            }
        });
        let threshold = trace_args
            .iter()
            .position(|a| *a == "--threshold")
            .and_then(|i| trace_args.get(i + 1))
            .and_then(|t| humantime::parse_duration(t).ok());
        let tracer = start_tracer_with(work.pid(), trace_args);
        std::io::Write::write_all(work.child.stdin.as_mut().unwrap(), b"go\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Scenario {
            work,
            tracer,
            own,
            threshold,
        }
    }

    /// Waits until the workload's next call has returned (it prints a line as each call
    /// ends), so that a scenario can start something a chosen time after a call instead of
    /// at a time that races the calls.
    pub fn wait_for_call_end(&self, timeout: Duration) {
        let seen = self.own.lock().unwrap().len();
        wait_until("a call of the workload to return", timeout, || {
            self.own.lock().unwrap().len() > seen
        });
    }

    /// Stops the workload; returns the slow calls of its SyncThread.
    pub fn finish(self) -> Vec<serde_json::Value> {
        self.finish_raw().0
    }

    /// Also returns the live run's output, byte for byte. Calls reported while still
    /// running (as they crossed the threshold) are left out: each is reported again when
    /// it ends (see `in_progress`).
    ///
    /// Checks the other direction too: every call the workload itself timed well above the
    /// threshold is one zkstall reported (its kernel entry inside the workload's interval).
    /// When the workload had no slow call at all, its slowest calls and appends are
    /// printed: a scenario whose stall caught the thread outside the watched calls then
    /// says so instead of looking like a miss.
    pub fn finish_raw(mut self) -> (Vec<serde_json::Value>, String) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.work.child.kill();
        let (records, raw) = finish_tracer_raw(self.tracer);
        for r in records
            .iter()
            .filter(|r| r["type"] == "fsync" || r["type"] == "write")
        {
            assert_supported(r);
        }
        let own = std::mem::take(&mut *self.own.lock().unwrap());
        if let Some(t) = self.threshold.filter(|t| !t.is_zero()) {
            check_own_calls_reported(&own, &records, t);
        }
        let calls = records
            .into_iter()
            .filter(|r| {
                (r["type"] == "fsync" || r["type"] == "write")
                    && r["thread"] == "SyncThread:1"
                    && r.get("in_progress").is_none()
            })
            .collect();
        (calls, raw)
    }
}

/// The built-in workload's arguments for a ZooKeeper-like log: an fdatasync every 5 ms,
/// on and on.
pub const FDATASYNC_EVERY_5MS: [&str; 6] = [
    "--calls",
    "100000",
    "--interval",
    "5ms",
    "--syscalls",
    "fdatasync",
];

/// The same every 100 ms: quiet between calls, so that with `--requests around-calls` the
/// kernel sums what overlaps none (with one every 5 ms a call is nearly always in flight
/// and nothing is summed).
pub const FDATASYNC_EVERY_100MS: [&str; 6] = [
    "--calls",
    "100000",
    "--interval",
    "100ms",
    "--syscalls",
    "fdatasync",
];

/// The built-in workload's own per-call lines (it times each call itself), read from its
/// stdout on a thread of their own.
#[derive(Clone, Default)]
pub struct OwnCalls(std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>);

impl OwnCalls {
    /// Reads the workload's stdout from now on (which also keeps it from blocking on a full
    /// pipe).
    pub fn keep(out: impl std::io::Read + Send + 'static) -> OwnCalls {
        let own = OwnCalls::default();
        let keep = own.0.clone();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str(&line) {
                    keep.lock().unwrap().push(v);
                }
            }
        });
        own
    }

    /// See [`check_own_calls_reported`].
    pub fn check_reported(&self, records: &[serde_json::Value], threshold: Duration) {
        let own = std::mem::take(&mut *self.0.lock().unwrap());
        check_own_calls_reported(&own, records, threshold);
    }
}

/// How long a thread can stand still without its kernel seeing it: in `cargo xtask
/// vm-test`'s single-threaded TCG guest, one host thread runs both vCPUs in turn, each until
/// qemu kicks it (TCG_KICK_PERIOD, 100 ms) or it idles, while the other vCPU's clock runs on.
/// A thread between its clock read and its syscall then loses up to that much with no
/// switch for any probe to see (xtask sets `ZKSTALL_VM_CPU_SLICE_MS`). Zero elsewhere.
pub fn unseen_cpu_slice() -> Duration {
    std::env::var("ZKSTALL_VM_CPU_SLICE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

/// Fails if a call the workload timed at well over `threshold` (1.2x, +20 ms: its own
/// timing includes a return to userspace; plus [`unseen_cpu_slice`] in the emulated guest)
/// has no zkstall record of the same thread that entered the kernel inside it. Prints the
/// workload's slowest calls and appends, so an empty result can be read.
pub fn check_own_calls_reported(
    own: &[serde_json::Value],
    records: &[serde_json::Value],
    threshold: Duration,
) {
    let floor =
        threshold.as_nanos() as u64 * 6 / 5 + 20_000_000 + unseen_cpu_slice().as_nanos() as u64;
    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let slowest = |k: &str| {
        own.iter()
            .max_by_key(|o| num(o, k))
            .map(|o| format!("{} ms ({})", num(o, k) / 1_000_000, o["syscall"]))
            .unwrap_or_else(|| "none".into())
    };
    eprintln!(
        "the workload timed {} calls itself; its slowest call: {}, its slowest append before a call: {}",
        own.len(),
        slowest("duration_ns"),
        slowest("write_before_ns")
    );
    // Slow calls, and slow appends (the write before each call, reported as `write`).
    let slow = own.iter().flat_map(|o| {
        let (start, before) = (num(o, "start_ns"), num(o, "write_before_ns"));
        let call = (num(o, "duration_ns") >= floor)
            .then(|| (o, None, start, num(o, "end_ns"), num(o, "duration_ns")));
        let append = (before >= floor).then(|| {
            // Its end is the call's start, give or take the clock reads between them.
            (
                o,
                Some("write"),
                start.saturating_sub(before + 1_000_000),
                start,
                before,
            )
        });
        call.into_iter().chain(append)
    });
    for (o, append, t0, t1, took) in slow {
        let seen = records.iter().any(|r| {
            r["tid"] == o["tid"]
                && match append {
                    None => r["syscall"] == o["syscall"],
                    Some(_) => r["type"] == "write",
                }
                && (t0..=t1).contains(&num(r, "start_ns"))
        });
        if !seen {
            let calls: Vec<serde_json::Value> = records
                .iter()
                .filter(|r| r["type"] == "fsync" || r["type"] == "write")
                .cloned()
                .collect();
            // What zkstall said it lost or shed, to tell a miss from a loss it reported.
            let summary = loss_summary(records);
            panic!(
                "zkstall did not report {} the workload timed itself at {} ms: {o}\nzkstall's summary of losses: {summary}\n{:#?}",
                if append.is_some() {
                    "an append"
                } else {
                    "a call"
                },
                took / 1_000_000,
                verdicts(&calls)
            );
        }
    }
}

/// `verdict duration: headline` of each call, for failure messages.
pub fn verdicts(calls: &[serde_json::Value]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {:.0} ms: {}",
                c["verdict"],
                c["duration_ms"].as_f64().unwrap_or(0.0),
                c["headline"]
            )
        })
        .collect()
}

/// A wrapper's words as the `&str`s `Command` takes.
pub fn wrap_refs(w: &[String]) -> Vec<&str> {
    w.iter().map(String::as_str).collect()
}

/// A workload writing through a cgroup I/O limit (v1 blkio.throttle or v2 io.max, as
/// the host mounts the controller): its slow calls are io_throttled, naming the limit.
pub fn io_throttled_scenario(v2_only: bool, bytes_per_s: u64, threshold: &str) {
    let lo = LoopDev::new(256);
    let mnt = Mount::ext4(&lo.dev);
    let cg = TestCgroup::new("blkio", "zkstall-throttle")
        .expect("a blkio (v1) or io (v2) cgroup controller");
    if v2_only {
        assert!(!cg.v1, "the io controller is on cgroup2 for this run");
    }
    let dev = lo.majmin();
    // bytes_per_s of writes for the workload's cgroup on that disk (v1 or v2, as mounted).
    if cg.v1 {
        cg.set(
            "blkio.throttle.write_bps_device",
            &format!("{dev} {bytes_per_s}"),
        );
    } else {
        cg.set("io.max", &format!("{dev} wbps={bytes_per_s}"));
    }
    let wrap = cg.wrap();
    let sc = Scenario::start(
        &mnt.dir.join("zk"),
        threshold,
        &[
            "--calls",
            "100000",
            "--interval",
            "2ms",
            "--syscalls",
            "fdatasync",
            "--write-bytes",
            "16384",
        ],
        &wrap_refs(&wrap),
    );
    std::thread::sleep(Duration::from_millis(3000));
    let calls = sc.finish();
    let throttled: Vec<&serde_json::Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "io_throttled")
        .collect();
    assert!(
        throttled.len() >= 5 && throttled.len() * 4 >= calls.len() * 3,
        "{:#?}",
        verdicts(&calls)
    );
    for c in &throttled {
        let lim = &c["evidence"]["io_limit"];
        assert_eq!(lim["wbps"], bytes_per_s, "{c}");
        assert_eq!(lim["disk"], dev.as_str(), "{c}");
        assert_eq!(lim["own_cgroup"], cg.path.as_str(), "{c}");
        assert!(
            c["headline"].as_str().unwrap().contains("I/O limit on"),
            "{}",
            c["headline"]
        );
    }
}

/// Did others' I/O reach the contention thresholds (1 MiB or 16 requests, more than the
/// thread's) on any view of the disks a call's record gives: a layer under the file, the
/// journal's disk during its commit, or what others wrote to a loop device before the
/// commit's flush?
pub fn others_mattered(r: &serde_json::Value) -> bool {
    let ev = &r["evidence"];
    ev["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(others_busy)
        || others_busy(&ev["journal"]["disk_during"])
        || others_busy(&ev["journal"]["backing_writers"])
}

/// The built-in workload (a thread named SyncThread:1) in `dir`, started and running, and
/// the calls it times itself (for the check that zkstall reported each slow one).
pub fn start_workload(dir: &std::path::Path, args: &[&str]) -> (Proc, OwnCalls) {
    let mut cmd = Command::new(zkstall_bin());
    cmd.args(["workload", "--thread-name", "SyncThread:1", "--no-wait"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut work = Proc::spawn("workload", &mut cmd);
    let mut out = std::io::BufReader::new(work.child.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let own = OwnCalls::keep(out);
    (work, own)
}

/// The workload's SyncThread blocked in `syscall` (D) by `stop` before tracing starts:
/// tracing (`--threshold`, `--requests`) starts `settle` after it blocked, what stopped it
/// is started again `held` later, and tracing ends `after` that.
pub struct BlockedAtAttach<'a> {
    pub syscall: i64,
    pub settle: Duration,
    pub threshold: Duration,
    pub requests: &'a str,
    pub held: Duration,
    pub after: Duration,
}

impl BlockedAtAttach<'_> {
    /// Runs the workload in `dir`; returns the records (every call the workload timed
    /// over the threshold checked as reported) and the whole output.
    pub fn run<S: Stopped>(
        &self,
        dir: &std::path::Path,
        stop: impl FnOnce() -> S,
    ) -> (Vec<serde_json::Value>, String) {
        let (mut work, own) = start_workload(dir, &FDATASYNC_EVERY_5MS);
        let mut tid = 0;
        wait_until("the SyncThread", Duration::from_secs(10), || {
            tid = tid_named(work.pid(), "SyncThread:1").unwrap_or(0);
            tid != 0
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut stopped = stop();
        wait_until("the SyncThread to block", Duration::from_secs(10), || {
            thread_state(tid) == Some('D') && thread_syscall(tid) == Some(self.syscall)
        });
        std::thread::sleep(self.settle);
        let threshold = format!("{}ms", self.threshold.as_millis());
        let tracer = start_tracer_with(
            work.pid(),
            &[
                "--threshold",
                &threshold,
                "--format",
                "json",
                "--requests",
                self.requests,
            ],
        );
        std::thread::sleep(self.held);
        stopped.thaw();
        std::thread::sleep(self.after);
        let _ = work.child.kill();
        let (records, raw) = finish_tracer_raw(tracer);
        own.check_reported(&records, self.threshold);
        (records, raw)
    }
}

/// A disk (`dev`, a filesystem made on it) stopped by `stop`, the workload's fdatasync
/// stuck on it, and only then tracing starts (`--requests requests`); the disk resumes
/// 2.5 s later. The moment an SRE runs zkstall is during the stall ZooKeeper is logging:
/// the requests the call waits on were issued before the probes existed. Checks that every
/// report of the stuck call is `device_stall` or `unknown` (never what ran before) and
/// the last, at its end, `device_stall` with its requests in flight all along.
pub fn stuck_when_tracing_starts<S: Stopped>(
    dev: &std::path::Path,
    stop: impl FnOnce() -> S,
    requests: &str,
) {
    let fs = Mount::ext4(dev);
    // Its fdatasync (75) blocks on the stopped disk.
    let (records, raw) = BlockedAtAttach {
        syscall: 75,
        settle: Duration::from_millis(500),
        threshold: Duration::from_millis(500),
        requests,
        held: Duration::from_millis(2500),
        after: Duration::from_millis(700),
    }
    .run(&fs.dir.join("zk"), stop);
    for r in records
        .iter()
        .filter(|r| r["type"] == "fsync" || r["type"] == "write")
    {
        assert_supported(r);
    }
    let calls: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| (r["type"] == "fsync" || r["type"] == "write") && r["thread"] == "SyncThread:1")
        .cloned()
        .collect();
    eprintln!("{:#?}", verdicts(&calls));
    let stuck: Vec<&serde_json::Value> =
        calls.iter().filter(|c| c["start_bound"] == true).collect();
    for c in &stuck {
        eprintln!("{c:#}");
    }
    eprintln!("{}", raw.lines().last().unwrap_or_default());
    // Looked at as it runs, it is a stall or not known yet (the requests it waits on were
    // issued before the probes existed; a pause too young yet): never what ran before.
    for c in &stuck {
        assert!(
            c["verdict"] == "device_stall" || c["verdict"] == "unknown",
            "{}: {}",
            c["verdict"],
            c["headline"]
        );
    }
    let last = stuck
        .iter()
        .find(|c| c.get("in_progress").is_none())
        .expect("the stuck call reported at its end");
    assert_eq!(last["verdict"], "device_stall", "{}", last["headline"]);
    // In flight all along: the requests issued before tracing began are in its evidence.
    assert!(
        last["evidence"]["layers"][0]["inflight_max"]
            .as_u64()
            .unwrap()
            >= 1,
        "{last}"
    );
    assert!(
        last["evidence"]["longest_completion_gap_ms"]
            .as_f64()
            .unwrap()
            > 2000.0,
        "{last}"
    );
    drop(fs);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(start_unix_ms: i64, ms: f64) -> serde_json::Value {
        serde_json::json!({
            "type": "fsync", "syscall": "fdatasync", "thread": "SyncThread:0",
            "start_unix_ms": start_unix_ms, "duration_ms": ms,
        })
    }

    /// The record the 6.1 guest printed once (verdicts tier, 2026-12-06): fio named as
    /// the cause of a stopped device over a window with completions unseen on loop1. The
    /// checker refuses it; the same record with loop1's requests all known passes.
    #[test]
    fn contention_named_over_a_disk_with_unseen_completions_is_not_supported() {
        let raw = include_str!("../fixtures/contention-over-unseen-completions.json");
        let r: serde_json::Value = serde_json::from_str(raw).expect("fixture");
        let refused = std::panic::catch_unwind(|| assert_supported(&r));
        assert!(refused.is_err(), "the checker accepted {r}");
        let mut whole = r.clone();
        whole["evidence"]["incomplete"] = serde_json::json!([]);
        whole["evidence"]["layers"][0]["complete"] = true.into();
        assert_supported(&whole);
        // journal_wait over the same evidence: the same.
        let mut jw = r.clone();
        jw["verdict"] = "journal_wait".into();
        assert!(std::panic::catch_unwind(|| assert_supported(&jw)).is_err());
        let mut jw = whole.clone();
        jw["verdict"] = "journal_wait".into();
        assert_supported(&jw);
    }

    /// The leak check sees a load process started after its snapshot, and stops seeing
    /// it once it is reaped; what was there before is never counted.
    #[test]
    fn a_load_process_left_running_is_a_leftover_until_it_is_reaped() {
        let before = Leftovers::now();
        let mut dd = Command::new("dd")
            .args(["if=/dev/zero", "of=/dev/null", "bs=1"])
            .stderr(Stdio::null())
            .spawn()
            .expect("dd");
        let pid = dd.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let left = loop {
            let left = Leftovers::now().added_since(&before);
            if !left.is_empty() || Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Against a snapshot taken while it ran, it is not new.
        let during = Leftovers::now();
        let still = Leftovers::now().added_since(&during);
        let _ = dd.kill();
        let _ = dd.wait();
        assert!(
            left.iter().any(|l| l.contains(&format!("dd (pid {pid})"))),
            "{left:?}"
        );
        let after = Leftovers::now().added_since(&before);
        assert!(
            !after.iter().any(|l| l.contains(&format!("pid {pid})"))),
            "{after:?}"
        );
        assert!(
            !still.iter().any(|l| l.contains(&format!("pid {pid})"))),
            "{still:?}"
        );
    }

    #[test]
    fn a_warning_logged_late_pairs_with_its_call_and_never_with_a_later_one() {
        let w = ZkFsyncWarning {
            thread: "SyncThread:0".into(),
            took_ms: 27,
            logged_unix_ms: 10_000,
        };
        // The one seen in CI: a 27 ms call that ended 974 ms before ZooKeeper logged it.
        let late = call(10_000 - 974 - 27, 27.2);
        // A call of the same length that ends after the log line cannot be it.
        let after = call(10_300, 27.0);
        // Nor one whose length does not fit.
        let longer = call(9_900, 60.0);
        let records = vec![after.clone(), longer.clone(), late.clone()];
        assert_eq!(match_zk_warning(&w, &records, 3.0), Some(&late));
        // Of two that fit, the nearer in time.
        let near = call(10_000 - 2 - 27, 27.0);
        let records = vec![late.clone(), near.clone()];
        assert_eq!(match_zk_warning(&w, &records, 3.0), Some(&near));
        assert_eq!(
            match_zk_warnings(std::slice::from_ref(&w), &records, 3.0),
            vec![Some(&near)]
        );
        // More than 2 s late: no pairing.
        let records = vec![call(10_000 - 2_100 - 27, 27.0)];
        assert_eq!(match_zk_warning(&w, &records, 3.0), None);
    }
}
