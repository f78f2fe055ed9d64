//! `cargo xtask bench`: what zkstall costs, as ratios measured side by side in one run
//! (alternating rounds without and with, medians), never as absolute times. Each row is a
//! goal of issue 10; results go to `target/bench/results.json` and a table on stdout.
//!
//! - bystanders of the always-on agent (tracing an idle process: every scheduler and block
//!   probe live): `perf bench sched pipe`; fio's 4 KiB random direct writes from two jobs
//!   (both CPUs busy) on a ram-backed loop device the target does not use, and on the one
//!   its file is on (as the agent runs by default, and with every request traced); the
//!   same collection in bpftrace beside it,
//!   and the floor (`zkstall floor`: on every hook the agent uses, a program that looks up
//!   one map and returns), the hooks' own price that no work in the programs goes below;
//!   and, for each, the BPF time per op itself (the kernel's bpf_stats, one more run with
//!   it on): the programs' own cost apart from the hooks' price, which the ratios'
//!   run-to-run noise (10-20% between rounds of the same load here) hides;
//! - ZooKeeper creates/s (its own client, a real server) with the agent on it;
//! - the userspace pipeline: `report` of a recording of the flood, records/s on one core;
//! - the agent's resident memory, idle and through the flood; recording size per hour, idle
//!   and under ZooKeeper's load; from a stall crossing the threshold to its incident begun
//!   and its verdict logged; records dropped at the flood's request rate.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sh(cmd: &str) -> Result<String> {
    let out = Command::new("sh").args(["-c", cmd]).output()?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9477)
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf.split_once("\r\n\r\n")?.1.to_string())
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// A loop device over a file in /dev/shm (a disk as fast as memory) or /var/tmp, with an
/// ext4 filesystem mounted when asked; all undone on drop.
struct Disk {
    dev: String,
    image: PathBuf,
    mnt: Option<PathBuf>,
}

impl Disk {
    fn new(dir: &str, mib: u64, mount: bool) -> Result<Disk> {
        let image = PathBuf::from(format!(
            "{dir}/zkstall-bench-{}-{}.img",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (mib as u128 * 7919)
        ));
        std::fs::File::create(&image)?.set_len(mib << 20)?;
        let dev = sh(&format!("losetup -f --show {}", image.display()))?;
        let mut d = Disk {
            dev,
            image,
            mnt: None,
        };
        if mount {
            let m = PathBuf::from(format!("{}.mnt", d.image.display()));
            std::fs::create_dir_all(&m)?;
            sh(&format!("mkfs.ext4 -q {}", d.dev))?;
            sh(&format!("mount {} {}", d.dev, m.display()))?;
            d.mnt = Some(m);
        }
        Ok(d)
    }

    fn dir(&self) -> &Path {
        self.mnt.as_deref().expect("mounted")
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Some(m) = &self.mnt {
            let _ = Command::new("umount").arg(m).status();
            let _ = std::fs::remove_dir_all(m);
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// fio's write IOPS for `seconds` of 4 KiB random direct writes, two jobs, on a device or
/// a file.
fn fio(target: &str, seconds: u64) -> Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=flood",
            "--rw=randwrite",
            "--bs=4k",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=32",
            "--numjobs=2",
            "--size=256m",
            "--group_reporting",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--filename={target}"))
        .arg(format!("--runtime={seconds}"))
        .stderr(Stdio::null())
        .output()
        .context("running fio (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("fio failed on {target}");
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("fio's JSON")?;
    v["jobs"][0]["write"]["iops"]
        .as_f64()
        .context("fio's write iops")
}

/// `perf bench sched pipe`: round trips of a token between two processes over pipes (each
/// two context switches, two wakeups and four syscalls). Ops/s.
fn sched_pipe(seconds: u64) -> Result<f64> {
    // Calibrated count: ~60k ops/s here; `-l` makes it a fixed amount of work.
    // Both processes on CPU 0: every op is two context switches on one CPU (unpinned, the
    // pair's placement varies from run to run by 2x here, which drowns any cost).
    let loops = (seconds * 150_000).to_string();
    let out = Command::new("taskset")
        .args(["-c", "0", "perf", "bench", "sched", "pipe", "-l", &loops])
        .output()
        .context("perf bench (cargo xtask bench installs linux-perf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("ops/sec"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("perf bench sched pipe printed no ops/sec")
}

/// A process that holds a file open on `dir` (so its disk is watched) and does nothing.
fn idle_target(dir: &Path) -> Result<Child> {
    Ok(Command::new("sh")
        .args([
            "-c",
            &format!("exec 3>>{}/idle-target; exec sleep 3600", dir.display()),
        ])
        .spawn()?)
}

/// A running `zkstall agent`, its metrics reachable.
struct Agent {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
    _incidents: PathBuf,
}

impl Agent {
    fn start(zkstall: &Path, extra: &[&str]) -> Result<Agent> {
        let port = free_port();
        let incidents = PathBuf::from(format!(
            "/var/tmp/zkstall-bench-incidents-{}-{port}",
            std::process::id()
        ));
        let mut child = Command::new(zkstall)
            .arg("agent")
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--incident-dir")
            .arg(&incidents)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("agent stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let a = Agent {
            child,
            port,
            lines,
            _incidents: incidents,
        };
        a.wait_for("tracing ", Duration::from_secs(30))?;
        Ok(a)
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Ok(l),
                Ok(_) => {}
                Err(_) => bail!("the agent logged no {needle:?} within {limit:?}"),
            }
        }
    }

    fn metrics(&self) -> String {
        http_get(self.port, "/metrics").unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._incidents);
    }
}

/// Reads a child's output until a line says it is attached (`marker`), then drains the rest
/// on a thread. A child that ends or closes its output first is killed.
fn wait_attached(
    child: &mut Child,
    out: impl std::io::Read + Send + 'static,
    marker: &str,
    what: &str,
) -> Result<()> {
    let mut lines = BufReader::new(out).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(marker) => break,
            Some(Ok(_)) => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} ended before it attached");
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}

/// bpftrace doing the per-request part alone: issue time by request, a latency histogram
/// per submitting pid at completion (`dev` 0: every disk).
struct Bpftrace(Child);

impl Bpftrace {
    fn start(prog: &str) -> Result<Bpftrace> {
        let mut child = Command::new("bpftrace")
            .args(["-e", prog])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace (cargo xtask bench installs it)")?;
        let stdout = child.stdout.take().context("bpftrace stdout")?;
        wait_attached(&mut child, stdout, "Attaching", "bpftrace")?;
        // It prints "Attaching" before the probes are live.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Bpftrace(child))
    }

    fn per_pid_latency(kdev: Option<u64>) -> Result<Bpftrace> {
        let f = kdev.map_or(String::new(), |d| format!("/args->dev == {d}/"));
        Self::start(&format!(
            "tracepoint:block:block_rq_issue {f} {{ @s[args->dev, args->sector] = nsecs; @p[args->dev, args->sector] = pid; }} \
             tracepoint:block:block_rq_complete {f} {{ $t = @s[args->dev, args->sector]; if ($t) {{ \
             @us[@p[args->dev, args->sector]] = hist((nsecs - $t) / 1000); \
             delete(@s[args->dev, args->sector]); delete(@p[args->dev, args->sector]); }} }}"
        ))
    }

    fn count_switches() -> Result<Bpftrace> {
        Self::start("tracepoint:sched:sched_switch { @[cpu] = count(); }")
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // bpftrace now and then misses a SIGINT (once here, a bench run sat 12 minutes
        // in its poll loop until a second one came): sent again every 2 s, then SIGKILL.
        for _ in 0..5 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let asked = Instant::now();
            while asked.elapsed() < Duration::from_secs(2) {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `zkstall floor`: a program that looks up one map and returns, on every hook the agent
/// uses. What a bystander loses to it is the hooks' own price here, below which no work in
/// zkstall's programs can go.
struct Floor(Child);

impl Floor {
    fn start(zkstall: &Path) -> Result<Floor> {
        let mut child = Command::new(zkstall)
            .arg("floor")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting zkstall floor")?;
        let stderr = child.stderr.take().context("floor stderr")?;
        wait_attached(&mut child, stderr, "floor attached", "zkstall floor")?;
        Ok(Floor(child))
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn kdev(dev: &str) -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let rdev = std::fs::metadata(dev)?.rdev();
    Ok(((libc::major(rdev) as u64) << 20) | libc::minor(rdev) as u64)
}

/// One measured row.
struct Row {
    name: &'static str,
    with: String,
    unit: &'static str,
    without: f64,
    value: f64,
    /// The goal (a ratio, or a bound) and whether larger is better.
    goal: Option<(f64, bool)>,
    note: String,
    /// The lowest and highest of the rounds' own with/without ratios (each round's pair
    /// measured back to back): how far one round can be trusted.
    spread: Option<(f64, f64)>,
}

impl Row {
    /// A with/without row.
    fn ab(
        name: &'static str,
        with: impl Into<String>,
        unit: &'static str,
        (without, value): (f64, f64),
        goal: Option<(f64, bool)>,
    ) -> Row {
        Row {
            name,
            with: with.into(),
            unit,
            without,
            value,
            goal,
            note: String::new(),
            spread: None,
        }
    }

    fn with_spread(mut self, spread: (f64, f64)) -> Row {
        self.spread = Some(spread);
        self
    }

    fn ratio(&self) -> Option<f64> {
        (self.without > 0.0).then(|| self.value / self.without)
    }

    fn json(&self) -> Value {
        json!({
            "row": self.name,
            "with": self.with,
            "unit": self.unit,
            "without": (self.without > 0.0).then_some(self.without),
            "value": self.value,
            "ratio": self.ratio(),
            "goal": self.goal.map(|(g, _)| g),
            "met": self.goal.map(|(g, up)| {
                let v = self.ratio().unwrap_or(self.value);
                if up { v >= g } else { v <= g }
            }),
            "note": self.note,
            "round_ratios": self.spread.map(|(lo, hi)| json!({"min": lo, "max": hi})),
        })
    }

    fn print(&self) {
        let (shown, goal) = match (self.ratio(), self.goal) {
            (Some(r), Some((g, up))) => (
                format!("{r:.3}"),
                format!("{} {g}", if up { ">=" } else { "<=" }),
            ),
            (Some(r), None) => (format!("{r:.3}"), String::new()),
            (None, Some((g, up))) => (
                format!("{:.1}", self.value),
                format!("{} {g}", if up { ">=" } else { "<=" }),
            ),
            (None, None) => (format!("{:.1}", self.value), String::new()),
        };
        println!(
            "{:<34} {:<34} {:>12} {:>12} {:>9} {:>9}  {} {}",
            self.name,
            self.with,
            if self.without > 0.0 {
                format!("{:.0}", self.without)
            } else {
                "-".into()
            },
            format!("{:.1}", self.value),
            shown,
            goal,
            self.unit,
            match self.spread {
                Some((lo, hi)) => format!("(rounds {lo:.2}-{hi:.2}) {}", self.note),
                None => self.note.clone(),
            }
        );
    }
}

/// Alternating rounds of `load` without and with `attach` (which returns a guard): the
/// medians of each, and the range of the rounds' own ratios.
fn ab<G>(
    rounds: usize,
    mut load: impl FnMut() -> Result<f64>,
    mut attach: impl FnMut() -> Result<G>,
    mut after: impl FnMut(&G),
) -> Result<(f64, f64, (f64, f64))> {
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut ratios: Vec<f64> = Vec::new();
    for _ in 0..rounds {
        let a = load()?;
        let g = attach()?;
        let b = load()?;
        after(&g);
        drop(g);
        if a > 0.0 {
            ratios.push(b / a);
        }
        without.push(a);
        with.push(b);
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    Ok((median(without), median(with), (lo, hi)))
}

/// The floor row of `name`: `load` without and with `zkstall floor`.
fn floor_row(
    zkstall: &Path,
    rounds: usize,
    name: &'static str,
    unit: &'static str,
    load: impl FnMut() -> Result<f64>,
) -> Result<Row> {
    let (a, b, spread) = ab(rounds, load, || Floor::start(zkstall), |_| {})?;
    Ok(Row::ab(
        name,
        "floor: empty programs, same hooks",
        unit,
        (a, b),
        None,
    )
    .with_spread(spread))
}

/// A process measured alongside: its pid, for its CPU time.
trait Pid {
    fn pid(&self) -> u32;
}

impl Pid for Agent {
    fn pid(&self) -> u32 {
        Agent::pid(self)
    }
}

impl Pid for Floor {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Pid for Bpftrace {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// A process's user + system CPU time so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 2..].to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .map_or(0.0, |t| t / hz)
}

/// Every loaded program's run time and run count summed (`bpftool prog show`; bpf_stats
/// on).
fn bpf_totals() -> Result<(f64, f64)> {
    let out = sh("bpftool prog show -j")?;
    let v: Value = serde_json::from_str(&out).context("bpftool's JSON")?;
    let progs = v.as_array().context("bpftool: not a list")?;
    Ok(progs.iter().fold((0.0, 0.0), |(t, n), p| {
        (
            t + p["run_time_ns"].as_f64().unwrap_or(0.0),
            n + p["run_cnt"].as_f64().unwrap_or(0.0),
        )
    }))
}

/// The kernel's own accounting of BPF time, on for as long as it lives (the sysctl as it
/// was restored on drop): it costs two clock reads per program run, so the ratio rows are
/// measured without it.
struct BpfStats(String);

impl BpfStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn on() -> Result<BpfStats> {
        let was = std::fs::read_to_string(Self::PATH)
            .context("kernel.bpf_stats_enabled (kernel >= 5.8)")?;
        std::fs::write(Self::PATH, "1")?;
        Ok(BpfStats(was.trim().to_string()))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}

/// What one unit of a load's work (an op, a request) cost in the kernel's BPF programs
/// and in the tracer's own process.
#[derive(Clone, Copy)]
struct PerOp {
    bpf_ns: f64,
    runs: f64,
    process_ns: f64,
}

/// One run of `load` (a rate per second) with `attach` on and bpf_stats on: every
/// program's time over the run, and the attached process's CPU time, divided by the work
/// done: the rate times `measured` (the seconds the load measures its rate over; None:
/// the run's wall time). A load's start-up (a JVM's) is in the time and not in the work,
/// for every alternative alike.
fn bpf_per_op<G: Pid>(
    mut load: impl FnMut() -> Result<f64>,
    attach: impl FnOnce() -> Result<G>,
    measured: Option<u64>,
) -> Result<PerOp> {
    let _stats = BpfStats::on()?;
    let g = attach()?;
    let (t0, n0) = bpf_totals()?;
    let c0 = cpu_seconds(g.pid());
    let started = Instant::now();
    let rate = load()?;
    let took = started.elapsed().as_secs_f64();
    let (t1, n1) = bpf_totals()?;
    let c1 = cpu_seconds(g.pid());
    drop(g);
    let work = rate * measured.map_or(took, |m| m as f64);
    if work <= 0.0 {
        bail!("no work done while measuring BPF time");
    }
    Ok(PerOp {
        bpf_ns: (t1 - t0) / work,
        runs: (n1 - n0) / work,
        process_ns: (c1 - c0) * 1e9 / work,
    })
}

/// The row of BPF time per op: zkstall's programs beside the floor's (and bpftrace's).
fn bpf_row(
    name: &'static str,
    unit: &'static str,
    agent: PerOp,
    floor: PerOp,
    bpftrace: Option<PerOp>,
) -> Row {
    Row {
        name,
        with: "BPF time per op (bpf_stats)".into(),
        unit,
        without: 0.0,
        value: agent.bpf_ns,
        goal: None,
        note: format!(
            "zkstall agent {:.0} ns in {:.1} runs (+{:.0} ns in its process); floor {:.0} ns in {:.1} runs{}",
            agent.bpf_ns,
            agent.runs,
            agent.process_ns,
            floor.bpf_ns,
            floor.runs,
            bpftrace.map_or(String::new(), |b| format!(
                "; bpftrace {:.0} ns in {:.1} runs (+{:.0} ns in its process)",
                b.bpf_ns, b.runs, b.process_ns
            ))
        ),
        spread: None,
    }
}

/// The BPF-time row of `load`: one run each with the agent (`agent_args`), the floor and,
/// when given, bpftrace. `measured` as in [`bpf_per_op`].
fn bpf_row_of(
    zkstall: &Path,
    (name, unit): (&'static str, &'static str),
    mut load: impl FnMut() -> Result<f64>,
    agent_args: &[&str],
    bpftrace: Option<&dyn Fn() -> Result<Bpftrace>>,
    measured: Option<u64>,
) -> Result<Row> {
    let agent = bpf_per_op(&mut load, || Agent::start(zkstall, agent_args), measured)?;
    let floor = bpf_per_op(&mut load, || Floor::start(zkstall), measured)?;
    let bt = match bpftrace {
        Some(start) => Some(bpf_per_op(&mut load, start, measured)?),
        None => None,
    };
    Ok(bpf_row(name, unit, agent, floor, bt))
}

pub fn run(zkstall: &Path, seconds: u64, rounds: usize, zk: bool) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark attaches eBPF programs and needs root: sudo -E cargo xtask bench");
    }
    let bpftrace = sh("command -v bpftrace").is_ok();
    let mut rows: Vec<Row> = Vec::new();
    println!(
        "zkstall bench: {rounds} alternating rounds of {seconds}s, medians; ratios with/without (1.000 = no cost)"
    );
    println!(
        "{:<34} {:<34} {:>12} {:>12} {:>9} {:>9}  unit",
        "row", "with", "without", "with", "ratio", "goal"
    );
    let shown = |rows: &Vec<Row>| {
        if let Some(r) = rows.last() {
            r.print();
        }
    };

    // 1. The scheduler's hot path.
    // Sparse: room for ZooKeeper's logs and snapshots through every round.
    let home = Disk::new("/var/tmp", 4096, true)?;
    {
        let mut target = idle_target(home.dir())?;
        let pid = target.id().to_string();
        let (a, b, spread) = ab(
            rounds.max(5),
            || sched_pipe(seconds),
            || Agent::start(zkstall, &["--pid", &pid]),
            |_| {},
        )?;
        rows.push(
            Row::ab(
                "perf bench sched pipe",
                "zkstall agent (idle target)",
                "ops/s",
                (a, b),
                Some((0.97, true)),
            )
            .with_spread(spread),
        );
        shown(&rows);
        if bpftrace {
            let (a, b, spread) = ab(
                rounds.max(5),
                || sched_pipe(seconds),
                Bpftrace::count_switches,
                |_| {},
            )?;
            rows.push(
                Row::ab(
                    "perf bench sched pipe",
                    "bpftrace counting sched_switch",
                    "ops/s",
                    (a, b),
                    None,
                )
                .with_spread(spread),
            );
            shown(&rows);
        }
        rows.push(floor_row(
            zkstall,
            rounds.max(5),
            "perf bench sched pipe",
            "ops/s",
            || sched_pipe(seconds),
        )?);
        shown(&rows);
        rows.push(bpf_row_of(
            zkstall,
            ("perf bench sched pipe", "ns/op"),
            || sched_pipe(seconds),
            &["--pid", &pid],
            bpftrace.then_some(&Bpftrace::count_switches),
            None,
        )?);
        shown(&rows);
        let _ = target.kill();
        let _ = target.wait();
    }

    // 2. A flood on a disk the target does not use: counted in the kernel, not traced.
    let other = Disk::new("/dev/shm", 512, false)?;
    {
        let mut target = idle_target(home.dir())?;
        let pid = target.id().to_string();
        let (a, b, spread) = ab(
            rounds,
            || fio(&other.dev, seconds),
            || Agent::start(zkstall, &["--pid", &pid]),
            |_| {},
        )?;
        rows.push(
            Row::ab(
                "fio flood, a disk ZooKeeper does not use",
                "zkstall agent",
                "IOPS",
                (a, b),
                Some((0.97, true)),
            )
            .with_spread(spread),
        );
        shown(&rows);
        if bpftrace {
            let k = kdev(&other.dev)?;
            let (a, b, spread) = ab(
                rounds,
                || fio(&other.dev, seconds),
                || Bpftrace::per_pid_latency(Some(k)),
                |_| {},
            )?;
            rows.push(
                Row::ab(
                    "fio flood, a disk ZooKeeper does not use",
                    "bpftrace per-pid latency histogram",
                    "IOPS",
                    (a, b),
                    None,
                )
                .with_spread(spread),
            );
            shown(&rows);
        }
        rows.push(floor_row(
            zkstall,
            rounds,
            "fio flood, a disk ZooKeeper does not use",
            "IOPS",
            || fio(&other.dev, seconds),
        )?);
        shown(&rows);
        let k = kdev(&other.dev)?;
        rows.push(bpf_row_of(
            zkstall,
            ("fio flood, a disk ZooKeeper does not use", "ns/request"),
            || fio(&other.dev, seconds),
            &["--pid", &pid],
            bpftrace.then_some(&|| Bpftrace::per_pid_latency(Some(k))),
            Some(seconds),
        )?);
        shown(&rows);
        let _ = target.kill();
        let _ = target.wait();
    }
    drop(other);

    // 3. A flood on the target's own disk: as the agent runs by default (only the requests
    // around the target's calls sent one by one: an idle target has none, the flood is
    // summed in the kernel), then with every request sent one by one (`--requests all`,
    // trace's default), the worst case for drops and memory.
    let own = Disk::new("/dev/shm", 768, true)?;
    let flood_file = own.dir().join("flood").display().to_string();
    let mut flood_rate: f64 = 0.0;
    let mut flood_drops: f64 = 0.0;
    let mut flood_rss = 0u64;
    let mut flood_records: f64 = 0.0;
    {
        let mut target = idle_target(own.dir())?;
        let pid = target.id().to_string();
        let (a, b, spread) = ab(
            rounds,
            || fio(&flood_file, seconds),
            || Agent::start(zkstall, &["--pid", &pid]),
            |_| {},
        )?;
        rows.push(Row {
            name: "fio flood, ZooKeeper's own disk",
            with: "zkstall agent (requests around calls, its default)".into(),
            unit: "IOPS",
            without: a,
            value: b,
            goal: Some((0.95, true)),
            note: String::new(),
            spread: Some(spread),
        });
        shown(&rows);
        let all = ["--pid", pid.as_str(), "--requests", "all"];
        let (a, b, spread) = ab(
            rounds,
            || {
                let r = fio(&flood_file, seconds);
                if let Ok(v) = &r {
                    flood_rate = flood_rate.max(*v);
                }
                r
            },
            || Agent::start(zkstall, &all),
            |agent| {
                let m = agent.metrics();
                flood_drops += metric(&m, "zkstall_records_dropped_total");
                flood_records += metric(&m, "zkstall_records_total ");
            },
        )?;
        // The agent's resident memory, sampled through one more flood.
        {
            let agent = Agent::start(zkstall, &all)?;
            let apid = agent.pid();
            let f2 = flood_file.clone();
            let h = std::thread::spawn(move || fio(&f2, seconds));
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(seconds) {
                flood_rss = flood_rss.max(rss_of(apid));
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = h.join();
        }
        rows.push(Row {
            name: "fio flood, ZooKeeper's own disk",
            with: "zkstall agent --requests all (every request)".into(),
            unit: "IOPS",
            without: a,
            value: b,
            goal: None,
            note: format!("{:.0} records, {:.0} dropped", flood_records, flood_drops),
            spread: Some(spread),
        });
        shown(&rows);
        if bpftrace {
            let k = kdev(&own.dev)?;
            let (a, b, spread) = ab(
                rounds,
                || fio(&flood_file, seconds),
                || Bpftrace::per_pid_latency(Some(k)),
                |_| {},
            )?;
            rows.push(
                Row::ab(
                    "fio flood, ZooKeeper's own disk",
                    "bpftrace per-pid latency histogram",
                    "IOPS",
                    (a, b),
                    None,
                )
                .with_spread(spread),
            );
            shown(&rows);
        }
        rows.push(floor_row(
            zkstall,
            rounds,
            "fio flood, ZooKeeper's own disk",
            "IOPS",
            || fio(&flood_file, seconds),
        )?);
        shown(&rows);
        let k = kdev(&own.dev)?;
        rows.push(bpf_row_of(
            zkstall,
            ("fio flood, ZooKeeper's own disk", "ns/request"),
            || fio(&flood_file, seconds),
            &["--pid", &pid],
            bpftrace.then_some(&|| Bpftrace::per_pid_latency(Some(k))),
            Some(seconds),
        )?);
        shown(&rows);
        let _ = target.kill();
        let _ = target.wait();
    }
    rows.push(Row {
        name: "records dropped at the flood's rate",
        with: format!(
            "{:.0} requests/s, ZooKeeper's disk, --requests all",
            flood_rate
        ),
        unit: "records",
        without: 0.0,
        value: flood_drops,
        goal: Some((0.0, false)),
        note: String::new(),
        spread: None,
    });
    shown(&rows);
    rows.push(Row {
        name: "agent RSS through the flood",
        with: "zkstall agent --requests all, --max-memory 64MiB".into(),
        unit: "MiB",
        without: 0.0,
        value: flood_rss as f64 / (1 << 20) as f64,
        goal: Some((64.0, false)),
        note: String::new(),
        spread: None,
    });
    shown(&rows);

    // 4. The userspace pipeline alone: recordings of the flood, reported on one core. The
    // rate is the slope between a short and a long one (start-up, loading kernel symbols,
    // is the same for both and not the pipeline's).
    {
        let mut points = Vec::new();
        for secs in [1, seconds * 2] {
            let mut target = idle_target(own.dir())?;
            let rec = PathBuf::from(format!(
                "/var/tmp/zkstall-bench-{}-{secs}.zst",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&rec);
            let mut tracer = Command::new(zkstall)
                .args(["trace", "--threshold", "10s", "--format", "json", "--pid"])
                .arg(target.id().to_string())
                .arg("--output")
                .arg(&rec)
                .arg("--duration")
                .arg(format!("{}s", secs + 2))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_secs(1));
            let _ = fio(&flood_file, secs);
            let _ = tracer.wait();
            let _ = target.kill();
            let _ = target.wait();
            let t = Instant::now();
            let out = Command::new("taskset")
                .args(["-c", "0"])
                .arg(zkstall)
                .args(["report", "--format", "json"])
                .arg(&rec)
                .output()?;
            let took = t.elapsed().as_secs_f64();
            let text = String::from_utf8_lossy(&out.stdout);
            let events = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["type"] == "summary")
                .and_then(|s| s["events"].as_f64())
                .unwrap_or(0.0);
            let size = std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&rec);
            points.push((events, took, size));
        }
        let ((e0, t0, _), (e1, t1, size)) = (points[0], points[1]);
        let rate = if t1 > t0 { (e1 - e0) / (t1 - t0) } else { 0.0 };
        rows.push(Row {
            name: "userspace pipeline (report)",
            with: "one core, recordings of the flood".into(),
            unit: "M records/s",
            without: 0.0,
            value: rate / 1e6,
            goal: Some((2.0, true)),
            note: format!(
                "{e1:.0} records in {t1:.2} s ({} MiB), {e0:.0} in {t0:.2} s",
                size >> 20
            ),
            spread: None,
        });
        shown(&rows);
    }
    drop(own);

    // 5. A real ZooKeeper: creates/s, idle RSS, recording sizes, crossing latency.
    if zk {
        zookeeper_rows(zkstall, seconds, rounds, &mut rows, &home)?;
    }

    let results = json!({
        "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ").unwrap_or_default(),
        "kernel": sh("uname -r").unwrap_or_default(),
        "cpus": sh("nproc").unwrap_or_default(),
        "seconds": seconds,
        "rounds": rounds,
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    let dir = Path::new("target/bench");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)?)?;
    println!("\nresults: {}", path.display());
    let unmet: Vec<&Row> = rows
        .iter()
        .filter(|r| r.json()["met"] == Value::Bool(false))
        .collect();
    if !unmet.is_empty() {
        println!(
            "goals not met: {}",
            unmet
                .iter()
                .map(|r| format!("{} ({})", r.name, r.with))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(())
}

/// Debian's ZooKeeper on a loop-mounted ext4, with its own client (ZkLoad) driving creates.
struct Zk {
    child: Child,
    port: u16,
    dir: PathBuf,
}

const ZK_CLASSPATH: &str =
    "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";

impl Zk {
    fn start(dir: &Path) -> Result<Zk> {
        let port = free_port();
        for d in ["data", "log"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let cfg = dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={0}/data\ndataLogDir={0}/log\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\n",
                dir.display()
            ),
        )?;
        let log4j = dir.join("log4j.properties");
        std::fs::write(
            &log4j,
            "log4j.rootLogger=WARN, CONSOLE\nlog4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\nlog4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\nlog4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t] - %m%n\n",
        )?;
        let out = std::fs::File::create(dir.join("zookeeper.out"))?;
        let child = Command::new("java")
            .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
            .args([
                // Room for every round's znodes (ZkLoad never deletes its ~600-byte nodes:
                // ~300k per row here), so GC pressure does not grow round by round.
                "-Xmx1g",
                "-cp",
                ZK_CLASSPATH,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting ZooKeeper (cargo xtask setup installs it)")?;
        let zk = Zk {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zk.ruok() {
            if Instant::now() > deadline {
                bail!(
                    "ZooKeeper did not start (see {}/zookeeper.out)",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(zk)
    }

    fn ruok(&self) -> bool {
        use std::io::Write as _;
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

    /// Creates/s over `seconds`, with ZooKeeper's own Java client (16 in flight).
    fn creates(&self, seconds: u64) -> Result<f64> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/java/ZkLoad.java");
        let out = Command::new("java")
            .args(["-cp", ZK_CLASSPATH])
            .arg(src)
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(seconds.to_string())
            .output()?;
        let n: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| {
                format!(
                    "ZkLoad's count (it said: {})",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                )
            })?;
        Ok(n / seconds as f64)
    }

    fn load_in_background(&self, seconds: u64) -> Result<Child> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/java/ZkLoad.java");
        Ok(Command::new("java")
            .args(["-cp", ZK_CLASSPATH])
            .arg(src)
            .arg(format!("127.0.0.1:{}", self.port))
            .arg(seconds.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }
}

impl Drop for Zk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
        let _ = std::fs::remove_dir_all(self.dir.join("log"));
    }
}

fn zookeeper_rows(
    zkstall: &Path,
    seconds: u64,
    rounds: usize,
    rows: &mut Vec<Row>,
    home: &Disk,
) -> Result<()> {
    let secs = seconds.max(8);
    // A fresh server per row (same data size at each row's start), warmed up (the
    // server's JIT, the page cache): with a 3 s warm-up the first round's creates/s were
    // half the later rounds' here.
    let fresh = || -> Result<Zk> {
        let zk = Zk::start(&home.dir().join("zk"))?;
        let _ = zk.creates(secs * 2)?;
        Ok(zk)
    };
    let zk = fresh()?;
    let (a, b, spread) = ab(
        rounds.max(5),
        || zk.creates(secs),
        || Agent::start(zkstall, &[]),
        |_| {},
    )?;
    rows.push(
        Row::ab(
            "ZooKeeper creates/s",
            "zkstall agent on it",
            "creates/s",
            (a, b),
            Some((0.99, true)),
        )
        .with_spread(spread),
    );
    rows.last().map(Row::print);
    drop(zk);
    let zk = fresh()?;
    rows.push(floor_row(
        zkstall,
        rounds.max(5),
        "ZooKeeper creates/s",
        "creates/s",
        || zk.creates(secs),
    )?);
    rows.last().map(Row::print);
    // What each create costs in BPF (every program on the host: the server's and the
    // client's threads, their syscalls, fsyncs and requests) and in the agent.
    rows.push(bpf_row_of(
        zkstall,
        ("ZooKeeper creates/s", "ns/create"),
        || zk.creates(secs),
        &[],
        None,
        Some(secs),
    )?);
    rows.last().map(Row::print);
    // A fresh server again for the rows below, as for each row above (these two runs
    // added their znodes).
    drop(zk);
    let zk = fresh()?;

    // Idle RSS of the agent on a quiet ZooKeeper.
    {
        let agent = Agent::start(zkstall, &[])?;
        std::thread::sleep(Duration::from_secs(secs));
        rows.push(Row {
            name: "agent RSS, ZooKeeper idle",
            with: "zkstall agent".into(),
            unit: "MiB",
            without: 0.0,
            value: rss_of(agent.pid()) as f64 / (1 << 20) as f64,
            goal: Some((64.0, false)),
            note: String::new(),
            spread: None,
        });
        rows.last().map(Row::print);
    }

    // Recording size per hour, idle and under load.
    for (label, loaded) in [("idle", false), ("under ZkLoad", true)] {
        let rec = PathBuf::from(format!(
            "/var/tmp/zkstall-bench-rec-{}-{loaded}.zst",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&rec);
        let mut load = if loaded {
            Some(zk.load_in_background(secs + 5)?)
        } else {
            None
        };
        std::thread::sleep(Duration::from_secs(if loaded { 3 } else { 0 }));
        let status = Command::new(zkstall)
            .args(["trace", "--format", "json", "--output"])
            .arg(&rec)
            .arg("--duration")
            .arg(format!("{secs}s"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if let Some(l) = &mut load {
            let _ = l.wait();
        }
        let size = std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_file(&rec);
        rows.push(Row {
            name: "recording size per hour",
            with: format!("zkstall trace --output, ZooKeeper {label}"),
            unit: "MiB/h",
            without: 0.0,
            value: size as f64 * 3600.0 / secs as f64 / (1 << 20) as f64,
            goal: None,
            note: if status.success() {
                String::new()
            } else {
                "trace failed".into()
            },
            spread: None,
        });
        rows.last().map(Row::print);
    }
    drop(zk);

    // From a stall crossing the threshold to its incident begun and its verdict logged:
    // the agent's first line of the stall says how long the call had run by then.
    {
        let outer = Disk::new("/var/tmp", 512, true)?;
        let img = outer.dir().join("inner.img");
        std::fs::File::create(&img)?.set_len(128 << 20)?;
        let inner_dev = sh(&format!("losetup -f --show {}", img.display()))?;
        sh(&format!("mkfs.ext4 -q {inner_dev}"))?;
        let inner_mnt = PathBuf::from(format!("{}.inner", img.display()));
        std::fs::create_dir_all(&inner_mnt)?;
        sh(&format!("mount {inner_dev} {}", inner_mnt.display()))?;
        let cleanup = |_: ()| {
            let _ = Command::new("fsfreeze")
                .arg("-u")
                .arg(outer.dir())
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("umount").arg(&inner_mnt).status();
            let _ = Command::new("losetup").args(["-d", &inner_dev]).status();
        };
        let result = (|| -> Result<Vec<f64>> {
            let mut work = Command::new(zkstall)
                .args([
                    "workload",
                    "--calls",
                    "1000000",
                    "--interval",
                    "10ms",
                    "--syscalls",
                    "fdatasync",
                    "--no-wait",
                    "--dir",
                ])
                .arg(inner_mnt.join("w"))
                .stdout(Stdio::null())
                .spawn()?;
            let threshold_ms = 200.0;
            let agent = Agent::start(
                zkstall,
                &[
                    "--pid",
                    &work.id().to_string(),
                    "--threshold",
                    "200ms",
                    "--post",
                    "1s",
                ],
            )?;
            let mut lat = Vec::new();
            for _ in 0..rounds {
                std::thread::sleep(Duration::from_secs(1));
                sh(&format!("fsfreeze -f {}", outer.dir().display()))?;
                let line = agent.wait_for("stall in progress: ", Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(300));
                sh(&format!("fsfreeze -u {}", outer.dir().display()))?;
                let line = line?;
                // "stall in progress: fdatasync 262 ms so far by ..."
                let so_far: f64 = line
                    .split("stall in progress: ")
                    .nth(1)
                    .and_then(|r| r.split(" ms so far").next())
                    .and_then(|r| r.split_whitespace().last())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                lat.push(so_far - threshold_ms);
                let _ = agent.wait_for("incident written", Duration::from_secs(20));
            }
            let _ = work.kill();
            let _ = work.wait();
            Ok(lat)
        })();
        cleanup(());
        let lat = result?;
        rows.push(Row {
            name: "stall crossing -> incident + verdict",
            with: "zkstall agent, --threshold 200ms".into(),
            unit: "ms",
            without: 0.0,
            value: median(lat.clone()),
            goal: Some((250.0, false)),
            note: format!("rounds: {lat:.0?}"),
            spread: None,
        });
        rows.last().map(Row::print);
    }
    Ok(())
}
