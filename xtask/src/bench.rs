//! `cargo xtask bench`: what zkstall costs processes it is not tracing. Two bystander
//! loads run alternately without and with `zkstall trace --events` attached (tracing an
//! idle process, so every device-wide and scheduler probe is live), and the result is a
//! ratio measured in one run, never an absolute time.
//!
//! Then a flood at saturation: fio's 4 KiB random direct writes on a loop device from two
//! jobs (both CPUs busy), without zkstall, with zkstall watching that disk request by
//! request (`--disk`), with zkstall only counting it (a neighbour disk), with the same
//! per-request collection in bpftrace, and (`ZKSTALL_BENCH_BASELINE=<binary>`) with another
//! zkstall build. Reported: IOPS ratios, and what each zkstall run says it saw, paired,
//! lost and shed.

use std::{
    io::{BufRead as _, BufReader},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Round trips of one byte between two threads over pipes: every one is two context
/// switches and two wakeups, the hot path of the scheduler probes.
fn ctxswitch(for_: Duration) -> Result<f64> {
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    // SAFETY: valid arrays for pipe(2).
    if unsafe { libc::pipe(a.as_mut_ptr()) } != 0 || unsafe { libc::pipe(b.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let (a_r, a_w, b_r, b_w) = (a[0], a[1], b[0], b[1]);
    let echo = std::thread::spawn(move || {
        let mut byte = 0u8;
        loop {
            // SAFETY: valid fds and a one-byte buffer.
            let n = unsafe { libc::read(a_r, (&mut byte as *mut u8).cast(), 1) };
            if n != 1 || byte == 0xff {
                break;
            }
            // SAFETY: as above.
            unsafe { libc::write(b_w, (&byte as *const u8).cast(), 1) };
        }
    });
    let start = Instant::now();
    let mut trips = 0u64;
    let mut byte = 1u8;
    while start.elapsed() < for_ {
        for _ in 0..256 {
            // SAFETY: valid fds and a one-byte buffer.
            unsafe {
                libc::write(a_w, (&byte as *const u8).cast(), 1);
                libc::read(b_r, (&mut byte as *mut u8).cast(), 1);
            }
            trips += 1;
        }
    }
    let rate = trips as f64 / start.elapsed().as_secs_f64();
    byte = 0xff;
    // SAFETY: as above.
    unsafe { libc::write(a_w, (&byte as *const u8).cast(), 1) };
    let _ = echo.join();
    for fd in [a_r, a_w, b_r, b_w] {
        // SAFETY: fds owned here.
        unsafe { libc::close(fd) };
    }
    Ok(rate)
}

/// 4 KiB O_DIRECT writes at scattered offsets of a 64 MiB file: one block request each,
/// the hot path of the block probes.
fn smallio(dir: &Path, for_: Duration) -> Result<f64> {
    const SIZE: u64 = 64 << 20;
    let path = dir.join("zkstall-bench-smallio");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.set_len(SIZE)?;
    // O_DIRECT needs an aligned buffer.
    let layout = std::alloc::Layout::from_size_align(4096, 4096)?;
    // SAFETY: non-zero size layout; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    let start = Instant::now();
    let mut ops = 0u64;
    let mut off = 0u64;
    while start.elapsed() < for_ {
        off = (off + 7 * 4096 + 4096 * 131) % SIZE;
        // SAFETY: aligned 4 KiB buffer, open fd.
        let n = unsafe { libc::pwrite(f.as_raw_fd(), buf.cast(), 4096, off as i64) };
        if n != 4096 {
            bail!("pwrite: {}", std::io::Error::last_os_error());
        }
        ops += 1;
    }
    let rate = ops as f64 / start.elapsed().as_secs_f64();
    // SAFETY: allocated above with the same layout.
    unsafe { std::alloc::dealloc(buf, layout) };
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

/// A named load: (name, unit, run it once and return its rate).
type Load = (&'static str, &'static str, Box<dyn Fn() -> Result<f64>>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A loop device over a sparse file in /var/tmp, detached on drop.
struct Loop {
    dev: String,
    image: std::path::PathBuf,
}

impl Loop {
    fn new(mib: u64) -> Result<Loop> {
        let image = std::path::PathBuf::from(format!(
            "/var/tmp/zkstall-bench-flood-{}.img",
            std::process::id()
        ));
        let f = std::fs::File::create(&image)?;
        f.set_len(mib << 20)?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .context("losetup")?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Loop { dev, image })
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// fio's write IOPS for `seconds` of 4 KiB random direct writes on `dev`, two jobs.
fn fio(dev: &str, seconds: u64) -> Result<f64> {
    let out = Command::new("fio")
        .args([
            "--name=flood",
            "--rw=randwrite",
            "--bs=4k",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=32",
            "--numjobs=2",
            "--group_reporting",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--filename={dev}"))
        .arg(format!("--runtime={seconds}"))
        .stderr(Stdio::null())
        .output()
        .context("running fio (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("fio failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("fio's JSON")?;
    v["jobs"][0]["write"]["iops"]
        .as_f64()
        .context("fio's write iops")
}

/// `zkstall trace` attached to an idle process; stopped (SIGINT) by `stop`, which returns
/// its summary line.
struct Tracer {
    child: Child,
    idle: Child,
    out: std::thread::JoinHandle<Option<serde_json::Value>>,
}

impl Tracer {
    fn start(zkstall: &Path, extra: &[&str]) -> Result<Tracer> {
        let idle = Command::new("sleep").arg("3600").spawn()?;
        let mut child = Command::new(zkstall)
            .args(["trace", "--format", "json", "--threshold", "10s"])
            .args(extra)
            .arg("--pid")
            .arg(idle.id().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("tracer stdout")?;
        let out = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
                // Only the summary is parsed: --events prints a line per request.
                .filter(|l| l.starts_with("{\"type\":\"summary\""))
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .filter(|v| v["type"] == "summary")
                .last()
        });
        let stderr = child.stderr.take().context("tracer stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("tracing 1 process") => break,
                Some(Ok(_)) => {}
                _ => bail!("zkstall trace ended before it was ready"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Tracer { child, idle, out })
    }

    fn stop(mut self) -> Option<serde_json::Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = self.idle.kill();
        let _ = self.idle.wait();
        self.out.join().ok().flatten()
    }
}

/// bpftrace doing what `--disk` does per request: issue time by request, latency at
/// completion (a histogram rather than records, which favours bpftrace).
struct Bpftrace(Child);

impl Bpftrace {
    fn start(dev: &str) -> Result<Bpftrace> {
        let meta = std::fs::metadata(dev)?;
        use std::os::unix::fs::MetadataExt as _;
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev), libc::minor(rdev));
        let kdev = (major << 20) | minor;
        let prog = format!(
            "tracepoint:block:block_rq_issue /args->dev == {kdev}/ {{ @s[args->sector] = nsecs; }} \
             tracepoint:block:block_rq_complete /args->dev == {kdev} && @s[args->sector]/ {{ \
             @lat = hist((nsecs - @s[args->sector]) / 1000); delete(@s[args->sector]); }}"
        );
        let mut child = Command::new("bpftrace")
            .args(["-e", &prog])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting bpftrace (cargo xtask bench installs it)")?;
        let stdout = child.stdout.take().context("bpftrace stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("Attaching") => break,
                Some(Ok(_)) => {}
                _ => bail!("bpftrace ended before it attached"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        // It prints "Attaching" before the probes are live.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Bpftrace(child))
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

fn counters(s: &Option<serde_json::Value>) -> String {
    let Some(s) = s else {
        return "no summary".into();
    };
    let n = |k: &str| s[k].as_u64().map_or("-".to_string(), |v| v.to_string());
    format!(
        "events {} dropped {} shed {} io_watched {} io_unmatched {} io_other_disks {}",
        n("events"),
        n("dropped"),
        s["shed_by_reader"]
            .as_u64()
            .or(s["history_shed"].as_u64())
            .map_or("-".to_string(), |v| v.to_string()),
        n("io_watched"),
        n("io_unmatched"),
        n("io_other_disks")
    )
}

/// The flood at saturation.
pub fn flood(zkstall: &Path, seconds: u64, rounds: usize) -> Result<()> {
    let lo = Loop::new(1024)?;
    let dev = lo.dev.clone();
    println!(
        "\nflood at saturation: fio 4 KiB random direct writes on {dev} (2 jobs, iodepth 32), {rounds} alternating rounds of {seconds}s; IOPS ratios against no tracing"
    );
    let baseline = std::env::var_os("ZKSTALL_BENCH_BASELINE").map(std::path::PathBuf::from);
    let bpftrace = Command::new("sh")
        .args(["-c", "command -v bpftrace"])
        .output()
        .is_ok_and(|o| o.status.success());
    let disk_arg = ["--disk", dev.as_str()];
    let mut modes: Vec<(String, Option<(std::path::PathBuf, Vec<&str>)>, bool)> = vec![
        (
            "zkstall --disk (every request)".into(),
            Some((zkstall.to_path_buf(), disk_arg.to_vec())),
            false,
        ),
        (
            "zkstall (disk only counted)".into(),
            Some((zkstall.to_path_buf(), vec![])),
            false,
        ),
    ];
    if bpftrace {
        modes.push(("bpftrace issue->complete".into(), None, true));
    } else {
        println!("(bpftrace not installed: its comparison is left out)");
    }
    if let Some(b) = &baseline {
        modes.push((
            format!("baseline {}", b.display()),
            Some((b.clone(), vec![])),
            false,
        ));
    }
    println!(
        "{:<36} {:>10} {:>10} {:>7}  what zkstall saw (last round)",
        "with", "without", "with", "ratio"
    );
    for (name, tracer, is_bpftrace) in &modes {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        let mut seen = None;
        for _ in 0..rounds {
            without.push(fio(&dev, seconds)?);
            if *is_bpftrace {
                let b = Bpftrace::start(&dev)?;
                with.push(fio(&dev, seconds)?);
                drop(b);
            } else if let Some((bin, extra)) = tracer {
                let t = Tracer::start(bin, extra)?;
                with.push(fio(&dev, seconds)?);
                seen = t.stop();
            }
        }
        let (a, b) = (median(without), median(with));
        println!(
            "{name:<36} {a:>10.0} {b:>10.0} {:>7.3}  {}",
            b / a,
            if *is_bpftrace {
                String::new()
            } else {
                counters(&seen)
            }
        );
    }
    Ok(())
}

pub fn run(zkstall: &Path, seconds: u64, rounds: usize) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark attaches eBPF programs and needs root: sudo -E cargo xtask bench");
    }
    let dur = Duration::from_secs(seconds);
    let dir = Path::new("/var/tmp");
    let loads: [Load; 2] = [
        (
            "ctxswitch",
            "round trips/s",
            Box::new(move || ctxswitch(dur)),
        ),
        (
            "smallio",
            "4 KiB O_DIRECT writes/s",
            Box::new(move || smallio(dir, dur)),
        ),
    ];
    println!(
        "bystander cost of zkstall tracing an idle process ({rounds} alternating rounds of {seconds}s each; ratios of medians, 1.000 = no cost)"
    );
    println!(
        "{:<10} {:<16} {:>12} {:>12} {:>8}  unit",
        "load", "zkstall", "without", "with", "ratio"
    );
    let baseline = std::env::var_os("ZKSTALL_BENCH_BASELINE").map(std::path::PathBuf::from);
    let mut modes: Vec<(&str, &Path, &[&str])> = vec![
        ("trace", zkstall, &[]),
        ("trace --events", zkstall, &["--events"]),
    ];
    if let Some(b) = &baseline {
        modes.push(("baseline trace", b.as_path(), &[]));
    }
    for (name, unit, load) in &loads {
        for (mode, bin, extra) in &modes {
            let (mut without, mut with) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                without.push(load()?);
                let tracer = Tracer::start(bin, extra)?;
                with.push(load()?);
                tracer.stop();
            }
            let (a, b) = (median(without), median(with));
            println!(
                "{name:<10} {mode:<16} {a:>12.0} {b:>12.0} {:>8.3}  {unit}",
                b / a
            );
        }
    }
    flood(zkstall, seconds, rounds)
}
