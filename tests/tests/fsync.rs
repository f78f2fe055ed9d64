//! Loads the real eBPF programs and traces a real workload: a thread named like a JVM
//! thread makes a known number of sync calls on a known file and times each one itself;
//! zkstall must report exactly those calls, with the right thread, file, device and
//! durations, and nothing from an untraced process doing the same thing meanwhile.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use zkstall_tests::*;

/// A workload that waits for "go" on stdin, plus its ready line.
fn start_workload(
    dir: &std::path::Path,
    calls: u32,
    syscalls: &str,
    thread: &str,
    wait: bool,
) -> (Proc, Value) {
    let mut cmd = zkstall(&[
        "workload",
        "--calls",
        &calls.to_string(),
        "--syscalls",
        syscalls,
        "--interval",
        "10ms",
        "--thread-name",
        thread,
    ]);
    cmd.arg("--dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stderr(Stdio::inherit());
    if !wait {
        cmd.arg("--no-wait");
    }
    let mut p = Proc::spawn("workload", &mut cmd);
    let mut out = BufReader::new(p.child.stdout.as_mut().expect("stdout"));
    let mut ready = String::new();
    out.read_line(&mut ready).expect("workload ready line");
    let ready: Value = serde_json::from_str(&ready).expect("ready line is JSON");
    (p, ready)
}

/// Reads the rest of a workload's stdout: one line per call it timed.
fn own_measurements(p: &mut Proc) -> Vec<Value> {
    let mut text = String::new();
    std::io::Read::read_to_string(p.child.stdout.as_mut().expect("stdout"), &mut text)
        .expect("read");
    json_lines(&text)
}

struct Traced {
    records: Vec<Value>,
    summary: Value,
    own: Vec<Value>,
    ready: Value,
    /// Keeps the scratch directory until the assertions are done.
    _dir: RemoveOnDrop,
}

/// Traces one workload (and runs an untraced bystander workload at the same time).
fn trace_workload(calls: u32, syscalls: &str) -> Traced {
    let dir = scratch_dir("zkstall-test");
    let cleanup = RemoveOnDrop(dir.clone());
    let (mut work, ready) =
        start_workload(&dir.join("traced"), calls, syscalls, "SyncThread:1", true);
    let tracer = start_tracer_with(work.pid(), &["--threshold", "0", "--format", "json"]);

    // An untraced process doing the same calls meanwhile: none of its calls may appear.
    let (mut bystander, _) = start_workload(
        &dir.join("bystander"),
        calls,
        syscalls,
        "SyncThread:9",
        false,
    );
    work.go();

    let own = own_measurements(&mut work);
    assert!(
        work.wait_for_exit(Duration::from_secs(60)).success(),
        "workload failed"
    );
    assert!(
        bystander.wait_for_exit(Duration::from_secs(60)).success(),
        "bystander failed"
    );
    // With --pid, zkstall ends by itself once its target has exited.
    let (mut lines, _) = finish_tracer_raw(tracer);
    let summary = lines.pop().expect("a summary line");
    assert_eq!(
        summary["type"], "summary",
        "last line is the summary: {summary}"
    );
    // The workload write()s 4 KiB before each sync call: with --threshold 0 those are
    // reported too, as the write family.
    // The workload also prints each measurement to its stdout pipe from that thread: a
    // write that cannot wait on storage, which the kernel does not follow (nor count).
    let writes: Vec<&Value> = lines
        .iter()
        .filter(|r| r["type"] == "write" && r["path"] == ready["path"])
        .collect();
    let pipe_writes = lines
        .iter()
        .filter(|r| {
            r["type"] == "write" && r["path"].as_str().is_some_and(|p| p.starts_with("pipe:"))
        })
        .count();
    assert!(!own.is_empty());
    assert_eq!(
        pipe_writes,
        0,
        "writes to its stdout pipe (one per call) are not followed: {:#?}",
        lines
            .iter()
            .filter(|r| r["type"] == "write")
            .map(|r| format!(
                "{} fd {} pid {} tid {} {}",
                r["path"], r["fd"], r["pid"], r["tid"], r["thread"]
            ))
            .collect::<Vec<_>>()
    );
    let expected_writes = own.len();
    assert_eq!(
        writes.len(),
        expected_writes,
        "one write before each call: {writes:#?}"
    );
    for w in &writes {
        assert_eq!(w["syscall"], "write");
        assert_eq!(w["thread"], "SyncThread:1");
        assert_eq!(w["path"], ready["path"]);
        assert_eq!(w["ret"], 4096);
    }
    let calls_and_writes = (own.len() + expected_writes) as u64;
    assert_eq!(
        summary["calls"].as_u64(),
        Some(calls_and_writes),
        "{summary}"
    );
    // A call still running after 1 s (threshold 0) is also reported as it crosses that
    // mark (in_progress), then again when it ends: compare the final records.
    let records = lines
        .into_iter()
        .filter(|r| r["type"] == "fsync" && r.get("in_progress").is_none())
        .collect();
    Traced {
        records,
        summary,
        own,
        ready,
        _dir: cleanup,
    }
}

fn dev_of(path: &str) -> (String, Option<String>) {
    let m = std::fs::metadata(path).expect("stat");
    let dev = m.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let name = std::fs::read_link(format!("/sys/dev/block/{maj}:{min}"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
    (format!("{maj}:{min}"), name)
}

/// Every call is matched to the workload's own measurement of it.
fn assert_matches_own(t: &Traced, expect_fd: bool) {
    let pid = t.ready["pid"].as_u64().unwrap();
    let path = t.ready["path"].as_str().unwrap();
    let (dev, device) = dev_of(path);
    assert_eq!(
        t.records.len(),
        t.own.len(),
        "exactly one record per call of the traced process; got {:#?}",
        t.records
    );
    let mut worst_ns = 0i64;
    let mut diffs_ms = Vec::new();
    for (r, o) in t.records.iter().zip(&t.own) {
        assert_eq!(r["type"], "fsync");
        assert_eq!(r["pid"].as_u64(), Some(pid), "only the traced process: {r}");
        assert_eq!(r["tid"], o["tid"], "the calling thread's tid: {r}");
        assert_eq!(r["thread"], "SyncThread:1");
        assert_eq!(r["syscall"], o["syscall"]);
        assert_eq!(r["ret"], o["ret"]);
        if r["syscall"] == "sync" {
            assert_eq!(r["path"], Value::Null);
            continue;
        }
        assert_eq!(r["path"].as_str(), Some(path), "{r}");
        assert_eq!(r["dev"].as_str(), Some(dev.as_str()), "{r}");
        assert_eq!(r["device"].as_str(), device.as_deref(), "{r}");
        if expect_fd && r["syscall"] != "msync" {
            assert_eq!(r["fd"], t.ready["fd"], "{r}");
        }
        // The kernel's entry and exit lie inside the interval the workload timed around
        // the call, so its duration can only be shorter, by the cost of the syscall
        // entry/exit and two clock reads (plus any preemption in between).
        let (k_start, k_ms) = (
            r["start_ns"].as_u64().unwrap(),
            r["duration_ms"].as_f64().unwrap(),
        );
        let (o_start, o_end) = (
            o["start_ns"].as_u64().unwrap(),
            o["end_ns"].as_u64().unwrap(),
        );
        let k_end = k_start + (k_ms * 1e6) as u64;
        assert!(
            k_start >= o_start && k_start <= o_end,
            "kernel entry {k_start} outside [{o_start}, {o_end}]"
        );
        assert!(
            k_end <= o_end + 1_000,
            "kernel exit {k_end} after the workload's {o_end}"
        );
        let diff = o["duration_ns"].as_i64().unwrap() - (k_ms * 1e6) as i64;
        worst_ns = worst_ns.max(diff.abs());
        diffs_ms.push(diff as f64 / 1e6);
        // Wall-clock time of the same instant.
        let unix_ms = r["start_unix_ms"].as_i64().unwrap();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (now_ms - unix_ms).abs() < 300_000,
            "start_unix_ms {unix_ms} is not near now {now_ms}"
        );
    }
    // The workload's timing adds the user-mode time around the syscall (two clock reads,
    // the syscall entry and exit), plus whatever delayed the thread there: typically under
    // 0.05 ms. Each call is checked exactly above (the kernel's interval lies inside the
    // workload's); the size of the difference is checked on the median, not on every call:
    // on a slow machine (a guest under emulation, sharing 2 host CPUs) a few calls are
    // stretched by milliseconds the guest kernel cannot see (its vCPU was not running).
    let median_ms = median(diffs_ms.clone());
    eprintln!(
        "difference from the workload's own timing: median {median_ms:.3} ms, largest {worst_ns} ns over {} calls",
        t.own.len()
    );
    assert!(
        median_ms < 2.0,
        "the kernel's durations are not the workload's calls: differences {diffs_ms:?} ms"
    );
    assert_eq!(t.summary["dropped"], 0, "{}", t.summary);
    assert_eq!(t.summary["pids"], serde_json::json!([pid]));
}

#[test]
fn reports_every_fsync_and_fdatasync_of_a_jvm_named_thread() {
    if !can_run_root_tests("reports_every_fsync_and_fdatasync_of_a_jvm_named_thread") {
        return;
    }
    let t = trace_workload(20, "fsync,fdatasync");
    assert_eq!(t.own.iter().filter(|o| o["syscall"] == "fsync").count(), 10);
    assert_eq!(
        t.own.iter().filter(|o| o["syscall"] == "fdatasync").count(),
        10
    );
    assert_matches_own(&t, true);
}

#[test]
fn reports_each_syscall_of_the_fsync_family_with_its_file() {
    if !can_run_root_tests("reports_each_syscall_of_the_fsync_family_with_its_file") {
        return;
    }
    let t = trace_workload(12, "fsync,fdatasync,sync_file_range,syncfs,msync,sync");
    for sc in [
        "fsync",
        "fdatasync",
        "sync_file_range",
        "syncfs",
        "msync",
        "sync",
    ] {
        assert_eq!(
            t.records.iter().filter(|r| r["syscall"] == sc).count(),
            2,
            "two {sc} calls"
        );
    }
    assert_matches_own(&t, true);
}

#[test]
fn threshold_filters_fast_calls_but_counts_them() {
    if !can_run_root_tests("threshold_filters_fast_calls_but_counts_them") {
        return;
    }
    let dir = scratch_dir("zkstall-test");
    let _cleanup = RemoveOnDrop(dir.clone());
    let (mut work, _) = start_workload(&dir, 10, "fdatasync", "SyncThread:1", true);
    let pid = work.pid().to_string();
    // 10 s is far above any fdatasync of a few KiB: nothing is reported, all are counted.
    let mut tracer = Proc::spawn(
        "zkstall trace",
        &mut zkstall(&[
            "trace",
            "--pid",
            &pid,
            "--threshold",
            "10s",
            "--format",
            "json",
        ]),
    );
    let stderr = lines_of(tracer.child.stderr.take().expect("stderr"));
    let stdout = read_all_of(tracer.child.stdout.take().expect("stdout"));
    wait_for_line(&stderr, "tracing 1 process", Duration::from_secs(90));
    work.go();
    assert!(work.wait_for_exit(Duration::from_secs(60)).success());
    assert!(tracer.wait_for_exit(Duration::from_secs(30)).success());
    let out = stdout.join().unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "only the summary: {lines:#?}");
    assert_eq!(lines[0]["type"], "summary");
    assert_eq!(lines[0]["calls"], 10);
    assert_eq!(lines[0]["reported"], 0);
}

#[test]
fn finds_a_zookeeper_jvm_by_itself_and_names_its_sync_thread() {
    if !can_run_root_tests("finds_a_zookeeper_jvm_by_itself_and_names_its_sync_thread") {
        return;
    }
    let dir = scratch_dir("zkstall-jvm");
    let _cleanup = RemoveOnDrop(dir.clone());
    let log = dir.join("log.1");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/FakeZooKeeper.java");
    let mut jvm = Proc::spawn(
        "java",
        std::process::Command::new("java")
            .arg(&src)
            .arg(&log)
            .arg("10")
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let jvm_pid = jvm.pid() as u64;
    let mut out = BufReader::new(jvm.child.stdout.take().expect("stdout"));
    let mut ready = String::new();
    out.read_line(&mut ready).expect("jvm ready line");
    assert_eq!(ready.trim(), "ready");

    // No --pid: zkstall must find the JVM from its command line. It keeps looking for
    // ZooKeepers until stopped, so it is stopped with SIGTERM, which must end it cleanly.
    let mut tracer = Proc::spawn(
        "zkstall trace",
        &mut zkstall(&["trace", "--threshold", "0", "--format", "json"]),
    );
    let stderr = lines_of(tracer.child.stderr.take().expect("stderr"));
    let reader = read_all_of(tracer.child.stdout.take().expect("stdout"));
    let banner = wait_for_line(&stderr, "tracing 1 process", Duration::from_secs(90));
    let banner = banner.last().unwrap();
    assert!(banner.contains(&jvm_pid.to_string()), "{banner}");
    assert!(banner.contains("QuorumPeerMain"), "{banner}");

    jvm.go();
    let mut own = String::new();
    std::io::Read::read_to_string(&mut out, &mut own).unwrap();
    assert!(
        jvm.wait_for_exit(Duration::from_secs(60)).success(),
        "the JVM failed"
    );
    let own: Vec<f64> = own
        .lines()
        .map(|l| l.trim().parse::<f64>().unwrap() / 1e6)
        .collect();
    assert_eq!(own.len(), 10);
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGTERM) };
    let st = tracer.wait_for_exit(Duration::from_secs(30));
    assert!(st.success(), "SIGTERM ends zkstall cleanly: {st}");
    let lines = json_lines(&reader.join().unwrap());
    assert_eq!(
        lines.last().unwrap()["type"],
        "summary",
        "a summary after SIGTERM"
    );
    let forces: Vec<&Value> = lines
        .iter()
        .filter(|r| {
            r["type"] == "fsync"
                && r["pid"].as_u64() == Some(jvm_pid)
                && r["syscall"] == "fdatasync"
        })
        .collect();
    assert_eq!(
        forces.len(),
        10,
        "FileChannel.force(false) is fdatasync: {forces:#?}"
    );
    let log = log.to_string_lossy();
    let mut extra_ms = Vec::new();
    for (r, own_ms) in forces.iter().zip(&own) {
        assert_eq!(r["thread"], "SyncThread:0", "the JVM named its thread: {r}");
        assert_eq!(r["path"].as_str(), Some(log.as_ref()));
        let ms = r["duration_ms"].as_f64().unwrap();
        // force() adds the JNI transition to the syscall: a little longer, never shorter.
        assert!(
            ms <= own_ms + 0.01,
            "kernel {ms} ms vs JVM's own {own_ms} ms"
        );
        extra_ms.push(own_ms - ms);
    }
    // How much longer: checked on the median, as in assert_matches_own. Under emulation
    // the first force() (linking its native method) and a few others are milliseconds
    // longer in the JVM's user-mode code, which no kernel event accounts for.
    assert!(
        median(extra_ms.clone()) < 2.0,
        "the kernel's durations are not the JVM's force() calls: JVM minus kernel {extra_ms:?} ms"
    );
}

#[test]
fn zkstall_demo_passes_and_accounts_for_every_call() {
    if !can_run_root_tests("zkstall_demo_passes_and_accounts_for_every_call") {
        return;
    }
    let out = zkstall(&["demo", "--calls", "12", "--format", "json"])
        .output()
        .expect("run zkstall demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zkstall demo failed: {stderr}");
    assert!(
        stderr.contains("the workload timed") && stderr.contains("matched"),
        "{stderr}"
    );
    let records = json_lines(&String::from_utf8_lossy(&out.stdout));
    let calls: Vec<&Value> = records.iter().filter(|r| r["type"] == "fsync").collect();
    // fsync, fdatasync, sync_file_range, msync in turn: 12 calls, each once.
    assert_eq!(calls.len(), 12, "{records:#?}");
    let summary = records.last().expect("a summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["dropped"], 0, "{summary}");
    for c in &calls {
        assert_supported(c);
    }
}

/// bcc-style options on a real run: `-j`, a bare `--threshold 0`-style number in ms,
/// `--device` keeping only the calls on that device, `--cgroup` selecting processes,
/// `--events` text lines starting with a timestamp.
#[test]
fn bcc_style_options_filter_what_is_printed() {
    if !can_run_root_tests("bcc_style_options_filter_what_is_printed") {
        return;
    }
    let dir = scratch_dir("zkstall-test");
    let _cleanup = RemoveOnDrop(dir.clone());
    let (dev, name) = dev_of(dir.to_str().unwrap());
    let run = |extra: &[&str]| -> (String, String, bool) {
        let (mut work, _) = start_workload(&dir, 5, "fdatasync", "SyncThread:1", true);
        let pid = work.pid().to_string();
        let mut args = vec!["trace", "--pid", &pid];
        args.extend_from_slice(extra);
        let mut tracer = Proc::spawn("zkstall trace", &mut zkstall(&args));
        let stderr = lines_of(tracer.child.stderr.take().expect("stderr"));
        let stdout = read_all_of(tracer.child.stdout.take().expect("stdout"));
        // Until tracing starts, or the tracer gives up (a refused option).
        let mut seen = Vec::new();
        let started = loop {
            // Generous: an emulated CPU (vm-test) verifies the programs slowly.
            match stderr.recv_timeout(Duration::from_secs(90)) {
                Ok(l) => {
                    let hit = l.contains("tracing 1 process");
                    seen.push(l);
                    if hit {
                        break true;
                    }
                }
                Err(_) => break false,
            }
        };
        let _ = work.child.stdin.as_mut().unwrap().write_all(b"go\n");
        let _ = work.wait_for_exit(Duration::from_secs(60));
        let ok = tracer.wait_for_exit(Duration::from_secs(30)).success();
        let out = stdout.join().unwrap();
        seen.extend(stderr.try_iter());
        (out, seen.join("\n"), ok && started)
    };
    // -j and a bare threshold in ms: every fdatasync above 0.001 ms is reported.
    let (out, err, ok) = run(&["-j", "--threshold", "0.001"]);
    assert!(ok, "{err}");
    let lines = json_lines(&out);
    let calls = lines.iter().filter(|l| done_fdatasync(l)).count();
    assert_eq!(calls, 5, "{out}");
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("summary");
    assert_eq!(summary["threshold_ms"], 0.001);
    // --device: the calls' own device keeps them, another device drops them (still
    // counted in the summary).
    let mine = name.clone().unwrap_or(dev.clone());
    let (out, _, _) = run(&["-j", "-t", "0", "--device", &mine]);
    assert_eq!(
        json_lines(&out)
            .iter()
            .filter(|l| done_fdatasync(l))
            .count(),
        5,
        "--device {mine}: {out}"
    );
    let (out, _, _) = run(&["-j", "-t", "0", "--device", "no-such-disk"]);
    let lines = json_lines(&out);
    assert_eq!(
        lines.iter().filter(|l| done_fdatasync(l)).count(),
        0,
        "{out}"
    );
    assert!(
        lines.last().unwrap()["calls"].as_u64().unwrap() >= 5,
        "still traced and counted: {out}"
    );
    // --cgroup: the workload is in this test's cgroup, not in /no-such-cgroup.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .last()
        .unwrap()
        .splitn(3, ':')
        .nth(2)
        .unwrap()
        .to_string();
    let (out, err, ok) = run(&["-j", "-t", "0", "--cgroup", &own]);
    assert!(ok, "--cgroup {own}: {err}");
    assert_eq!(
        json_lines(&out)
            .iter()
            .filter(|l| done_fdatasync(l))
            .count(),
        5
    );
    let (_, err, ok) = run(&["-j", "--cgroup", "/no-such-cgroup"]);
    assert!(!ok && err.contains("is in --cgroup"), "{err}");
    // --events in text: each line begins with a timestamp, as call lines do.
    let (out, err, ok) = run(&["-t", "0", "--events"]);
    assert!(ok, "{err}");
    let events: Vec<&str> = out
        .lines()
        // Event lines start at column 0; a call's verdict lines are indented
        // (and may say "journal" too).
        .filter(|l| !l.starts_with(' '))
        .filter(|l| l.contains(" io ") || l.contains(" journal ") || l.contains(" blocked "))
        .collect();
    assert!(!events.is_empty(), "{out}");
    for l in events {
        assert!(
            l.len() > 24 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T',
            "no timestamp: {l}"
        );
        assert!(
            !l.contains("18446744073709551615") && !l.contains("(0/0)"),
            "{l}"
        );
    }
}

/// A finished fdatasync's record (not the in-progress one printed as it crossed).
fn done_fdatasync(l: &Value) -> bool {
    l["syscall"] == "fdatasync" && l["in_progress"] != true
}

/// A real JVM (Debian's JDK 17): its threads' whole Java names (longer than the kernel's
/// 15 characters) come from jcmd for a thread that started before tracing and from
/// HotSpot's thread__start probe for one started after; a fdatasync held on its way back by
/// a full GC's safepoint is `jvm_pause`, proved by HotSpot's safepoint probes.
#[test]
fn a_jvms_threads_have_their_whole_java_names_and_its_safepoints_prove_jvm_pauses() {
    let test = "a_jvms_threads_have_their_whole_java_names_and_its_safepoints_prove_jvm_pauses";
    if !can_run_root_tests(test) {
        return;
    }
    let dir = scratch_dir("zkstall-jvm");
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("java/LongNames.java");
    let mut jvm = Proc::spawn(
        "java LongNames",
        Command::new("java")
            .args(["-XX:+UseSerialGC", "-Xms256m", "-Xmx256m"])
            .arg(&src)
            .arg(&dir)
            .arg("6")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let out = lines_of(jvm.child.stdout.take().unwrap());
    wait_for_line(&out, "ready", Duration::from_secs(60));
    let tracer = start_tracer_with(jvm.pid(), &["--threshold", "20ms", "--format", "json"]);
    jvm.go();
    assert!(jvm.wait_for_exit(Duration::from_secs(120)).success());
    let (records, _) = finish_tracer_raw(tracer);
    let calls: Vec<&Value> = records.iter().filter(|r| r["type"] == "fsync").collect();
    let of =
        |name: &str| -> Vec<&&Value> { calls.iter().filter(|c| c["thread"] == name).collect() };
    let early = of("EarlyLongNamedSyncThread-1");
    let late = of("LateLongNamedSyncThread-2");
    let seen: std::collections::BTreeSet<String> = calls
        .iter()
        .map(|c| format!("{} ({})", c["thread"], c["thread_source"]))
        .collect();
    assert!(!early.is_empty(), "the early thread, named whole: {seen:?}");
    assert!(!late.is_empty(), "the late thread, named whole: {seen:?}");
    assert!(
        early.iter().all(|c| c["thread_source"] == "jcmd"),
        "{seen:?}"
    );
    assert!(
        late.iter().all(|c| c["thread_source"] == "usdt"),
        "{seen:?}"
    );
    assert!(
        early.iter().all(|c| c["comm"] == "EarlyLongNamedS"),
        "{seen:?}"
    );
    // Held in a GC's safepoint after the return: jvm_pause, with HotSpot's markers.
    let pauses: Vec<&&Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "jvm_pause" && c["evidence"]["safepoint"].is_object())
        .collect();
    assert!(
        !pauses.is_empty(),
        "{:#?}",
        calls
            .iter()
            .map(|c| format!("{} {} {}", c["thread"], c["verdict"], c["headline"]))
            .collect::<Vec<_>>()
    );
    assert!(
        pauses.iter().any(|p| {
            let sp = &p["evidence"]["safepoint"];
            sp["op"].is_string() && !sp["gc_full"].is_null()
        }),
        "a pause names its VM operation and its GC: {pauses:#?}"
    );
    for p in &pauses {
        let sp = &p["evidence"]["safepoint"];
        assert!(sp["overlap_ms"].as_f64().unwrap() > 0.0, "{p}");
        assert!(
            p["headline"].as_str().unwrap().contains("JVM safepoint"),
            "{}",
            p["headline"]
        );
        assert_supported(p);
    }
}
