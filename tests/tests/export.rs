//! `zkstall export` and `zkstall merge` on real recordings: the fsync workload traced with
//! --output and exported, decoded with Perfetto's own protos (the `perfetto` PyPI
//! package); two ZooKeepers whose disks stop at the same moment, merged.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::Value;
use zkstall_tests::*;

/// One scenario at a time: the ZooKeeper one freezes a filesystem and is timed.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_ok(args: &[&str]) -> (String, String) {
    let out = zkstall(args).output().expect("running zkstall");
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "zkstall {args:?} failed: {e}");
    assert!(!e.contains("panicked"), "{e}");
    (o, e)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The fsync workload, waiting for "go"; traced with `--output REC`.
fn traced_workload(dir: &Path, calls: u32) -> (Vec<Value>, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = zkstall(&[
        "workload",
        "--calls",
        &calls.to_string(),
        "--syscalls",
        "fsync,fdatasync",
        "--interval",
        "20ms",
        "--write-bytes",
        "65536",
    ]);
    cmd.arg("--dir").arg(dir).stdin(Stdio::piped());
    let mut work = Proc::spawn("workload", &mut cmd);
    let mut ready = String::new();
    BufReader::new(work.child.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let rec = dir.join("rec.zst");
    let tracer = start_tracer_with(
        work.pid(),
        &["--threshold", "0", "--format", "json", "--output", s(&rec)],
    );
    work.go();
    let live = finish_tracer(tracer);
    (live, rec)
}

#[test]
fn the_vendored_perfetto_protos_are_perfettos() {
    let Some(py) = perfetto_python("the_vendored_perfetto_protos_are_perfettos") else {
        return;
    };
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../zkstall/proto/perfetto_trace_subset.proto");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/perfetto_proto_check.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(proto)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 0 mismatches"), "{text}");
}

#[test]
fn an_exported_trace_has_the_named_thread_one_slice_per_call_and_counters() {
    let test = "an_exported_trace_has_the_named_thread_one_slice_per_call_and_counters";
    if !can_run_root_tests(test) {
        return;
    }
    let Some(py) = perfetto_python(test) else {
        return;
    };
    let _serial = serial(&SERIAL);
    let dir = scratch_dir("zkstall-export");
    let _cleanup = RemoveOnDrop(dir.clone());
    let (live, rec) = traced_workload(&dir.join("w"), 30);
    // Every watched call (the fsync family and, at --threshold 0, the writes before them).
    let mut calls: Vec<&Value> = live
        .iter()
        .filter(|r| r["type"] == "fsync" || r["type"] == "write")
        .collect();
    calls.sort_by_key(|r| r["start_ns"].as_u64());
    let syncs = calls.iter().filter(|r| r["type"] == "fsync").count();
    assert_eq!(syncs, 30, "the live run saw {syncs} fsync-family calls");
    let tid = calls[0]["tid"].as_u64().unwrap();

    let pf = dir.join("rec.pftrace");
    run_ok(&["export", s(&rec), "-o", s(&pf)]);
    let t = python_json(&py, "perfetto_decode.py", &[&pf]);
    assert_eq!(t["unclosed"], 0, "slices left open");
    let tracks = t["tracks"].as_array().unwrap();
    let thread = tracks
        .iter()
        .find(|x| x["kind"] == "thread" && x["tid"].as_u64() == Some(tid))
        .unwrap_or_else(|| panic!("no thread track for tid {tid}: {tracks:?}"));
    assert_eq!(thread["name"], "SyncThread:1", "{thread}");
    let process = tracks
        .iter()
        .find(|x| x["kind"] == "process" && x["pid"] == thread["pid"])
        .expect("the thread's process track");
    assert!(
        process["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "traced"),
        "{process}"
    );
    let mut slices: Vec<&Value> = t["slices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["track"] == thread["uuid"])
        .collect();
    slices.sort_by_key(|x| x["ts"].as_u64());
    assert_eq!(
        slices.len(),
        calls.len(),
        "one slice per call: {:?}",
        slices
            .iter()
            .map(|x| (&x["name"], &x["dur"]))
            .collect::<Vec<_>>()
    );
    let (ts0, start0) = (
        slices[0]["ts"].as_u64().unwrap() as i64,
        calls[0]["start_ns"].as_u64().unwrap() as i64,
    );
    for (sl, c) in slices.iter().zip(&calls) {
        assert_eq!(sl["name"], c["syscall"], "{sl} vs {c}");
        // The kernel-measured duration, to the nanosecond (ms as f64 in the record).
        let want = (c["duration_ms"].as_f64().unwrap() * 1e6).round() as i64;
        let got = sl["dur"].as_i64().unwrap();
        assert!((got - want).abs() <= 2, "slice {got} ns, call {want} ns");
        // Same spacing as the kernel's timestamps, and on wall-clock time.
        let rel = sl["ts"].as_i64().unwrap() - ts0;
        let want_rel = c["start_ns"].as_i64().unwrap() - start0;
        assert!(
            (rel - want_rel).abs() <= 2,
            "slice at +{rel} ns, call at +{want_rel} ns"
        );
        let ms = sl["ts"].as_i64().unwrap() / 1_000_000;
        assert!((ms - c["start_unix_ms"].as_i64().unwrap()).abs() <= 1);
        assert_eq!(sl["args"]["path"], c["path"]);
        assert_eq!(sl["args"]["verdict"], c["verdict"]);
    }
    // Counter tracks: requests in flight and throughput of the disk under the file.
    let counters: Vec<&Value> = tracks.iter().filter(|x| x["kind"] == "counter").collect();
    for suffix in [" in flight", " MB/s"] {
        let c = counters
            .iter()
            .find(|x| x["name"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no '*{suffix}' counter track: {counters:?}"));
        let max = t["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["track"] == c["uuid"])
            .map(|x| x["value"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(max > 0.0, "{} never above 0", c["name"]);
    }
    // Requests as slices on the disk's tracks.
    assert!(
        t["slices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["cat"][0] == "io")
    );

    // Chrome JSON: the same calls.
    let cj = dir.join("rec.json");
    run_ok(&["export", s(&rec), "-o", s(&cj)]);
    let v: Value = serde_json::from_slice(&std::fs::read(&cj).unwrap()).unwrap();
    let evs = v["traceEvents"].as_array().unwrap();
    assert!(evs.iter().any(|e| e["name"] == "thread_name"
        && e["args"]["name"] == "SyncThread:1"
        && e["tid"].as_u64() == Some(tid)));
    let n = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["tid"].as_u64() == Some(tid) && e["cat"] == "syscall")
        .count();
    assert_eq!(n, calls.len());

    // A reader that stops after one line (`| head -1`): every reader ends quietly, status
    // 0, no panic, whether it writes text, JSON lines or (merge) JSON documents.
    for args in [
        vec!["report", s(&rec)],
        vec!["report", s(&rec), "--format", "json"],
        vec!["export", s(&rec), "--jsonl"],
        vec![
            "merge",
            s(&rec),
            s(&rec),
            "--format",
            "json",
            "--threshold",
            "0",
        ],
    ] {
        let mut child = zkstall(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut first).unwrap();
        drop(out);
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(!first.is_empty(), "{args:?} printed nothing");
        assert!(
            done.status.success() && !err.contains("panicked") && !err.contains("error"),
            "{args:?} with its reader gone: {} {err}",
            done.status
        );
    }

    // An existing output is refused without --force.
    let out = zkstall(&["export", s(&rec), "-o", s(&pf)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    run_ok(&["export", s(&rec), "-o", s(&pf), "--force"]);

    // report --since: a window of the recording says what the live run said there.
    let end_of = |c: &Value| {
        c["start_ns"].as_u64().unwrap() + (c["duration_ms"].as_f64().unwrap() * 1e6) as u64
    };
    let k = (calls.len() / 2..calls.len())
        .find(|&k| calls[k]["start_ns"].as_u64().unwrap() > end_of(calls[k - 1]) + 10_000_000)
        .expect("a pause between the workload's rounds");
    let ms = calls[k]["start_unix_ms"].as_i64().unwrap();
    let since = sh(
        "date",
        &[
            "-u",
            "-d",
            &format!("@{}.{:03}", ms / 1000, ms % 1000),
            "+%Y-%m-%dT%H:%M:%S.%3NZ",
        ],
    );
    let (win, _) = run_ok(&[
        "report",
        s(&rec),
        "--threshold",
        "0",
        "--format",
        "json",
        "--since",
        since.trim(),
    ]);
    let win: Vec<Value> = json_lines(&win)
        .into_iter()
        .filter(|r| r["type"] == "fsync" || r["type"] == "write")
        .collect();
    let want: Vec<Value> = calls[k..].iter().map(|c| (*c).clone()).collect();
    assert_eq!(win.len(), want.len(), "calls since {since}");
    assert_eq!(
        win, want,
        "report --since {since} == the live run from there"
    );
    // A recording cut short (a crash): what it holds, with a warning; a stub: an error.
    let bytes = std::fs::read(&rec).unwrap();
    let half = dir.join("half.zst");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let out = zkstall(&["report", s(&half), "--format", "json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("panicked") && err.contains("truncated"),
        "{err}"
    );
    let stub = dir.join("stub.zst");
    std::fs::write(&stub, &bytes[..10]).unwrap();
    let out = zkstall(&["report", s(&stub)]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked") && err.contains("stub.zst"),
        "{err}"
    );

    // JSON lines: one time convention for every record type.
    let (jl, _) = run_ok(&["export", s(&rec), "--jsonl"]);
    let lines = json_lines(&jl);
    assert!(lines.iter().any(|l| l["type"] == "io"));
    for l in &lines {
        if l["type"] == "summary" {
            continue;
        }
        assert!(l["ts_ns"].is_u64() && l["unix_ms"].is_i64(), "{l}");
    }
    let n = lines
        .iter()
        .filter(|l| l["type"] == "fsync" || l["type"] == "write")
        .count();
    assert_eq!(n, calls.len());
    // The live run's JSON has the same fields.
    assert!(
        calls
            .iter()
            .all(|c| c["ts_ns"] == c["start_ns"] && c["unix_ms"].is_i64())
    );
}

#[test]
fn two_zookeepers_whose_disks_stop_together_are_a_correlated_stall() {
    let test = "two_zookeepers_whose_disks_stop_together_are_a_correlated_stall";
    if !can_run_root_tests(test) {
        return;
    }
    let py = perfetto_python(test);
    let _serial = serial(&SERIAL);
    let dir = scratch_dir("zkstall-merge");
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    // Two disks on one backing store (a SAN in miniature): freezing the filesystem that
    // holds both images stops both disks at the same instant.
    let outer_lo = LoopDev::new(1300);
    let outer = Mount::ext4(&outer_lo.dev);
    let lo1 = LoopDev::over(&outer.dir.join("zk1.img"), 512);
    let lo2 = LoopDev::over(&outer.dir.join("zk2.img"), 512);
    let m1 = Mount::ext4(&lo1.dev);
    let m2 = Mount::ext4(&lo2.dev);
    // Servers 1 and 2 of a three-member ensemble (server 3 never starts): together they
    // are its quorum, so both stalling at once stops the ensemble.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let servers: String = (1..=3)
        .map(|n| format!("server.{n}=127.0.0.1:{}:{}\n", free_port(), free_port()))
        .collect();
    let ensemble_cfg = format!("initLimit=10\nsyncLimit=5\n{servers}");
    for (m, id) in [(&m1, "1"), (&m2, "2")] {
        std::fs::create_dir_all(m.dir.join("data")).unwrap();
        std::fs::write(m.dir.join("data/myid"), id).unwrap();
    }
    let mut zk1 = ZooKeeper::start_with(&m1.dir, 20, &[], &ensemble_cfg, &[]);
    let mut zk2 = ZooKeeper::start_with(&m2.dir, 20, &[], &ensemble_cfg, &[]);
    wait_until(
        "servers 1 and 2 form a quorum",
        Duration::from_secs(60),
        || zk1.serving() && zk2.serving(),
    );
    let (r1, r2) = (dir.join("zk1.zst"), dir.join("zk2.zst"));
    let t1 = start_tracer_with(
        zk1.proc.pid(),
        &[
            "--threshold",
            "15ms",
            "--format",
            "json",
            "--output",
            s(&r1),
        ],
    );
    let t2 = start_tracer_with(
        zk2.proc.pid(),
        &[
            "--threshold",
            "15ms",
            "--format",
            "json",
            "--output",
            s(&r2),
        ],
    );
    let mut load1 = zk1.load(15);
    let mut load2 = zk2.load(15);
    // Writes flowing through the ensemble (the load generators compile and connect
    // first), then both disks stop.
    let z0 = zk1.zxid();
    wait_until(
        "the loads' writes committed",
        Duration::from_secs(60),
        || zk1.zxid() > z0 + 200,
    );
    std::thread::sleep(Duration::from_secs(1));
    {
        let mut freeze = Freeze::new(&outer.dir);
        std::thread::sleep(Duration::from_secs(3));
        freeze.thaw();
    }
    let _ = load1.wait_for_exit(Duration::from_secs(60));
    let _ = load2.wait_for_exit(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let w1 = zk1.fsync_warnings();
    let w2 = zk2.fsync_warnings();
    for zk in [&mut zk1, &mut zk2] {
        let _ = zk.proc.child.kill();
        let _ = zk.proc.child.wait();
    }
    finish_tracer(t1);
    finish_tracer(t2);
    let long = |w: &[ZkFsyncWarning]| w.iter().map(|w| w.took_ms).max().unwrap_or(0);
    eprintln!(
        "ZooKeeper's own longest fsync warnings: {} ms and {} ms",
        long(&w1),
        long(&w2)
    );

    let (out, _) = run_ok(&["merge", s(&r1), s(&r2), "--format", "json"]);
    let lines = json_lines(&out);
    // The groups with a stop's length of stall in both recordings (another group may hold
    // one long stall of one server beside short ones of the other: seen natively, a JVM
    // pause of 4.9 s in zk2 as its load ended, 11 s after the stop).
    let corr: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "correlated_stall")
        .filter(|l| {
            let long: std::collections::BTreeSet<&str> = l["stalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["duration_ms"].as_f64().unwrap() >= 2000.0)
                .filter_map(|s| s["recording"].as_str())
                .collect();
            long.len() == 2
        })
        .collect();
    assert_eq!(corr.len(), 1, "one correlated stop of both disks: {out}");
    let c = corr[0];
    assert_eq!(
        c["recordings"],
        serde_json::json!(["zk1.zst", "zk2.zst"]),
        "{c}"
    );
    let spread = c["start_spread_ms"].as_f64().unwrap();
    assert!(spread < 100.0, "start spread {spread} ms: {c}");
    for rec in ["zk1.zst", "zk2.zst"] {
        let worst = c["stalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["recording"] == rec)
            .map(|s| s["duration_ms"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(
            worst >= 2000.0,
            "{rec}'s stall in it lasted {worst} ms: {c}"
        );
    }
    // Both came from this host's one clock.
    assert_eq!(c["clock_uncertainty_ms"], 0.0);
    let hosts: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "host_stalls")
        .collect();
    assert_eq!(hosts.len(), 2);
    assert!(hosts.iter().all(|h| h["correlated"].as_u64() >= Some(1)));
    let recs: Vec<&Value> = lines.iter().filter(|l| l["type"] == "recording").collect();
    assert!(
        recs.iter().all(|r| r["clock"].is_object()),
        "adjtimex recorded: {recs:?}"
    );
    // The quorum picture: both members of one ensemble of three, read from their zoo.cfg.
    let q = &c["quorum"][0];
    assert_eq!(q["size"], 3, "{c}");
    assert_eq!(q["stalled"], serde_json::json!([1, 2]), "{c}");
    assert_eq!(q["lost_quorum"], true, "{c}");
    assert!(q["overlap_ms"].as_f64().unwrap() >= 2000.0, "{c}");
    // Text says what it means.
    let (text, _) = run_ok(&["merge", s(&r1), s(&r2)]);
    assert!(text.contains("correlated stall at"), "{text}");
    assert!(
        text.contains("quorum: ensemble of 3") && text.contains("could not commit writes"),
        "{text}"
    );
    eprintln!("{text}");

    // One export of both: both processes, apart.
    let pf = dir.join("both.pftrace");
    run_ok(&["export", s(&r1), s(&r2), "-o", s(&pf)]);
    if let Some(py) = py {
        let t = python_json(&py, "perfetto_decode.py", &[&pf]);
        let traced: Vec<&Value> = t["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| {
                x["kind"] == "process"
                    && x["labels"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|l| l == "traced")
            })
            .collect();
        assert_eq!(traced.len(), 2, "{traced:?}");
        assert_ne!(traced[0]["pid"], traced[1]["pid"]);
        for (x, zk) in traced.iter().zip([&zk1, &zk2]) {
            let label = format!("pid={}", zk.proc.pid());
            assert!(
                x["labels"].as_array().unwrap().iter().any(|l| *l == *label),
                "{x}"
            );
        }
        let verdicts = t["instants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["name"].as_str().unwrap().starts_with("verdict:"))
            .count();
        assert!(verdicts >= 2, "a verdict marker per stall");
    }
}
