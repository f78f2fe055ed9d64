//! What happens around a stall, observed for real on loop devices: block requests and who
//! queued them, a thread blocked by a frozen filesystem, the dirtier behind flusher
//! writeback, dirty throttling. Each test cleans up what it creates even when it fails
//! (guards drop in reverse order: thaw, kill, unmount, detach, restore sysctls).

use std::{
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use serde_json::Value;
use zkstall_tests::*;

/// These tests change global state (sysctls, devices, page cache): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn of_type<'a>(records: &'a [Value], t: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == t).collect()
}

/// The built-in workload calling fdatasync every 5 ms in `dir`, ready and waiting for
/// `go`, and its stdout (past the ready line).
fn fdatasync_workload(
    dir: &std::path::Path,
) -> (Proc, std::io::BufReader<std::process::ChildStdout>) {
    let mut work = Proc::spawn(
        "workload",
        zkstall(&["workload"])
            .args(FDATASYNC_EVERY_5MS)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::piped()),
    );
    let mut out = std::io::BufReader::new(work.child.stdout.take().unwrap());
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut out, &mut ready).unwrap();
    (work, out)
}

#[test]
fn direct_writes_are_block_requests_of_the_writer_adding_up_to_what_it_wrote() {
    if !can_run_root_tests(
        "direct_writes_are_block_requests_of_the_writer_adding_up_to_what_it_wrote",
    ) {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(64);
    let mut target = sleeper();
    // The sleeper has no file there: the loop device is watched because it is named.
    let dev = lo.dev.to_string_lossy().into_owned();
    let tracer = start_tracer(target.pid(), &["--threshold", "10s", "--disk", &dev]);

    let of = format!("of={}", lo.dev.display());
    let mut dd = Proc::spawn(
        "dd",
        Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=64k", "count=64", "oflag=direct"])
            .stderr(Stdio::null()),
    );
    let dd_pid = dd.pid() as u64;
    assert!(
        dd.wait_for_exit(Duration::from_secs(30)).success(),
        "dd failed"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = target.child.kill();
    let records = finish_tracer(tracer);

    let dev = lo.majmin();
    let ios: Vec<&Value> = of_type(&records, "io")
        .into_iter()
        .filter(|r| r["dev"] == dev.as_str())
        .collect();
    let by_dd: Vec<&&Value> = ios
        .iter()
        .filter(|r| r["pid"].as_u64() == Some(dd_pid))
        .collect();
    assert!(
        !by_dd.is_empty(),
        "no request on {dev} attributed to dd {dd_pid}: {ios:#?}"
    );
    for r in &by_dd {
        assert_eq!(r["comm"], "dd");
        assert_eq!(r["charged_to"], format!("dd (pid {dd_pid} tid {dd_pid})"));
        assert_eq!(r["op"], "write");
        assert_eq!(r["device"].as_str(), Some(lo.name().as_str()));
        assert!(
            r["service_ms"].as_f64().is_some(),
            "issued and completed: {r}"
        );
    }
    let bytes: u64 = by_dd.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert_eq!(bytes, 64 * 64 * 1024, "dd wrote exactly 4 MiB");
    let others: Vec<&&Value> = ios
        .iter()
        .filter(|r| r["pid"].as_u64() != Some(dd_pid) && r["bytes"].as_u64() > Some(0))
        .collect();
    assert!(others.is_empty(), "only dd wrote to {dev}: {others:#?}");
}

/// `--requests around-calls`: a neighbour's requests on a watched disk that no traced call
/// overlapped are summed per disk each second, and the sums add up to what it wrote; the
/// recording carries them, so `report` says the same.
#[test]
fn a_neighbours_requests_overlapping_no_call_are_summed_and_add_up() {
    if !can_run_root_tests("a_neighbours_requests_overlapping_no_call_are_summed_and_add_up") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mut target = sleeper();
    let dev = lo.dev.to_string_lossy().into_owned();
    let dir = scratch_dir("zkstall-summed");
    let _cleanup = RemoveOnDrop(dir.clone());
    let rec = dir.join("summed.rec");
    let rec_s = rec.to_string_lossy().into_owned();
    let tracer = start_tracer(
        target.pid(),
        &[
            "--threshold",
            "10s",
            "--disk",
            &dev,
            "--requests",
            "around-calls",
            "--output",
            &rec_s,
        ],
    );
    // Until the session's first look at the calls in flight (its first tick), every
    // request is sent: nothing is known yet.
    std::thread::sleep(Duration::from_millis(500));
    // 8000 direct 4 KiB writes, one at a time: 8000 requests, none the target's.
    let of = format!("of={}", lo.dev.display());
    let mut dd = Proc::spawn(
        "dd",
        Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=4k", "count=8000", "oflag=direct"])
            .stderr(Stdio::null()),
    );
    assert!(
        dd.wait_for_exit(Duration::from_secs(60)).success(),
        "dd failed"
    );
    // 64 discards of 1 MiB: a discard's length is not data moved, so discards are never
    // summed (their bytes would count as written): each is sent. (`-f`: without it,
    // blkdiscard first reads the device looking for a filesystem's signature.)
    let discarded = Command::new("blkdiscard")
        .args(["-f", "-o", "0", "-l", "64MiB", "-p", "1MiB"])
        .arg(&lo.dev)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(discarded.success(), "blkdiscard failed");
    // The summaries are read each second.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = target.child.kill();
    let records = finish_tracer(tracer);
    let majmin = lo.majmin();
    let sums: Vec<&Value> = of_type(&records, "io_summary")
        .into_iter()
        .filter(|r| r["dev"] == majmin.as_str())
        .collect();
    let summed: u64 = sums.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    let summed_bytes: u64 = sums.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    // dd's, or first seen at their completion (not followed: issued while no call was in
    // flight, so their submitter is unknown; dd is the only writer there).
    let one_by_one: Vec<&Value> = of_type(&records, "io")
        .into_iter()
        .filter(|r| {
            r["dev"] == majmin.as_str()
                && r["op"] != "discard"
                && (r["comm"] == "dd" || r["late"] == true)
        })
        .collect();
    let discards = of_type(&records, "io")
        .into_iter()
        .filter(|r| r["dev"] == majmin.as_str() && r["op"] == "discard")
        .count() as u64;
    let one_by_one_bytes: u64 = one_by_one
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    // Every one of dd's requests is either summed or sent (a slow one, over 10 ms), once.
    // (What the run lost, if anything, is in the summary: printed on failure.)
    let summary = of_type(&records, "summary")[0].clone();
    let lost = loss_summary(&records);
    // A completion the kernel ran no program for (it skips a program nested in itself on
    // a CPU) is neither; the run must then say so (`unseen_watched`, from the block
    // layer's own count), and by no fewer than it lost.
    let unseen = summary["unseen_watched"].as_u64().unwrap_or(0);
    let seen = summed_bytes + one_by_one_bytes;
    assert!(
        seen <= 8000 * 4096 && (8000 * 4096 - seen) <= unseen * 4096,
        "summed {summed} ({summed_bytes} bytes) + sent {} ({one_by_one_bytes} bytes) of dd's \
         8000 (32768000 bytes), and {unseen} said unseen; {lost}",
        one_by_one.len()
    );
    assert!(
        summed >= 7000,
        "most of them summed, not sent: {summed} summed, {} sent",
        one_by_one.len()
    );
    assert!(
        discards + unseen >= 64,
        "every discard sent: {discards} of 64, {unseen} said unseen"
    );
    for r in &one_by_one {
        // From its start to its completion (a request not followed may lack an issue
        // stamp: queue_ms and service_ms need one).
        let ms = match (r["complete_ns"].as_u64(), r["queued_ns"].as_u64()) {
            (Some(c), Some(q)) => c.saturating_sub(q) as f64 / 1e6,
            _ => r["queue_ms"].as_f64().unwrap_or(0.0) + r["service_ms"].as_f64().unwrap_or(0.0),
        };
        assert!(ms >= 9.0, "only slow ones are sent one by one: {r}");
    }
    for s in &sums {
        let hist: u64 = s["hist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(hist, s["requests"].as_u64().unwrap(), "{s}");
    }
    assert!(
        summary["io_summed"].as_u64().unwrap() >= summed,
        "{summary}"
    );
    // The recording says the same.
    let out = zkstall(&["report", &rec_s, "--format", "json", "--events"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = json_lines(&String::from_utf8_lossy(&out.stdout));
    let resummed: u64 = of_type(&again, "io_summary")
        .iter()
        .filter(|r| r["dev"] == majmin.as_str())
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(resummed, summed);
    assert_eq!(
        of_type(&again, "summary")[0]["io_summed"],
        summary["io_summed"]
    );
}

/// `--requests around-calls` keeps what a call may have overlapped. A call that entered
/// long before a request (a write blocked by a frozen filesystem: no call enters or leaves
/// meanwhile) still has it sent one by one, through userspace's look at the calls in
/// flight; once the traced process has no call in flight, the same requests are summed.
#[test]
fn requests_during_a_call_that_entered_long_before_are_sent_one_by_one() {
    if !can_run_root_tests("requests_during_a_call_that_entered_long_before_are_sent_one_by_one") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mnt = Mount::ext4(&lo.dev);
    let other = LoopDev::new(64);
    let (mut work, mut out) = fdatasync_workload(&mnt.dir.join("zk"));
    let other_dev = other.dev.to_string_lossy().into_owned();
    let tracer = start_tracer(
        work.pid(),
        &[
            "--threshold",
            "10s",
            "--disk",
            &other_dev,
            "--requests",
            "around-calls",
        ],
    );
    work.go();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(300));
    let dd = |seek: u64| {
        let of = format!("of={}", other.dev.display());
        let seek = format!("seek={seek}");
        let mut p = Proc::spawn(
            "dd",
            Command::new("dd")
                .args([
                    "if=/dev/zero",
                    &of,
                    "bs=4k",
                    "count=2000",
                    &seek,
                    "oflag=direct",
                ])
                .stderr(Stdio::null()),
        );
        assert!(
            p.wait_for_exit(Duration::from_secs(60)).success(),
            "dd failed"
        );
    };
    // The workload's next write blocks in the freeze; a second on, no call has entered or
    // left for a while.
    let mut freeze = Freeze::new(&mnt.dir);
    std::thread::sleep(Duration::from_millis(1000));
    let during = (mono_ns(), {
        dd(0);
        mono_ns()
    });
    freeze.thaw();
    std::thread::sleep(Duration::from_millis(300));
    // Stopped (a stop is taken on the way back to userspace: never inside a call), the
    // workload has no call in flight.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(work.pid() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(500));
    let after = (mono_ns(), {
        dd(4000);
        mono_ns()
    });
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: as above.
    unsafe { libc::kill(work.pid() as i32, libc::SIGCONT) };
    let _ = work.child.kill();
    let records = finish_tracer(tracer);
    let majmin = other.majmin();
    // dd's requests sent one by one, and those sent without dd named (a request the probes
    // did not follow from its start: its entry refused under a busy map lock, say; counted
    // as unmatched): nobody else writes to that disk.
    let sent = |(from, to): (u64, u64), by_dd: bool| -> Vec<&Value> {
        of_type(&records, "io")
            .into_iter()
            .filter(|r| {
                r["dev"] == majmin.as_str()
                    && r["op"] == "write"
                    && if by_dd {
                        r["comm"] == "dd"
                    } else {
                        r["comm"] != "dd" && r["unmatched"] == true
                    }
                    && r["complete_ns"]
                        .as_u64()
                        .is_some_and(|c| from <= c && c <= to)
            })
            .collect()
    };
    let bytes = |rs: &[&Value]| -> u64 { rs.iter().map(|r| r["bytes"].as_u64().unwrap()).sum() };
    let sent_bytes = |w: (u64, u64)| bytes(&sent(w, true)) + bytes(&sent(w, false));
    let unknown = sent(during, false);
    // Each of those counted as one whose start was missed (first seen completing: late, with
    // requests followed around calls).
    let unmatched: u64 = records
        .iter()
        .find(|r| r["type"] == "summary")
        .map(|s| {
            ["io_unmatched", "io_late"]
                .iter()
                .filter_map(|k| s[*k].as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        unknown.len() as u64 <= unmatched,
        "{} requests sent without dd named, {unmatched} counted as unmatched or late",
        unknown.len()
    );
    assert!(
        unknown.len() <= 20,
        "dd's requests are followed from their start: {} sent without dd named, {}",
        unknown.len(),
        loss_summary(&records)
    );
    if sent_bytes(during) != 2000 * 4096 {
        // What else the disk's requests in that window were sent as, and what zkstall said
        // it lost: to tell a request sent without its submitter from one summed or lost.
        let others: Vec<&Value> = of_type(&records, "io")
            .into_iter()
            .filter(|r| {
                r["dev"] == majmin.as_str()
                    && r["comm"] != "dd"
                    && r["unmatched"] != true
                    && r["complete_ns"]
                        .as_u64()
                        .is_some_and(|c| during.0 <= c && c <= during.1)
            })
            .collect();
        let summaries: Vec<&Value> = of_type(&records, "io_summary")
            .into_iter()
            .filter(|r| r["dev"] == majmin.as_str())
            .collect();
        panic!(
            "every request while the blocked write was in flight is sent one by one: {} of {} bytes sent\nother requests then: {others:#?}\nsummed: {summaries:#?}\nlosses: {}",
            sent_bytes(during),
            2000 * 4096,
            loss_summary(&records)
        );
    }
    let summed: u64 = of_type(&records, "io_summary")
        .iter()
        .filter(|r| r["dev"] == majmin.as_str())
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert!(
        sent_bytes(after) <= 200 * 4096 && summed >= 1800 * 4096,
        "with no call in flight they are summed: {} bytes sent, {summed} summed",
        sent_bytes(after)
    );
}

#[test]
fn a_thread_blocked_by_a_frozen_filesystem_is_a_d_state_interval_with_its_stack() {
    if !can_run_root_tests(
        "a_thread_blocked_by_a_frozen_filesystem_is_a_d_state_interval_with_its_stack",
    ) {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mnt = Mount::ext4(&lo.dev);
    let (mut work, mut out) = fdatasync_workload(&mnt.dir.join("zk"));
    let tracer = start_tracer(work.pid(), &["--threshold", "1s"]);
    work.go();
    // Drain the workload's per-call lines so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(300));

    let freeze_began = mono_ns();
    let mut freeze = Freeze::new(&mnt.dir);
    std::thread::sleep(Duration::from_millis(1500));
    let thaw_began = mono_ns();
    freeze.thaw();
    let thawed = mono_ns();
    std::thread::sleep(Duration::from_millis(300));
    let _ = work.child.kill();
    let records = finish_tracer(tracer);

    let worker_tid = records
        .iter()
        .find(|r| {
            r["type"] == "thread"
                && r["change"] == "new"
                && r["pid"].as_u64() == Some(work.pid() as u64)
        })
        .and_then(|r| r["tid"].as_u64());
    let long: Vec<&Value> = of_type(&records, "blocked")
        .into_iter()
        .filter(|r| r["state"] == "D" && r["duration_ms"].as_f64().unwrap() > 1000.0)
        .collect();
    assert_eq!(
        long.len(),
        1,
        "exactly one long D-state interval: {long:#?}"
    );
    let b = long[0];
    assert_eq!(b["thread"], "SyncThread:1");
    if let Some(tid) = worker_tid {
        assert_eq!(b["tid"].as_u64(), Some(tid));
    }
    // It blocked while the filesystem was frozen and ran again when the thaw woke it (as
    // soon as it got a CPU). Checked against the freeze's bounds on the kernel's clock,
    // not against the length of the test's own sleep: starting `fsfreeze -f` and
    // `fsfreeze -u` takes time of its own, a lot of it on a slow (emulated) machine.
    let (b_start, b_end) = interval_ns(b);
    let runq_ns = (b["runq_ms"].as_f64().unwrap() * 1e6) as u64;
    assert!(
        freeze_began <= b_start && b_start < thaw_began,
        "blocked at {b_start}, outside the freeze [{freeze_began}, {thaw_began}]: {b}"
    );
    assert!(
        thaw_began <= b_end && b_end <= thawed + runq_ns + 10_000,
        "ran again at {b_end}, not at the thaw [{thaw_began}, {thawed}] (+ {runq_ns} ns run queue): {b}"
    );
    let stack = b["stack"].as_array().expect("a D-state stack");
    let joined: Vec<&str> = stack.iter().filter_map(|f| f.as_str()).collect();
    assert!(
        joined.iter().any(|f| f.contains("percpu_down_read")
            || f.contains("percpu_rwsem")
            || f.contains("sb_start_write")),
        "the stack shows the freeze wait: {joined:#?}"
    );
    assert!(
        joined
            .iter()
            .any(|f| f.starts_with("vfs_write") || f.starts_with("ksys_write")),
        "{joined:#?}"
    );
    assert_eq!(b["syscall"], "write", "{b}");
    // And the stuck write() is reported as a slow call in its own right: the call that
    // holds the whole D interval.
    let writes: Vec<&Value> = of_type(&records, "write");
    assert!(
        writes.iter().any(|w| {
            let (w_start, w_end) = interval_ns(w);
            w["thread"] == "SyncThread:1" && w_start <= b_start && w_end + 10_000 >= b_end
        }),
        "the write stuck on the frozen fs is reported: {writes:#?}"
    );
}

#[test]
fn flusher_writeback_is_charged_to_the_process_that_dirtied_the_pages() {
    if !can_run_root_tests("flusher_writeback_is_charged_to_the_process_that_dirtied_the_pages") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(128);
    let mnt = Mount::ext4(&lo.dev);
    let mut target = sleeper();
    let dir = mnt.dir.to_string_lossy().into_owned();
    let tracer = start_tracer(target.pid(), &["--threshold", "10s", "--disk", &dir]);

    let file = mnt.dir.join("buffered.dat");
    let of = format!("of={}", file.display());
    let mut dd = Proc::spawn(
        "dd",
        Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=1M", "count=8"])
            .stderr(Stdio::null()),
    );
    let dd_pid = dd.pid() as u64;
    assert!(dd.wait_for_exit(Duration::from_secs(30)).success());
    // dd has exited; its dirty pages are written back by the flusher when asked to.
    sh("sync", &["-f", file.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = target.child.kill();
    let records = finish_tracer(tracer);

    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(&file).unwrap().ino();
    let dirty: Vec<&Value> = of_type(&records, "dirty")
        .into_iter()
        .filter(|r| r["ino"].as_u64() == Some(ino))
        .collect();
    assert!(!dirty.is_empty(), "dd's dirtying of inode {ino} is seen");
    assert!(
        dirty
            .iter()
            .all(|r| r["pid"].as_u64() == Some(dd_pid) && r["comm"] == "dd"),
        "{dirty:#?}"
    );
    assert!(dirty[0]["folios"].as_u64() >= Some(1), "{dirty:#?}");

    let wb: Vec<&Value> = of_type(&records, "writeback")
        .into_iter()
        .filter(|r| r["ino"].as_u64() == Some(ino))
        .collect();
    assert!(!wb.is_empty(), "the inode's writeback is seen");
    for r in &wb {
        assert_ne!(
            r["pid"].as_u64(),
            Some(dd_pid),
            "written back by a flusher, not dd: {r}"
        );
        assert_eq!(r["dirtier"]["comm"], "dd", "{r}");
        assert_eq!(r["dirtier"]["pid"].as_u64(), Some(dd_pid));
    }
    let dev = lo.majmin();
    let charged: Vec<&Value> = of_type(&records, "io")
        .into_iter()
        .filter(|r| r["dev"] == dev.as_str() && r["dirtier"]["pid"].as_u64() == Some(dd_pid))
        .collect();
    assert!(
        !charged.is_empty(),
        "flusher requests on {dev} are charged to dd"
    );
    for r in &charged {
        assert!(
            r["comm"].as_str().unwrap().starts_with("kworker"),
            "queued by a flusher: {r}"
        );
        assert_eq!(r["ino"].as_u64(), Some(ino));
    }
    // The sync also committed the journal: one commit record per transaction, by the
    // filesystem's jbd2 thread, with its phases timed.
    let commits: Vec<&Value> = of_type(&records, "journal")
        .into_iter()
        .filter(|r| r["dev"] == dev.as_str())
        .collect();
    assert!(!commits.is_empty(), "a jbd2 commit on {dev}");
    for c in &commits {
        assert!(c["comm"].as_str().unwrap().starts_with("jbd2/"), "{c}");
        let total = c["duration_ms"].as_f64().unwrap();
        let phases: f64 = ["locking_ms", "flushing_ms", "logging_ms"]
            .iter()
            .filter_map(|k| c[*k].as_f64())
            .sum();
        assert!(total > 0.0 && phases <= total + 1e-6, "{c}");
        assert!(c["handles"].as_u64().is_some(), "{c}");
    }
    // Writes: exactly the data dd dirtied. (The flusher may also read allocation
    // metadata while writing dd's pages back; that is rightly charged to dd too.)
    let written: u64 = charged
        .iter()
        .filter(|r| r["op"] == "write")
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        written,
        8 << 20,
        "every byte dd dirtied is written back and charged to it"
    );
}

#[test]
fn a_writer_over_a_low_dirty_limit_shows_balance_dirty_pages_pauses() {
    if !can_run_root_tests("a_writer_over_a_low_dirty_limit_shows_balance_dirty_pages_pauses") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(256);
    let mnt = Mount::ext4(&lo.dev);
    let mut target = sleeper();
    let tracer = start_tracer(target.pid(), &["--threshold", "10s"]);
    let limits = DirtyLimits::set(4 << 20, 1 << 20);

    let of = format!("of={}", mnt.dir.join("big.dat").display());
    let mut dd = Proc::spawn(
        "dd",
        Command::new("dd")
            .args(["if=/dev/zero", &of, "bs=1M", "count=128"])
            .stderr(Stdio::null()),
    );
    let dd_pid = dd.pid() as u64;
    assert!(dd.wait_for_exit(Duration::from_secs(120)).success());
    drop(limits);
    std::thread::sleep(Duration::from_millis(200));
    let _ = target.child.kill();
    let records = finish_tracer(tracer);

    let throttled: Vec<&Value> = of_type(&records, "throttle")
        .into_iter()
        .filter(|r| r["pid"].as_u64() == Some(dd_pid))
        .collect();
    assert!(!throttled.is_empty(), "dd was throttled");
    assert!(throttled.iter().all(|r| r["comm"] == "dd"));
    // With a pause planned, or taken in this period (an emulated CPU that cannot outrun
    // writeback gets only the latter, as vm-test showed).
    assert!(
        throttled.iter().any(
            |r| r["pause_ms"].as_i64().unwrap() > 0 || r["paused_ms"].as_u64().unwrap_or(0) > 0
        ),
        "with a real pause: {throttled:#?}"
    );
    assert!(
        throttled
            .iter()
            .any(|r| r["device"].as_str() == Some(lo.name().as_str())),
        "on the loop device: {:#?}",
        &throttled[..throttled.len().min(3)]
    );
    let restored = std::fs::read_to_string("/proc/sys/vm/dirty_bytes").unwrap();
    assert_ne!(
        restored.trim(),
        (4u64 << 20).to_string(),
        "the sysctl is restored"
    );
}

/// A thread sleeping in clock_nanosleep is woken by its timer. With every CPU busy with
/// another process, some task is always on the CPU when the timer fires: the waker is the
/// interrupt or timer context, never that task.
#[test]
fn a_thread_woken_by_its_timer_names_the_timer_not_the_task_that_was_on_the_cpu() {
    if !can_run_root_tests(
        "a_thread_woken_by_its_timer_names_the_timer_not_the_task_that_was_on_the_cpu",
    ) {
        return;
    }
    let _serial = serial(&SERIAL);
    // It naps only once the tracer is attached ("go" on stdin): a slow (emulated) host
    // takes seconds to attach.
    let mut napper = Proc::spawn(
        "napper",
        Command::new("python3")
            .args([
                "-c",
                "import sys, time\nsys.stdin.readline()\nfor _ in range(300):\n    time.sleep(0.01)",
            ])
            .stdin(Stdio::piped()),
    );
    let tracer = start_tracer(napper.pid(), &["--threshold", "10s"]);
    // The CPUs are made busy once the tracer is attached (on an emulated CPU, hogs started
    // first starve its start-up).
    let mut hogs: Vec<Proc> = (0..2)
        .map(|_| {
            Proc::spawn(
                "cpu hog",
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(Stdio::null()),
            )
        })
        .collect();
    let hog_pids: Vec<u64> = hogs.iter().map(|h| h.pid() as u64).collect();
    napper.go();
    let _ = napper.wait_for_exit(Duration::from_secs(120));
    for h in &mut hogs {
        let _ = h.child.kill();
    }
    let records = finish_tracer(tracer);
    let naps: Vec<&Value> = of_type(&records, "blocked")
        .into_iter()
        .filter(|r| r["syscall"] == "clock_nanosleep" && r["state"] == "S")
        .collect();
    assert!(naps.len() >= 20, "too few sleeps seen: {}", naps.len());
    let mut unknown = 0;
    for r in &naps {
        // No context: the wakeup was not seen (the kernel skips a program that would run
        // inside another one on the same CPU, as a timer interrupt during sched_switch's):
        // the waker is then unknown, never guessed.
        match r["waker_context"].as_str() {
            None => unknown += 1,
            Some(ctx) => assert!(
                matches!(ctx, "timer" | "irq" | "softirq"),
                "a timer's wakeup blamed on a task: {r}"
            ),
        }
        assert!(r["waker"].is_null(), "{r}");
        assert!(
            !hog_pids.contains(&r["waker"]["pid"].as_u64().unwrap_or(0)),
            "{r}"
        );
    }
    // And rare.
    assert!(
        unknown * 20 <= naps.len(),
        "{unknown} of {} wakeups unseen",
        naps.len()
    );
}

/// A thread blocked in a page fault (a write to a shared mapping of a file on a frozen
/// filesystem) is in no syscall: its interval must not carry one (the registers at a fault
/// hold the fault's error code where a syscall's number would be).
#[test]
fn a_thread_blocked_in_a_page_fault_is_not_labelled_with_a_syscall() {
    if !can_run_root_tests("a_thread_blocked_in_a_page_fault_is_not_labelled_with_a_syscall") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(64);
    let mnt = Mount::ext4(&lo.dev);
    let file = mnt.dir.join("mapped");
    std::fs::write(&file, vec![0u8; 4096]).unwrap();
    let go = scratch_dir("zkstall-fault").join("go");
    let _go_dir = RemoveOnDrop(go.parent().unwrap().to_path_buf());
    // Maps the file, waits for `go` (outside the frozen filesystem), then writes to the
    // clean page: page_mkwrite waits for the thaw.
    let script = format!(
        "import mmap, os, time\n\
         f = open({file:?}, 'r+b')\n\
         m = mmap.mmap(f.fileno(), 4096)\n\
         os.sync()\n\
         print('ready', flush=True)\n\
         while not os.path.exists({go:?}):\n    time.sleep(0.01)\n\
         m[0] = 1\n\
         m.flush()\n",
        file = file.display().to_string(),
        go = go.display().to_string(),
    );
    let mut writer = Proc::spawn(
        "fault writer",
        Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    );
    let ready = lines_of(writer.child.stdout.take().unwrap());
    wait_for_line(&ready, "ready", Duration::from_secs(30));
    let tracer = start_tracer(writer.pid(), &["--threshold", "10s"]);
    let mut freeze = Freeze::new(&mnt.dir);
    std::fs::write(&go, b"").unwrap();
    wait_until(
        "the writer blocked in its fault",
        Duration::from_secs(10),
        || thread_state(writer.pid()) == Some('D'),
    );
    std::thread::sleep(Duration::from_millis(500));
    freeze.thaw();
    assert!(writer.wait_for_exit(Duration::from_secs(30)).success());
    let records = finish_tracer(tracer);
    let faults: Vec<&Value> = of_type(&records, "blocked")
        .into_iter()
        .filter(|r| {
            r["state"] == "D"
                && r["duration_ms"].as_f64().unwrap_or(0.0) >= 400.0
                && r["stack"].to_string().contains("page_mkwrite")
        })
        .collect();
    assert_eq!(faults.len(), 1, "{:#?}", of_type(&records, "blocked"));
    assert!(
        faults[0]["syscall"].is_null(),
        "a page fault labelled as a syscall: {}",
        faults[0]
    );
}

/// The journal thread of a traced file's filesystem is traced from the start, not from its
/// first commit seen: the sleep it is in when tracing begins is sent when it ends (a commit
/// that began late because that thread could not get a CPU shows it from the first one).
#[test]
fn a_traced_filesystem_s_journal_thread_is_traced_from_the_start() {
    if !can_run_root_tests("a_traced_filesystem_s_journal_thread_is_traced_from_the_start") {
        return;
    }
    let _serial = serial(&SERIAL);
    let lo = LoopDev::new(64);
    journal_thread_traced_from_the_start(&lo.dev, &lo.majmin(), &lo.name());
}

/// The same on a partition (`jbd2/loop0p2-8`): the thread is found by the partition's
/// name, and the commits are the partition's.
#[test]
fn a_partition_s_journal_thread_is_traced_from_the_start() {
    if !can_run_root_tests("a_partition_s_journal_thread_is_traced_from_the_start") {
        return;
    }
    let _serial = serial(&SERIAL);
    let disk = PartLoop::new(&[32, 64]);
    let name = disk.parts[1]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    journal_thread_traced_from_the_start(&disk.parts[1], &disk.majmin(1), &name);
}

/// A workload's fdatasyncs on ext4 on `dev` (`majmin`, kernel name `name`), traced from
/// an idle journal: the journal thread's sleep at the start is sent once and ends by the
/// first commit.
fn journal_thread_traced_from_the_start(dev: &std::path::Path, majmin: &str, name: &str) {
    let mnt = Mount::ext4(dev);
    let (mut work, mut out) = fdatasync_workload(&mnt.dir.join("zk"));
    // The journal idle when tracing begins: the workload's file creation committed.
    sh("sync", &["-f", mnt.dir.to_str().unwrap()]);
    let tracer = start_tracer(work.pid(), &["--threshold", "10s"]);
    work.go();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    std::thread::sleep(Duration::from_millis(500));
    let _ = work.child.kill();
    let records = finish_tracer(tracer);

    let jbd2 = format!("jbd2/{name}-");
    let first_commit = of_type(&records, "journal")
        .into_iter()
        .filter(|r| r["dev"] == majmin)
        .filter_map(|r| r["start_ns"].as_u64())
        .min()
        .expect("the workload's fdatasyncs commit the journal");
    let seeded: Vec<&Value> = of_type(&records, "blocked")
        .into_iter()
        .filter(|r| r["thread"].as_str().is_some_and(|t| t.starts_with(&jbd2)))
        .filter(|r| r["since_before_tracing"] == true)
        .collect();
    assert_eq!(
        seeded.len(),
        1,
        "{jbd2}'s sleep at the start is sent once: {:#?}",
        of_type(&records, "blocked")
            .into_iter()
            .filter(|r| r["thread"].as_str().is_some_and(|t| t.starts_with("jbd2/")))
            .collect::<Vec<_>>()
    );
    let s = seeded[0];
    let end = s["start_ns"].as_u64().unwrap() + (s["duration_ms"].as_f64().unwrap() * 1e6) as u64;
    assert!(
        end <= first_commit + 1_000_000,
        "the sleep ended by the first commit ({first_commit}): {s}"
    );
}
