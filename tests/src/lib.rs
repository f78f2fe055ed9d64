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
