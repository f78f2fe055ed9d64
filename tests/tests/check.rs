//! `zkstall check` and the errors a user meets first: no privileges, a wrong pid.

use std::{os::unix::fs::PermissionsExt as _, process::Command};

use zkstall_tests::*;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running zkstall");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs zkstall as user `nobody`, from a copy it can execute.
fn as_nobody(args: &[&str]) -> (i32, String, String) {
    as_nobody_with(&[], args)
}

/// The same, holding the capabilities `caps` (`bpf`, `perfmon`, ...) as ambient ones.
fn as_nobody_with(caps: &[&str], args: &[&str]) -> (i32, String, String) {
    let dir = scratch_dir("zkstall-nobody");
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("zkstall");
    std::fs::copy(zkstall_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    if caps.is_empty() {
        cmd.args(["--inh-caps=-all", "--bounding-set=-all"]);
    } else {
        let list: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
        let list = list.join(",");
        cmd.arg(format!("--inh-caps={list}"))
            .arg(format!("--ambient-caps={list}"));
    }
    cmd.arg(&bin).args(args);
    run(&mut cmd)
}

#[test]
fn check_names_each_capability_and_the_one_line_fix() {
    if !can_run_root_tests("check_names_each_capability_and_the_one_line_fix") {
        return;
    }
    // CAP_BPF and CAP_PERFMON alone: tracefs is still closed (root's, mode 700).
    let (code, out, err) = as_nobody_with(&["bpf", "perfmon"], &["check"]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(out.contains("[ ok ] capability   CAP_BPF held"), "{out}");
    assert!(
        out.contains("[FAIL] capability   CAP_DAC_READ_SEARCH missing"),
        "{out}"
    );
    assert!(
        out.contains("[warn] capability   CAP_SYS_PTRACE missing"),
        "{out}"
    );
    assert!(
        out.contains("sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search"),
        "the one-line fix: {out}"
    );
    assert!(out.contains("[FAIL] tracefs"), "{out}");
    // With CAP_DAC_READ_SEARCH too, tracing works (the rest only adds detail).
    let (code, out, err) = as_nobody_with(&["bpf", "perfmon", "dac_read_search"], &["check"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("zkstall can trace on this host"), "{out}");
    assert!(
        out.contains("[warn] capability   CAP_SYSLOG missing"),
        "{out}"
    );
}

#[test]
fn check_passes_here_as_root() {
    if !can_run_root_tests("check_passes_here_as_root") {
        return;
    }
    let (code, out, err) = run(&mut zkstall(&["check"]));
    assert_eq!(code, 0, "check failed:\n{out}\n{err}");
    assert!(out.contains("programs verified by the kernel"), "{out}");
    assert!(out.contains("fsync family: fsync, fdatasync"), "{out}");
    for signal in [
        "block",
        "sched",
        "dirty",
        "writeback",
        "throttle",
        "journal",
    ] {
        assert!(
            out.contains(&format!("[ ok ] signal       {signal}:")),
            "{signal}: {out}"
        );
    }
    assert!(out.contains("zkstall can trace on this host."), "{out}");
}

/// The bench's floor (`zkstall floor`) puts a program on exactly the hooks `check` verifies
/// (what trace and agent attach), and lets go on SIGTERM.
#[test]
fn the_bench_floor_covers_every_hook_check_verifies() {
    if !can_run_root_tests("the_bench_floor_covers_every_hook_check_verifies") {
        return;
    }
    let (code, out, err) = run(&mut zkstall(&["check"]));
    assert_eq!(code, 0, "check failed:\n{out}\n{err}");
    let verified: usize = out
        .lines()
        .find_map(|l| l.split("programs     ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no program count in: {out}"));
    let mut floor = Proc::spawn(
        "zkstall floor",
        zkstall(&["floor"]).stderr(std::process::Stdio::piped()),
    );
    let lines = lines_of(floor.child.stderr.take().unwrap());
    let got = wait_for_line(&lines, "floor attached", std::time::Duration::from_secs(60));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(floor.pid() as i32, libc::SIGTERM) };
    let t0 = std::time::Instant::now();
    let status = floor.wait_for_exit(std::time::Duration::from_secs(10));
    let line = got.last().cloned().unwrap_or_default();
    let nums: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    assert!(nums[1] > 0, "no BTF tracepoint in the floor: {line}");
    assert_eq!(nums[0] + nums[1], verified, "floor: {line}; check: {out}");
    assert!(
        status.success(),
        "floor exited {status:?} after {:?}",
        t0.elapsed()
    );
}

#[test]
fn check_without_privileges_fails_naming_the_fix() {
    if !can_run_root_tests("check_without_privileges_fails_naming_the_fix") {
        return; // dropping to `nobody` needs root in the first place
    }
    let (code, out, err) = as_nobody(&["check"]);
    assert_ne!(code, 0, "check must fail without privileges:\n{out}\n{err}");
    assert!(out.contains("[FAIL] privileges"), "{out}");
    assert!(out.contains("run as root"), "names the fix: {out}");
    assert!(out.contains("cannot trace on this host"), "{out}");
}

#[test]
fn trace_without_privileges_fails_naming_the_fix() {
    if !can_run_root_tests("trace_without_privileges_fails_naming_the_fix") {
        return;
    }
    let me = std::process::id().to_string();
    let (code, _out, err) = as_nobody(&["trace", "--pid", &me, "--duration", "1s"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("run as root"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_agent_without_privileges_fails_naming_the_fix_before_touching_anything() {
    if !can_run_root_tests(
        "the_agent_without_privileges_fails_naming_the_fix_before_touching_anything",
    ) {
        return;
    }
    let dir = scratch_dir("zkstall-agent-nopriv");
    let _cleanup = RemoveOnDrop(dir.clone());
    let inc = dir.join("incidents");
    let (code, _out, err) = as_nobody(&[
        "agent",
        "--incident-dir",
        inc.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("run as root"), "{err}");
    assert!(!inc.exists(), "nothing was created");
}

#[test]
fn a_bad_agent_config_names_the_key() {
    let dir = scratch_dir("zkstall-agent-cfg");
    let _cleanup = RemoveOnDrop(dir.clone());
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, "treshold = \"1s\"\n").unwrap();
    let (code, _out, err) = run(&mut zkstall(&["agent", "--config", cfg.to_str().unwrap()]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("treshold"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn trace_of_a_missing_pid_says_so() {
    // Needs no privileges: the pid is checked first.
    let (code, _out, err) = run(&mut zkstall(&["trace", "--pid", "4194304"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no process with pid 4194304"), "{err}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    // A bare threshold is milliseconds (as in bcc's fileslower), so `5` is
    // valid; a negative one or a duration without a unit is a usage error.
    let (code, _out, err) = run(&mut zkstall(&["trace", "--threshold", "-5"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be negative"), "{err}");
    let (code, _out, err) = run(&mut zkstall(&["trace", "--duration", "5"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs a unit"), "{err}");
    let (code, _out, err) = run(&mut zkstall(&["trace", "--threshold", "fast"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("examples"), "{err}");
}

#[test]
fn report_of_a_bad_file_names_the_problem_without_panicking() {
    let dir = scratch_dir("zkstall-badrec");
    let _cleanup = RemoveOnDrop(dir.clone());
    let junk = dir.join("junk.zst");
    std::fs::write(&junk, b"definitely not zstd").unwrap();
    let (code, _out, err) = run(&mut zkstall(&["report", junk.to_str().unwrap()]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a zkstall recording"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, _out, err) = run(&mut zkstall(&[
        "report",
        dir.join("missing.zst").to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot open"), "{err}");
}

/// Every command that reads recordings, on every kind of bad file: a clear message naming
/// the file, exit status 1, and never a panic.
#[test]
fn bad_recordings_get_a_clear_message_and_a_failure_from_every_reader() {
    let dir = scratch_dir("zkstall-badrecs");
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // Pseudo-random bytes (xorshift), the same every run.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let zstd_of = |b: &[u8]| zstd::encode_all(b, 3).unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (file("empty.zst", b""), "is not a zkstall recording"),
        (file("random.zst", &random), "is not a zkstall recording"),
        (
            file("garbage-in-zstd.zst", &zstd_of(&random)),
            "is not a zkstall recording",
        ),
        (
            file(
                "other-json.zst",
                &zstd_of(b"{\"format\":\"pcap\",\"version\":1}\n"),
            ),
            "is not a zkstall recording",
        ),
        (
            file(
                "future.zst",
                &zstd_of(b"{\"format\":\"zkstall-recording\",\"version\":99}\n"),
            ),
            "newer zkstall",
        ),
        (
            file(
                "v1.zst",
                &zstd_of(b"{\"format\":\"zkstall-recording\",\"version\":1}\n"),
            ),
            "older zkstall",
        ),
        (
            file(
                "bad-header.zst",
                &zstd_of(b"{\"format\":\"zkstall-recording\",\"version\":3,\"host\":7}\n"),
            ),
            "corrupt",
        ),
        (
            // Cut inside the header's chunk: nothing usable, unlike a cut after it.
            file("truncated.zst", &{
                let z =
                    zstd_of(b"{\"format\":\"zkstall-recording\",\"version\":3,\"host\":\"zk1\"}\n");
                z[..z.len() / 2].to_vec()
            }),
            "is not a zkstall recording",
        ),
        (dir.join("missing.zst"), "cannot open"),
        (dir.clone(), "zkstall recording"),
    ];
    let out = dir.join("out.pftrace");
    for (path, want) in &cases {
        let p = path.to_str().unwrap();
        for args in [
            vec!["report", p],
            vec!["report", p, "--summary", "--format", "json"],
            vec!["export", p, "-o", out.to_str().unwrap()],
            vec!["export", p, "--jsonl"],
            vec!["merge", p, p],
        ] {
            let (code, _o, err) = run(&mut zkstall(&args));
            assert_eq!(code, 1, "{args:?}: exit {code}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: wanted {want:?} in: {err}");
            assert!(
                err.contains(path.file_name().unwrap().to_str().unwrap()),
                "{args:?}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        }
        assert!(!out.exists(), "no output from a bad recording");
    }
}

#[test]
fn an_existing_output_is_refused_without_force_before_anything_is_traced() {
    let dir = scratch_dir("zkstall-force");
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("zk1.zst");
    std::fs::write(&rec, b"precious").unwrap();
    // As nobody too: the file is checked before privileges.
    for (code, _o, err) in [
        run(&mut zkstall(&[
            "trace",
            "--output",
            rec.to_str().unwrap(),
            "-d",
            "1s",
        ])),
        as_nobody(&["trace", "--output", rec.to_str().unwrap(), "-d", "1s"]),
    ] {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("exists") && err.contains("--force"), "{err}");
    }
    assert_eq!(std::fs::read(&rec).unwrap(), b"precious");
}
