//! The pipeline on hand-built record streams.

use super::*;
use crate::{
    decode::record_bytes,
    enrich::{Live, Replay},
    sinks::JsonSink,
    targets::ProcRoot,
};
use zkstall_common::{
    BLOCKED_AFTER_CALL, BlockedEvent, CALL_ACCOUNTED, CALL_AFTER, CALL_FAST, COMM_LEN, DirtyEvent,
    EventHeader, EventKind, IoEvent, JournalEvent, JournalPhase, JournalStatsEvent, RQ_KTHREAD,
    Request, Syscall, SyscallEnterEvent, SyscallExitEvent, ThreadEvent,
};

const MS: u64 = 1_000_000;

fn hdr<T>(kind: EventKind, ts: u64, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        size: size_of::<T>() as u32,
        ts_ns: ts,
        tgid,
        tid,
    }
}

fn comm(s: &str) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

fn enter(pid: u32, tid: u32, ts: u64, sc: Syscall, arg: u64) -> Vec<u8> {
    record_bytes(&SyscallEnterEvent {
        hdr: hdr::<SyscallEnterEvent>(EventKind::SyscallEnter, ts, pid, tid),
        syscall: sc as u32,
        arg,
        ..Default::default()
    })
}

fn exit(pid: u32, tid: u32, start: u64, end: u64, sc: Syscall, arg: u64) -> SyscallExitEvent {
    SyscallExitEvent {
        hdr: hdr::<SyscallExitEvent>(EventKind::SyscallExit, end, pid, tid),
        syscall: sc as u32,
        flags: 0,
        start_ns: start,
        ret: 0,
        arg,
        on_cpu_ns: 0,
        short_ns: [0; 3],
        after_ns: 0,
        comm: comm("sync"),
    }
}

fn blocked(pid: u32, tid: u32, off: u64, on: u64, state: u64) -> BlockedEvent {
    BlockedEvent {
        hdr: hdr::<BlockedEvent>(EventKind::Blocked, on, pid, tid),
        off_ns: off,
        state,
        ..Default::default()
    }
}

/// A 12 ms fdatasync of thread 7/8 from 100 ms, and an interval in `state` from just after
/// its return until `on`: the records the kernel sends (the interval, then the exit that
/// carries the way back), for a test to adjust before handing them over.
fn call_and_way_back(state: u64, on: u64) -> (BlockedEvent, SyscallExitEvent) {
    let mut nap = blocked(7, 8, 112 * MS + 5_000, on, state);
    nap.flags = BLOCKED_AFTER_CALL;
    let mut x = exit(7, 8, 100 * MS, 112 * MS, Syscall::Fdatasync, 3);
    x.flags = CALL_AFTER | CALL_ACCOUNTED;
    x.after_ns = on - 112 * MS;
    (nap, x)
}

/// A sink keeping what tests look at: each reported call as `syscall verdict via
/// after_ms`, the syscalls observed as latency samples, and the summaries observed.
#[derive(Default)]
struct Kept {
    calls: Vec<String>,
    call_samples: Vec<String>,
    summaries: Vec<(DiskDev, Vec<u64>)>,
}

impl Sink for Kept {
    fn call(&mut self, r: &crate::sinks::CallRecord) -> io::Result<()> {
        let why = r.why.as_ref();
        self.calls.push(format!(
            "{} {:?} {:?} {:?}",
            r.syscall,
            why.map(|w| w.verdict),
            why.and_then(|w| w.via),
            r.after_ms
        ));
        Ok(())
    }
    fn event(&mut self, _: &EventRecord) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _: &crate::sinks::Summary) -> io::Result<()> {
        Ok(())
    }
    fn observe(&mut self, o: &crate::sinks::Observation<'_>) {
        match *o {
            crate::sinks::Observation::Call { syscall, .. } => {
                self.call_samples.push(syscall.to_string())
            }
            crate::sinks::Observation::IoSummary { disk, hist } => {
                self.summaries.push((disk, hist.to_vec()))
            }
            _ => {}
        }
    }
}

/// A pipeline (20 ms threshold) whose live enricher reads a fake /proc at `root`.
fn live_at(root: &std::path::Path) -> Pipeline {
    Pipeline::new(
        Box::new(Live::new(ProcRoot(root.to_path_buf()), "/nonexistent")),
        WallClock { offset_ns: 0 },
        20 * MS,
    )
}

fn nowhere() -> Box<dyn crate::enrich::Enricher> {
    Box::new(Live::new(
        ProcRoot(std::path::PathBuf::from("/nonexistent")),
        "/nonexistent",
    ))
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn a_call_is_as_slow_as_its_caller_saw_it_when_it_was_preempted_on_the_way_back() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 20 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        // 12 ms fdatasync, preempted 15 ms right after it returned: 27 ms as seen.
        p.handle(&enter(7, 8, 100 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        let (after, mut x) = call_and_way_back(0x100, 127 * MS);
        p.handle(&record_bytes(&after), &mut sink).unwrap();
        x.on_cpu_ns = MS;
        x.short_ns = [11 * MS, 0, 0];
        p.handle(&record_bytes(&x), &mut sink).unwrap();
        // 12 ms and the thread ran on: not reported.
        p.handle(&enter(7, 8, 200 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        p.handle(
            &record_bytes(&exit(7, 8, 200 * MS, 212 * MS, Syscall::Fdatasync, 3)),
            &mut sink,
        )
        .unwrap();
        // 12 ms, then asleep in its next syscall (not a JVM): its caller's own business.
        let mut nap = blocked(7, 8, 225 * MS + 10_000, 260 * MS, 0x1);
        nap.flags = BLOCKED_AFTER_CALL;
        p.handle(&record_bytes(&nap), &mut sink).unwrap();
        let mut x = exit(7, 8, 213 * MS, 225 * MS, Syscall::Fsync, 3);
        x.flags = CALL_AFTER;
        x.after_ns = 35 * MS;
        p.handle(&record_bytes(&x), &mut sink).unwrap();
        p.finish(MonoNs(300 * MS), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    let r = &l[0];
    assert_eq!(r["duration_ms"], 12.0);
    assert_eq!(r["after_ms"], 15.0);
    assert_eq!(r["visible_ms"], 27.0);
    assert_eq!(r["verdict"], "cpu_starvation", "{}", r["headline"]);
    assert_eq!(r["evidence"]["on_cpu_ms"], 1.0);
    assert_eq!(p.stats.calls_seen, 3);
}

#[test]
fn a_preemption_that_ended_right_before_the_entry_is_in_what_its_caller_saw() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 20 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        // Preempted 9 ms, back on CPU 20 µs before a 14 ms fdatasync: 23 ms as the caller
        // (reading its clock before the preemption) saw it.
        p.handle(
            &record_bytes(&blocked(7, 8, 91 * MS, 100 * MS - 20_000, 0x100)),
            &mut sink,
        )
        .unwrap();
        p.handle(&enter(7, 8, 100 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        let mut x = exit(7, 8, 100 * MS, 114 * MS, Syscall::Fdatasync, 3);
        x.flags = CALL_ACCOUNTED;
        x.on_cpu_ns = MS;
        x.short_ns = [13 * MS, 0, 0];
        p.handle(&record_bytes(&x), &mut sink).unwrap();
        // The same, but back on CPU 2 ms before the entry: its own work, not counted.
        p.handle(
            &record_bytes(&blocked(7, 8, 191 * MS, 198 * MS, 0x100)),
            &mut sink,
        )
        .unwrap();
        p.handle(&enter(7, 8, 200 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        p.handle(
            &record_bytes(&exit(7, 8, 200 * MS, 214 * MS, Syscall::Fdatasync, 3)),
            &mut sink,
        )
        .unwrap();
        // Asleep (not preempted) right before the entry: the caller's own wait.
        p.handle(
            &record_bytes(&blocked(7, 8, 291 * MS, 300 * MS - 20_000, 0x1)),
            &mut sink,
        )
        .unwrap();
        p.handle(&enter(7, 8, 300 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        p.handle(
            &record_bytes(&exit(7, 8, 300 * MS, 314 * MS, Syscall::Fdatasync, 3)),
            &mut sink,
        )
        .unwrap();
        p.finish(MonoNs(400 * MS), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    let r = &l[0];
    assert_eq!(r["start_ns"], 100 * MS);
    assert_eq!(r["duration_ms"], 14.0);
    assert_eq!(r["before_ms"], 9.0);
    assert_eq!(r["visible_ms"], 23.0);
    assert_eq!(r["stages"]["run_queue"], 8.98, "{}", r["stages"]);
    let sum: f64 = r["stages"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((sum - 23.0).abs() < 1e-6, "{}", r["stages"]);
}

#[test]
fn flusher_io_is_charged_to_the_dirtier_of_that_bdi_and_inode() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 0).with_events(true);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        let dirty = |bdi: &[u8; 16], ino| DirtyEvent {
            hdr: hdr::<DirtyEvent>(EventKind::Dirty, 10, 500, 501),
            ino,
            pages: 1,
            _pad: 0,
            cgroup_id: 0,
            bdi: *bdi,
            comm: comm("dd"),
        };
        let b70 = *b"7:0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let b71 = *b"7:1\0\0\0\0\0\0\0\0\0\0\0\0\0";
        p.handle(&record_bytes(&dirty(&b70, 77)), &mut sink)
            .unwrap();
        let io = |tgid: u32, ino: u64, bdi: [u8; 16], c: &str, kthread: bool| IoEvent {
            hdr: hdr::<IoEvent>(EventKind::Io, 900, tgid, tgid),
            rq: Request {
                queued_ns: 100,
                insert_ns: 100,
                issue_ns: 300,
                sector: 8,
                ino,
                wb_bdi: bdi,
                task_cgroup: 0,
                blk_cgroup: 0,
                disk: 7 << 20,
                part: 0,
                tgid,
                tid: tgid,
                bytes: 4096,
                done_bytes: 4096,
                cmd_flags: 1,
                requeues: 0,
                flags: if kthread { RQ_KTHREAD } else { 0 },
                comm: comm(c),
            },
            nr_bytes: 4096,
            status: 0,
        };
        // The flusher, inode 77 of bdi 7:0: dd's.
        p.handle(
            &record_bytes(&io(90, 77, b70, "kworker/u8:3", true)),
            &mut sink,
        )
        .unwrap();
        // Inode 77 of another bdi: not dd's (inode numbers are per filesystem).
        p.handle(
            &record_bytes(&io(90, 77, b71, "kworker/u8:3", true)),
            &mut sink,
        )
        .unwrap();
        // dd's own I/O.
        p.handle(&record_bytes(&io(500, 0, [0; 16], "dd", false)), &mut sink)
            .unwrap();
        // Not followed from its start (`--requests around-calls`), first seen completing:
        // no submitter, but its pages' inode and bdi, read in the kernel from its bio: dd's
        // all the same. Without them, unknown and said why.
        let late = zkstall_common::RQ_LATE | zkstall_common::RQ_UNMATCHED;
        let mut r = io(0, 77, b70, "", false);
        r.rq.flags = late | zkstall_common::RQ_PAGE_INODE;
        p.handle(&record_bytes(&r), &mut sink).unwrap();
        let mut r = io(0, 0, [0; 16], "", false);
        r.rq.flags = late;
        p.handle(&record_bytes(&r), &mut sink).unwrap();
    }
    let l = lines(&out);
    let ios: Vec<&serde_json::Value> = l.iter().filter(|l| l["type"] == "io").collect();
    assert_eq!(ios.len(), 5);
    assert_eq!(ios[3]["charged_to"], "dd (pid 500 tid 501)", "{}", ios[3]);
    assert_eq!(ios[3]["late"], true);
    assert_eq!(
        ios[4]["charged_to"],
        "unknown (not followed: issued while no traced call was in flight)"
    );
    assert_eq!(ios[0]["comm"], "kworker/u8:3");
    assert_eq!(ios[0]["dirtier"]["comm"], "dd");
    assert_eq!(ios[0]["dirtier"]["tid"], 501);
    assert_eq!(ios[0]["charged_to"], "dd (pid 500 tid 501)");
    assert_eq!(ios[0]["queue_ms"], 0.0002);
    assert_eq!(ios[0]["service_ms"], 0.0006);
    assert!(ios[1].get("dirtier").is_none(), "another bdi's inode 77");
    assert_eq!(ios[1]["charged_to"], "kworker/u8:3");
    assert!(
        ios[2].get("dirtier").is_none(),
        "own I/O is not charged to itself"
    );
    assert_eq!(ios[2]["rwbs"], "W");
}

#[test]
fn journal_phases_become_one_commit_record() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 0).with_events(true);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        let ph = |ts: u64, phase: JournalPhase, tr: u32| JournalEvent {
            hdr: hdr::<JournalEvent>(EventKind::Journal, ts, 30, 30),
            dev: 7 << 20,
            transaction: tr,
            phase: phase as u32,
            _pad: 0,
        };
        for (ts, ph_) in [
            (1, JournalPhase::Start),
            (2, JournalPhase::Locking),
            (3, JournalPhase::Flushing),
            (9, JournalPhase::Logging),
        ] {
            p.handle(&record_bytes(&ph(ts * MS, ph_, 5)), &mut sink)
                .unwrap();
        }
        let st = JournalStatsEvent {
            hdr: hdr::<JournalStatsEvent>(EventKind::JournalStats, 9_500_000, 30, 30),
            dev: 7 << 20,
            transaction: 5,
            handle_count: 12,
            blocks: 8,
            blocks_logged: 10,
            _pad: 0,
        };
        p.handle(&record_bytes(&st), &mut sink).unwrap();
        p.handle(&record_bytes(&ph(10 * MS, JournalPhase::End, 5)), &mut sink)
            .unwrap();
        // An end whose start was never seen is dropped, not invented.
        p.handle(&record_bytes(&ph(11 * MS, JournalPhase::End, 4)), &mut sink)
            .unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1);
    let v = &l[0];
    assert_eq!(v["type"], "journal");
    assert_eq!(v["dev"], "7:0");
    assert_eq!(v["duration_ms"], 9.0);
    assert_eq!(v["locking_ms"], 1.0);
    assert_eq!(v["flushing_ms"], 6.0);
    assert_eq!(v["logging_ms"], 1.0);
    assert_eq!(v["handles"], 12);
}

#[test]
fn reports_only_calls_at_or_above_the_threshold_with_their_file() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(f.as_file()) as u64;
    let me = std::process::id();
    let mut p = Pipeline::new(
        Box::new(Live::new(ProcRoot::default(), "/sys")),
        WallClock { offset_ns: 0 },
        MS,
    );
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        p.handle(&enter(me, 5, 1_000, Syscall::Fdatasync, fd), &mut sink)
            .unwrap();
        p.handle(
            &record_bytes(&exit(me, 5, 1_000, 2 * MS, Syscall::Fdatasync, fd)),
            &mut sink,
        )
        .unwrap();
        p.handle(&enter(me, 5, 3 * MS, Syscall::Fsync, fd), &mut sink)
            .unwrap();
        p.handle(
            &record_bytes(&exit(me, 5, 3 * MS, 3_500_000, Syscall::Fsync, fd)),
            &mut sink,
        )
        .unwrap();
        p.handle(&[0u8; 7], &mut sink).unwrap();
        p.finish(MonoNs(9 * MS), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["syscall"], "fdatasync");
    assert_eq!(l[0]["duration_ms"], 1.999);
    assert_eq!(l[0]["path"], f.path().to_string_lossy().as_ref());
    assert_eq!(l[0]["thread"], "sync");
    assert_eq!(
        (
            p.stats.events,
            p.stats.calls_seen,
            p.stats.reported,
            p.stats.decode_errors
        ),
        (5, 2, 1, 1)
    );
}

#[test]
fn calls_whose_exit_never_comes_are_closed_not_reported_as_phantoms() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        // Exit lost (ring full): the thread's next call closes it.
        p.handle(&enter(7, 8, MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        p.handle(&enter(7, 8, 50 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        p.handle(
            &record_bytes(&exit(7, 8, 50 * MS, 50 * MS + 10, Syscall::Fdatasync, 3)),
            &mut sink,
        )
        .unwrap();
        // A thread that exits inside a call.
        p.handle(&enter(7, 9, 60 * MS, Syscall::Fsync, 3), &mut sink)
            .unwrap();
        let ex = ThreadEvent {
            hdr: hdr::<ThreadEvent>(EventKind::Thread, 70 * MS, 7, 9),
            change: 2,
            tid: 9,
            comm: comm("worker"),
        };
        p.handle(&record_bytes(&ex), &mut sink).unwrap();
        // One still open at the end, that the kernel does not confirm running.
        p.handle(&enter(7, 10, 80 * MS, Syscall::Fsync, 3), &mut sink)
            .unwrap();
        p.finish(MonoNs(60_000 * MS), &mut sink).unwrap();
    }
    assert!(lines(&out).is_empty(), "{:?}", lines(&out));
    assert_eq!(p.calls.exit_lost, 2);
    assert_eq!(p.calls.thread_exited, 1);
}

#[test]
fn a_stuck_call_is_reported_as_it_crosses_the_threshold_and_again_when_it_ends() {
    let (l, p) = stuck_call_reported_with(100 * MS);
    assert_eq!(l.len(), 2, "{l:#?}");
    assert_eq!(l[0]["in_progress"], true);
    assert_eq!(l[0]["start_bound"], true);
    assert_eq!(l[0]["duration_ms"], 150.0);
    // Its journal's disk is not known here: "a commit slow on its own" cannot be said.
    assert_eq!(l[0]["verdict"], "unknown", "{}", l[0]["headline"]);
    let h = l[0]["headline"].as_str().unwrap_or_default();
    assert!(
        h.contains("waiting for the journal")
            && h.contains("the disks under the file are not known"),
        "{h}"
    );
    assert!(l[1].get("in_progress").is_none());
    assert_eq!(l[1]["duration_ms"], 400.0);
    assert_eq!(l[1]["start_bound"], true);
    assert_eq!(
        l[1]["evidence"]["stack"][0], "jbd2_log_wait_commit+0xc2",
        "the seeded interval carries the /proc stack"
    );
    assert_eq!(p.stats.crossed, 1);
    assert_eq!(p.stats.reported, 1);
    // The same records reported with a higher threshold (`report --threshold`): the
    // crossing noted at the recording's threshold is not one at this one.
    let (l, p) = stuck_call_reported_with(500 * MS);
    assert!(l.is_empty(), "{l:#?}");
    assert_eq!((p.stats.crossed, p.stats.reported), (0, 0));
}

fn stuck_call_reported_with(threshold_ns: u64) -> (Vec<serde_json::Value>, Pipeline) {
    let mut p = Pipeline::new(
        Box::new(Replay::default()),
        WallClock { offset_ns: 0 },
        threshold_ns,
    );
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        p.note(
            &Note::Stuck {
                ts_ns: 1_000 * MS,
                pid: 7,
                tid: 8,
                thread: "SyncThread:1".into(),
                syscall: "fdatasync".into(),
                arg: 3,
                state: "D".into(),
                wchan: None,
                stack: vec!["jbd2_log_wait_commit+0xc2".into()],
            },
            &mut sink,
        )
        .unwrap();
        let running = Note::Running {
            ts_ns: 1_150 * MS,
            pid: 7,
            tid: 8,
            syscall: "fdatasync".into(),
            arg: 3,
            start_ns: 1_000 * MS,
            start_bound: true,
            at_end: false,
            state: Some("D".into()),
            off_ns: Some(1_000 * MS),
            wake_ns: None,
            wchan: None,
            stack: vec!["jbd2_log_wait_commit+0xc2".into()],
            in_flight: vec![],
            unfollowed: vec![],
        };
        p.note(&running, &mut sink).unwrap();
        p.note(&running, &mut sink).unwrap(); // once only
        // The seeded interval ends, then the call.
        let mut b = blocked(7, 8, 1_000 * MS, 1_400 * MS, 0x2);
        b.flags = zkstall_common::BLOCKED_SEEDED;
        p.handle(&record_bytes(&b), &mut sink).unwrap();
        let mut x = exit(7, 8, 1_000 * MS, 1_400 * MS, Syscall::Fdatasync, 3);
        x.flags = zkstall_common::CALL_START_BOUND;
        p.handle(&record_bytes(&x), &mut sink).unwrap();
    }
    (lines(&out), p)
}

#[test]
fn a_call_still_running_at_the_end_is_reported_unfinished_even_at_threshold_zero() {
    let mut p = Pipeline::new(Box::new(Replay::default()), WallClock { offset_ns: 0 }, 0);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        p.handle(&enter(7, 8, MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        let mut b = blocked(7, 8, 2 * MS, 3_000 * MS, 0x2);
        b.flags = zkstall_common::BLOCKED_OPEN;
        p.handle(&record_bytes(&b), &mut sink).unwrap();
        p.note(
            &Note::Running {
                ts_ns: 3_000 * MS,
                pid: 7,
                tid: 8,
                syscall: "fdatasync".into(),
                arg: 3,
                start_ns: MS,
                start_bound: false,
                at_end: true,
                state: Some("D".into()),
                off_ns: None,
                wake_ns: None,
                wchan: None,
                stack: vec![],
                in_flight: vec![],
                unfollowed: vec![],
            },
            &mut sink,
        )
        .unwrap();
        p.finish(MonoNs(3_000 * MS), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0]["unfinished"], true);
    assert_eq!(l[0]["duration_ms"], 2999.0);
    assert_eq!(
        l[0]["evidence"]["d_state_ms"], 2998.0,
        "D time = the stuck interval"
    );
}

#[test]
fn the_way_back_spans_every_preemption_and_ends_at_the_callers_own_wait() {
    let mut jvm = Replay::default();
    jvm.learn(crate::enrich::Fact::Jvm { pid: 7, jvm: true });
    let mut p = Pipeline::new(Box::new(jvm), WallClock { offset_ns: 0 }, 20 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        p.handle(&enter(7, 8, 100 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        // Returned at 110 ms; preempted twice on the way back (CPU-starved), then parked
        // on its own work queue (woken by ProcessThread): not part of the call.
        for (off, on, state) in [(110, 115, 0x100u64), (115, 125, 0x100), (125, 400, 0x1)] {
            let mut b = blocked(7, 8, off * MS + 1_000, on * MS, state);
            b.flags = BLOCKED_AFTER_CALL;
            if state == 0x1 {
                b.waker_tgid = 7;
                b.waker_tid = 9;
                b.waker_comm = comm("ProcessThread(s");
                b.wake_ns = 399 * MS;
            }
            p.handle(&record_bytes(&b), &mut sink).unwrap();
        }
        let mut x = exit(7, 8, 100 * MS, 110 * MS, Syscall::Fdatasync, 3);
        x.flags = CALL_AFTER;
        x.after_ns = 290 * MS;
        p.handle(&record_bytes(&x), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0]["duration_ms"], 10.0);
    assert_eq!(
        l[0]["visible_ms"], 25.001,
        "both preemptions, not the queue wait"
    );
    assert_eq!(l[0]["verdict"], "cpu_starvation", "{}", l[0]["headline"]);
}

/// A disk that stopped has not completed the request the call waits on: as the call
/// crosses the threshold, that request (from the kernel's map, carried by the note) is
/// the evidence of the stall.
#[test]
fn a_call_stuck_behind_a_request_that_never_completes_is_a_device_stall_while_it_runs() {
    let mut p = on_loop0(500 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        p.handle(&enter(7, 8, 1_000 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        // Its write, issued at 1001 ms, still in flight at 1600 ms.
        let rq = IoEvent {
            hdr: hdr::<IoEvent>(EventKind::Io, 1_600 * MS, 7, 8),
            rq: Request {
                queued_ns: 1_000 * MS + 500_000,
                insert_ns: 0,
                issue_ns: 1_001 * MS,
                sector: 8,
                ino: 0,
                wb_bdi: [0; 16],
                task_cgroup: 0,
                blk_cgroup: 0,
                disk: 7 << 20,
                part: 0,
                tgid: 7,
                tid: 8,
                bytes: 4096,
                done_bytes: 0,
                cmd_flags: 1,
                requeues: 0,
                flags: zkstall_common::RQ_OPEN,
                comm: comm("SyncThread:1"),
            },
            nr_bytes: 0,
            status: 0,
        };
        let open = vec![notes::to_hex(&record_bytes(&rq))];
        p.note(&waiting_on_writeback(1_600, 1_001, open), &mut sink)
            .unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0]["in_progress"], true);
    assert_eq!(l[0]["verdict"], "device_stall", "{:#}", l[0]);
    assert!(
        l[0]["headline"].as_str().unwrap().contains("loop0"),
        "{}",
        l[0]["headline"]
    );
    // The open request was only lent to that explanation.
    assert!(
        p.history
            .disks
            .values()
            .all(|d| d.ios.iter().all(|io| io.completed.is_some()))
    );
}

#[test]
fn a_running_call_is_reported_again_only_when_its_verdict_so_far_changes() {
    let mut p = on_loop0(500 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        // Its write, issued at 1100 ms, never completes.
        let open = fdatasync_with_its_write_open(&mut p, &mut sink);
        let running = |ts: u64| waiting_on_writeback(ts, 1_100, vec![open.clone()]);
        // At the crossing the disk has been silent 450 ms: too short to call it stopped.
        p.note(&running(1_550), &mut sink).unwrap();
        // Looked at again as the call doubled: now it is.
        p.note(&running(2_100), &mut sink).unwrap();
        // And again: nothing changed, nothing printed.
        p.note(&running(4_200), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 2, "{l:#?}");
    assert_eq!(l[0]["in_progress"], true);
    assert!(l[0].get("revised").is_none(), "{:#}", l[0]);
    assert_ne!(l[0]["verdict"], "device_stall", "{:#}", l[0]);
    assert_eq!(l[1]["in_progress"], true);
    assert_eq!(l[1]["revised"], true);
    assert_eq!(l[1]["verdict"], "device_stall", "{:#}", l[1]);
    assert_eq!(p.stats.crossed, 1, "one call crossed, once");
}

/// pid 7's SyncThread (tid 8) enters fdatasync at 1000 ms; its write, issued at 1100 ms,
/// is still in flight: the open request's record as a running note carries it.
fn fdatasync_with_its_write_open(p: &mut Pipeline, sink: &mut JsonSink<&mut Vec<u8>>) -> String {
    p.handle(&enter(7, 8, 1_000 * MS, Syscall::Fdatasync, 3), sink)
        .unwrap();
    let mut rq = write_rq(
        7,
        1_099 * MS,
        1_100 * MS,
        1_100 * MS,
        zkstall_common::RQ_OPEN,
    );
    rq.rq.tid = 8;
    notes::to_hex(&record_bytes(&rq))
}

/// A look at a running call that found requests in flight on its disk the probes did not
/// follow (`--requests around-calls`): that disk is not known then, so no stall is said;
/// the next look, with none of them left, says it. The note's disk is `MAJ:MIN`.
#[test]
fn a_running_call_beside_requests_not_followed_waits_for_them_to_be_seen() {
    let mut p = on_loop0(500 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        let open = fdatasync_with_its_write_open(&mut p, &mut sink);
        let mut first = waiting_on_writeback(2_100, 1_100, vec![open.clone()]);
        if let Note::Running { unfollowed, .. } = &mut first {
            // As many as a neighbour's flood could be (a few on this bare disk would not
            // keep it from being called stopped: see rules' `stalled`).
            *unfollowed = vec![("7:0".into(), 8)];
        }
        p.note(&first, &mut sink).unwrap();
        p.note(&waiting_on_writeback(4_200, 1_100, vec![open]), &mut sink)
            .unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 2, "{l:#?}");
    assert_eq!(l[0]["verdict"], "unknown", "{:#}", l[0]);
    assert!(
        l[0]["evidence"]["incomplete"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i
                .as_str()
                .unwrap()
                .starts_with("loop0: 8 request(s) in flight now that the probes did not follow")),
        "{:#}",
        l[0]
    );
    assert_eq!(l[1]["verdict"], "device_stall", "{:#}", l[1]);
    // Lent to that look only.
    assert!(p.history.disks.values().all(|d| d.unfollowed == 0));
}

/// pid 7's SyncThread (tid 8), in fdatasync since 1000 ms, seen at `ts_ms` waiting for its
/// page's writeback since `off_ms`, with these requests in flight.
fn waiting_on_writeback(ts_ms: u64, off_ms: u64, in_flight: Vec<String>) -> Note {
    Note::Running {
        ts_ns: ts_ms * MS,
        pid: 7,
        tid: 8,
        syscall: "fdatasync".into(),
        arg: 3,
        start_ns: 1_000 * MS,
        start_bound: false,
        at_end: false,
        state: Some("D".into()),
        off_ns: Some(off_ms * MS),
        wake_ns: None,
        wchan: None,
        stack: vec!["io_schedule".into(), "folio_wait_writeback".into()],
        in_flight,
        unfollowed: vec![],
    }
}

/// A pipeline that knows fd 3 of pid 7 is /zk/log.1 on loop0 (7:0), watched from 0.
fn on_loop0(threshold_ns: u64) -> Pipeline {
    use crate::enrich::{DevId, DiskDev, DiskPath, Fact, Layer, LayerKind, facts::StoredFile};
    let mut r = Replay::default();
    r.learn(Fact::Fd {
        pid: 7,
        fd: 3,
        file: Some(StoredFile {
            path: "/zk/log.1".into(),
            dev: Some("7:0".into()),
            ino: Some(12),
        }),
    });
    r.learn(Fact::DiskPath {
        dev: "7:0".into(),
        path: DiskPath {
            layers: vec![Layer {
                disk: DiskDev(DevId::parse("7:0").unwrap()),
                name: "loop0".into(),
                part: None,
                part_name: None,
                kind: LayerKind::Disk,
                depth: 0,
            }],
        },
    });
    let mut p = Pipeline::new(Box::new(r), WallClock { offset_ns: 0 }, threshold_ns);
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out);
    p.note(
        &Note::Watch {
            ts_ns: 0,
            disk: "7:0".into(),
            name: "loop0".into(),
            why: "/zk/log.1".into(),
            backing_bdi: None,
            backing_ino: None,
        },
        &mut sink,
    )
    .unwrap();
    p
}

fn write_rq(tgid: u32, queued: u64, issued: u64, done: u64, flags: u16) -> IoEvent {
    IoEvent {
        hdr: hdr::<IoEvent>(EventKind::Io, done, tgid, tgid + 1),
        rq: Request {
            queued_ns: queued,
            insert_ns: 0,
            issue_ns: issued,
            sector: 8,
            ino: 0,
            wb_bdi: [0; 16],
            task_cgroup: 0,
            blk_cgroup: 0,
            disk: 7 << 20,
            part: 0,
            tgid,
            tid: tgid + 1,
            bytes: 4096,
            done_bytes: if flags & zkstall_common::RQ_OPEN != 0 {
                0
            } else {
                4096
            },
            cmd_flags: 1,
            requeues: 0,
            flags,
            comm: comm("SyncThread:1"),
        },
        nr_bytes: if flags & zkstall_common::RQ_OPEN != 0 {
            0
        } else {
            4096
        },
        status: 0,
    }
}

#[test]
fn completions_the_probes_did_not_see_on_a_disk_make_its_history_incomplete_and_claim_no_stall() {
    // A 1.5 s fdatasync whose one request looks in flight throughout: a device stall, unless
    // the block layer counted completions on that disk that the probes never saw (the
    // kernel skipped their runs); then the "request in flight" may be one that completed.
    // (completions the block layer counted more, requests found stale)
    let run = |(completions, stale): (u64, u64)| {
        let mut p = on_loop0(100 * MS);
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out);
            p.handle(&enter(7, 8, 1_000 * MS, Syscall::Fdatasync, 3), &mut sink)
                .unwrap();
            if completions + stale > 0 {
                p.note(
                    &Note::Unseen {
                        from_ns: 1_100 * MS,
                        to_ns: 1_200 * MS,
                        disk: "7:0".into(),
                        name: "loop0".into(),
                        completions,
                        stale,
                    },
                    &mut sink,
                )
                .unwrap();
            }
            let mut b = blocked(7, 8, 1_001 * MS, 2_500 * MS, 0x2);
            b.wake_ns = 2_500 * MS;
            p.handle(&record_bytes(&b), &mut sink).unwrap();
            let rq = write_rq(7, 1_000 * MS + 500_000, 1_001 * MS, 2_500 * MS, 0);
            let mut rq = rq;
            rq.hdr.tid = 8;
            rq.rq.tid = 8;
            p.handle(&record_bytes(&rq), &mut sink).unwrap();
            p.handle(
                &record_bytes(&exit(7, 8, 1_000 * MS, 2_500 * MS, Syscall::Fdatasync, 3)),
                &mut sink,
            )
            .unwrap();
        }
        let l = lines(&out);
        assert_eq!(l.len(), 1, "{l:#?}");
        (l[0].clone(), p)
    };
    let (seen, _) = run((0, 0));
    assert_eq!(seen["verdict"], "device_stall", "{seen:#}");
    let (r, p) = run((1, 0));
    assert_ne!(r["verdict"], "device_stall", "{r:#}");
    let incomplete = r["evidence"]["incomplete"].to_string();
    assert!(
        incomplete
            .contains("loop0: completions the probes did not see (the block layer counted more)"),
        "{incomplete}"
    );
    assert_eq!(p.stats.unseen_completions, 1);
    assert_eq!(p.stats.unseen_windows, 1);
    // Stale requests found: the same, said apart.
    let (r, p) = run((0, 2));
    assert_ne!(r["verdict"], "device_stall", "{r:#}");
    let incomplete = r["evidence"]["incomplete"].to_string();
    assert!(
        incomplete
            .contains("loop0: completions the probes did not see (requests they held in flight"),
        "{incomplete}"
    );
    assert!(
        !incomplete.contains("block layer counted more"),
        "{incomplete}"
    );
    assert_eq!((p.stats.stale_requests, p.stats.unseen_windows), (2, 1));
}

#[test]
fn a_disk_no_traced_process_uses_any_more_is_unwatched_and_its_history_dropped() {
    let mut p = on_loop0(0);
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out);
    // Pid 7 uses loop0 (its fdatasync on fd 3); pid 9 does not.
    p.handle(&enter(7, 8, 1_000 * MS, Syscall::Fdatasync, 3), &mut sink)
        .unwrap();
    p.handle(
        &record_bytes(&exit(7, 8, 1_000 * MS, 1_002 * MS, Syscall::Fdatasync, 3)),
        &mut sink,
    )
    .unwrap();
    p.handle(
        &record_bytes(&write_rq(7, 1_000 * MS, 1_000 * MS, 1_001 * MS, 0)),
        &mut sink,
    )
    .unwrap();
    assert!(p.take_wanted_disks().is_empty(), "watched already");
    p.note(
        &Note::TargetExit {
            ts_ns: 2_000 * MS,
            pid: 9,
        },
        &mut sink,
    )
    .unwrap();
    assert!(p.take_unwanted_disks().is_empty(), "pid 9 never used it");
    p.note(
        &Note::TargetExit {
            ts_ns: 2_000 * MS,
            pid: 7,
        },
        &mut sink,
    )
    .unwrap();
    let gone = p.take_unwanted_disks();
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1, "loop0");
    p.note(
        &Note::Unwatch {
            ts_ns: 2_001 * MS,
            disk: "7:0".into(),
            name: "loop0".into(),
        },
        &mut sink,
    )
    .unwrap();
    assert!(p.watched().is_empty());
    assert!(p.history.disks.is_empty(), "its requests are dropped");
    // A new process using it again asks for it again.
    p.handle(&enter(7, 20, 3_000 * MS, Syscall::Fdatasync, 3), &mut sink)
        .unwrap();
    let again = p.take_wanted_disks();
    assert_eq!(again.len(), 1, "{again:?}");
    drop(sink);
    let s = p.summary(&Default::default(), 0, Vec::new());
    assert_eq!(s.unwatched, 1);
    assert_eq!(s.watched, vec!["loop0 (7:0)".to_string()], "ever watched");
}

#[test]
fn flusher_dirtiers_are_an_lru_the_recent_ones_survive_a_flood_of_others() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 0).with_events(true);
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out);
    let bdi = *b"7:0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let dirty = |ino: u64, tid: u32, name: &str| DirtyEvent {
        hdr: hdr::<DirtyEvent>(EventKind::Dirty, 10, tid, tid),
        ino,
        pages: 1,
        _pad: 0,
        cgroup_id: 0,
        bdi,
        comm: comm(name),
    };
    p.handle(&record_bytes(&dirty(1, 500, "zk")), &mut sink)
        .unwrap();
    // Far more inodes dirtied by someone else than the table holds, but zk's inode used
    // (looked up) along the way: it stays; the oldest of the flood go.
    for ino in 2..(DIRTIERS as u64 + 1000) {
        p.handle(&record_bytes(&dirty(ino, 600, "dd")), &mut sink)
            .unwrap();
        if ino % 1000 == 0 {
            p.handle(&record_bytes(&dirty(1, 500, "zk")), &mut sink)
                .unwrap();
        }
    }
    assert_eq!(p.dirtiers.len(), DIRTIERS, "bounded, never cleared");
    assert_eq!(
        p.dirtiers.get(&("7:0".to_string(), 1)).map(|w| w.tid),
        Some(500)
    );
    assert!(p.dirtiers.get(&("7:0".to_string(), 2)).is_none());
    assert!(
        p.dirtiers
            .get(&("7:0".to_string(), DIRTIERS as u64 + 999))
            .is_some()
    );
}

fn jvm_event(
    tgid: u32,
    tid: u32,
    ts: u64,
    probe: zkstall_common::JvmProbe,
    name: &str,
    a: u64,
    b: u64,
) -> Vec<u8> {
    let mut n = [0u8; zkstall_common::JVM_NAME_LEN];
    n[..name.len()].copy_from_slice(name.as_bytes());
    record_bytes(&zkstall_common::JvmEvent {
        hdr: hdr::<zkstall_common::JvmEvent>(EventKind::Jvm, ts, tgid, tid),
        probe: probe as u32,
        name_len: name.len() as u32,
        a,
        b,
        name: n,
    })
}

#[test]
fn hotspots_probes_name_threads_whole_and_mark_the_safepoint_a_call_waited_in() {
    use zkstall_common::JvmProbe;
    let mut r = Replay::default();
    r.learn(crate::enrich::Fact::Jvm { pid: 7, jvm: true });
    let mut p = Pipeline::new(Box::new(r), WallClock { offset_ns: 0 }, 20 * MS);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        // The thread starts (the probe fires in the parent, naming the child's OS tid 8).
        let name = "NIOServerCxnFactory.SelectorThread-0";
        p.handle(
            &jvm_event(7, 7, 50 * MS, JvmProbe::ThreadStart, name, 31, 8),
            &mut sink,
        )
        .unwrap();
        // A 12 ms fdatasync, then 88 ms parked on the way back, inside a safepoint that
        // ran a full GC (no other thread's state says so: only HotSpot's markers).
        p.handle(&enter(7, 8, 100 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        p.handle(
            &jvm_event(7, 9, 110 * MS, JvmProbe::SafepointBegin, "", 0, 0),
            &mut sink,
        )
        .unwrap();
        p.handle(
            &jvm_event(7, 9, 111 * MS, JvmProbe::VmopBegin, "G1CollectFull", 1, 0),
            &mut sink,
        )
        .unwrap();
        p.handle(
            &jvm_event(7, 9, 112 * MS, JvmProbe::GcBegin, "", 1, 0),
            &mut sink,
        )
        .unwrap();
        p.handle(
            &jvm_event(7, 9, 199 * MS, JvmProbe::GcEnd, "", 0, 0),
            &mut sink,
        )
        .unwrap();
        p.handle(
            &jvm_event(7, 9, 200 * MS, JvmProbe::SafepointEnd, "", 0, 0),
            &mut sink,
        )
        .unwrap();
        let (after, mut x) = call_and_way_back(0x1, 200 * MS);
        p.handle(&record_bytes(&after), &mut sink).unwrap();
        x.on_cpu_ns = MS;
        x.short_ns = [11 * MS, 0, 0];
        x.comm = comm("NIOServerCxnFac");
        p.handle(&record_bytes(&x), &mut sink).unwrap();
        p.finish(MonoNs(300 * MS), &mut sink).unwrap();
    }
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    let r = &l[0];
    assert_eq!(r["thread"], "NIOServerCxnFactory.SelectorThread-0", "{r:#}");
    assert_eq!(r["thread_source"], "usdt");
    assert_eq!(r["comm"], "NIOServerCxnFac");
    assert_eq!(r["verdict"], "jvm_pause", "{r:#}");
    let sp = &r["evidence"]["safepoint"];
    assert_eq!(sp["op"], "G1CollectFull", "{r:#}");
    assert_eq!(sp["gc_full"], true);
    let h = r["headline"].as_str().unwrap();
    assert!(
        h.contains("G1CollectFull") && h.contains("a full GC"),
        "{h}"
    );
}

#[test]
fn jcmds_names_fill_in_for_threads_started_before_and_its_safepoint_is_zkstalls_own() {
    use zkstall_common::JvmProbe;
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 0);
    let mut out = Vec::new();
    let mut sink = JsonSink::new(&mut out);
    p.note(
        &Note::JavaNames {
            ts_ns: 10 * MS,
            end_ns: 60 * MS,
            pid: 7,
            names: vec![(8, "QuorumPeer[myid=1](plain=127.0.0.1:2181)".into())],
        },
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        p.java_name(8),
        Some((
            "QuorumPeer[myid=1](plain=127.0.0.1:2181)",
            super::jvm::NameSource::Jcmd
        ))
    );
    p.handle(
        &jvm_event(7, 9, 20 * MS, JvmProbe::SafepointBegin, "", 0, 0),
        &mut sink,
    )
    .unwrap();
    p.handle(
        &jvm_event(7, 9, 21 * MS, JvmProbe::VmopBegin, "ThreadDump", 1, 0),
        &mut sink,
    )
    .unwrap();
    p.handle(
        &jvm_event(7, 9, 40 * MS, JvmProbe::SafepointEnd, "", 0, 0),
        &mut sink,
    )
    .unwrap();
    let sp = p.history.jvm_pauses.back().unwrap();
    assert!(sp.by_zkstall, "{sp:?}");
    assert_eq!(sp.op.as_deref(), Some("ThreadDump"));
    // A name from the probe is not overwritten by jcmd's.
    p.handle(
        &jvm_event(
            7,
            7,
            70 * MS,
            JvmProbe::ThreadStart,
            "Snapshot Thread",
            40,
            9,
        ),
        &mut sink,
    )
    .unwrap();
    p.note(
        &Note::JavaNames {
            ts_ns: 80 * MS,
            end_ns: 90 * MS,
            pid: 7,
            names: vec![(9, "old".into())],
        },
        &mut sink,
    )
    .unwrap();
    assert_eq!(p.java_name(9).map(|(n, _)| n), Some("Snapshot Thread"));
}

/// A JVM's thread asleep on its way back from a call is in a safepoint when at least
/// `pause_min_stopped` of its process's other threads were off CPU through half of that
/// sleep: the caller saw the sleep. With one other thread stopped, it is its own next step.
#[test]
fn a_sleep_on_the_way_back_counts_when_the_jvms_other_threads_were_stopped_too() {
    let root = std::env::temp_dir().join(format!("zkstall-jvm-proc-{}", std::process::id()));
    std::fs::create_dir_all(root.join("7")).unwrap();
    std::fs::write(
        root.join("7/maps"),
        "7f0000000000-7f0000001000 r-xp 00000000 08:01 42 /usr/lib/jvm/java-17/lib/server/libjvm.so\n",
    )
    .unwrap();
    let run = |others: &[u32]| {
        let mut p = live_at(&root);
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out);
            // An interval that ended long before: the walk back stops at it.
            p.handle(
                &record_bytes(&blocked(7, 12, 10 * MS, 50 * MS, 0x1)),
                &mut sink,
            )
            .unwrap();
            p.handle(&enter(7, 8, 100 * MS, Syscall::Fdatasync, 3), &mut sink)
                .unwrap();
            // The other threads, stopped from before the return until just before 8 ran.
            for &tid in others {
                p.handle(
                    &record_bytes(&blocked(7, tid, 111 * MS, 139 * MS, 0x1)),
                    &mut sink,
                )
                .unwrap();
            }
            // 12 ms fdatasync, then 28 ms asleep (S) right after the return.
            let (nap, x) = call_and_way_back(0x1, 140 * MS);
            p.handle(&record_bytes(&nap), &mut sink).unwrap();
            p.handle(&record_bytes(&x), &mut sink).unwrap();
            p.finish(MonoNs(300 * MS), &mut sink).unwrap();
        }
        lines(&out)
    };
    let stopped = run(&[9, 10]);
    let alone = run(&[9]);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    assert_eq!(stopped[0]["after_ms"], 28.0, "{}", stopped[0]);
    assert_eq!(stopped[0]["visible_ms"], 40.0, "{}", stopped[0]);
    // One other thread stopped is not a safepoint: the 12 ms call alone, under threshold.
    assert!(alone.is_empty(), "{alone:#?}");
}

/// The live enricher keeps an fd's answer while the fd still leads to the same (device,
/// inode): an fd closed and reused for another file is resolved again, and the call on it
/// names that file.
#[test]
fn a_reported_call_names_the_file_its_fd_points_to_now_not_an_earlier_entrys() {
    let root = std::env::temp_dir().join(format!("zkstall-fd-proc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("7/fd")).unwrap();
    let (a, b) = (root.join("log.1"), root.join("log.2"));
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(&b, b"b").unwrap();
    let link = root.join("7/fd/3");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let mut p = live_at(&root);
    let mut out = Vec::new();
    {
        let mut sink = JsonSink::new(&mut out);
        // A fast call on log.1, then fd 3 is log.2 and a slow call on it 100 ms later.
        p.handle(&enter(7, 8, 100 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        let x = exit(7, 8, 100 * MS, 105 * MS, Syscall::Fdatasync, 3);
        p.handle(&record_bytes(&x), &mut sink).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&b, &link).unwrap();
        p.handle(&enter(7, 8, 200 * MS, Syscall::Fdatasync, 3), &mut sink)
            .unwrap();
        let x = exit(7, 8, 200 * MS, 230 * MS, Syscall::Fdatasync, 3);
        p.handle(&record_bytes(&x), &mut sink).unwrap();
        p.finish(MonoNs(300 * MS), &mut sink).unwrap();
    }
    let _ = std::fs::remove_dir_all(&root);
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(l[0]["path"], b.to_string_lossy().as_ref(), "{}", l[0]);
}

#[test]
fn a_fast_write_sent_for_its_slow_way_back_is_reported_but_is_no_latency_sample() {
    let mut p = Pipeline::new(nowhere(), WallClock { offset_ns: 0 }, 20 * MS);
    let mut sink = Kept::default();
    // A 0.1 ms append, preempted 30 ms right after it returned (the kernel holds a fast
    // write's exit and sends it for such a way back, CALL_FAST).
    let mut nap = blocked(7, 8, 100 * MS + 105_000, 130 * MS, 0x100);
    nap.flags = BLOCKED_AFTER_CALL;
    p.handle(&record_bytes(&nap), &mut sink).unwrap();
    let mut x = exit(7, 8, 100 * MS, 100 * MS + 100_000, Syscall::Write, 3);
    x.flags = CALL_AFTER | CALL_FAST;
    x.after_ns = 30 * MS - 100_000;
    p.handle(&record_bytes(&x), &mut sink).unwrap();
    // A 25 ms write: slow in itself, a latency sample.
    p.handle(
        &record_bytes(&exit(7, 8, 200 * MS, 225 * MS, Syscall::Write, 3)),
        &mut sink,
    )
    .unwrap();
    p.finish(MonoNs(300 * MS), &mut sink).unwrap();
    assert_eq!(sink.calls.len(), 2, "{:?}", sink.calls);
    assert_eq!(
        sink.calls[0],
        "write Some(CpuStarvation) Some(\"after_return\") Some(29.9)"
    );
    assert_eq!(sink.call_samples, vec!["write".to_string()]);
}

#[test]
fn a_summary_of_requests_goes_into_its_disks_history_and_to_the_sinks_observers() {
    let mut p = on_loop0(100 * MS);
    let mut sink = Kept::default();
    let mut hist = vec![0u64; zkstall_common::IO_HIST_BUCKETS];
    hist[3] = 40;
    hist[4] = 2;
    let n = Note::IoSummary {
        from_ns: 1_000 * MS,
        to_ns: 2_000 * MS,
        disk: "7:0".into(),
        name: "loop0".into(),
        requests: 42,
        bytes: 42 * 4096,
        service_ns: 42 * 150_000,
        hist: hist.clone(),
    };
    // As a recording carries it.
    let j = serde_json::to_string(&n).unwrap();
    assert!(j.contains("\"note\":\"io_summary\""), "{j}");
    assert_eq!(serde_json::from_str::<Note>(&j).unwrap(), n);
    p.note(&n, &mut sink).unwrap();
    let disk = DiskDev(crate::enrich::DevId { major: 7, minor: 0 });
    assert_eq!(sink.summaries, vec![(disk, hist.clone())]);
    let d = &p.history.disks[&disk];
    assert_eq!(d.summed.len(), 1);
    assert_eq!(d.summed[0].requests, 42);
    assert_eq!(d.summed[0].to, MonoNs(2_000 * MS));
    assert_eq!(d.summed[0].hist, hist);
    // A bucket's middle lands in that bucket.
    for k in 0..zkstall_common::IO_HIST_BUCKETS {
        let v = crate::history::summed_value_ns(k);
        assert!(v <= crate::history::summed_bound_ns(k), "{k}");
        assert!(k == 0 || v > crate::history::summed_bound_ns(k - 1), "{k}");
    }
}
