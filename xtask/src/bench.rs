//! `cargo xtask bench`: what zkstall costs processes it is not tracing. Two bystander
//! loads run alternately without and with `zkstall trace --events` attached (tracing an
//! idle process, so every device-wide and scheduler probe is live), and the result is a
//! ratio measured in one run, never an absolute time.

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

/// A tracer attached to an idle process, stopped (SIGINT) on drop.
struct Tracer {
    child: Child,
    idle: Child,
}

impl Tracer {
    fn start(zkstall: &Path, extra: &[&str]) -> Result<Tracer> {
        let idle = Command::new("sleep").arg("3600").spawn()?;
        let mut child = Command::new(zkstall)
            .args(["trace", "--format", "json", "--threshold", "10s"])
            .args(extra)
            .arg("--pid")
            .arg(idle.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("tracer stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("tracing 1 process") => break,
                Some(Ok(_)) => {}
                _ => bail!("zkstall trace ended before it was ready"),
            }
        }
        // Keep draining stderr so the tracer never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Ok(Tracer { child, idle })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let _ = self.idle.kill();
        let _ = self.idle.wait();
    }
}

/// A named load: (name, unit, run it once and return its rate).
type Load = (&'static str, &'static str, Box<dyn Fn() -> Result<f64>>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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
    let modes: [(&str, &[&str]); 2] = [("trace", &[]), ("trace --events", &["--events"])];
    for (name, unit, load) in &loads {
        for (mode, extra) in &modes {
            let (mut without, mut with) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                without.push(load()?);
                let tracer = Tracer::start(zkstall, extra)?;
                with.push(load()?);
                drop(tracer);
            }
            let (a, b) = (median(without), median(with));
            println!(
                "{name:<10} {mode:<16} {a:>12.0} {b:>12.0} {:>8.3}  {unit}",
                b / a
            );
        }
    }
    Ok(())
}
