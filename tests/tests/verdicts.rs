//! Each verdict, produced live: a workload thread named SyncThread:1 appends and syncs on
//! a loop-mounted ext4 while a stall is injected; zkstall must explain the slow calls with
//! the expected verdict and evidence. Guards undo every injection even on failure.

use std::{
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use serde_json::Value;
use zkstall_tests::*;

static SERIAL: Mutex<()> = Mutex::new(());

/// The calls of `raw` (JSON lines) reported while still running.
/// Whether a record is `unknown` because its disk's pause, still open, is too young yet.
fn pause_open(r: &Value) -> bool {
    r["chain"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|k| k["what"] == "pause_open")
}

fn in_progress(raw: &str) -> Vec<Value> {
    json_lines(raw)
        .into_iter()
        .filter(|r| r["in_progress"] == true)
        .collect()
}

#[test]
fn a_frozen_filesystem_under_a_write_is_fs_blocked() {
    if !can_run_root_tests("a_frozen_filesystem_under_a_write_is_fs_blocked") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mnt = Mount::ext4(&lo.dev);
    let rec_dir = scratch_dir("zkstall-rec");
    let _rm = RemoveOnDrop(rec_dir.clone());
    let rec = rec_dir.join("frozen.zst");
    let sc = Scenario::start_with(
        &mnt.dir.join("zk"),
        &[
            "--threshold",
            "500ms",
            "--format",
            "json",
            "--output",
            rec.to_str().unwrap(),
        ],
        &FDATASYNC_EVERY_5MS,
        &[],
    );
    let mut freeze = Freeze::new(&mnt.dir);
    let frozen = mono_ns();
    std::thread::sleep(Duration::from_millis(1500));
    let thaw_began = mono_ns();
    freeze.thaw();
    let (calls, live) = sc.finish_raw();
    // The recording, reported later without root, says exactly what the live run said.
    let report = Command::new(zkstall_bin())
        .arg("report")
        .arg(&rec)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&report.stdout),
        live,
        "report == live"
    );
    assert_eq!(calls.len(), 1, "{:#?}", verdicts(&calls));
    let c = &calls[0];
    assert_eq!(c["type"], "write", "the stuck call is the write: {c}");
    assert_eq!(c["verdict"], "fs_blocked", "{}", c["headline"]);
    // From when the write started (or the freeze was complete, if later) until the thaw
    // began, the thread was blocked on the freeze, but for what it ran on a CPU or waited
    // for one: bounds on the kernel's clock, not the test's own 1.5 s sleep.
    let (c_start, _) = interval_ns(c);
    let ev = &c["evidence"];
    let frozen_under_it_ms = thaw_began.saturating_sub(c_start.max(frozen)) as f64 / 1e6;
    let not_d_ms = ev["on_cpu_ms"].as_f64().unwrap() + ev["runq_ms"].as_f64().unwrap();
    assert!(
        frozen_under_it_ms > 1000.0
            && ev["d_state_ms"].as_f64().unwrap() >= frozen_under_it_ms - not_d_ms - 0.01,
        "blocked in D for the {frozen_under_it_ms} ms it was frozen under it: {c}"
    );
    assert!(
        c["headline"].as_str().unwrap().contains("percpu_rwsem"),
        "{}",
        c["headline"]
    );
    assert_eq!(c["timeline"][0]["thread"], "SyncThread:1");
    // While it was stuck, it was reported as it crossed the threshold, already with the
    // cause it was waiting on.
    let early = in_progress(&live);
    assert_eq!(early.len(), 1, "{early:#?}");
    assert_eq!(early[0]["type"], "write");
    assert_eq!(early[0]["start_ns"], c["start_ns"]);
    assert_eq!(
        early[0]["verdict"], "fs_blocked",
        "{}",
        early[0]["headline"]
    );
    let so_far = early[0]["duration_ms"].as_f64().unwrap();
    assert!(
        (500.0..1400.0).contains(&so_far),
        "reported as it crossed 500 ms: {so_far}"
    );
    assert_eq!(c["timeline"][0]["state"], "D");
}

#[test]
fn a_competing_dd_with_conv_fsync_is_contention_naming_dd() {
    if !can_run_root_tests("a_competing_dd_with_conv_fsync_is_contention_naming_dd") {
        return;
    }
    a_competing_dd("all");
}

/// The same with only the requests around calls sent one by one (the agent's default):
/// the requests a verdict looks at are the same.
#[test]
fn a_competing_dd_is_contention_naming_dd_with_requests_around_calls() {
    if !can_run_root_tests("a_competing_dd_is_contention_naming_dd_with_requests_around_calls") {
        return;
    }
    a_competing_dd("around-calls");
}

fn a_competing_dd(requests: &str) {
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(1024);
    let mnt = Mount::ext4(&lo.dev);
    // --events: dd's block requests say when it was writing to the device.
    let sc = Scenario::start_with(
        &mnt.dir.join("zk"),
        &[
            "--threshold",
            "50ms",
            "--format",
            "json",
            "--events",
            "--requests",
            requests,
        ],
        if requests == "around-calls" {
            &FDATASYNC_EVERY_100MS
        } else {
            &FDATASYNC_EVERY_5MS
        },
        &[],
    );
    let of = format!("of={}", mnt.dir.join("big").display());
    let mut dd = Proc::spawn(
        "dd",
        Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=1M", "count=800", "conv=fsync"])
            .stderr(Stdio::null()),
    );
    let dd_pid = dd.pid() as u64;
    assert!(dd.wait_for_exit(Duration::from_secs(120)).success());
    // dd exits once its fsync is done: its data is on loop0 and, through loop0's flush
    // (an fsync of the backing file), on the disk under it. Its writes to loop0 can end
    // long before that (they land in the backing file's page cache at memory speed); the
    // slow calls are often in the flush that follows.
    let dd_exit = mono_ns();
    let (calls, raw) = sc.finish_raw();
    // When dd began writing to the device, as the kernel saw it: the first completion of
    // a request queued by dd or charged to it (flusher writeback).
    let dev = lo.majmin();
    let dd_io: Vec<u64> = json_lines(&raw)
        .iter()
        .filter(|r| {
            r["type"] == "io"
                && r["dev"] == dev.as_str()
                && (r["pid"].as_u64() == Some(dd_pid)
                    || r["dirtier"]["pid"].as_u64() == Some(dd_pid))
        })
        .filter_map(|r| r["complete_ns"].as_u64())
        .collect();
    let Some(&dd_from) = dd_io.iter().min() else {
        panic!("no request of dd on {dev}");
    };
    let dd_to = dd_exit;
    // The slow calls while dd's data was going to the disks. (On a slow machine, a
    // guest under emulation, an fdatasync can pass the threshold with no help from dd,
    // its own journal commit taking that long: before dd's writes reach the device, and
    // after. Those are not this test's point.)
    let slow: Vec<&Value> = calls
        .iter()
        .filter(|c| {
            let (start, end) = interval_ns(c);
            c["type"] == "fsync" && dd_from <= start && end <= dd_to
        })
        .collect();
    eprintln!(
        "dd's run (first I/O to exit) {:.0} ms; slow calls in it: {:#?}",
        (dd_to - dd_from) as f64 / 1e6,
        verdicts(&slow.iter().map(|c| (*c).clone()).collect::<Vec<_>>())
    );
    assert!(!slow.is_empty(), "dd slows the fdatasyncs down");
    let summary = json_lines(&raw).pop().unwrap_or_default();
    eprintln!("requests summed: {}", summary["io_summed"]);
    for c in &slow {
        // A call whose thread came back onto a CPU without the kernel running the
        // scheduler probe has a hole in its evidence (seen once in ~10 runs: 167 ms of a
        // 185 ms call uncovered): `unknown`, saying why, is the honest answer there.
        let hole = c["evidence"]["incomplete"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s.as_str()
                    .is_some_and(|s| s.contains("without the kernel running the scheduler probe"))
            });
        if hole && c["verdict"] == "unknown" {
            eprintln!("a call with an unseen return to CPU, said: {c}");
            continue;
        }
        // A short call (one every 100 ms) whose own write sat at loop0 while the disk under
        // it wrote loop0's backlog (dd's data, relayed; dd's requests to loop0 themselves
        // completed outside the call, summed or not yet): no rule names whose backlog that
        // was (follow-up 36), so `unknown`, and its evidence shows exactly that shape. Seen
        // in 1 of ~12 around-calls runs (ci60).
        if c["verdict"] == "unknown" && held_by_backlog(c) {
            eprintln!("a call held by loop0's backlog, said: {c}");
            continue;
        }
        // dd is the root cause: device_contention (via the journal, mostly), never
        // journal_wait.
        assert_eq!(
            c["verdict"],
            "device_contention",
            "{:#?}\n{c:#}",
            verdicts(&calls)
        );
        assert_eq!(
            c["contenders"][0]["pid"].as_u64(),
            Some(dd_pid),
            "dd is the top contender: {c}"
        );
        assert_eq!(c["contenders"][0]["comm"], "dd");
    }
}

/// A neighbour flooding the disk under ZooKeeper's loop device (fio's 256 KiB direct writes
/// on /var/tmp, where the loop device's file is): each commit's writes wait on loop0 while
/// the disk under it writes fio's data. fio is the cause, via the journal: not a commit
/// "slow on its own" (what the rules said of it before), nor whoever wrote to the loop
/// device in the seconds before (ext4's lazy inode-table init was named for 338 of 371
/// such calls).
#[test]
fn a_flood_on_the_disk_under_the_loop_device_is_contention_naming_the_flood() {
    if !can_run_root_tests(
        "a_flood_on_the_disk_under_the_loop_device_is_contention_naming_the_flood",
    ) {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(512);
    let mnt = Mount::ext4(&lo.dev);
    let sc = Scenario::start_with(
        &mnt.dir.join("zk"),
        &[
            "--threshold",
            "10ms",
            "--format",
            "json",
            "--requests",
            "all",
        ],
        &FDATASYNC_EVERY_5MS,
        &[],
    );
    let (fio, dir) = flood_var_tmp_with("256k", 32);
    let fio_pid = fio.pid() as u64;
    std::thread::sleep(Duration::from_secs(8));
    drop(fio);
    // fio's file removed while tracing: freeing its 256 MiB sends discards of that length
    // to vda (mounted with `discard`), in a few requests charged to this test's thread. A
    // discard's length is not data moved: that thread is not named (it was, with "268 MB of
    // others' I/O", when it counted as bytes).
    drop(dir);
    std::thread::sleep(Duration::from_secs(2));
    // Both directions: every call the workload timed over the threshold has its record, and
    // every record a verdict its evidence supports.
    let (calls, _) = sc.finish_raw();
    let slow: Vec<&Value> = calls.iter().filter(|c| c["type"] == "fsync").collect();
    let named = |c: &&&Value| {
        c["verdict"] == "device_contention" && c["contenders"][0]["pid"].as_u64() == Some(fio_pid)
    };
    let by_fio = slow.iter().filter(named).count();
    eprintln!(
        "{} slow fdatasyncs, {by_fio} of them fio's contention; the others: {:#?}",
        slow.len(),
        verdicts(
            &slow
                .iter()
                .filter(|c| !named(c))
                .map(|c| (*c).clone())
                .collect::<Vec<_>>()
        )
    );
    assert!(
        slow.len() >= 5,
        "the flood slows the commits down: {:#?}",
        verdicts(&calls)
    );
    // Nobody else is named for it.
    for c in &slow {
        if c["verdict"] == "device_contention" {
            assert_eq!(c["contenders"][0]["pid"].as_u64(), Some(fio_pid), "{c}");
        }
    }
    // Most are fio's (the rest: a commit held by something else, said as such).
    assert!(by_fio * 4 >= slow.len() * 3, "{:#?}", verdicts(&calls));
}

/// The call waited at a loop device (its top layer) that completed nothing for most of the
/// call, held by the disk under it (busy for most of that pause) writing the loop device's
/// own traffic (1 MiB or more from above), with no other process's request on the loop
/// device in the call's window: nothing in it says whose the backlog was.
fn held_by_backlog(c: &Value) -> bool {
    let layers = c["evidence"]["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (Some(top), Some(below)) = (layers.first(), layers.get(1)) else {
        return false;
    };
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let gap = f(top, "longest_completion_gap_ms");
    top["kind"] == "loop"
        && f(top, "bytes_others") == 0.0
        && gap >= 0.5 * f(c, "duration_ms")
        && f(top, "backing_held_ms") >= 0.5 * gap
        && f(below, "bytes_from_above") >= (1 << 20) as f64
}

#[test]
fn a_device_that_stops_completing_io_is_a_device_stall() {
    if !can_run_root_tests("a_device_that_stops_completing_io_is_a_device_stall") {
        return;
    }
    a_device_stops(false);
}

#[test]
fn a_device_that_stops_with_others_io_queued_on_it_is_a_device_stall_not_contention() {
    if !can_run_root_tests(
        "a_device_that_stops_with_others_io_queued_on_it_is_a_device_stall_not_contention",
    ) {
        return;
    }
    a_device_stops(true);
}

/// The same with only the requests around calls sent one by one (the agent's default).
#[test]
fn a_device_that_stops_with_others_io_queued_is_a_device_stall_with_requests_around_calls() {
    if !can_run_root_tests(
        "a_device_that_stops_with_others_io_queued_is_a_device_stall_with_requests_around_calls",
    ) {
        return;
    }
    a_device_stops_with(true, "around-calls");
}

/// ZooKeeper's disk stops while the disk under its stack (where the loop devices' files
/// are) is flooded with tens of thousands of requests a second, every one of them traced
/// (`--requests all`). Under CI's debug build the agent cannot keep up with that flood: the
/// reader sheds whole batches, but keeps the calls' entries and exits (a 3 s stall once went
/// unreported, its exit shed with the flood). Either answer is then honest, and the test
/// accepts either: the device stall, or `unknown` saying what it lacks (records lost in the
/// call's windows). Not accepted: a call the workload timed over the threshold without a
/// record, a verdict its evidence does not support (both checked by `finish_raw`), or any
/// other verdict for the stall (the flood's contention is on another disk than the stopped
/// one).
#[test]
fn a_device_that_stops_during_a_flood_below_it_is_reported_with_a_verdict_its_evidence_supports() {
    if !can_run_root_tests(
        "a_device_that_stops_during_a_flood_below_it_is_reported_with_a_verdict_its_evidence_supports",
    ) {
        return;
    }
    let _serial = serial(&SERIAL);
    let stop = DeviceStop {
        bare: false,
        partition: false,
        neighbour: false,
        flood_below: true,
        after_a_call: false,
        requests: "all",
        workload: &FDATASYNC_EVERY_5MS,
        others_queued: false,
        // The flood is running when the disk stops.
        before: Duration::from_millis(1000),
        stopped: Duration::from_millis(3000),
        after: Duration::from_millis(500),
    };
    let (calls, raw, name, _) = stop.record();
    let summary = json_lines(&raw).pop().unwrap_or_default();
    eprintln!("{:#?}\nsummary: {summary}", verdicts(&calls));
    // The flood was one: many times the requests ZooKeeper's calls make on the watched
    // disks (about 8-15 a call without it), seen or shed. Natively 290-390k records in a
    // run, several hundred a call; in the 6.1 guest, where an emulated CPU drives fio at
    // under 1k IOPS, 5.9k in 61 calls (97 a call).
    let seen = summary["io_watched"].as_u64().unwrap_or(0)
        + summary["shed_by_reader"].as_u64().unwrap_or(0);
    let per_call = seen / summary["calls"].as_u64().unwrap_or(1).max(1);
    assert!(per_call >= 40, "no flood below the stack: {summary}");
    let stalls: Vec<&Value> = calls
        .iter()
        .filter(|c| c["duration_ms"].as_f64().unwrap_or(0.0) >= 2000.0)
        .collect();
    assert!(
        !stalls.is_empty(),
        "the stall has its record: {:#?}",
        verdicts(&calls)
    );
    for c in stalls {
        let incomplete = c["evidence"]["incomplete"]
            .as_array()
            .map_or(0, |a| a.len());
        match c["verdict"].as_str() {
            Some("device_stall") => assert_eq!(
                c["evidence"]["disk"].as_str(),
                Some(name.as_str()),
                "the stopped disk's stall: {c}"
            ),
            Some("unknown") => assert!(incomplete > 0, "unknown says what it lacks: {c}"),
            _ => panic!("the stall is a device stall or honestly unknown: {c}"),
        }
    }
}

/// A target quiet most of the time: no call in flight for seconds between two.
const FDATASYNC_EVERY_2500MS: [&str; 6] = [
    "--calls",
    "100000",
    "--interval",
    "2500ms",
    "--syscalls",
    "fdatasync",
];

/// The agent's mode on a target that is quiet most of the time (an fdatasync every 2.5 s):
/// fio keeps a deep queue on the disk while no call is in flight, so its requests are not
/// followed (only counted), and the disk stops under them. A call that enters during the
/// stop waits behind requests the probes never saw start. While those are in flight a look
/// at the running call cannot know the disk (a neighbour's request stuck there would be
/// missing), and says so; once they complete they are seen (with the block layer's own
/// start and issue stamps) and the call is a device stall.
#[test]
fn a_device_that_stops_under_requests_not_followed_is_a_device_stall_once_they_are_seen() {
    if !can_run_root_tests(
        "a_device_that_stops_under_requests_not_followed_is_a_device_stall_once_they_are_seen",
    ) {
        return;
    }
    let stop = DeviceStop {
        bare: false,
        partition: false,
        neighbour: false,
        flood_below: false,
        // fio's queue builds while no call is in flight: the stop starts 1 s after a call
        // returned, and the next call enters 1.5 s into it and sees 3 s of it. (Started at
        // a time that raced the calls, a call under fio's load was sometimes in flight as
        // the stop began: its first look then saw fio's contention and a pause not yet
        // 500 ms long, another shape than this test's.)
        after_a_call: true,
        requests: "around-calls",
        workload: &FDATASYNC_EVERY_2500MS,
        others_queued: true,
        before: Duration::from_millis(1000),
        stopped: Duration::from_millis(4500),
        after: Duration::from_millis(500),
    };
    let (calls, raw) = stop.run();
    let summary = json_lines(&raw).pop().unwrap_or_default();
    eprintln!(
        "io_late {} io_summed {}",
        summary["io_late"], summary["io_summed"]
    );
    assert!(
        summary["io_late"].as_u64().unwrap_or(0) > 0,
        "fio's requests were not followed while the target was quiet: {summary}"
    );
    let long: Vec<&Value> = calls
        .iter()
        .filter(|c| c["duration_ms"].as_f64().unwrap_or(0.0) >= 1500.0)
        .collect();
    // The shape this is about: the stall's call saw requests first at their completion.
    assert!(
        long.iter()
            .any(|c| c["evidence"]["layers"][0]["requests_late"]
                .as_u64()
                .unwrap_or(0)
                > 0),
        "no request of the stall was first seen completing: {:#?}",
        long
    );
    // A look while they were in flight unseen claims nothing it cannot know; nor does one
    // at a pause too young yet to be a stall.
    let not_followed = "request(s) in flight now that the probes did not follow";
    let looks = in_progress(&raw);
    for r in &looks {
        let says = r["evidence"]["incomplete"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i.as_str().is_some_and(|i| i.contains(not_followed)));
        assert!(
            r["verdict"] == "device_stall" && !says
                || r["verdict"] == "unknown" && (says || pause_open(r)),
            "{r:#}"
        );
    }
    eprintln!(
        "looks at the running call: {:?}",
        looks
            .iter()
            .map(|r| r["verdict"].clone())
            .collect::<Vec<_>>()
    );
    for c in &calls {
        assert_supported(c);
    }
}

/// A bare disk (the guest's virtio disk, not a loop device) stopped by the hypervisor: its
/// image's filesystem on the host is frozen, so qemu's writes block and the guest's
/// requests stay in flight, as under a SAN or cloud volume stall. Every request traced.
#[test]
#[ignore = "needs a disk the hypervisor can stop: runs in `cargo xtask vm-test`'s guest (CI's 6.1 tier)"]
fn a_bare_disk_the_hypervisor_stops_is_a_device_stall() {
    if !can_run_root_tests("a_bare_disk_the_hypervisor_stops_is_a_device_stall") {
        return;
    }
    a_device_stops_on(true, false, false, "all");
}

/// The same with another process's direct writes queued deep on the disk when it stops
/// (16 in flight): the hypervisor's stall, not that process, is the cause, as in the
/// first of the causes ranked (a SAN or hypervisor stall hits every request on the disk,
/// whoever's).
#[test]
#[ignore = "needs a disk the hypervisor can stop: runs in `cargo xtask vm-test`'s guest (CI's 6.1 tier)"]
fn a_bare_disk_the_hypervisor_stops_with_others_io_queued_is_a_device_stall() {
    if !can_run_root_tests(
        "a_bare_disk_the_hypervisor_stops_with_others_io_queued_is_a_device_stall",
    ) {
        return;
    }
    a_device_stops_on(true, false, true, "all");
}

/// The hypervisor stops the bare disk, the workload's fdatasync blocks on it, and only
/// then tracing starts (`zkstall trace`'s default, every request followed): the SRE's
/// moment, during the stall, on the first-ranked cause. See [`stuck_when_tracing_starts`].
#[test]
#[ignore = "needs a disk the hypervisor can stop: runs in `cargo xtask vm-test`'s guest (CI's 6.1 tier)"]
fn a_call_stuck_on_a_bare_disk_the_hypervisor_stopped_before_tracing_starts_is_a_device_stall() {
    if !can_run_root_tests(
        "a_call_stuck_on_a_bare_disk_the_hypervisor_stopped_before_tracing_starts_is_a_device_stall",
    ) {
        return;
    }
    let _serial = serial(&SERIAL);
    let disk = HostDisk::from_env();
    stuck_when_tracing_starts(&disk.dev, || disk.stop(), "all");
}

/// The same with the disk partitioned, as production disks are: ZooKeeper's filesystem on
/// the first partition, fio's queue on the second. The partitions share the disk's queue,
/// and the stopped disk, not the other partition's writer, is the cause.
#[test]
#[ignore = "needs a disk the hypervisor can stop: runs in `cargo xtask vm-test`'s guest (CI's 6.1 tier)"]
fn a_partitioned_bare_disk_the_hypervisor_stops_is_a_device_stall_not_the_other_partitions_contention()
 {
    if !can_run_root_tests(
        "a_partitioned_bare_disk_the_hypervisor_stops_is_a_device_stall_not_the_other_partitions_contention",
    ) {
        return;
    }
    let calls = a_device_stops_on(true, true, true, "all");
    let c = calls
        .iter()
        .find(|c| c["verdict"] == "device_stall")
        .expect("checked by run");
    let l = &c["evidence"]["layers"][0];
    // The shape this is about: the queue the disk stopped under was the other partition's.
    assert!(
        l["bytes_other_partitions"].as_u64().unwrap() > l["bytes_thread"].as_u64().unwrap(),
        "{l}"
    );
}

/// The agent's mode on the same bare disk, with the target quiet (an fdatasync every
/// 2.5 s) and a neighbour writing a little now and then: when the disk stops, the
/// neighbour's request in flight was issued while no call was, and was not followed. A
/// call that enters during the stop is still a device stall while it lasts: one or two
/// requests of unknown owner cannot have kept a bare disk from completing anything (a
/// flood of others' needs a deep queue), and the looks say how many were not followed.
#[test]
#[ignore = "needs a disk the hypervisor can stop: runs in `cargo xtask vm-test`'s guest (CI's 6.1 tier)"]
fn a_bare_disk_that_stops_under_a_few_requests_not_followed_is_a_stall_while_it_lasts() {
    if !can_run_root_tests(
        "a_bare_disk_that_stops_under_a_few_requests_not_followed_is_a_stall_while_it_lasts",
    ) {
        return;
    }
    let stop = DeviceStop {
        bare: true,
        partition: false,
        neighbour: true,
        flood_below: false,
        // Between two calls (2.5 s apart), long after a look found none in flight (looks
        // are 100 ms apart): the neighbour's request then in flight is not followed, and
        // the next call enters during the stop.
        after_a_call: true,
        requests: "around-calls",
        workload: &FDATASYNC_EVERY_2500MS,
        others_queued: false,
        before: Duration::from_millis(1300),
        stopped: Duration::from_millis(5000),
        after: Duration::from_millis(500),
    };
    let (calls, raw) = stop.run();
    let looks = in_progress(&raw);
    eprintln!(
        "looks at the running call: {:?}",
        looks
            .iter()
            .map(|r| (
                r["verdict"].clone(),
                r["evidence"]["layers"][0]["unfollowed"].clone()
            ))
            .collect::<Vec<_>>()
    );
    // The shape this is about: a look at the stall in progress with requests in flight
    // nobody followed, which names the stall all the same.
    assert!(
        looks.iter().any(|r| r["verdict"] == "device_stall"
            && r["evidence"]["layers"][0]["unfollowed"]
                .as_u64()
                .unwrap_or(0)
                > 0),
        "no look at the running stall had requests in flight not followed and said device_stall: {looks:#?}"
    );
    for r in &looks {
        assert!(
            r["verdict"] == "device_stall" || r["duration_ms"].as_f64().unwrap_or(0.0) < 1500.0,
            "{r:#}"
        );
        assert_supported(r);
    }
    for c in &calls {
        assert_supported(c);
    }
}

/// A process writing 64 KiB directly to a file in `dir` ten times a second (one request in
/// flight at a time).
fn neighbour_writes(dir: &std::path::Path) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let p = Proc::spawn(
        "fio",
        Command::new("fio")
            .args([
                "--thread",
                "--name=neighbour",
                &format!("--directory={}", dir.display()),
                "--rw=randwrite",
                "--bs=64k",
                "--size=8m",
                "--direct=1",
                "--ioengine=psync",
                "--rate_iops=10",
                "--runtime=60",
                "--time_based",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for_writes(&dir.join("neighbour.0.0"), 8 << 20);
    p
}

/// ZooKeeper's disk (inner) is a loop device over a file on another filesystem (outer).
/// Freezing the outer filesystem stops the inner device from completing anything: the SAN
/// or hypervisor stall of the motivating report, in miniature. With `others_queued`, fio's
/// direct writes keep a deep queue of another process's requests on the inner device when
/// it stops: the stop, not fio, is the cause (in the 6.1 guest, ext4lazyinit's requests
/// queued there once made it a journal wait).
fn a_device_stops(others_queued: bool) {
    a_device_stops_with(others_queued, "all")
}

fn a_device_stops_with(others_queued: bool, requests: &str) {
    a_device_stops_on(false, false, others_queued, requests);
}

/// The same on the guest's bare disk stopped by the host with `bare` (see [`HostDisk`]),
/// partitioned with `partition`. Returns the final records.
fn a_device_stops_on(
    bare: bool,
    partition: bool,
    others_queued: bool,
    requests: &str,
) -> Vec<Value> {
    let stop = DeviceStop {
        bare,
        partition,
        neighbour: false,
        flood_below: false,
        after_a_call: false,
        requests,
        workload: &FDATASYNC_EVERY_5MS,
        others_queued,
        before: Duration::ZERO,
        stopped: Duration::from_millis(3000),
        after: Duration::ZERO,
    };
    let (calls, _) = stop.run();
    let c = calls
        .iter()
        .find(|c| c["verdict"] == "device_stall")
        .expect("checked by run");
    assert_eq!(c["type"], "fsync", "{c}");
    assert!(c["evidence"]["inflight_max"].as_u64().unwrap() >= 1, "{c}");
    if others_queued {
        // The shape this is about: others' requests queued deep on the stopped device.
        let l = &c["evidence"]["layers"][0];
        assert!(l["inflight_max"].as_u64().unwrap() >= 8, "{l}");
        assert!(
            l["bytes_others"].as_u64().unwrap() > l["bytes_thread"].as_u64().unwrap(),
            "{l}"
        );
    }
    for c in &calls {
        assert_supported(c);
    }
    calls
}

/// ZooKeeper's disk (the inner loop device of a [`StoppableDisk`]) stopped for `stopped`
/// under `workload`, traced with `--requests requests`, fio queued deep on it from `before`
/// the stop with `others_queued`, the trace ending `after` the thaw.
struct DeviceStop<'a> {
    /// The guest's bare virtio disk stopped by the hypervisor ([`HostDisk`]) instead of a
    /// loop device over a frozen filesystem.
    bare: bool,
    /// With `bare`: the disk partitioned, ZooKeeper's filesystem on its first partition
    /// and fio's (with `others_queued`) on its second.
    partition: bool,
    requests: &'a str,
    workload: &'a [&'a str],
    others_queued: bool,
    /// Another process writing a little now and then (a few requests in flight at most).
    neighbour: bool,
    /// fio's 4 KiB direct writes, 8 at a time, flooding the disk under /var/tmp, where the
    /// stoppable disk's files are: a disk of the watched stack, busy with tens of
    /// thousands of requests a second, which go on while ZooKeeper's disk stops.
    flood_below: bool,
    /// `before` counts from the end of a call of the workload instead of the scenario's
    /// start (the workload's interval runs from a call's end to the next call).
    after_a_call: bool,
    before: Duration,
    stopped: Duration,
    after: Duration,
}

impl DeviceStop<'_> {
    /// The final records and the whole output, once it checked what every stop must
    /// show: a device stall on the inner device with a completion gap over 2 s, and every
    /// long call (1.5 s and over) a device stall.
    fn run(&self) -> (Vec<Value>, String) {
        let _serial = serial(&SERIAL);
        let (calls, raw, name, part) = self.record();
        let all = || {
            calls
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        // On failure, the whole records and the run's summary (its unseen and stale
        // counts): a verdict alone does not say which evidence missed.
        assert!(
            calls.iter().any(|c| c["verdict"] == "device_stall"),
            "{:#?}\n{}\n{}",
            verdicts(&calls),
            all(),
            raw.lines().last().unwrap_or_default()
        );
        let c = calls
            .iter()
            .find(|c| c["verdict"] == "device_stall")
            .unwrap();
        // The stopped disk's; with a partition, the file's device is the partition and
        // the layer judged is the whole disk (whose queue the partitions share).
        assert_eq!(
            c["evidence"]["device"].as_str(),
            Some(part.unwrap_or(name.clone()).as_str()),
            "on the inner device: {c}"
        );
        assert_eq!(
            c["evidence"]["disk"].as_str(),
            Some(name.as_str()),
            "on the inner device: {c}"
        );
        assert!(
            c["evidence"]["longest_completion_gap_ms"].as_f64().unwrap() > 2000.0,
            "{c}"
        );
        for c in &calls {
            assert!(
                c["verdict"] == "device_stall" || c["duration_ms"].as_f64().unwrap() < 1500.0,
                "every long call is the stall: {:#?}\n{c}",
                verdicts(&calls)
            );
        }
        eprintln!("{:#?}", verdicts(&calls));
        (calls, raw)
    }

    /// Runs the stop; returns the final records, the whole output, the stopped disk's name
    /// and its first partition's. [`Scenario::finish_raw`] checked both directions already:
    /// every call the workload timed over the threshold has its record, and every record
    /// a verdict its own evidence supports. The caller holds [`SERIAL`].
    fn record(&self) -> (Vec<Value>, String, String, Option<String>) {
        let (host, lo) = if self.bare {
            (Some(HostDisk::from_env()), None)
        } else {
            (None, Some(StoppableDisk::new(256)))
        };
        let (dev, name) = match (&host, &lo) {
            (Some(h), _) => (h.dev.clone(), h.name()),
            (_, Some(l)) => (l.inner.dev.clone(), l.inner.name()),
            _ => unreachable!(),
        };
        assert!(
            !self.partition || self.bare,
            "a partition of the bare disk only"
        );
        let parts = self.partition.then(|| PartDisk::new(&dev, &[400, 400]));
        let part_name = |i: usize| {
            parts.as_ref().map(|p| {
                p.parts[i]
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
        };
        let inner = Mount::ext4(parts.as_ref().map_or(&dev, |p| &p.parts[0]));
        let beside = parts.as_ref().map(|p| Mount::ext4(&p.parts[1]));
        let others_dir = beside.as_ref().map_or(&inner.dir, |m| &m.dir);
        let sc = Scenario::start_with(
            &inner.dir.join("zk"),
            &[
                "--threshold",
                "1s",
                "--format",
                "json",
                "--requests",
                self.requests,
            ],
            self.workload,
            &[],
        );
        let fio = self.others_queued.then(|| {
            fio_queued(
                &others_dir.join("fio"),
                (!self.bare).then_some(name.as_str()),
            )
        });
        let neighbour = self
            .neighbour
            .then(|| neighbour_writes(&others_dir.join("neighbour")));
        let flood = self.flood_below.then(flood_var_tmp);
        if self.after_a_call {
            // `before` counts from the end of the workload's next call, so the stop falls
            // between two calls, as far from them as chosen.
            sc.wait_for_call_end(Duration::from_secs(30));
        }
        std::thread::sleep(self.before);
        if self.others_queued {
            // fio's requests queued deep when the stop falls, the shape this is about (in
            // the 6.1 guest, fio had 3 in flight on the bare disk as the host stopped it
            // once, in a lull of its 16).
            wait_for_inflight(&name, 8, Duration::from_secs(30));
        }
        if let Some(h) = &host {
            let mut freeze = h.stop();
            std::thread::sleep(self.stopped);
            freeze.thaw();
        } else if let Some(l) = &lo {
            let mut freeze = l.stop();
            std::thread::sleep(self.stopped);
            freeze.thaw();
        }
        std::thread::sleep(self.after);
        drop(fio);
        drop(neighbour);
        drop(flood);
        let (calls, raw) = sc.finish_raw();
        // What the run lost, for a failure to be told apart from a miss (follow-up 37).
        let summary = json_lines(&raw).pop().unwrap_or_default();
        eprintln!(
            "lost: stale_requests {} map_busy {} io_stale {} unseen_watched {} probe_misses {}",
            summary["stale_requests"],
            summary["map_busy"],
            summary["io_stale"],
            summary["unseen_watched"],
            summary["probe_misses"]
        );
        let part = part_name(0);
        (calls, raw, name, part)
    }
}

/// fio's flood for [`DeviceStop::flood_below`], in a directory of its own under /var/tmp
/// (its file allocated first, so that fio does not lay it out); killed, and its directory
/// removed, when dropped.
fn flood_var_tmp() -> (Proc, RemoveOnDrop) {
    flood_var_tmp_with("4k", 8)
}

/// fio's random direct writes of `bs`, `depth` at a time, as [`flood_var_tmp`].
fn flood_var_tmp_with(bs: &str, depth: u32) -> (Proc, RemoveOnDrop) {
    let dir = RemoveOnDrop(std::path::PathBuf::from(format!(
        "/var/tmp/zkstall-flood-below-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let status = Command::new("fallocate")
        .args(["-l", "256M"])
        .arg(dir.0.join("flood.0.0"))
        .status()
        .unwrap();
    assert!(status.success(), "fallocate");
    let p = Proc::spawn(
        "fio flood below",
        Command::new("fio")
            .args([
                "--thread",
                "--name=flood",
                &format!("--directory={}", dir.0.display()),
                "--rw=randwrite",
                &format!("--bs={bs}"),
                "--size=256m",
                "--direct=1",
                "--ioengine=libaio",
                &format!("--iodepth={depth}"),
                "--runtime=120",
                "--time_based",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    (p, dir)
}

/// fio's direct 64 KiB writes, 16 at a time, to a file in `dir`: with `deep_on`, once that
/// disk has 8 or more requests in flight (fio lays its file out first: in a guest under
/// emulation that takes seconds); without, once fio laid its file out and writes (on the
/// guest's virtio disk the host completes them faster than an emulated CPU issues them,
/// so they pile up only once the disk stops).
fn fio_queued(dir: &std::path::Path, deep_on: Option<&str>) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let p = Proc::spawn(
        "fio",
        Command::new("fio")
            // --thread: one process, which a kill ends (fio's job processes would
            // outlive their parent and write on into the next test).
            .args([
                "--thread",
                "--name=queued",
                &format!("--directory={}", dir.display()),
                "--rw=randwrite",
                "--bs=64k",
                "--size=32m",
                "--direct=1",
                "--ioengine=libaio",
                "--iodepth=16",
                "--runtime=60",
                "--time_based",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let Some(disk) = deep_on else {
        wait_for_writes(&dir.join("queued.0.0"), 32 << 20);
        return p;
    };
    wait_for_inflight(disk, 8, Duration::from_secs(60));
    p
}

/// Waits until the block layer counts `n` requests in flight on `disk`.
fn wait_for_inflight(disk: &str, n: u64, limit: Duration) {
    let inflight = format!("/sys/block/{disk}/inflight");
    wait_until(&format!("{n} requests in flight on {disk}"), limit, || {
        std::fs::read_to_string(&inflight)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse::<u64>().ok())
            .sum::<u64>()
            >= n
    });
}

/// Waits until `file` is `size` bytes long (laid out) and then written to (its mtime
/// moves on).
fn wait_for_writes(file: &std::path::Path, size: u64) {
    let meta = || std::fs::metadata(file).ok();
    wait_until(
        &format!("{} laid out", file.display()),
        Duration::from_secs(60),
        || meta().is_some_and(|m| m.len() >= size),
    );
    let laid_out = meta().and_then(|m| m.modified().ok());
    wait_until(
        &format!("writes to {}", file.display()),
        Duration::from_secs(30),
        || meta().and_then(|m| m.modified().ok()) != laid_out,
    );
}

#[test]
fn a_writer_over_the_dirty_limit_is_dirty_throttle() {
    if !can_run_root_tests("a_writer_over_the_dirty_limit_is_dirty_throttle") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(1024);
    let mnt = Mount::ext4(&lo.dev);
    let limits = DirtyLimits::set(4 << 20, 1 << 20);
    // 1 MiB writes: each one crosses the 4 MiB dirty limit's per-task ratelimit.
    let sc = Scenario::start(
        &mnt.dir.join("zk"),
        // Throttled 1 MiB writes take ~7-15 ms on a loop device (its writeback is fast;
        // a run here had most of them just under 8 ms).
        "5ms",
        &[
            "--calls",
            "300",
            "--interval",
            "1ms",
            "--syscalls",
            "write",
            "--write-bytes",
            "1048576",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(3000));
    let calls = sc.finish();
    drop(limits);
    let throttled: Vec<&Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "dirty_throttle")
        .collect();
    // Most slow writes are throttled; a few may be delayed otherwise on 2 busy CPUs.
    assert!(
        throttled.len() >= 10 && throttled.len() * 2 > calls.len(),
        "{:#?}",
        verdicts(&calls)
    );
    for c in &throttled {
        assert_eq!(c["type"], "write");
        assert!(
            c["evidence"]["throttle_pause_ms"].as_f64().unwrap()
                >= 0.3 * c["duration_ms"].as_f64().unwrap(),
            "{c}"
        );
    }
}

#[test]
fn a_thread_kept_off_the_cpu_is_cpu_starvation() {
    if !can_run_root_tests("a_thread_kept_off_the_cpu_is_cpu_starvation") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mnt = Mount::ext4(&lo.dev);
    // Back-to-back calls (no pause between them), so the hog lands inside one.
    // The workload runs on CPU 1 only; a real-time busy loop takes CPU 1 for 1.5 s (the
    // kernel's RT throttling still leaves others 5%, so nothing hangs). The loop device's
    // worker is kept on CPU 0, or the hog would stall the device too (a device stall,
    // truthfully reported, but not this test's point).
    let _wq = WorkqueueCpus::set("1");
    // The same for the journal threads: the test filesystem's, and any of the host's (the
    // loop device's flushes go through its backing file's filesystem). With the hog on
    // their CPU, the workload's fdatasyncs would wait for a starved commit: journal_wait,
    // truthfully (seen in CI: a commit spent 282 ms writing 5 KB to loop0, its requests
    // taking 69-213 ms against 0.04 ms usually), but not this test's point.
    let _jbd2 = PinnedThreads::named("jbd2/", "0");
    // Disk interrupts on CPU 0 too: with the hog on CPU 1, completions handled there (in
    // softirqs deferred to a starved ksoftirqd) would slow the disks under the workload.
    let _irqs = IrqAffinity::all_to("1");
    let sc = Scenario::start(
        &mnt.dir.join("zk"),
        "200ms",
        &[
            "--calls",
            "100000",
            "--interval",
            "0ms",
            "--syscalls",
            "fdatasync",
        ],
        &["taskset", "-c", "1"],
    );
    rt_hog_on_cpu1(Duration::from_millis(1500));
    let calls = sc.finish();
    assert!(!calls.is_empty(), "the hog delays the workload");
    let starved: Vec<&Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "cpu_starvation")
        .collect();
    assert_eq!(
        starved.len(),
        calls.len(),
        "every slow call is starvation: {:#?}\n{:#?}",
        verdicts(&calls),
        calls
            .iter()
            .filter(|c| c["verdict"] != "cpu_starvation")
            .map(|c| (&c["evidence"]["journal"], &c["stages"], &c["chain"]))
            .collect::<Vec<_>>()
    );
    for c in &starved {
        if c["via"] == "journal" {
            // The journal thread it waited on could not get a CPU (seen once: a commit that
            // began 493 ms into the call); the thread's run-queue time is checked by the
            // support check every record passes (Scenario::finish).
            continue;
        }
        assert!(
            c["evidence"]["runq_ms"].as_f64().unwrap() >= 0.5 * c["duration_ms"].as_f64().unwrap(),
            "{c}"
        );
    }
}

/// A real-time hog on the workload's CPU: woken by inotify each time a file in `dir` is
/// modified (the workload's append, from inside its write), it runs `spin` seconds on that
/// CPU. It touches `ready` once it watches.
const APPEND_HOG: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
IN_MODIFY = 0x2
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_MODIFY) < 0:
    raise OSError(ctypes.get_errno(), "inotify")
open(sys.argv[3], "w").close()
while os.read(fd, 4096):
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        pass
"#;

/// A preemption between a fast write's return and its caller's clock read is part of what
/// the caller timed (ZooKeeper: `log.flush()`, then `System.nanoTime()`, then `force()`):
/// the write is reported with the wait as its way back (`after_ms`), not dropped as fast
/// with the wait left to the next call alone. The next call, which entered right after the
/// wait, may count it too (`before_ms`): its headline says its caller's clock only may have
/// been running. Each append here wakes a real-time hog on the workload's CPU (inotify,
/// from inside the write), which preempts the thread for 600 ms as it returns to user
/// space: nothing runs between the append's return and the preemption, as in ZooKeeper.
/// (The hog was once woken by a pipe write right after the append: that syscall spent
/// 15-25 us of the 50 us a way back may run (`after_gap_ns`), and a virtual CPU's hiccup
/// now and then took the rest, so that the wait was, truthfully, no longer the append's.)
/// It relies on the kernel preempting at the return to user space (preempt=none or
/// voluntary, as on this host and Debian's kernels), not inside the write.
#[test]
fn a_preemption_right_after_a_fast_append_is_the_appends_wait() {
    if !can_run_root_tests("a_preemption_right_after_a_fast_append_is_the_appends_wait") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mnt = Mount::ext4(&lo.dev);
    // The workload's directory exists before it starts, for the hog to watch; the workload
    // (without msync) does not change its file before its first append.
    let dir = mnt.dir.join("zk");
    std::fs::create_dir_all(&dir).unwrap();
    let ready = mnt.dir.join("hog-ready");
    let _hog = Proc::spawn(
        "append-woken rt hog",
        Command::new("chrt")
            .args([
                "-f", "10", "taskset", "-c", "1", "python3", "-c", APPEND_HOG,
            ])
            .arg(&dir)
            .arg("0.6")
            .arg(&ready),
    );
    wait_until(
        "the hog to watch the workload's directory",
        Duration::from_secs(10),
        || ready.exists(),
    );
    let sc = Scenario::start(
        &dir,
        "200ms",
        &[
            "--calls",
            "3",
            "--interval",
            "300ms",
            "--syscalls",
            "fdatasync",
        ],
        &["taskset", "-c", "1"],
    );
    for _ in 0..3 {
        sc.wait_for_call_end(Duration::from_secs(10));
    }
    // Checks that each append the workload timed at 600 ms has its `write` record.
    let calls = sc.finish();
    let writes: Vec<&Value> = calls.iter().filter(|c| c["type"] == "write").collect();
    assert_eq!(writes.len(), 3, "{:#?}", verdicts(&calls));
    for w in &writes {
        assert_eq!(w["verdict"], "cpu_starvation", "{w}");
        assert!(
            w["after_ms"].as_f64().unwrap_or(0.0) >= 500.0,
            "the wait is the write's way back (a write slow by itself means this kernel \
             preempted inside it, preempt=voluntary or full, and the test cannot show its \
             point): {w}"
        );
        assert!(
            w["headline"]
                .as_str()
                .unwrap()
                .contains("mostly right after it returned"),
            "{w}"
        );
    }
    // The calls that count the wait before their entry (on an emulated CPU, fdatasyncs
    // slow on their own journal commits are reported too, as what they are).
    for c in calls
        .iter()
        .filter(|c| c["type"] == "fsync" && c["before_ms"].as_f64().unwrap_or(0.0) >= 500.0)
    {
        assert_eq!(c["verdict"], "cpu_starvation", "{c}");
        assert!(
            c["headline"]
                .as_str()
                .unwrap()
                .contains("its caller's clock may have been running"),
            "{c}"
        );
    }
}

#[test]
fn a_cgroup_io_limit_on_the_disk_is_io_throttled() {
    if !can_run_root_tests("a_cgroup_io_limit_on_the_disk_is_io_throttled") {
        return;
    }
    let _serial = serial(&SERIAL);
    // 256 KiB/s of writes for the workload's cgroup on that disk.
    io_throttled_scenario(false, 262_144, "30ms");
}

/// The same with cgroup2's io.max, where the io controller is on cgroup2: Debian 12's
/// kernel in `cargo xtask vm-test` (booted with the unified hierarchy only), and hosts
/// laid out that way. On a hybrid host (io on v1, like the development machines) the
/// controller cannot be moved for a test reliably (a v1 hierarchy that ever had child
/// cgroups keeps its controller until they are all released, minutes later at times), so
/// there this test says why it does not run: the v1 test above runs instead.
#[test]
fn a_cgroup2_io_max_limit_is_io_throttled() {
    if !can_run_root_tests("a_cgroup2_io_max_limit_is_io_throttled") {
        return;
    }
    let _serial = serial(&SERIAL);
    match cgroup_root("blkio") {
        // 32 KiB/s, and calls over 200 ms: each 16 KiB data write waits about half a
        // second for the limit, far above what journal commits take even on an emulated
        // disk (vm-test runs this under TCG).
        Some(r) if !r.v1 => io_throttled_scenario(true, 32_768, "200ms"),
        Some(r) => eprintln!(
            "NOT RUN a_cgroup2_io_max_limit_is_io_throttled: the io controller is on a v1 hierarchy here ({}); cargo xtask vm-test runs it on cgroup2",
            r.root.display()
        ),
        None => panic!("no blkio/io cgroup controller"),
    }
}

#[test]
fn a_memory_cgroup_at_its_limit_is_memory_reclaim() {
    if !can_run_root_tests("a_memory_cgroup_at_its_limit_is_memory_reclaim") {
        return;
    }
    let _serial = serial(&SERIAL);
    let limit = 48u64 << 20;
    let run = || -> Vec<Value> {
        // Room for every write: a nearly full filesystem would be low_space instead.
        let lo = LoopDev::new(3072);
        let mnt = Mount::ext4(&lo.dev);
        let cg = TestCgroup::new("memory", "zkstall-memcg").expect("a memory cgroup controller");
        if cg.v1 {
            cg.set("memory.limit_in_bytes", &limit.to_string());
        } else {
            cg.set("memory.max", &limit.to_string());
        }
        let wrap = cg.wrap();
        // 4 MiB buffered writes: the page cache they fill is charged to the cgroup, which
        // must reclaim (and wait for writeback) to make room. (With 1 MiB writes, reclaim
        // held none past 10 ms in most runs on this host: 6-7 ms at most, measured.) 500
        // of them, 2 GiB: the 3 GiB filesystem must not get nearly full (low_space).
        // 10 ms, not 20: how long reclaim holds one write varies from run to run, and at
        // 20 ms a run sometimes had a single slow write (still memory_reclaim).
        let sc = Scenario::start(
            &mnt.dir.join("zk"),
            "10ms",
            &[
                "--calls",
                "500",
                "--interval",
                "1ms",
                "--syscalls",
                "write",
                "--write-bytes",
                "4194304",
            ],
            &wrap_refs(&wrap),
        );
        std::thread::sleep(Duration::from_millis(6000));
        sc.finish()
    };
    let mut calls = run();
    for attempt in 2..=5 {
        if !calls.is_empty() {
            break;
        }
        // No write crossed 10 ms, so reclaim never held one: nothing to attribute (on
        // this faster host, seen in CI: once, then twice in a row, and in ci64 three
        // times in a row, the slowest write at 6-8 ms). Again, on fresh devices and a
        // fresh cgroup; a fifth run without a slow write fails below as before. When slow
        // writes exist, what they are said to be is checked in full.
        eprintln!("memory cgroup scenario: no write crossed 10 ms; run {attempt} of 5");
        calls = run();
    }
    let reclaim: Vec<&Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "memory_reclaim")
        .collect();
    // A 4 MiB copy into the page cache alone takes 11-13 ms of CPU on a slow day of this
    // host (ci77: nine of 17 slow writes, "12 ms of this 12 ms write on CPU, with no
    // cause the signals can name"): an honest answer, and no wait. The writes that
    // waited are what reclaim must explain.
    let on_cpu = |c: &Value| {
        c["verdict"] == "unknown"
            && c["stages"]["on_cpu"].as_f64().unwrap_or(0.0)
                >= 0.8 * c["duration_ms"].as_f64().unwrap_or(f64::MAX)
    };
    let waited = calls.iter().filter(|c| !on_cpu(c)).count();
    assert!(
        // How many writes reclaim holds past the threshold varies (1 to 10+ in
        // runs here); what must hold is that slow writes that waited are memory_reclaim.
        !reclaim.is_empty() && reclaim.len() * 2 >= waited,
        "{:#?}",
        verdicts(&calls)
    );
    for c in &reclaim {
        assert_eq!(c["type"], "write");
        assert!(
            c["evidence"]["reclaim_ms"].as_f64().unwrap()
                >= 0.3 * c["duration_ms"].as_f64().unwrap()
                || c["stages"]["reclaim"].as_f64().unwrap()
                    >= 0.3 * c["duration_ms"].as_f64().unwrap(),
            "{c}"
        );
        let ml = &c["evidence"]["mem_limit"];
        assert_eq!(
            ml["max"].as_u64(),
            Some(limit),
            "the cgroup's limit is named: {c}"
        );
    }
}

#[test]
fn xfs_log_forces_behind_a_writer_are_contention_naming_it() {
    if !can_run_root_tests("xfs_log_forces_behind_a_writer_are_contention_naming_it") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(1024);
    let mnt = Mount::xfs(&lo.dev);
    let sc = Scenario::start(&mnt.dir.join("zk"), "30ms", &FDATASYNC_EVERY_5MS, &[]);
    let of = format!("of={}", mnt.dir.join("big").display());
    let mut dd = Proc::spawn(
        "dd",
        Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=1M", "count=600", "conv=fsync"])
            .stderr(Stdio::null()),
    );
    let dd_pid = dd.pid() as u64;
    assert!(dd.wait_for_exit(Duration::from_secs(120)).success());
    let calls = sc.finish();
    let contention: Vec<&Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "device_contention")
        .collect();
    assert!(!contention.is_empty(), "{:#?}", verdicts(&calls));
    for c in &contention {
        assert_eq!(
            c["contenders"][0]["pid"].as_u64(),
            Some(dd_pid),
            "dd on top: {c}"
        );
    }
    // No slow call blames a stall, and none calls dd's bytes its own.
    for c in &calls {
        assert_ne!(c["verdict"], "device_stall", "{:#?}", verdicts(&calls));
        assert_ne!(c["verdict"], "own_io", "{:#?}", verdicts(&calls));
    }
}

#[test]
fn writeback_forced_by_a_nearly_full_filesystem_is_low_space() {
    if !can_run_root_tests("writeback_forced_by_a_nearly_full_filesystem_is_low_space") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(160);
    let mnt = Mount::ext4(&lo.dev);
    // Leave about 24 MiB free: once half of what is free is dirty, ext4 stops delaying
    // allocation and makes the writer wait for the filesystem's writeback.
    let free = |dir: &std::path::Path| {
        let out = sh("df", &["-B1", "--output=avail", dir.to_str().unwrap()]);
        out.lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    let fill = free(&mnt.dir).saturating_sub(24 << 20);
    sh(
        "fallocate",
        &[
            "-l",
            &fill.to_string(),
            mnt.dir.join("filler").to_str().unwrap(),
        ],
    );
    let sc = Scenario::start(
        &mnt.dir.join("zk"),
        "10ms",
        &[
            "--calls",
            "60",
            "--interval",
            "1ms",
            "--syscalls",
            "write",
            "--write-bytes",
            "1048576",
        ],
        &[],
    );
    std::thread::sleep(Duration::from_millis(3000));
    let calls = sc.finish();
    let low: Vec<&Value> = calls
        .iter()
        .filter(|c| c["verdict"] == "low_space")
        .collect();
    assert!(!low.is_empty(), "{:#?}", verdicts(&calls));
    for c in &low {
        assert!(
            c["headline"].as_str().unwrap().contains("nearly full"),
            "{}",
            c["headline"]
        );
        assert!(
            c["stages"]["low_space"].as_f64().unwrap() >= 0.3 * c["duration_ms"].as_f64().unwrap(),
            "{c}"
        );
    }
    // The kernel's own word for it: a low_space call that waited for the writeback ext4
    // queued for free space (try_to_writeback_inodes_sb on its stack) carries that
    // writeback_queue record (reason fs_free_space). (A full filesystem also shows as an
    // allocation retry forcing a journal commit, ext4_should_retry_alloc: no writeback
    // queued there.)
    for c in &low {
        if c["evidence"]["stack"]
            .to_string()
            .contains("try_to_writeback_inodes_sb")
        {
            assert!(
                c["evidence"]["low_space_writeback"]["nr_pages"].as_i64() > Some(0),
                "{c}"
            );
        }
    }
    // Nobody else writes here: no call may blame others or a stopped disk. (A write that
    // waits for the writeback of its own earlier data, stable pages, is own_io truthfully.)
    for c in &calls {
        let v = c["verdict"].as_str().unwrap();
        assert!(
            v != "device_contention" && v != "device_stall",
            "{:#?}",
            verdicts(&calls)
        );
    }
}
