//! `zkstall agent`, always on: started before ZooKeeper, it finds it (and finds it again
//! after a restart), writes an incident when ZooKeeper's disk stops that `report`
//! explains as the stall ZooKeeper logged, serves metrics that Debian's Prometheus scrapes
//! and promtool accepts, stays under its memory bound through a minute-long flood, and
//! stops cleanly on SIGTERM. The rootless tests check the shipped Prometheus rules and
//! systemd unit with their own tools.

use std::{
    io::{Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;
use zkstall_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 request to 127.0.0.1:`port`: (status, body).
fn http(method: &str, port: u16, path: &str, accept: Option<&str>) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}Content-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A running `zkstall agent`, its log lines collected.
struct Agent {
    proc: Proc,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    port: u16,
}

impl Agent {
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let port = free_port();
        let incidents = dir.join("incidents");
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "agent",
            "--metrics-addr",
            &addr,
            "--incident-dir",
            incidents.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut c = zkstall(&args);
        c.stdout(Stdio::null());
        let mut proc = Proc::spawn("zkstall agent", &mut c);
        let lines = lines_of(proc.child.stderr.take().expect("stderr"));
        let mut a = Agent {
            proc,
            lines,
            seen: Vec::new(),
            port,
        };
        a.wait_for("tracing ", Duration::from_secs(30));
        a
    }

    /// Waits for a log line containing `needle` (seen before, or new); returns it.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    eprintln!("agent: {l}");
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "the agent logged no line containing {needle:?} within {limit:?}; it logged: {:#?}",
                    self.seen
                ),
            }
        }
    }

    fn metrics(&self) -> String {
        let (status, body) = http("GET", self.port, "/metrics", None).expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The value of one sample (`name{labels}` as printed), if present.
    fn sample(&self, prefix: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// SIGTERM; returns how long it took to exit, and checks it exited cleanly.
    fn stop(mut self) -> (Duration, Vec<String>) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.proc.pid() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        let st = self.proc.wait_for_exit(Duration::from_secs(30));
        let took = t.elapsed();
        self.seen.extend(self.lines.try_iter());
        assert!(st.success(), "agent exit: {st}; {:#?}", self.seen);
        (took, self.seen)
    }
}

/// A zkstall recording read back with `report --format json`.
fn report(path: &Path) -> Vec<Value> {
    let out = zkstall(&["report", path.to_str().unwrap(), "--format", "json"])
        .output()
        .expect("zkstall report");
    assert!(
        out.status.success(),
        "report {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&String::from_utf8_lossy(&out.stdout))
}

/// Debian's Prometheus server on loopback, scraping the agent every second.
struct Prometheus {
    proc: Proc,
    port: u16,
    _dir: RemoveOnDrop,
}

impl Prometheus {
    fn start(agent_port: u16) -> Prometheus {
        let dir = scratch_dir("zkstall-prom");
        let port = free_port();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: zkstall\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_until("Prometheus answers", Duration::from_secs(60), || {
            http("GET", port, "/-/ready", None).is_some_and(|(s, _)| s == 200)
        });
        Prometheus {
            proc,
            port,
            _dir: RemoveOnDrop(dir),
        }
    }

    /// The result vector of an instant query.
    fn query(&self, q: &str) -> Vec<Value> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Some((200, body)) = http(
            "GET",
            self.port,
            &format!("/api/v1/query?query={enc}"),
            None,
        ) else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.proc.child.kill();
    }
}

/// Needs a tool from the project's set-up: fails under CI without it, else skips.
fn have_tool(tool: &str, test: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} needs {tool}, which `cargo xtask setup` installs");
    }
    eprintln!("SKIPPED {test}: {tool} is not installed (run `cargo xtask setup`)");
    false
}

fn incident_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn an_agent_started_before_zookeeper_explains_its_stopped_disk_in_an_incident_prometheus_scrapes_and_a_restart_is_traced_again()
 {
    let test = "an_agent_started_before_zookeeper_explains_its_stopped_disk_in_an_incident_prometheus_scrapes_and_a_restart_is_traced_again";
    if !can_run_root_tests(test) || !have_tool("prometheus", test) || !have_tool("promtool", test) {
        return;
    }
    let _serial = serial(&SERIAL);
    let work = scratch_dir("zkstall-agent");
    let _cleanup = RemoveOnDrop(work.clone());
    let disk = StoppableDisk::new(512);
    let data = Mount::ext4(&disk.inner.dev);

    // The agent first: no ZooKeeper yet, so it waits.
    let mut agent = Agent::start(
        &work,
        &["--threshold", "500ms", "--window", "60s", "--post", "2s"],
    );
    agent.wait_for("waiting for one", Duration::from_secs(10));
    assert_eq!(agent.sample("zkstall_targets "), Some(0.0));

    // ZooKeeper starts: found within seconds.
    let mut zk = ZooKeeper::start(&data.dir, 50, &[]);
    let zk_pid = zk.proc.pid();
    agent.wait_for(
        &format!("found ZooKeeper {zk_pid}"),
        Duration::from_secs(15),
    );
    let prom = Prometheus::start(agent.port);

    // Its disk stops for 3 s under a write load.
    let mut load = zk.load(8);
    std::thread::sleep(Duration::from_secs(3));
    {
        let mut freeze = disk.stop();
        std::thread::sleep(Duration::from_secs(3));
        freeze.thaw();
    }
    let _ = load.wait_for_exit(Duration::from_secs(60));
    let line = agent.wait_for("incident written: ", Duration::from_secs(30));
    let verdict_line = agent.wait_for("stall: ", Duration::from_secs(5));
    assert!(verdict_line.contains("device_stall"), "{verdict_line}");
    let path = PathBuf::from(
        line.split("incident written: ")
            .nth(1)
            .unwrap()
            .split(" (")
            .next()
            .unwrap(),
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());

    // The incident, read back anywhere, explains the stall ZooKeeper logged.
    let records = report(&path);
    let calls: Vec<Value> = records
        .iter()
        .filter(|r| {
            r["type"] == "fsync" && r.get("in_progress").is_none() && r.get("unfinished").is_none()
        })
        .cloned()
        .collect();
    let warnings = zk.fsync_warnings();
    let long: Vec<&ZkFsyncWarning> = warnings.iter().filter(|w| w.took_ms >= 2000).collect();
    assert_eq!(
        long.len(),
        1,
        "ZooKeeper logged one long stall: {warnings:#?}"
    );
    let r = match_zk_warning(long[0], &calls, 3.0).unwrap_or_else(|| {
        panic!(
            "ZooKeeper logged {:?}; the incident has {:#?}",
            long[0],
            calls
                .iter()
                .map(|c| format!("{} {} {}", c["syscall"], c["duration_ms"], c["verdict"]))
                .collect::<Vec<_>>()
        )
    });
    assert_eq!(r["verdict"], "device_stall", "{r:#}");
    assert_eq!(
        r["evidence"]["device"].as_str(),
        Some(disk.inner.name().as_str()),
        "{r}"
    );
    // While it ran, the incident had the verdict so far: device_stall as it crossed the
    // threshold, or, when the disk had stopped less than 500 ms before, `unknown` saying
    // the pause is too young yet (30% of the call or more), or a wait for the journal
    // commit (under 30%: true, not yet a stall), revised to device_stall as the call grew.
    let so_far: Vec<&Value> = records
        .iter()
        .filter(|c| c["in_progress"] == true && c["start_ns"] == r["start_ns"])
        .collect();
    assert!(
        so_far
            .last()
            .is_some_and(|c| c["verdict"] == "device_stall"),
        "{so_far:#?}"
    );
    assert!(
        so_far.iter().all(|c| c["verdict"] == "device_stall"
            || (c["verdict"] == "unknown"
                && c["chain"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k["what"] == "pause_open")))
            || (c["verdict"] == "journal_wait" && c.get("revised").is_none())),
        "{so_far:#?}"
    );

    // Prometheus scraped the stall; promtool accepts the agent's metrics.
    wait_until(
        "Prometheus has zkstall_stalls_total{verdict=\"device_stall\"} >= 1",
        Duration::from_secs(30),
        || {
            prom.query("zkstall_stalls_total{verdict=\"device_stall\"}")
                .iter()
                .any(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= 1.0)
                })
        },
    );
    let text = agent.metrics();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.sample("zkstall_incidents_total ").unwrap_or(0.0) >= 1.0);
    assert!(
        agent
            .sample("zkstall_fsync_duration_seconds_count{")
            .unwrap_or(0.0)
            >= 1.0
    );

    // On demand: POST /trigger writes one more and answers with its path.
    let (status, body) = http("POST", agent.port, "/trigger", None).expect("POST /trigger");
    assert_eq!(status, 200, "{body}");
    let on_demand = PathBuf::from(body.trim());
    assert!(on_demand.exists(), "{body}");

    // ZooKeeper restarts (a new pid): traced again within seconds.
    drop(zk);
    zk = ZooKeeper::start(&data.dir, 50, &[]);
    let new_pid = zk.proc.pid();
    assert_ne!(new_pid, zk_pid);
    agent.wait_for(
        &format!("found ZooKeeper {new_pid}"),
        Duration::from_secs(15),
    );
    wait_until("zkstall_targets is 1", Duration::from_secs(10), || {
        agent.sample("zkstall_targets ") == Some(1.0)
    });

    let (took, log) = agent.stop();
    eprintln!("the agent stopped {took:?} after SIGTERM");
    assert!(log.iter().any(|l| l.contains("agent stopped")), "{log:#?}");
    // The on-demand incident was finished when the agent stopped.
    assert!(
        report(&on_demand).iter().any(|r| r["type"] == "summary"),
        "the incident has a summary"
    );
    assert!(incident_files(&work.join("incidents")).len() >= 2);
    drop(zk);
    drop(data);
}

#[test]
fn through_a_minute_long_flood_the_agent_stays_under_its_memory_bound_and_says_what_it_shed() {
    let test =
        "through_a_minute_long_flood_the_agent_stays_under_its_memory_bound_and_says_what_it_shed";
    if !can_run_root_tests(test) || !have_tool("fio", test) {
        return;
    }
    let _serial = serial(&SERIAL);
    let work = scratch_dir("zkstall-agent-flood");
    let _cleanup = RemoveOnDrop(work.clone());
    // The workload's own disk, flooded: every request is traced and recorded.
    let shm = PathBuf::from(format!(
        "/dev/shm/zkstall-agent-flood-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&shm).unwrap();
    let _shm = RemoveOnDrop(shm.clone());
    let lo = LoopDev::over(&shm.join("img"), 512);
    let fs = Mount::ext4(&lo.dev);
    let mut work_proc = Proc::spawn(
        "workload",
        zkstall(&[
            "workload",
            "--thread-name",
            "SyncThread:1",
            "--calls",
            "1000000",
            "--interval",
            "20ms",
            "--syscalls",
            "fdatasync",
            "--no-wait",
            "--dir",
            fs.dir.join("zk").to_str().unwrap(),
        ])
        .stdout(Stdio::null()),
    );
    let pid = work_proc.pid().to_string();
    let max = 64u64 << 20;
    let mut agent = Agent::start(
        &work,
        // Every request sent (not only those around calls): the worst case for memory.
        &[
            "--pid",
            &pid,
            "--max-memory",
            "64MiB",
            "--window",
            "2m",
            "--requests",
            "all",
        ],
    );
    let agent_pid = agent.proc.pid();
    let rss = || -> u64 {
        std::fs::read_to_string(format!("/proc/{agent_pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    };
    // fio's direct 4 KiB random writes to a file on the workload's filesystem, for 60 s.
    let target = fs.dir.join("flood");
    let mut fio = Proc::spawn(
        "fio",
        Command::new("fio")
            // One process, which a kill on failure ends (fio's job processes would
            // outlive their parent).
            .args([
                "--thread",
                "--name=flood",
                &format!("--filename={}", target.display()),
                "--size=256m",
                "--rw=randwrite",
                "--bs=4k",
                "--direct=1",
                "--ioengine=libaio",
                "--iodepth=32",
                "--runtime=60",
                "--time_based",
                "--output-format=json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut peak = 0u64;
    let started = Instant::now();
    while fio.child.try_wait().unwrap().is_none() {
        peak = peak.max(rss());
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "fio ran far past its 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut fio_out = String::new();
    fio.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut fio_out)
        .unwrap();
    let fio_json: Value = serde_json::from_str(&fio_out).unwrap_or(Value::Null);
    let ios = fio_json["jobs"][0]["write"]["total_ios"]
        .as_u64()
        .unwrap_or(0);
    let m = agent.metrics();
    let shed: f64 = m
        .lines()
        .filter(|l| l.starts_with("zkstall_records_shed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let window = agent
        .sample("zkstall_flight_recorder_window_seconds ")
        .unwrap_or(0.0);
    let records = agent.sample("zkstall_records_total ").unwrap_or(0.0);
    // Records the reader had to shed reached the agent too (zkstall_records_total counts
    // those the analysis consumed): a slow (debug) build under the flood sheds most.
    let reader_shed = agent
        .sample("zkstall_records_shed_total{stage=\"reader\"} ")
        .unwrap_or(0.0);
    eprintln!(
        "flood: {ios} requests ({:.0}/s); agent RSS peak {} MiB of {} MiB; {records} records consumed, {reader_shed} shed by the reader, {shed} shed in all; recorder window {window:.1} s",
        ios as f64 / 60.0,
        peak >> 20,
        max >> 20
    );
    assert!(ios > 1_000_000, "the flood ran: {ios} requests");
    assert!(
        (records + reader_shed) as u64 > ios / 2,
        "the flood's requests reached the agent (watched disk): {records} records consumed, {reader_shed} shed by the reader"
    );
    assert!(
        peak < max,
        "RSS peaked at {} MiB, over --max-memory 64 MiB",
        peak >> 20
    );
    // More than the window's budget arrived: the recorder kept less than 2 minutes, and
    // said so.
    assert!(
        shed > 0.0 && window < 120.0,
        "shedding is reported (shed {shed}, window {window} s)"
    );
    // An incident now says its window was cut short.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(agent_pid as i32, libc::SIGUSR1);
    }
    let line = agent.wait_for("SIGUSR1: incident ", Duration::from_secs(10));
    let path = PathBuf::from(line.split("SIGUSR1: incident ").nth(1).unwrap().trim());
    let _ = work_proc.child.kill();
    let (_, _) = agent.stop();
    let recs = report(&path);
    let s = recs
        .iter()
        .find(|r| r["type"] == "summary")
        .expect("summary");
    assert!(
        s["lost_windows"].as_u64().unwrap_or(0) >= 1
            && s["shed_by_reader"].as_u64().unwrap_or(0) > 0,
        "the incident says what was shed: {s}"
    );
    drop(fs);
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    if !have_tool("promtool", "the_shipped_alert_rules_pass_promtool") {
        return;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/prometheus/zkstall-rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_systemd_unit_passes_systemd_analyze_verify() {
    let test = "the_shipped_systemd_unit_passes_systemd_analyze_verify";
    if !have_tool("systemd-analyze", test) {
        return;
    }
    // Verified as installed: ExecStart must name an executable, so the unit is checked
    // with the binary under test in its place.
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/zkstall-agent.service"),
    )
    .unwrap();
    let dir = scratch_dir("zkstall-unit");
    let _cleanup = RemoveOnDrop(dir.clone());
    let unit = unit.replace(
        "/usr/local/bin/zkstall",
        zkstall_bin().canonicalize().unwrap().to_str().unwrap(),
    );
    let p = dir.join("zkstall-agent.service");
    std::fs::write(&p, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&p)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's own units may have theirs).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("zkstall-agent.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{err}",
        out.status
    );
}
