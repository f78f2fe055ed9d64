//! Verdicts on hand-built histories. Each fixture's explanation is also checked by
//! [`assert_consistent`]: no headline contradicts its own evidence.

use super::*;
use crate::{
    enrich::{DevId, DiskDev, Layer, LayerKind, PartRange, Replay},
    history::{Blocked, Commit, Io, Op, Party, PartyKind, Throttle, WakerInfo},
};

const MS: u64 = 1_000_000;
const ZK: u32 = 100;
const SYNC: u32 = 101;
const DISK: DiskDev = DiskDev(DevId { major: 7, minor: 1 });
const LOWER: DiskDev = DiskDev(DevId { major: 7, minor: 0 });

fn t(ms: u64) -> MonoNs {
    MonoNs(1_000_000_000 + ms * MS)
}

fn layer(disk: DiskDev, name: &str, depth: u32) -> Layer {
    Layer {
        disk,
        name: name.into(),
        part: None,
        part_name: None,
        kind: LayerKind::Disk,
        depth,
    }
}

fn call(start: u64, end: u64) -> Span {
    Span {
        pid: ZK,
        tid: SYNC,
        thread: "SyncThread:1".into(),
        syscall: "fdatasync",
        write_family: false,
        file_dev: Some(crate::enrich::FileDev(DISK.0)),
        device: Some("loop1".into()),
        disks: DiskPath {
            layers: vec![layer(DISK, "loop1", 0)],
        },
        start: t(start),
        before_ns: 0,
        syscall_end: Some(t(end)),
        end: t(end),
        accounting: None,
        start_bound: false,
        running: false,
        off_now: None,
        switch_unseen: false,
    }
}

fn party(pid: u32, tid: u32, comm: &str) -> Party {
    Party {
        kind: PartyKind::Task,
        pid,
        tid,
        comm: comm.into(),
        cgroup: None,
    }
}

fn io_on(
    disk: DiskDev,
    pid: u32,
    tid: u32,
    comm: &str,
    bytes: u32,
    issued: u64,
    completed: u64,
) -> Io {
    Io {
        disk,
        part: None,
        sector: 0,
        pid,
        tid,
        charged: party(pid, tid, comm),
        blkcg: None,
        bytes,
        op: Op::Write,
        sync: false,
        flush: false,
        fua: false,
        queued: Some(t(issued)),
        issued: Some(t(issued)),
        completed: Some(t(completed)),
        unmatched: false,
        late: false,
        requeues: 0,
        status: 0,
    }
}

/// A request not followed from its start (`--requests around-calls`: issued while no call
/// was in flight), first seen at its completion: submitter unknown, start and issue from
/// the block layer's stamps.
fn late_io(bytes: u32, issued: u64, completed: u64) -> Io {
    let mut r = io_on(DISK, 0, 0, "", bytes, issued, completed);
    r.charged = Party::unknown();
    r.unmatched = true;
    r.late = true;
    r
}

fn io(pid: u32, comm: &str, bytes: u32, issued: u64, completed: u64) -> Io {
    let tid = if pid == ZK { SYNC } else { pid };
    let mut r = io_on(DISK, pid, tid, comm, bytes, issued, completed);
    if comm.starts_with("jbd2/") {
        r.charged.kind = PartyKind::Journal;
    }
    r
}

/// Commit `transaction` on loop1 by its journal thread (tid 30), all of it writing the
/// journal, of 2 blocks.
fn logging_commit(transaction: u32, start: u64, end: u64, handles: u32) -> Commit {
    Commit {
        dev: DISK.0,
        transaction,
        tid: 30,
        start: t(start),
        end: t(end),
        locking_ms: Some(0.0),
        flushing_ms: Some(0.0),
        logging_ms: Some((end - start) as f64),
        handles: Some(handles),
        blocks: Some(2),
    }
}

/// The journal thread of loop1 (pid 30), off CPU from `off` to `on`, woken at `wake`.
fn jbd2_thread(state: SchedState, off: u64, on: u64, wake: Option<u64>) -> Blocked {
    let mut j = blocked(30, state, off, on, wake, &[], None);
    j.pid = 30;
    j.thread = "jbd2/loop1-8".into();
    j
}

fn blocked(
    tid: u32,
    state: SchedState,
    off: u64,
    on: u64,
    wake: Option<u64>,
    stack: &[&str],
    waker: Option<&str>,
) -> Blocked {
    Blocked {
        pid: ZK,
        tid,
        thread: if tid == SYNC {
            "SyncThread:1".into()
        } else {
            format!("t{tid}")
        },
        state,
        off: t(off),
        on: t(on),
        wake: wake.map(t),
        syscall: Some("fdatasync".into()),
        waker: waker.map(|w| WakerInfo::Task {
            pid: 7,
            tid: 7,
            thread: w.to_string(),
            process: None,
        }),
        stack: stack.iter().map(|s| s.to_string()).collect(),
        after_call: false,
        seeded: false,
        open: false,
    }
}

fn watched(h: &mut History) {
    h.watch(DISK, MonoNs(0));
    h.watch(LOWER, MonoNs(0));
}

/// The SyncThread's fdatasync itself, quick: its one write from 1 to 11 ms, asleep in D
/// on it meanwhile (the JVM-pause tests' calls return at 12 ms).
fn quick_fdatasync(h: &mut History) {
    h.io(io(ZK, "SyncThread:1", 4096, 1, 11));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        11,
        Some(11),
        &["io_schedule"],
        None,
    ));
}

/// Contention via the journal whose commit's flush wrote back `comm`'s data first.
fn assert_backing_flush_of(e: &Explanation, comm: &str) {
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    assert_eq!(e.contenders[0].comm, comm);
    assert!(
        e.chain.iter().any(|l| l.what == "backing_flush"),
        "{:?}",
        e.chain
    );
}

/// loop1's worker writing 1 MiB of its backing file to loop0 (LOWER), from `issued` to
/// `completed`: a request relayed from the layer above.
fn relayed_from_loop1(issued: u64, completed: u64) -> Io {
    let mut r = io_on(LOWER, 41, 41, "kworker/u8:4", 1 << 20, issued, completed);
    r.charged = Party {
        kind: PartyKind::Layer,
        pid: 0,
        tid: 0,
        comm: "loop1".into(),
        cgroup: None,
    };
    r
}

/// ZooKeeper's call on loop1, a loop device over a file on loop0 (LOWER).
fn call_on_loop1(start: u64, end: u64) -> Span {
    let mut c = call(start, end);
    c.disks.layers[0].kind = LayerKind::Loop {
        backing_file: "/outer/zk.img".into(),
    };
    c.disks.layers.push(layer(LOWER, "loop0", 1));
    c
}

/// The SyncThread asleep in D from `from` to `to`, waiting for loop1's journal commit.
fn waits_on_loop1s_commit(h: &mut History, from: u64, to: u64) {
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        from,
        to,
        Some(to),
        &[
            "__schedule",
            "jbd2_log_wait_commit+0x11",
            "ext4_sync_file+0x2",
        ],
        Some("jbd2/loop1-8"),
    ));
}

/// The journal commit's disk over the commit, of an explanation that has one.
fn disk_during(e: &Explanation) -> &LayerEvidence {
    e.evidence
        .journal
        .as_ref()
        .and_then(|j| j.disk_during.as_ref())
        .expect("a commit's disk")
}

fn explain_it(c: &Span, h: &History) -> Explanation {
    let e = explain(c, h, &mut Replay::default());
    assert_consistent(c, &e);
    e
}

/// The property every verdict must keep: its headline states nothing its own evidence
/// denies, and its stages add up to the call.
fn assert_consistent(c: &Span, e: &Explanation) {
    let dur = (c.end.since(c.start)) as f64 / 1e6;
    let sum: f64 = e.stages.values().sum();
    assert!(
        (sum - dur).abs() < 0.01 + dur * 1e-6,
        "stages add up to {sum} for a {dur} ms call: {:?}",
        e.stages
    );
    let ev = &e.evidence;
    assert!(
        !e.headline.contains("own 0 B"),
        "a headline never claims zero own bytes: {}",
        e.headline
    );
    if e.headline.contains("stopped completing I/O") {
        assert_eq!(e.verdict, Verdict::DeviceStall);
        // Nothing missing, but for a few requests nobody followed on a bare disk: too few
        // for whoever's they are to have kept it from completing.
        let few_unfollowed = |l: &crate::attribution::evidence::LayerEvidence| {
            l.complete_but_unfollowed
                && l.kind == crate::attribution::evidence::LayerKindName::Disk
                && l.inflight_max + l.unfollowed < rules::Thresholds::DEFAULT.saturated_depth
        };
        assert!(
            ev.incomplete.is_empty()
                || ev
                    .incomplete
                    .iter()
                    .all(|i| i.contains("request(s) in flight now that the probes did not follow"))
                    && ev.layers.iter().any(few_unfollowed),
            "no stall claimed over incomplete inputs"
        );
        assert!(
            ev.layers
                .iter()
                .any(|l| l.longest_completion_gap_ms * 2.0 >= dur && l.inflight_max > 0),
            "a stall needs a gap of half the call with requests in flight: {ev:?}"
        );
    }
    let t = rules::Thresholds::DEFAULT;
    let stage = |k: &str| e.stages.get(k).copied().unwrap_or(0.0);
    // Others moved more than the thread, or sent more discards than it sent requests.
    let busier = |l: &LayerEvidence| {
        l.bytes_others > l.bytes_thread
            || (l.discards_others >= t.contention_min_requests
                && l.discards_others > l.requests_thread)
    };
    match e.verdict {
        Verdict::DeviceContention => assert!(
            !e.contenders.is_empty()
                && (ev.layers.iter().any(busier)
                    || ev
                        .journal
                        .as_ref()
                        .and_then(|j| j.disk_during.as_ref())
                        .is_some_and(busier)
                    || ev
                        .journal
                        .as_ref()
                        .and_then(|j| j.backing_writers.as_ref())
                        .is_some_and(|b| {
                            b.bytes_others > b.bytes_thread
                                && b.bytes_others >= t.contention_min_bytes
                        })),
            "contention names contenders that moved more than the thread: {e:?}"
        ),
        Verdict::OwnIo => {
            let top = &ev.layers[0];
            assert!(ev.bytes_target > 0, "own I/O of nothing: {e:?}");
            assert!(
                ev.bytes_target >= ev.bytes_others
                    || (top.bytes_others < t.contention_min_bytes
                        && top.requests_others < t.contention_min_requests),
                "own_io while others' I/O was contention: {e:?}"
            );
        }
        Verdict::JvmPause => {
            assert!(ev.after_syscall_ms.is_some());
            assert!(stage("after_return") >= t.starvation_share * dur, "{e:?}");
        }
        Verdict::CpuStarvation => assert!(
            stage("run_queue") >= t.starvation_share * dur
                || e.via == Some("journal")
                || (e.via == Some("jvm_pause")
                    && ev.after_others_runq_ms.unwrap_or(0.0)
                        >= t.starvation_share * stage("after_return")),
            "starvation without the time runnable: {e:?}"
        ),
        Verdict::IoThrottled => {
            let lim = ev.io_limit.as_ref().expect("io_throttled names the limit");
            assert!(
                ev.layers.iter().any(|l| l.disk == lim.disk_name),
                "the limit is on a disk under the file: {e:?}"
            );
            assert!(e.headline.contains("I/O limit"), "{}", e.headline);
        }
        Verdict::MemoryReclaim => {
            assert!(stage("reclaim") >= t.dominant_share * dur, "{e:?}");
        }
        Verdict::LowSpace => {
            assert!(stage("low_space") >= t.dominant_share * dur, "{e:?}");
        }
        Verdict::DirtyThrottle => assert!(
            ev.throttle_pause_ms.max(stage("dirty_throttle")) >= t.dominant_share * dur,
            "{e:?}"
        ),
        Verdict::FsBlocked => {
            assert!(stage("fs_wait") >= t.dominant_share * dur, "{e:?}");
        }
        Verdict::HostFreeze => assert!(
            ev.host_freeze
                .as_ref()
                .is_some_and(|h| h.frozen_ms >= t.stall_share * dur),
            "{e:?}"
        ),
        Verdict::Unknown => assert!(
            e.headline.contains("no traced signal") || e.headline.contains("no cause"),
            "unknown says what is unknown: {}",
            e.headline
        ),
        _ => {}
    }
}

#[test]
fn requests_in_flight_without_completions_is_a_device_stall() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 1, 2)); // normal, early
    h.io(io(ZK, "SyncThread:1", 4096, 5, 4900)); // issued, then nothing for ~4.9 s
    h.io(io(0, "jbd2/loop1-8", 8192, 10, 4950));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        4950,
        Some(4950),
        &["io_schedule+0x3f", "folio_wait_writeback+0x2a"],
        Some("loop1"),
    ));
    let e = explain_it(&call(0, 5000), &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    assert!(
        e.evidence.longest_completion_gap_ms >= 4890.0,
        "{:?}",
        e.evidence
    );
    assert_eq!(e.evidence.inflight_max, 2);
    assert_eq!(e.evidence.completions, 3);
    assert!(
        e.headline.contains("loop1 stopped completing I/O"),
        "{}",
        e.headline
    );
    assert_eq!(e.via, Some("writeback"));
}

#[test]
fn a_stall_is_named_at_the_lowest_layer_that_stopped() {
    // loop1's backing file lives on loop0: loop0 stopped, loop1 waited on it.
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 10, 3900));
    h.io(io_on(LOWER, 90, 90, "kworker/u8:1", 4096, 20, 3890));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        3950,
        Some(3950),
        &["folio_wait_writeback"],
        None,
    ));
    let mut c = call(0, 4000);
    c.disks.layers.push(layer(LOWER, "loop0", 1));
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceStall);
    assert!(
        e.headline.starts_with("loop0 stopped completing I/O"),
        "{}",
        e.headline
    );
    assert!(e.headline.contains("loop1 waited on it"), "{}", e.headline);
    // Nothing in flight below a stalled loop device: the layer itself is blocked.
    let mut h2 = History::default();
    watched(&mut h2);
    h2.io(io(ZK, "SyncThread:1", 4096, 10, 3900));
    h2.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        3950,
        Some(3950),
        &["folio_wait_writeback"],
        None,
    ));
    let e2 = explain_it(&c, &h2);
    assert!(e2.headline.starts_with("loop1 stopped"), "{}", e2.headline);
    assert!(
        e2.headline
            .contains("below it loop0 (0 completion(s), up to 0 in flight)"),
        "{}",
        e2.headline
    );
    assert!(
        e2.headline.contains("the layer itself was blocked"),
        "{}",
        e2.headline
    );
}

#[test]
fn an_incomplete_history_claims_no_stall() {
    // The disk was watched only from the middle of the call (or its history was shed).
    let mut h = History::default();
    h.watch(DISK, t(3000));
    h.io(io(ZK, "SyncThread:1", 4096, 3100, 4900));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        4950,
        Some(4950),
        &["folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 5000), &h);
    assert_ne!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    assert!(!e.evidence.incomplete.is_empty());
    assert!(e.headline.contains("incomplete"), "{}", e.headline);
    // Records lost during the call: the same.
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 10, 4900));
    h.lost(t(2000), t(2100));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        4950,
        Some(4950),
        &["folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 5000), &h);
    assert_ne!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
}

#[test]
fn a_busy_neighbour_partition_is_contention_and_its_io_counts_as_others() {
    let mut h = History::default();
    watched(&mut h);
    // dd writes on partition 2 (sectors past 1_000_000); ZooKeeper on partition 1.
    for i in 0..50u64 {
        let mut r = io(777, "dd", 1 << 20, i * 4, i * 4 + 3);
        r.sector = 2_000_000 + i * 2048;
        h.io(r);
    }
    let mut own = io(ZK, "SyncThread:1", 4096, 150, 199);
    own.sector = 4096;
    h.io(own);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        199,
        Some(199),
        &["io_schedule", "folio_wait_writeback"],
        None,
    ));
    let mut c = call(0, 200);
    c.disks.layers[0].part = Some(PartRange {
        dev: DevId {
            major: 259,
            minor: 1,
        },
        start: 2048,
        sectors: 1_000_000,
    });
    c.disks.layers[0].part_name = Some("loop1p1".into());
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.contenders[0].comm, "dd");
    assert_eq!(e.contenders[0].bytes, 50 << 20);
    assert_eq!(e.evidence.layers[0].bytes_other_partitions, 50 << 20);
    assert!(
        e.headline.starts_with("dd (pid 777) kept loop1 busy"),
        "{}",
        e.headline
    );
}

#[test]
fn a_call_spanning_an_idle_device_is_not_a_stall() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 1, 2));
    h.io(io(ZK, "SyncThread:1", 4096, 990, 995));
    h.blocked(blocked(
        SYNC,
        SchedState::Sleep,
        3,
        985,
        Some(985),
        &[],
        Some("java"),
    ));
    let e = explain_it(&call(0, 1000), &h);
    assert_ne!(e.verdict, Verdict::DeviceStall);
    assert!(
        e.evidence.longest_completion_gap_ms < 10.0,
        "{:?}",
        e.evidence
    );
}

#[test]
fn flusher_io_counts_for_the_dirtier_among_contenders() {
    let mut h = History::default();
    watched(&mut h);
    let mut wb = io(42, "kworker/u8:0", 8 << 20, 5, 90);
    wb.charged = Party {
        kind: PartyKind::Task,
        pid: 777,
        tid: 778,
        comm: "dd".into(),
        cgroup: Some("/backup.slice".into()),
    };
    h.io(wb);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        99,
        Some(99),
        &["io_schedule", "folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 100), &h);
    assert_eq!(e.contenders[0].pid, 777);
    assert_eq!(e.contenders[0].tid, 778);
    assert_eq!(e.contenders[0].cgroup.as_deref(), Some("/backup.slice"));
}

/// A contender's cgroup comes from any of its requests that knew it, not only the first
/// (seen in the 6.1 guest: a backup dd's cgroup unnamed for a whole call).
#[test]
fn a_contender_s_cgroup_is_named_when_only_a_later_request_knew_it() {
    let mut h = History::default();
    watched(&mut h);
    let dd = |cgroup: Option<&str>, at: u64| {
        let mut r = io(777, "dd", 4 << 20, at, at + 40);
        r.charged.cgroup = cgroup.map(Into::into);
        r
    };
    h.io(dd(None, 5));
    h.io(dd(Some("/backup.slice"), 50));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        99,
        Some(99),
        &["io_schedule", "folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 100), &h);
    assert_eq!(e.contenders[0].pid, 777);
    assert_eq!(e.contenders[0].cgroup.as_deref(), Some("/backup.slice"));
}

/// Commit 9 on loop1, 5..340 ms, 300 of them flushing ordered data.
fn commit_9() -> Commit {
    Commit {
        dev: DISK.0,
        transaction: 9,
        tid: 30,
        start: t(5),
        end: t(340),
        locking_ms: Some(1.0),
        flushing_ms: Some(300.0),
        logging_ms: Some(30.0),
        handles: Some(40),
        blocks: Some(12),
    }
}

/// A 342 ms fdatasync waiting on commit 9 (5..340), whose commit block queued behind
/// dd's 10 MiB of writes.
fn commit_behind_dd() -> History {
    commit_behind((0..10).map(|i| io(777, "dd", 1 << 20, 20 + i * 30, 45 + i * 30)))
}

/// A 342 ms fdatasync waiting on commit 9 (5..340), whose commit block queued behind
/// `others` (from 20 to 330).
fn commit_behind(others: impl Iterator<Item = Io>) -> History {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(0, "jbd2/loop1-8", 4096, 10, 20));
    // The commit block, queued at 200 behind the others, done at 330.
    h.io(io(0, "jbd2/loop1-8", 4096, 200, 330));
    for r in others {
        h.io(r);
    }
    h.commit(commit_9());
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        2,
        341,
        Some(340),
        &[
            "__schedule",
            "jbd2_log_wait_commit+0x11",
            "ext4_sync_file+0x2",
        ],
        Some("jbd2/loop1-8"),
    ));
    h
}

#[test]
fn a_journal_commit_behind_a_writer_is_contention_via_the_journal() {
    let h = commit_behind_dd();
    let e = explain_it(&call(0, 342), &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    let j = e.evidence.journal.as_ref().unwrap();
    assert_eq!((j.transaction, j.flushing_ms), (9, Some(300.0)));
    assert!(e.headline.contains("journal commit 9"), "{}", e.headline);
    assert!(e.headline.starts_with("dd (pid 777)"), "{}", e.headline);
    assert!(e.chain.iter().any(|l| l.what == "journal_commit"));
    assert!(e.chain.iter().any(|l| l.what == "requests_of"));
    // The deepest cause wins each instant: while the commit's block (200..330) was in
    // flight with dd's writes (200..225, 230..255, 260..285, 290..315), the wait is the
    // device's queue; the rest of the 338 ms asleep is the journal.
    assert_eq!(e.stages.get("device_queue"), Some(&100.0), "{:?}", e.stages);
    assert_eq!(e.stages.get("journal_wait"), Some(&238.0), "{:?}", e.stages);
}

/// A discard of `bytes` by `pid` (`comm`): a deleted file's blocks freed on a `discard`
/// mount, or fstrim.
fn discard(pid: u32, comm: &str, bytes: u32, issued: u64, completed: u64) -> Io {
    Io {
        op: Op::Discard,
        ..io(pid, comm, bytes, issued, completed)
    }
}

/// Puts requests added after a history's own back in the order they arrive (completion).
fn in_arrival_order(h: &mut History) {
    for d in h.disks.values_mut() {
        d.ios.make_contiguous().sort_by_key(|io| io.completed);
    }
}

/// A discard's length is not data moved (follow-up 72: a test's own thread, which had
/// deleted a 256 MiB file on a `discard` mount, was named over fio's 90 MB of writes with
/// "268 MB of others' I/O" in 7 requests). Discards count as requests, their length apart:
/// a few large ones are not contention, and the writer is named over them; many are
/// (fstrim).
#[test]
fn discards_count_by_their_number_not_their_length() {
    // Beside dd's 10 MiB, rm's two discards of 2 GiB: dd is named, rm's discards said apart.
    let mut h = commit_behind_dd();
    h.io(discard(888, "rm", 1 << 31, 30, 40));
    h.io(discard(888, "rm", 1 << 31, 60, 70));
    in_arrival_order(&mut h);
    let e = explain_it(&call(0, 342), &h);
    assert_consistent(&call(0, 342), &e);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert!(e.headline.starts_with("dd (pid 777)"), "{}", e.headline);
    assert!(
        e.headline
            .contains("10.5 MB of others' I/O and 2 discard(s) of 4.29 GB"),
        "{}",
        e.headline
    );
    let d = disk_during(&e);
    assert_eq!(
        (
            d.bytes_others,
            d.requests_others,
            d.discards_others,
            d.bytes_discarded
        ),
        (10 << 20, 12, 2, 1 << 32)
    );
    let rm = e
        .contenders
        .iter()
        .find(|c| c.comm == "rm")
        .expect("rm listed");
    assert_eq!((rm.bytes, rm.requests, rm.discards), (0, 2, 2));

    // Only those two discards beside a slow commit: not contention (they were, by length).
    let mut h = slow_commit_on_a_quiet_disk();
    h.io(discard(888, "rm", 1 << 31, 30, 40));
    h.io(discard(888, "rm", 1 << 31, 60, 70));
    in_arrival_order(&mut h);
    let e = explain_it(&call(0, 322), &h);
    assert_eq!(e.verdict, Verdict::JournalWait, "{}", e.headline);

    // fstrim's 20 discards the commit's block queued behind: contention naming fstrim.
    let mut h =
        commit_behind((0..20).map(|i| discard(999, "fstrim", 1 << 27, 20 + i * 15, 34 + i * 15)));
    in_arrival_order(&mut h);
    let e = explain_it(&call(0, 342), &h);
    assert_consistent(&call(0, 342), &e);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert!(e.headline.starts_with("fstrim (pid 999)"), "{}", e.headline);
    assert!(
        e.headline.contains("0 B of others' I/O and 20 discard(s)"),
        "{}",
        e.headline
    );
}

/// A 322 ms fdatasync waiting on commit 9 (5..320), slow on its own (280 ms waiting for
/// running handles) with only its own block on the disk.
fn slow_commit_on_a_quiet_disk() -> History {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(0, "jbd2/loop1-8", 4096, 10, 300));
    h.commit(Commit {
        dev: DISK.0,
        transaction: 9,
        tid: 30,
        start: t(5),
        end: t(320),
        locking_ms: Some(280.0),
        flushing_ms: Some(1.0),
        logging_ms: Some(30.0),
        handles: Some(40),
        blocks: Some(12),
    });
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        2,
        321,
        Some(320),
        &["jbd2_log_wait_commit+0x11"],
        Some("jbd2/loop1-8"),
    ));
    h
}

/// The contenders a commit queued behind are named like the call's: process name, and
/// v1 blkio and memory cgroups from the enricher (found missing in CI once the commit's
/// contenders were the ones reported).
#[test]
fn contention_via_the_journal_names_the_contenders_cgroups() {
    let h = commit_behind_dd();
    let mut facts = Replay::default();
    facts.learn(crate::enrich::Fact::ProcCgroups {
        pid: 777,
        cgroups: crate::enrich::cgroups::ProcCgroups {
            unified: None,
            blkio: Some("/backup".into()),
            memory: Some("/backup-mem".into()),
        },
    });
    let e = explain(&call(0, 342), &h, &mut facts);
    assert_consistent(&call(0, 342), &e);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.contenders[0].comm, "dd");
    assert_eq!(e.contenders[0].blkio_cgroup.as_deref(), Some("/backup"));
    assert_eq!(
        e.contenders[0].memory_cgroup.as_deref(),
        Some("/backup-mem")
    );
}

#[test]
fn a_slow_commit_on_a_quiet_disk_is_journal_wait() {
    let h = slow_commit_on_a_quiet_disk();
    let e = explain_it(&call(0, 322), &h);
    assert_eq!(e.verdict, Verdict::JournalWait, "{}", e.headline);
    assert!(
        e.headline.contains("waiting for running handles"),
        "{}",
        e.headline
    );
}

/// Seen in the 6.1 guest: completions the probes did not see on the journal's disk during
/// the call and its commit. The commit's window was judged complete on its own history
/// alone, so the rules named dd as the cause of what was a stopped device. Neither
/// contention nor "a commit slow on its own" can be claimed over a window whose requests
/// are not all known (nor "its own I/O"): the call stays unknown, saying what is missing.
#[test]
fn a_commit_over_a_window_with_unseen_completions_claims_neither_contention_nor_journal_wait() {
    let unseen = |mut h: History| {
        h.unseen(DISK, t(100), t(200));
        h
    };
    let lost = |mut h: History| {
        h.lost(t(100), t(101));
        h
    };
    let stale = |mut h: History| {
        h.stale(DISK, t(100), t(1300));
        h
    };
    for (what, h, end) in [
        ("unseen, behind dd", unseen(commit_behind_dd()), 342),
        ("stale, behind dd", stale(commit_behind_dd()), 342),
        ("lost, behind dd", lost(commit_behind_dd()), 342),
        (
            "unseen, quiet disk",
            unseen(slow_commit_on_a_quiet_disk()),
            322,
        ),
    ] {
        let e = explain_it(&call(0, end), &h);
        assert_eq!(e.verdict, Verdict::Unknown, "{what}: {}", e.headline);
        assert!(
            e.headline.contains("waiting for the journal") && e.headline.contains("incomplete"),
            "{what}: {}",
            e.headline
        );
        let j = e.evidence.journal.as_ref().expect("the commit is evidence");
        assert!(
            !j.disk_during.as_ref().expect("its disk").complete,
            "{what}: the commit's window overlaps what is missing"
        );
    }
    let e = explain_it(&call(0, 342), &unseen(commit_behind_dd()));
    assert!(
        e.headline
            .contains("loop1: completions the probes did not see (the block layer counted more) in 1 window(s)"),
        "{}",
        e.headline
    );
    let e = explain_it(&call(0, 342), &stale(commit_behind_dd()));
    assert!(
        e.headline.contains(
            "loop1: completions the probes did not see (requests they held in flight that the disk no longer had"
        ),
        "{}",
        e.headline
    );
    // Outside the call and its commit, an unseen window changes nothing.
    let mut h = commit_behind_dd();
    h.unseen(DISK, t(400), t(500));
    let e = explain_it(&call(0, 342), &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
}

/// With --requests around-calls, a commit that began before the call: dd's 10 MiB written
/// while no call was in flight (before the call entered) were summed in the kernel. The
/// commit still queued behind others' data; it was not slow on its own.
#[test]
fn a_commit_begun_before_the_call_behind_summed_requests_is_contention_not_journal_wait() {
    let history = |summed: bool| {
        let mut h = History::default();
        watched(&mut h);
        h.io(io(0, "jbd2/loop1-8", 4096, 10, 330));
        if summed {
            h.summed(DISK, summed_over(5, 300, 10, 10 << 20, 10 * 30 * MS));
        }
        h.commit(commit_9());
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            301,
            341,
            Some(340),
            &["jbd2_log_wait_commit+0x11"],
            Some("jbd2/loop1-8"),
        ));
        h
    };
    let c = call(300, 342);
    assert_eq!(
        explain_it(&c, &history(false)).verdict,
        Verdict::JournalWait
    );
    let e = explain_it(&c, &history(true));
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    let during = disk_during(&e);
    assert_eq!(
        (during.bytes_summed, during.requests_summed),
        (10 << 20, 10)
    );
    // Over the call itself nothing is summed (none that overlapped a call is).
    assert_eq!(e.evidence.layers[0].bytes_summed, 0);
}

#[test]
fn own_io_over_a_window_with_unseen_completions_is_not_claimed() {
    let mut h = quick_own_io();
    h.unseen(DISK, t(2), t(3));
    let e = explain_it(&call(0, 10), &h);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(e.headline.contains("incomplete"), "{}", e.headline);
}

#[test]
fn a_commit_whose_journal_thread_could_not_run_is_cpu_starvation_via_the_journal() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(0, "jbd2/loop1-8", 4096, 190, 200));
    h.commit(logging_commit(112, 5, 215, 3));
    // The journal thread: woken at 6 ms, ran at 190 ms.
    h.blocked(jbd2_thread(SchedState::DiskSleep, 1, 190, Some(6)));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        2,
        215,
        Some(214),
        &["jbd2_log_wait_commit+0x11"],
        Some("jbd2/loop1-8"),
    ));
    let e = explain_it(&call(0, 216), &h);
    assert_eq!(e.verdict, Verdict::CpuStarvation, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    assert!(
        e.headline
            .contains("jbd2/loop1-8 was runnable but not running for 184 ms"),
        "{}",
        e.headline
    );
}

/// A commit that began late: the call waits on the journal from 2 ms; the journal thread
/// begins the commit at 190 ms and it takes 10 ms.
fn late_commit(jbd2_woken: Option<u64>) -> History {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(0, "jbd2/loop1-8", 4096, 192, 198));
    h.commit(logging_commit(112, 190, 200, 1));
    // The journal thread: asleep until it was woken (at 3 ms: asked by the call, then kept
    // off the CPU; or at 188 ms), running from 189 ms.
    h.blocked(jbd2_thread(SchedState::Sleep, 0, 189, jbd2_woken));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        2,
        200,
        Some(200),
        &["jbd2_log_wait_commit+0x11"],
        Some("jbd2/loop1-8"),
    ));
    h
}

#[test]
fn a_commit_that_began_late_because_its_thread_could_not_run_is_cpu_starvation_via_the_journal() {
    let h = late_commit(Some(3));
    let e = explain_it(&call(0, 201), &h);
    assert_eq!(e.verdict, Verdict::CpuStarvation, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    let j = e.evidence.journal.as_ref().unwrap();
    assert_eq!(j.start_delay_ms, Some(188.0));
    assert_eq!(j.thread_runq_before_ms, Some(186.0));
    assert!(
        e.headline.contains(
            "jbd2/loop1-8 was runnable but not running for 186 ms of the 198 ms from this call's wait to the commit's end (the commit began 188 ms into the wait and took 10 ms)"
        ),
        "{}",
        e.headline
    );
}

#[test]
fn a_late_commit_is_not_called_starved_from_the_wait_on_when_the_call_mostly_waited_elsewhere() {
    // The same late commit, its thread runnable from 3 ms, but the call lasts 500 ms and
    // waits on the journal for 198 of them: only the commit's own 10 ms are weighed.
    let h = late_commit(Some(3));
    let e = explain_it(&call(0, 500), &h);
    assert!(
        !(e.verdict == Verdict::CpuStarvation && e.via == Some("journal")),
        "{:?} {:?}: {}",
        e.verdict,
        e.via,
        e.headline
    );
}

/// A 400 ms fdatasync that waited 258 ms for its own data behind dd's writes, then 136 ms
/// for a commit whose journal thread sat runnable for most of it. The journal part is more
/// than 30% of the call, but the call waited longer at the disk: that is the verdict
/// (follow-up 56; ci83 showed the late-commit form of it).
#[test]
fn a_call_that_waited_longer_on_its_own_data_than_on_the_journal_is_not_named_by_the_journal() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..10 {
        h.io(io(777, "dd", 1 << 20, i * 26, i * 26 + 25));
    }
    h.io(io(ZK, "SyncThread:1", 4096, 3, 259));
    h.io(io(0, "jbd2/loop1-8", 4096, 380, 390));
    h.commit(logging_commit(113, 262, 397, 1));
    // (in the order they ended, as the history keeps them)
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        2,
        260,
        Some(259),
        &["io_schedule", "folio_wait_writeback+0x1"],
        Some("kworker/0:1H"),
    ));
    // The journal thread: woken at 263 ms, kept off the CPU until 380 ms.
    h.blocked(jbd2_thread(SchedState::Sleep, 1, 380, Some(263)));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        261,
        398,
        Some(397),
        &["jbd2_log_wait_commit+0x11"],
        Some("jbd2/loop1-8"),
    ));
    let e = explain_it(&call(0, 400), &h);
    let j = e.evidence.journal.as_ref().unwrap();
    assert_eq!(j.thread_runq_ms, Some(117.0));
    assert!(
        e.evidence.journal_wait_ms >= 120.0,
        "{:?}",
        e.evidence.journal_wait_ms
    );
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_ne!(e.via, Some("journal"), "{}", e.headline);
    assert!(e.headline.starts_with("dd (pid 777)"), "{}", e.headline);
}

#[test]
fn a_commit_that_began_late_with_its_thread_asleep_is_a_journal_wait_that_says_so() {
    let h = late_commit(Some(188));
    let e = explain_it(&call(0, 201), &h);
    assert_eq!(e.verdict, Verdict::JournalWait, "{}", e.headline);
    assert!(
        e.headline.contains(
            "(commit 112 took 10 ms: 10 ms writing the journal; it began 188 ms after this call started waiting for it, its thread runnable without a CPU for 1 ms of that)"
        ),
        "{}",
        e.headline
    );
}

#[test]
fn pauses_in_balance_dirty_pages_are_dirty_throttle() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..6 {
        h.throttle(Throttle {
            pid: ZK,
            tid: SYNC,
            comm: "SyncThread:1".into(),
            at: t(i * 40),
            pause_ms: 40,
            bdi: "7:0".into(),
        });
    }
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        0,
        240,
        Some(240),
        &["balance_dirty_pages+0x1"],
        None,
    ));
    let e = explain_it(&call(0, 250), &h);
    assert_eq!(e.verdict, Verdict::DirtyThrottle, "{}", e.headline);
    assert_eq!(e.evidence.throttle_pause_ms, 240.0);
    let mut other = History::default();
    other.throttle(Throttle {
        pid: ZK,
        tid: 999,
        comm: "other".into(),
        at: t(10),
        pause_ms: 200,
        bdi: "7:0".into(),
    });
    assert_ne!(
        explain_it(&call(0, 250), &other).verdict,
        Verdict::DirtyThrottle
    );
}

#[test]
fn runnable_but_not_running_is_cpu_starvation() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 1, 3));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        300,
        Some(4),
        &["io_schedule"],
        Some("kworker/0:1H"),
    ));
    h.blocked(blocked(
        SYNC,
        SchedState::Runnable,
        300,
        400,
        None,
        &[],
        None,
    ));
    let e = explain_it(&call(0, 410), &h);
    assert_eq!(e.verdict, Verdict::CpuStarvation, "{}", e.headline);
    assert!(
        (e.evidence.runq_ms - 396.0).abs() < 0.001,
        "{:?}",
        e.evidence
    );
}

#[test]
fn blocked_with_no_io_in_flight_is_fs_blocked_with_its_frame() {
    let mut h = History::default();
    watched(&mut h);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        1500,
        Some(1500),
        &[
            "__schedule+0x6",
            "schedule+0x2",
            "percpu_rwsem_wait+0x9",
            "__percpu_down_read+0x5",
            "ext4_buffered_write_iter+0x3",
            "vfs_write+0x1",
        ],
        Some("fsfreeze"),
    ));
    let e = explain_it(&call(0, 1502), &h);
    assert_eq!(e.verdict, Verdict::FsBlocked, "{}", e.headline);
    assert!(
        e.headline.contains("at percpu_rwsem_wait+0x9"),
        "{}",
        e.headline
    );
    assert_eq!(e.evidence.waker.as_deref(), Some("fsfreeze"));
    assert!(
        e.evidence.layers[0].no_io,
        "loop1 saw no I/O: said, not guessed"
    );
}

#[test]
fn a_call_whose_disk_saw_no_block_io_says_so_and_guesses_nothing() {
    // 300 ms asleep in a frame zkstall has no rule for, on a watched disk that completed
    // nothing and had nothing in flight: unknown, naming the frame and the idle disk.
    let mut h = History::default();
    watched(&mut h);
    h.blocked(blocked(
        SYNC,
        SchedState::Sleep,
        1,
        301,
        Some(300),
        &["__schedule+0x6", "schedule+0x2", "some_driver_wait+0x10"],
        None,
    ));
    let e = explain_it(&call(0, 302), &h);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(e.evidence.layers[0].no_io);
    assert!(
        e.headline.contains("loop1 saw no block I/O during it"),
        "{}",
        e.headline
    );
    assert!(!e.headline.contains("stopped completing"), "{}", e.headline);
}

/// Seen under emulation: a write waiting on a frozen filesystem while, beside it, the disk
/// under the file paused for half a second with others' requests in flight. The disk did
/// not hold the write up: the freeze did.
#[test]
fn a_disk_pausing_beside_a_call_stuck_on_a_frozen_filesystem_is_not_its_stall() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(99, "kworker/u8:1", 4096, 1, 2));
    // Others' requests in flight from 10 ms, completed only at 900 ms.
    for i in 0..6 {
        h.io(io(99, "kworker/u8:1", 4096, 10 + i, 900));
    }
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        1000,
        Some(1000),
        &[
            "__schedule+0x6",
            "schedule+0x2",
            "percpu_rwsem_wait+0x9",
            "__percpu_down_read+0x5",
            "ext4_buffered_write_iter+0x3",
            "vfs_write+0x1",
        ],
        Some("fsfreeze"),
    ));
    let mut c = call(0, 1002);
    c.syscall = "write";
    c.write_family = true;
    let e = explain_it(&c, &h);
    assert!(
        e.evidence.longest_completion_gap_ms >= 800.0,
        "the disk did pause: {:?}",
        e.evidence
    );
    assert_eq!(e.verdict, Verdict::FsBlocked, "{}", e.headline);
    assert_consistent(&c, &e);
}

#[test]
fn held_back_in_the_block_layer_by_a_busy_device_is_contention_not_fs_blocked() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..20 {
        h.io(io(777, "dd", 1 << 20, i * 15, i * 15 + 14));
    }
    let mut unknown = io(0, "", 0, 5, 6);
    unknown.charged = Party::unknown();
    unknown.unmatched = true;
    h.io(unknown);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        299,
        Some(299),
        &[
            "__schedule",
            "io_schedule",
            "rq_qos_wait+0xad",
            "wbt_wait",
            "blk_mq_submit_bio",
        ],
        Some("ksoftirqd/1"),
    ));
    let e = explain_it(&call(0, 300), &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("block_queue"));
    assert!(
        e.headline.contains("held back in the block layer"),
        "{}",
        e.headline
    );
    assert_eq!(
        e.contenders.len(),
        1,
        "unknown I/O is not a contender: {:?}",
        e.contenders
    );
}

#[test]
fn a_few_metadata_blocks_of_others_are_not_contention() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(0, "jbd2/loop1-8", 16384, 2, 20));
    h.io(io(ZK, "SyncThread:1", 8192, 1, 25));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        29,
        Some(29),
        &["io_schedule", "folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 30), &h);
    assert_eq!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    assert!(e.headline.contains("8 KB"), "{}", e.headline);
}

#[test]
fn a_snapshot_thread_of_the_same_process_is_named_as_such() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..40 {
        h.io(io_on(
            DISK,
            ZK,
            150,
            "Snapshot Thread",
            1 << 20,
            i * 5,
            i * 5 + 4,
        ));
    }
    h.io(io(ZK, "SyncThread:1", 4096, 150, 199));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        199,
        Some(199),
        &["folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 200), &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert!(e.contenders[0].same_process);
    assert!(e.headline.contains("Snapshot Thread"), "{}", e.headline);
    assert!(e.headline.contains("same process"), "{}", e.headline);
    assert_eq!(e.evidence.bytes_target, 4096, "own means the thread");
}

#[test]
fn a_quick_syscall_then_a_park_with_the_whole_jvm_is_a_jvm_pause_only_in_a_jvm() {
    let mut h = History::default();
    watched(&mut h);
    quick_fdatasync(&mut h);
    h.blocked(blocked(
        SYNC,
        SchedState::Sleep,
        12,
        90,
        Some(89),
        &[],
        Some("VM Thread"),
    ));
    h.blocked(blocked(
        320,
        SchedState::Sleep,
        12,
        90,
        Some(89),
        &[],
        Some("VM Thread"),
    ));
    h.blocked(blocked(
        321,
        SchedState::Sleep,
        13,
        89,
        Some(88),
        &[],
        Some("VM Thread"),
    ));
    let mut c = call(0, 90);
    c.syscall_end = Some(t(12));
    let mut jvm = Replay::default();
    jvm.learn(crate::enrich::Fact::Jvm { pid: ZK, jvm: true });
    let e = explain(&c, &h, &mut jvm);
    assert_consistent(&c, &e);
    assert_eq!(e.verdict, Verdict::JvmPause, "{}", e.headline);
    assert_eq!(e.evidence.after_syscall_ms, Some(78.0));
    assert_eq!(e.evidence.other_threads_stopped, Some(2));
    assert!(e.headline.contains("returned in 12 ms"), "{}", e.headline);
    // Not a JVM: no JVM pause, whatever the shape.
    let e = explain_it(&c, &h);
    assert_ne!(e.verdict, Verdict::JvmPause, "{}", e.headline);
}

#[test]
fn a_short_wait_for_own_work_after_a_long_pause_leaves_it_a_jvm_pause() {
    // Seen in CI: the SyncThread's fdatasync returned, a safepoint held it for 1.5 s (woken
    // by the VM thread), then on its way back it waited briefly for a lock or its queue and
    // a NIO thread woke it. That short wait does not make the pause its own idle time.
    let own = |mut b: Blocked, waker: &str| {
        b.waker = Some(WakerInfo::Task {
            pid: ZK,
            tid: 330,
            thread: waker.into(),
            process: None,
        });
        b
    };
    let base = || {
        let mut h = History::default();
        watched(&mut h);
        quick_fdatasync(&mut h);
        for tid in [320, 321] {
            h.blocked(blocked(tid, SchedState::Sleep, 12, 88, Some(88), &[], None));
        }
        h
    };
    let mut jvm = Replay::default();
    jvm.learn(crate::enrich::Fact::Jvm { pid: ZK, jvm: true });
    let mut c = call(0, 90);
    c.syscall_end = Some(t(12));
    // 76 ms held by the safepoint, then 2 ms woken by a NIO thread.
    let mut h = base();
    h.blocked(own(
        blocked(SYNC, SchedState::Sleep, 12, 88, Some(88), &[], None),
        "VM Thread",
    ));
    h.blocked(own(
        blocked(SYNC, SchedState::Sleep, 88, 90, Some(90), &[], None),
        "NIOServerCxnFac",
    ));
    let e = explain(&c, &h, &mut jvm);
    assert_consistent(&c, &e);
    assert_eq!(e.verdict, Verdict::JvmPause, "{}", e.headline);
    // The whole wait woken by a thread of its own handing it work: its own idle time, not
    // a pause (whatever the others were doing).
    let mut h = base();
    h.blocked(own(
        blocked(SYNC, SchedState::Sleep, 12, 90, Some(90), &[], None),
        "NIOServerCxnFac",
    ));
    let e = explain(&c, &h, &mut jvm);
    assert_ne!(e.verdict, Verdict::JvmPause, "{}", e.headline);
}

#[test]
fn a_jvm_pause_that_lasts_because_the_vm_thread_cannot_run_is_cpu_starvation_via_the_pause() {
    // The same pause, but the VM thread (330) sat runnable for most of it: a CPU hog kept
    // the JVM from finishing its safepoint. The root is the CPU.
    let mut h = History::default();
    watched(&mut h);
    quick_fdatasync(&mut h);
    for tid in [SYNC, 320, 321] {
        h.blocked(blocked(
            tid,
            SchedState::Sleep,
            12,
            90,
            Some(89),
            &[],
            Some("VM Thread"),
        ));
    }
    let mut vm = blocked(330, SchedState::Runnable, 14, 88, None, &[], None);
    vm.thread = "VM Thread".into();
    h.blocked(vm);
    let mut c = call(0, 90);
    c.syscall_end = Some(t(12));
    let mut jvm = Replay::default();
    jvm.learn(crate::enrich::Fact::Jvm { pid: ZK, jvm: true });
    let e = explain(&c, &h, &mut jvm);
    assert_consistent(&c, &e);
    assert_eq!(e.verdict, Verdict::CpuStarvation, "{}", e.headline);
    assert_eq!(e.via, Some("jvm_pause"));
    assert_eq!(e.evidence.after_others_runq_ms, Some(75.0));
    assert!(e.headline.contains("returned in 12 ms"), "{}", e.headline);
    assert!(
        e.headline.contains("runnable but not running for 75 ms"),
        "{}",
        e.headline
    );
}

#[test]
fn preempted_right_after_the_syscall_is_cpu_starvation() {
    let mut h = History::default();
    watched(&mut h);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        11,
        Some(11),
        &["io_schedule"],
        None,
    ));
    h.blocked(blocked(SYNC, SchedState::Runnable, 12, 60, None, &[], None));
    let mut c = call(0, 60);
    c.syscall_end = Some(t(12));
    assert_eq!(explain_it(&c, &h).verdict, Verdict::CpuStarvation);
}

/// A 10 ms call waiting 8 ms for its own 16 KiB write, alone on the disk.
fn quick_own_io() -> History {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 16384, 1, 9));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        9,
        Some(9),
        &["io_schedule", "folio_wait_writeback"],
        None,
    ));
    h
}

#[test]
fn quick_own_io_is_own_io_and_nothing_is_unknown() {
    let h = quick_own_io();
    let e = explain_it(&call(0, 10), &h);
    assert_eq!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    assert_eq!(e.evidence.bytes_target, 16384);
    assert_eq!(e.evidence.latency_ms.as_ref().unwrap().max, 8.0);
    let mut empty = History::default();
    watched(&mut empty);
    let e = explain_it(&call(0, 10), &empty);
    assert_eq!(e.verdict, Verdict::Unknown);
    assert!(
        e.headline.contains("no traced signal accounts for 10 ms"),
        "{}",
        e.headline
    );
}

/// Its own write queued 958 ms in the block layer with nothing issued on the device,
/// then done in 0.4 ms (CI: the worker that dispatches it starved by a real-time hog on
/// its CPU): the wait was held above the device, not its own I/O at the device's usual
/// speed, and no traced signal names what held it.
#[test]
fn a_request_queued_while_the_device_had_none_is_not_own_io() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..20 {
        h.io(io(ZK, "SyncThread:1", 4096, i, i + 1));
    }
    let mut r = io(ZK, "SyncThread:1", 4096, 100, 1059);
    r.queued = Some(t(101));
    r.issued = Some(MonoNs(t(1058).0 + 600_000));
    h.io(r);
    // In D for the write, from its queueing to its completion.
    let waited = || {
        blocked(
            SYNC,
            SchedState::DiskSleep,
            101,
            1059,
            Some(1059),
            &["io_schedule", "folio_wait_writeback"],
            None,
        )
    };
    h.blocked(waited());
    let c = call(100, 1060);
    let e = explain_it(&c, &h);
    assert_ne!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    assert_ne!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(
        e.headline
            .contains("queued in the block layer while the device had none"),
        "{}",
        e.headline
    );
    let held = e.stages.get("queue_held").copied().unwrap_or(0.0);
    assert!(held > 950.0, "{:?}", e.stages);
    assert!(
        e.stages.get("device_service").copied().unwrap_or(0.0) < 1.0,
        "{:?}",
        e.stages
    );
    assert_consistent(&c, &e);
    // The same request issued as soon as it was queued, the device slow: its own I/O at
    // the device, as before.
    let mut h2 = History::default();
    watched(&mut h2);
    h2.io(io(ZK, "SyncThread:1", 4096, 101, 1059));
    h2.blocked(waited());
    let e = explain_it(&c, &h2);
    assert!(
        e.stages.get("device_service").copied().unwrap_or(0.0) > 950.0,
        "{:?}",
        e.stages
    );
}

#[test]
fn own_io_at_a_far_slower_than_usual_latency_is_not_own_io() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..20 {
        h.io(io(ZK, "SyncThread:1", 4096, i, i + 1)); // 1 ms, usually
    }
    h.io(io(ZK, "SyncThread:1", 4096, 100, 400)); // 300 ms now
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        100,
        400,
        Some(400),
        &["folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(100, 401), &h);
    assert_ne!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    assert!(e.headline.contains("answered slowly"), "{}", e.headline);
}

/// A second of requests the kernel summed (`--requests around-calls`), all `each_ms` long.
/// A sum of the kernel's over `from_ms..to_ms`, with no histogram.
fn summed_over(
    from_ms: u64,
    to_ms: u64,
    requests: u64,
    bytes: u64,
    service_ns: u64,
) -> crate::history::IoSummed {
    crate::history::IoSummed {
        from: t(from_ms),
        to: t(to_ms),
        requests,
        bytes,
        service_ns,
        hist: vec![0; zkstall_common::IO_HIST_BUCKETS],
    }
}

fn summed_second(h: &mut History, to_ms: u64, n: u64, each_ms: u64) {
    let mut hist = vec![0u64; zkstall_common::IO_HIST_BUCKETS];
    let k = (0..zkstall_common::IO_HIST_BUCKETS)
        .find(|k| crate::history::summed_bound_ns(*k) >= each_ms * MS)
        .unwrap();
    hist[k] = n;
    h.summed(
        DISK,
        crate::history::IoSummed {
            from: t(to_ms.saturating_sub(1000)),
            to: t(to_ms),
            requests: n,
            bytes: n * 4096,
            service_ns: n * each_ms * MS,
            hist,
        },
    );
}

#[test]
fn the_usual_latency_counts_the_requests_the_kernel_summed() {
    // Before the call only summed requests, all quick (1 ms): a 300 ms answer now is slow,
    // whether or not any request was sent one by one before.
    let slow_now = |h: &mut History| {
        h.io(io(ZK, "SyncThread:1", 4096, 2000, 2300));
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            2000,
            2300,
            Some(2300),
            &["folio_wait_writeback"],
            None,
        ));
    };
    let mut h = History::default();
    watched(&mut h);
    summed_second(&mut h, 1000, 500, 1);
    summed_second(&mut h, 1990, 500, 1);
    slow_now(&mut h);
    let e = explain_it(&call(2000, 2301), &h);
    assert_ne!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    assert!(e.headline.contains("answered slowly"), "{}", e.headline);
    let usual = e.evidence.layers[0].usual_p50_ms.unwrap();
    assert!((0.5..=1.0).contains(&usual), "{usual}");
    // The same disk usually that slow: its own I/O at the usual speed.
    let mut h = History::default();
    watched(&mut h);
    summed_second(&mut h, 1990, 1000, 300);
    slow_now(&mut h);
    let e = explain_it(&call(2000, 2301), &h);
    assert_eq!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    // Summed after the call began: not "before".
    let mut h = History::default();
    watched(&mut h);
    summed_second(&mut h, 2200, 1000, 300);
    slow_now(&mut h);
    let e = explain_it(&call(2000, 2301), &h);
    assert_eq!(e.evidence.layers[0].usual_p50_ms, None, "{}", e.headline);
}

#[test]
fn the_kernels_accounting_splits_the_rest_and_nothing_is_counted_as_cpu_by_default() {
    let mut h = History::default();
    watched(&mut h);
    let mut c = call(0, 100);
    c.accounting = Some(crate::decode::Accounting {
        on_cpu_ns: 10 * MS,
        short_d_ns: 20 * MS,
        short_s_ns: 0,
        short_runq_ns: 5 * MS,
    });
    let e = explain_it(&c, &h);
    assert_eq!(e.evidence.on_cpu_ms, 10.0);
    assert_eq!(e.evidence.unaccounted_ms, 65.0);
    assert_eq!(e.evidence.runq_ms, 5.0);
    // Without accounting, nothing is called CPU.
    let e = explain_it(&call(0, 100), &h);
    assert_eq!(e.evidence.on_cpu_ms, 0.0);
    assert_eq!(e.evidence.unaccounted_ms, 100.0);
}

#[test]
fn the_timeline_merges_states_per_thread_and_leaves_idle_sleepers_out() {
    let mut h = History::default();
    watched(&mut h);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        90,
        Some(90),
        &["io_schedule"],
        Some("kworker/0:1H"),
    ));
    // ProcessThread waits for the SyncThread, twice.
    let mut w1 = blocked(300, SchedState::Sleep, 0, 40, Some(40), &[], None);
    w1.waker = Some(WakerInfo::Task {
        pid: ZK,
        tid: SYNC,
        thread: "SyncThread:1".into(),
        process: None,
    });
    let mut w2 = w1.clone();
    w2.off = t(41);
    w2.on = t(95);
    h.blocked(w1);
    h.blocked(w2);
    // An idle JVM housekeeping thread asleep from before the call.
    let mut vm = blocked(310, SchedState::Sleep, 0, 1000, Some(1000), &[], None);
    vm.off = MonoNs(t(0).0 - 500 * MS);
    h.blocked(vm);
    let mut stranger = blocked(400, SchedState::DiskSleep, 0, 100, None, &[], None);
    stranger.pid = 999;
    h.blocked(stranger);
    let e = explain_it(&call(0, 100), &h);
    let tids: Vec<u32> = e.timeline.iter().map(|t| t.tid).collect();
    assert_eq!(tids, vec![SYNC, 300], "{:?}", e.timeline);
    assert_eq!(e.timeline[1].role, timeline::Role::WaitedOnCaller);
    assert_eq!(e.timeline_omitted, 1);
    assert!(
        e.timeline[0].states.starts_with("D 89.0 ms"),
        "{}",
        e.timeline[0].states
    );
}

#[test]
fn a_running_call_is_explained_by_the_wait_it_is_in_now() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 10, 11));
    let mut c = call(0, 2000);
    c.syscall_end = None;
    c.running = true;
    c.off_now = Some(OffNow {
        off: t(20),
        wake: None,
        state: SchedState::DiskSleep,
        stack: vec![
            "jbd2_log_wait_commit+0xc2".into(),
            "ext4_sync_file+0x1".into(),
        ],
    });
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::JournalWait, "{}", e.headline);
    assert!(e.headline.contains("so far"), "{}", e.headline);
    assert!(e.stages["journal_wait"] >= 1979.0, "{:?}", e.stages);
}

#[test]
fn held_back_by_its_cgroups_io_limit_is_io_throttled() {
    let mut h = History::default();
    watched(&mut h);
    // ZooKeeper's own writes, relayed by the throttling worker at 1 MB/s.
    for i in 0..9u64 {
        let mut r = io_on(
            DISK,
            40,
            40,
            "kworker/u8:2",
            100_000,
            100 + i * 100,
            110 + i * 100,
        );
        // The only process in /zk is ZooKeeper: its own I/O, thread unknown.
        r.charged = Party {
            kind: PartyKind::Process,
            pid: ZK,
            tid: 0,
            comm: "java".into(),
            cgroup: Some("/zk".into()),
        };
        r.blkcg = Some("/zk".into());
        h.io(r);
    }
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        995,
        Some(995),
        &["folio_wait_writeback"],
        None,
    ));
    let mut zk = Replay::default();
    zk.learn(crate::enrich::Fact::IoLimit {
        pid: ZK,
        disk: DISK.to_string(),
        limit: Some(crate::enrich::IoLimit {
            cgroup: "/zk".into(),
            own_cgroup: "/zk".into(),
            disk: DISK.to_string(),
            wbps: Some(1_000_000),
            v1: true,
            ..Default::default()
        }),
    });
    let c = call(0, 1000);
    let e = explain(&c, &h, &mut zk);
    assert_consistent(&c, &e);
    assert_eq!(e.verdict, Verdict::IoThrottled, "{}", e.headline);
    let lim = e.evidence.io_limit.as_ref().unwrap();
    assert!((lim.utilization - 0.9).abs() < 0.01, "{lim:?}");
    assert!(
        e.headline
            .starts_with("cgroup /zk's I/O limit on loop1 (write 1.0 MB/s, blkio.throttle)"),
        "{}",
        e.headline
    );
    // Its own process's I/O, relayed by the throttle: never another party's.
    assert!(
        e.contenders.iter().all(|c| c.same_process),
        "{:?}",
        e.contenders
    );
    assert!(!e.headline.contains("own 0 B"), "{}", e.headline);
    // The wait with nothing of its own in the block layer is the throttle's hold.
    assert!(
        e.stages.get("io_throttle").copied().unwrap_or(0.0) > 0.0,
        "{:?}",
        e.stages
    );
    // No limit: not io_throttled.
    assert_ne!(explain_it(&c, &h).verdict, Verdict::IoThrottled);
}

/// ZooKeeper in memory cgroup /zk (v1), limit 64 MiB, using `usage`.
fn zk_memcg_at(usage: u64) -> crate::enrich::Fact {
    crate::enrich::Fact::MemLimit {
        pid: ZK,
        limit: Some(crate::enrich::MemLimit {
            cgroup: "/zk".into(),
            own_cgroup: "/zk".into(),
            max: Some(64 << 20),
            usage: Some(usage),
            v1: true,
            ..Default::default()
        }),
    }
}

#[test]
fn reclaiming_memory_in_the_call_is_memory_reclaim_with_the_cgroups_limit() {
    let mut h = History::default();
    watched(&mut h);
    h.reclaim(crate::history::Reclaim {
        pid: ZK,
        tid: SYNC,
        start: t(10),
        end: t(300),
        nr_reclaimed: 1000,
        memcg: true,
    });
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        50,
        290,
        Some(290),
        &[
            "folio_wait_writeback",
            "shrink_folio_list",
            "try_to_free_mem_cgroup_pages",
        ],
        None,
    ));
    let mut zk = Replay::default();
    zk.learn(zk_memcg_at(63 << 20));
    let mut c = call(0, 310);
    c.syscall = "write";
    c.accounting = Some(crate::decode::Accounting {
        on_cpu_ns: 60 * MS,
        ..Default::default()
    });
    let e = explain(&c, &h, &mut zk);
    assert_consistent(&c, &e);
    assert_eq!(e.verdict, Verdict::MemoryReclaim, "{}", e.headline);
    assert_eq!(e.evidence.reclaim_ms, 290.0);
    assert!(e.stages["reclaim"] >= 290.0, "{:?}", e.stages);
    assert!(
        e.headline
            .contains("its memory cgroup /zk is at its limit (limit 67.1 MB, using 66.1 MB)"),
        "{}",
        e.headline
    );
}

#[test]
fn a_jvm_pause_held_by_the_vm_thread_reclaiming_memory_is_memory_reclaim_via_the_pause() {
    // CI's shape: the SyncThread's write reclaimed for 110 ms and returned, then a
    // safepoint held it 250 ms because the VM thread (330) was reclaiming memory in the
    // same cgroup for most of it. The pause is the mechanism; the root is the memory.
    let mut h = History::default();
    watched(&mut h);
    for (tid, start, end) in [(SYNC, 0, 110), (330, 105, 345)] {
        h.reclaim(crate::history::Reclaim {
            pid: ZK,
            tid,
            start: t(start),
            end: t(end),
            nr_reclaimed: 100,
            memcg: true,
        });
    }
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        109,
        Some(109),
        &["folio_wait_writeback", "shrink_folio_list"],
        None,
    ));
    for tid in [SYNC, 320, 321] {
        h.blocked(blocked(
            tid,
            SchedState::Sleep,
            110,
            360,
            Some(359),
            &[],
            Some("VM Thread"),
        ));
    }
    let mut vm = blocked(330, SchedState::DiskSleep, 112, 345, Some(345), &[], None);
    vm.thread = "VM Thread".into();
    h.blocked(vm);
    let mut c = call(0, 360);
    c.syscall = "write";
    c.syscall_end = Some(t(110));
    let mut zk = Replay::default();
    zk.learn(crate::enrich::Fact::Jvm { pid: ZK, jvm: true });
    zk.learn(zk_memcg_at(64 << 20));
    let e = explain(&c, &h, &mut zk);
    assert_consistent(&c, &e);
    assert_eq!(e.verdict, Verdict::MemoryReclaim, "{}", e.headline);
    assert_eq!(e.via, Some("jvm_pause"));
    let r = e.evidence.after_others_reclaim.as_ref().unwrap();
    assert_eq!(r.ms, 235.0);
    assert_eq!(r.threads, vec!["VM Thread (330) 235 ms".to_string()]);
    assert!(
        e.headline.contains("returned in 110 ms (after reclaiming memory itself for 110 ms), then the JVM held the thread 249 ms")
            && e.headline.contains("1 of its threads were reclaiming memory for 235 ms of it (VM Thread (330) 235 ms): its memory cgroup /zk is at its limit"),
        "{}",
        e.headline
    );
    // The same off-CPU history with the VM thread's sleep changed, and only the
    // SyncThread's own reclaim.
    let with_vm = |from: &History, change: &dyn Fn(&mut Blocked)| {
        let mut h2 = History::default();
        watched(&mut h2);
        for b in from.blocked.iter() {
            let mut b = b.clone();
            if b.tid == 330 {
                change(&mut b);
            }
            h2.blocked(b);
        }
        h2.reclaim(h.reclaims[0].clone());
        h2
    };
    // The VM thread not reclaiming but writing the GC log, blocked on writeback: a JVM
    // pause, and the headline names what held it.
    let h2 = with_vm(&h, &|b| {
        b.syscall = Some("write".into());
        b.stack = vec![
            "__schedule+0x628".into(),
            "io_schedule+0x3f".into(),
            "folio_wait_writeback+0x2a".into(),
            "__filemap_fdatawait_range+0x6d".into(),
        ];
    });
    let e = explain(&c, &h2, &mut zk);
    assert_eq!(e.verdict, Verdict::JvmPause, "{}", e.headline);
    let p = e.evidence.pause_holder.as_ref().unwrap();
    assert_eq!(p.thread, "VM Thread (330)");
    assert_eq!(p.d_ms, 233.0);
    assert!(
        e.headline.ends_with("; it could not end while VM Thread (330) was blocked in the kernel (D) for 233 ms of it in write() at folio_wait_writeback+0x2a, waiting on writeback or a flush"),
        "{}",
        e.headline
    );
    // A JIT compiler thread, or a Java thread inside a syscall (in native), blocked the
    // same way: neither holds a safepoint up, and neither is named.
    for (name, syscall) in [
        ("C2 CompilerThread0", Some("write")),
        ("NIOWorkerThread-1", Some("write")),
    ] {
        let h4 = with_vm(&h2, &|b| {
            b.thread = name.into();
            b.syscall = syscall.map(String::from);
        });
        let e = explain(&c, &h4, &mut zk);
        assert_eq!(e.verdict, Verdict::JvmPause, "{}", e.headline);
        assert!(e.evidence.pause_holder.is_none(), "{name}: {}", e.headline);
    }
    // No reclaim record for the VM thread, but its sleep's stack is in memcg reclaim.
    let h3 = with_vm(&h, &|b| {
        b.stack = vec![
            "folio_wait_writeback+0x2a".into(),
            "shrink_folio_list+0xaba".into(),
            "try_to_free_mem_cgroup_pages+0x13a".into(),
        ];
    });
    let e = explain(&c, &h3, &mut zk);
    assert_eq!(e.verdict, Verdict::MemoryReclaim, "{}", e.headline);
    assert_eq!(e.evidence.after_others_reclaim.as_ref().unwrap().ms, 233.0);
}

#[test]
fn writeback_forced_by_low_free_space_is_low_space() {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 1 << 20, 5, 200));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        2,
        250,
        Some(250),
        &[
            "wb_wait_for_completion+0x1",
            "try_to_writeback_inodes_sb+0x1",
            "ext4_nonda_switch+0x1",
            "ext4_da_write_begin+0x1",
        ],
        None,
    ));
    let mut c = call(0, 260);
    c.syscall = "write";
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::LowSpace, "{}", e.headline);
    assert!(e.headline.contains("nearly full"), "{}", e.headline);
}

#[test]
fn a_wait_right_after_the_thread_queued_low_space_writeback_is_that_writeback() {
    // No telling frame on the stack (another filesystem, or frames inlined away), but the
    // kernel said the thread queued writeback for free space (writeback_queue's reason)
    // just before it slept: the wait is that writeback's.
    let mut h = History::default();
    watched(&mut h);
    h.low_space(crate::history::LowSpaceQueued {
        pid: ZK,
        tid: SYNC,
        at: t(2),
        dev: DISK.0,
        nr_pages: 1024,
    });
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        3,
        250,
        Some(250),
        &["__schedule+0x1", "schedule+0x1", "some_wait+0x1"],
        None,
    ));
    let mut c = call(0, 260);
    c.syscall = "write";
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::LowSpace, "{}", e.headline);
    let w = e.evidence.low_space_writeback.as_ref().unwrap();
    assert_eq!((w.nr_pages, w.queued), (1024, 1));
    assert!(
        e.headline.contains("queued writeback of 1024 pages"),
        "{}",
        e.headline
    );
    // Another thread's queueing says nothing about this one.
    let mut h2 = History::default();
    watched(&mut h2);
    h2.low_space(crate::history::LowSpaceQueued {
        pid: ZK,
        tid: SYNC + 1,
        at: t(2),
        dev: DISK.0,
        nr_pages: 1024,
    });
    h2.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        3,
        250,
        Some(250),
        &["__schedule+0x1", "schedule+0x1", "some_wait+0x1"],
        None,
    ));
    assert_ne!(explain_it(&c, &h2).verdict, Verdict::LowSpace);
}

#[test]
fn an_xfs_log_force_behind_a_writer_is_contention_via_the_journal() {
    let mut h = History::default();
    watched(&mut h);
    for i in 0..30 {
        h.io(io(777, "dd", 1 << 20, i * 10, i * 10 + 9));
    }
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        1,
        299,
        Some(299),
        &[
            "xlog_wait_on_iclog+0x1",
            "xfs_log_force_seq+0x1",
            "xfs_file_fsync+0x1",
        ],
        Some("kworker/1:1H"),
    ));
    let e = explain_it(&call(0, 300), &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    assert!(
        e.headline.contains("the filesystem's log"),
        "{}",
        e.headline
    );
    assert!(e.headline.starts_with("dd (pid 777)"), "{}", e.headline);
}

#[test]
fn every_verdict_has_a_rule_or_is_the_catch_all() {
    for v in Verdict::ALL {
        assert!(
            v == Verdict::Unknown || rules::RULES.iter().any(|(r, _)| *r == v),
            "{v:?} has no rule"
        );
    }
}

/// A bare disk stopped by its hypervisor with another process's requests queued deep (the
/// 6.1 guest's virtio disk frozen by the host under fio: called fio's contention): the
/// pause is far longer than its queue takes at its usual latency, so it stopped. A pause
/// its queue can explain stays saturation (contention naming the flood).
#[test]
fn a_bare_disks_pause_longer_than_its_queue_takes_is_a_stall_not_saturation() {
    let paced = |gap_end: u64, usual_ms: u64| {
        let mut h = History::default();
        watched(&mut h);
        // fio's usual pace before the call: 64 KiB writes of `usual_ms` each.
        for i in 0..40u64 {
            h.io(io(900, "fio", 65536, i * 5, i * 5 + usual_ms));
        }
        // From 600 ms: 16 more of fio's queued, then the SyncThread's write; nothing
        // completes until `gap_end`.
        for i in 0..16u64 {
            h.io(io(900, "fio", 65536, 600 + i, gap_end + i));
        }
        h.io(io(ZK, "SyncThread:1", 4096, 620, gap_end + 20));
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            610,
            gap_end + 25,
            Some(gap_end + 25),
            &["io_schedule", "folio_wait_writeback"],
            None,
        ));
        (call(600, gap_end + 30), h)
    };
    let stopped = |gap_end| paced(gap_end, 50);
    // 3 s without a completion; 17 in flight at 50 ms take 850 ms.
    let (c, h) = stopped(3620);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    assert_eq!(e.evidence.layers[0].usual_p50_ms, Some(50.0));
    // 1.7 s: longer than the queue takes at that pace, but not than a disk's cache flush
    // after a flood can hold every request.
    let (c, h) = stopped(2320);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    let link = e.chain.iter().find(|k| k.what == "saturated");
    // ... and it says that a stop looks the same.
    assert!(
        link.is_some_and(
            |k| k.detail.contains("(850 ms)") && k.detail.contains("and so can a stop")
        ),
        "{:?}",
        e.chain
    );
    // The same 1.7 s on a disk whose requests take 1 ms: the 17 it had over the call take
    // 17 ms at that pace, no load to fill a cache for 1.7 s: it stopped (the 6.1 guest's
    // disk, frozen by the host for 3 s, still completed requests for its first second:
    // ci90, and CI on 2e8dd2e, called that fio's contention).
    let (c, h) = paced(2320, 1);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    // 3 s, on a disk whose 17 requests take 200 ms each: its queue takes 3.4 s.
    let (c, h) = paced(3620, 200);
    let e = explain_it(&c, &h);
    assert_eq!(e.evidence.layers[0].usual_p50_ms, Some(200.0));
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    // Within what the queue takes: no doubt to state.
    let link = e.chain.iter().find(|k| k.what == "saturated").unwrap();
    assert!(!link.detail.contains("a stop"), "{}", link.detail);
    // A loop device is judged by the disk under it, not by its pace.
    let (mut c, h) = stopped(3620);
    c.disks.layers[0].kind = LayerKind::Loop {
        backing_file: "/outer/inner.img".into(),
    };
    assert_eq!(explain_it(&c, &h).verdict, Verdict::DeviceContention);
}

#[test]
fn a_disk_saturated_by_others_that_pauses_is_contention_not_a_stall() {
    // loop1 completes nothing for 800 ms with dd's 32 requests queued: dd's flood.
    let mut h = History::default();
    watched(&mut h);
    for i in 0..48u64 {
        let done = if i < 16 { 60 + i * 2 } else { 900 + i };
        h.io(io(900, "dd", 1 << 20, 40 + i, done));
    }
    h.io(io(ZK, "SyncThread:1", 4096, 95, 960));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        990,
        Some(990),
        &["folio_wait_writeback"],
        None,
    ));
    let e = explain_it(&call(0, 1000), &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.contenders[0].comm, "dd");
    let link = e.chain.iter().find(|k| k.what == "saturated").unwrap();
    assert!(link.duration_ms >= 800.0, "{link:?}");
}

/// A flusher writing back a loop device's backing file on loop0 (LOWER): `n` requests of
/// 1 MiB, one every `every` ms from `from`, each taking `took` ms.
fn backing_writeback(h: &mut History, n: u64, from: u64, every: u64, took: u64) {
    for i in 0..n {
        let at = from + i * every;
        h.io(io_on(LOWER, 41, 41, "kworker/u8:4", 1 << 20, at, at + took));
    }
}

#[test]
fn a_loop_device_that_stops_with_others_queued_and_the_disk_under_it_idle_is_a_stall() {
    // loop1 (over a file on loop0) completes nothing for 3000 ms with ext4lazyinit's ten
    // requests (5 MiB) and the journal's commit queued: its backing filesystem frozen.
    // The SyncThread waits for that commit. (CI, the 6.1 guest: called journal_wait.)
    let mut c = call(0, 3200);
    c.disks.layers[0].kind = LayerKind::Loop {
        backing_file: "/outer/inner.img".into(),
    };
    c.disks.layers.push(layer(LOWER, "loop0", 1));
    let frozen = |h: &mut History| {
        watched(h);
        for i in 0..10u64 {
            h.io(io(60, "ext4lazyinit", 512 << 10, 100 + i, 3150 + i));
        }
        h.io(io(0, "jbd2/loop1-8", 8192, 120, 3170));
        h.commit(Commit {
            dev: DISK.0,
            transaction: 8,
            tid: 30,
            start: t(110),
            end: t(3180),
            locking_ms: Some(0.1),
            flushing_ms: Some(0.0),
            logging_ms: Some(3069.0),
            handles: Some(2),
            blocks: Some(2),
        });
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            5,
            3190,
            Some(3190),
            &["jbd2_log_wait_commit+0x11"],
            Some("jbd2/loop1-8"),
        ));
    };
    let mut h = History::default();
    frozen(&mut h);
    // loop0 under it: a few quick requests before the stop, none during it.
    h.io(io_on(LOWER, 41, 41, "kworker/u8:4", 4096, 20, 22));
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    assert_eq!(
        e.evidence.device.as_deref(),
        Some("loop1"),
        "{}",
        e.headline
    );

    // The same pause while loop0 writes back the backing file for most of it: saturated by
    // the others' flood behind it, not stopped.
    let mut busy = History::default();
    frozen(&mut busy);
    backing_writeback(&mut busy, 50, 150, 40, 35);
    let e = explain_it(&c, &busy);
    assert_ne!(e.verdict, Verdict::DeviceStall, "{}", e.headline);

    // Nothing known about the disk under it (not watched): a deep queue of others'
    // requests stays the explanation the evidence supports.
    let mut c1 = c.clone();
    c1.disks.layers.truncate(1);
    let mut h1 = History::default();
    frozen(&mut h1);
    let e = explain_it(&c1, &h1);
    assert_ne!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
}

#[test]
fn a_loop_device_held_back_by_the_disk_under_it_is_not_a_stall() {
    // loop1 (over a file on loop0) completes nothing for 800 ms with the SyncThread's one
    // request in flight.
    let base = |h: &mut History| {
        watched(h);
        h.io(io(ZK, "SyncThread:1", 4096, 100, 900));
        h.io(io(ZK, "SyncThread:1", 4096, 20, 30));
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            5,
            990,
            Some(990),
            &["folio_wait_writeback"],
            None,
        ));
    };
    let mut c = call(0, 1000);
    c.disks.layers[0].kind = LayerKind::Loop {
        backing_file: "/outer/inner.img".into(),
    };
    c.disks.layers.push(layer(LOWER, "loop0", 1));

    // Nothing under it moved: the layer itself stopped (a frozen backing filesystem).
    let mut stopped = History::default();
    base(&mut stopped);
    assert_eq!(explain_it(&c, &stopped).verdict, Verdict::DeviceStall);

    // Its worker flushing the backing file: loop0 busy writing it back all along,
    // completing as it goes.
    let mut busy = History::default();
    base(&mut busy);
    backing_writeback(&mut busy, 40, 90, 20, 25);
    let e = explain_it(&c, &busy);
    assert_ne!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    let l = &e.evidence.layers[0];
    assert!(l.backing_busy_ms >= 700.0, "{l:?}");

    // Its writes to the backing file paused in balance_dirty_pages on loop0.
    let mut throttled = History::default();
    base(&mut throttled);
    for at in [100, 300, 500, 700] {
        throttled.throttle(Throttle {
            pid: 40,
            tid: 40,
            comm: "kworker/u8:3".into(),
            at: t(at),
            pause_ms: 200,
            bdi: "7:0".into(),
        });
    }
    let e = explain_it(&c, &throttled);
    assert_ne!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    let l = &e.evidence.layers[0];
    assert!(l.backing_throttled_ms >= 700.0, "{l:?}");
    assert_eq!(l.backing_throttled.as_deref(), Some("kworker/u8:3"));
}

#[test]
fn a_return_to_cpu_the_kernel_ran_no_probe_for_is_said_and_leaves_the_gap_unexplained() {
    // The SyncThread's first wait (0-18 ms, at the block layer) was seen; its second
    // switch-out was seen too, but not its return to the CPU: the rest of the call has no
    // interval. The record says so, and does not explain that time by anything.
    let mut h = History::default();
    watched(&mut h);
    h.io(io(900, "dd", 1 << 20, 0, 150));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        0,
        18,
        Some(18),
        &["rq_qos_wait+0xd5", "wbt_wait+0xb0"],
        None,
    ));
    let mut c = call(0, 185);
    c.switch_unseen = true;
    let e = explain_it(&c, &h);
    assert!(
        e.evidence
            .incomplete
            .iter()
            .any(|s| s.contains("without the kernel running the scheduler probe")),
        "{:?}",
        e.evidence.incomplete
    );
    assert!(e.stages["unaccounted"] >= 160.0, "{:?}", e.stages);
}

#[test]
fn the_readme_table_is_the_rules_table() {
    // One row per verdict, in the order the rules try them, with describe()'s words.
    let readme = include_str!("../../../README.md");
    let rows: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter(|l| {
            Verdict::ALL
                .iter()
                .any(|v| l.starts_with(&format!("| `{}` |", v.name())))
        })
        .collect();
    let mut order: Vec<Verdict> = Vec::new();
    for (v, _) in rules::RULES {
        // `unknown`'s row is last, as what is left (its early rule is in its words).
        if !order.contains(v) && *v != Verdict::Unknown {
            order.push(*v);
        }
    }
    order.push(Verdict::Unknown);
    let want: Vec<String> = order
        .iter()
        .map(|v| format!("| `{}` | {} |", v.name(), v.describe()))
        .collect();
    assert_eq!(
        rows, want,
        "README.md's verdict table differs from rules.rs"
    );
}

#[test]
fn a_commit_whose_loop_device_flush_writes_back_others_data_is_contention_via_the_journal() {
    // ZooKeeper on loop1, a loop device over a file on loop0. dd wrote 100 MB to loop1
    // in the second before (done, into its backing file's page cache); then the commit's
    // flush of loop1 (an fsync of the backing file) waits while loop0 writes all of that
    // back. The commit is not slow "on its own": dd is the cause.
    let mut h = History::default();
    watched(&mut h);
    for i in 0..100u64 {
        h.io(io(777, "dd", 1 << 20, 1_000 + i * 9, 1_005 + i * 9));
    }
    // The journal's write and flush on loop1, in flight from 2010 to 2300.
    h.io(io(0, "jbd2/loop1-8", 8192, 2_010, 2_300));
    // loop0 under it, busy with loop1's backing-file writeback all along.
    for i in 0..28u64 {
        h.io(relayed_from_loop1(2_012 + i * 10, 2_021 + i * 10));
    }
    h.commit(Commit {
        dev: DISK.0,
        transaction: 69,
        tid: 30,
        start: t(2_005),
        end: t(2_302),
        locking_ms: Some(0.0),
        flushing_ms: Some(0.0),
        logging_ms: Some(296.0),
        handles: Some(3),
        blocks: Some(3),
    });
    waits_on_loop1s_commit(&mut h, 2_004, 2_303);
    let c = call_on_loop1(2_000, 2_305);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    assert!(
        e.headline
            .starts_with("dd (pid 777) wrote 104.9 MB to loop1"),
        "{}",
        e.headline
    );
    assert!(e.headline.contains("journal commit 69"), "{}", e.headline);
    assert_backing_flush_of(&e, "dd");
    // Without dd's writes before it: the commit was slow on its own.
    let mut quiet = History::default();
    watched(&mut quiet);
    quiet.io(io(0, "jbd2/loop1-8", 8192, 2_010, 2_300));
    for i in 0..28u64 {
        quiet.io(relayed_from_loop1(2_012 + i * 10, 2_021 + i * 10));
    }
    quiet.commit(h.commits[0].clone());
    quiet.blocked(h.blocked[0].clone());
    assert_eq!(explain_it(&c, &quiet).verdict, Verdict::JournalWait);

    // With --requests around-calls, dd's writes while no call was in flight were summed in
    // the kernel: its 100 MB are still others' data the flush had to write back, not a
    // commit slow on its own; only whose is not known, and the headline says so.
    let mut summed = quiet;
    summed.summed(
        DISK,
        summed_over(1_000, 2_000, 100, 100 << 20, 100 * 5 * MS),
    );
    let e = explain_it(&c, &summed);
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert!(
        e.headline.starts_with(&format!(
            "{} wrote 104.9 MB to loop1",
            super::evidence::SUMMED_WRITERS
        )),
        "{}",
        e.headline
    );
    let bw = e
        .evidence
        .journal
        .as_ref()
        .unwrap()
        .backing_writers
        .as_ref()
        .unwrap();
    assert_eq!((bw.bytes_summed, bw.requests_summed), (100 << 20, 100));
    assert_eq!(bw.bytes_others, 100 << 20);
    // Each second's sum counts for its share inside the window.
    let mut far = History::default();
    watched(&mut far);
    far.summed(DISK, summed_over(1_000, 2_000, 100, 100 << 20, 0));
    assert_eq!(
        super::evidence::summed_in(&far, DISK, (t(35_000), t(40_000))),
        (0, 0)
    );
    // Half of a second's sum inside the window counts half.
    assert_eq!(
        super::evidence::summed_in(&far, DISK, (t(1_500), t(3_000))),
        (50 << 20, 50)
    );
}

/// CI's shape (on 2e8dd2e): an 86 ms commit on loop1 whose flush sat 75 ms there, loop0 under
/// it busy 40 ms of those writing back what dd had written to loop1. Held from below for
/// more than half of loop1's pause, though less than half the commit: dd is the cause, not a
/// commit slow on its own.
#[test]
fn a_commit_held_from_below_for_part_of_it_after_others_wrote_is_still_contention() {
    let commit = |h: &mut History, busy: &[(u64, u64)]| {
        watched(h);
        for i in 0..100u64 {
            h.io(io(777, "dd", 1 << 20, 1_000 + i * 9, 1_005 + i * 9));
        }
        // The journal's write, then its flush (75 ms: loop1 completes nothing from 2007
        // to 2082), then the commit block.
        h.io(io(0, "jbd2/loop1-8", 8192, 2_006, 2_007));
        h.io(io(0, "jbd2/loop1-8", 0, 2_007, 2_082));
        h.io(io(0, "jbd2/loop1-8", 4096, 2_083, 2_090));
        for &(from, to) in busy {
            h.io(relayed_from_loop1(from, to));
        }
        h.commit(Commit {
            dev: DISK.0,
            transaction: 65,
            tid: 30,
            start: t(2_005),
            end: t(2_091),
            locking_ms: Some(0.0),
            flushing_ms: Some(0.0),
            logging_ms: Some(86.0),
            handles: Some(34),
            blocks: Some(7),
        });
        waits_on_loop1s_commit(h, 2_004, 2_092);
    };
    let c = call_on_loop1(2_000, 2_094);
    // loop0 busy 40 ms of loop1's 75 ms pause.
    let mut h = History::default();
    commit(
        &mut h,
        &[
            (2_010, 2_020),
            (2_030, 2_040),
            (2_050, 2_060),
            (2_070, 2_080),
        ],
    );
    let e = explain_it(&c, &h);
    let l = disk_during(&e);
    assert_eq!(
        (
            l.longest_completion_gap_ms.round(),
            l.backing_held_ms.round()
        ),
        (75.0, 40.0),
        "{l:?}"
    );
    assert_backing_flush_of(&e, "dd");
    // loop0 busy 20 ms of it: loop1's pause was not the disk under it. Nothing says dd's
    // data held the commit.
    let mut h = History::default();
    commit(&mut h, &[(2_010, 2_020), (2_050, 2_060)]);
    let e = explain_it(&c, &h);
    assert!(
        e.evidence
            .journal
            .as_ref()
            .unwrap()
            .backing_writers
            .is_none(),
        "{:?}",
        e.evidence.journal
    );
    assert_ne!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
}

#[test]
fn a_stall_with_a_timed_out_and_requeued_request_says_so() {
    // A SCSI disk whose command timed out after 30 s: the request is requeued (retried),
    // then completes; nothing else completes meanwhile.
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 1, 2));
    let mut stuck = io(ZK, "SyncThread:1", 4096, 5, 30_010);
    stuck.requeues = 1;
    h.io(stuck);
    let mut failed = io(0, "jbd2/loop1-8", 4096, 6, 30_005);
    failed.status = 2; // BLK_STS_TIMEOUT
    h.io(failed);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        30_010,
        Some(30_010),
        &["io_schedule+0x3f", "folio_wait_writeback+0x2a"],
        None,
    ));
    let e = explain_it(&call(0, 30_012), &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    let l = &e.evidence.layers[0];
    assert_eq!((l.timeouts, l.requeues, l.errors), (1, 1, 1));
    assert!(
        e.headline
            .contains("1 request timed out and 1 request requeued there"),
        "{}",
        e.headline
    );
}

#[test]
fn every_cpu_silent_at_once_is_a_host_freeze_not_a_device_stall() {
    // From inside a paused VM a 3 s stop looks like a disk that completed nothing: the
    // heartbeats of both CPUs say the whole host stopped.
    let stalled = |cpus: &[u32]| {
        let mut h = History::default();
        watched(&mut h);
        h.io(io(ZK, "SyncThread:1", 4096, 1, 2));
        h.io(io(ZK, "SyncThread:1", 4096, 5, 3_050));
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            5,
            3_050,
            Some(3_050),
            &["io_schedule+0x3f", "folio_wait_writeback+0x2a"],
            None,
        ));
        h.host_cpus = Some(2);
        for &cpu in cpus {
            h.host_gap(cpu, t(10), t(3_040));
        }
        h
    };
    let c = call(0, 3_052);
    let e = explain_it(&c, &stalled(&[0, 1]));
    assert_eq!(e.verdict, Verdict::HostFreeze, "{}", e.headline);
    let hf = e.evidence.host_freeze.as_ref().unwrap();
    assert_eq!((hf.cpus, hf.frozen_ms), (2, 3030.0));
    assert!(
        e.headline.starts_with("the whole host stopped for 3030 ms"),
        "{}",
        e.headline
    );
    // One CPU silent (the other ran): the host did not stop; the disk did.
    let e = explain_it(&c, &stalled(&[1]));
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    assert!(e.evidence.host_freeze.is_none());
    // No heartbeat at all (the signal off): nothing claimed either way.
    let mut h = stalled(&[0, 1]);
    h.host_cpus = None;
    assert_eq!(explain_it(&c, &h).verdict, Verdict::DeviceStall);
}

/// A commit slow while the journal's disk served requests nobody followed from their start
/// (issued before the call, under `--requests around-calls`): they may have been others'
/// (contention) or not, so "a commit slow on its own" cannot be said, nor can anyone be
/// named. With them followed and others' it is contention; without them, a journal wait.
#[test]
fn a_commit_beside_requests_not_followed_is_neither_journal_wait_nor_contention() {
    let mut h = slow_commit_on_a_quiet_disk();
    for i in 0..20 {
        h.io(late_io(1 << 20, 1, 20 + i * 10));
    }
    let c = call(0, 322);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(
        e.evidence.incomplete.iter().any(|i| i.starts_with(
            "whose requests kept loop1 busy during the call: 20 of them (21.0 MB) were not followed"
        )),
        "{:?}",
        e.evidence.incomplete
    );
    let l = &e.evidence.layers[0];
    assert_eq!((l.requests_late, l.bytes_late), (20, 20 << 20));
    // A few of them (below the contention bounds) change nothing.
    let mut h = slow_commit_on_a_quiet_disk();
    h.io(late_io(4096, 1, 20));
    assert_eq!(explain_it(&c, &h).verdict, Verdict::JournalWait);
}

/// "Its own I/O, others' small" cannot be said beside many requests whose submitters are
/// unknown.
#[test]
fn own_io_beside_requests_not_followed_is_not_claimed() {
    let mut h = quick_own_io();
    for i in 0..32 {
        h.io(late_io(65536, 0, 1 + i / 4));
    }
    let e = explain_it(&call(0, 10), &h);
    assert_ne!(e.verdict, Verdict::OwnIo, "{}", e.headline);
    assert!(
        e.evidence
            .incomplete
            .iter()
            .any(|i| i.starts_with("whose requests kept loop1 busy")),
        "{:?}",
        e.evidence.incomplete
    );
}

/// A running call looked at while requests the probes did not follow are in flight on
/// its disk, a loop device: that disk is not known now (a neighbour's requests queued there
/// could be what its backing file's disk was busy with), so no stall is claimed until they
/// are seen; the look after says so.
#[test]
fn a_running_call_with_requests_in_flight_not_followed_claims_nothing_about_that_disk() {
    let (c, mut h) = stopped_under_unfollowed(true);
    h.set_unfollowed(&[(DISK, 3)]);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(!e.evidence.layers[0].complete);
    assert!(
        e.evidence.incomplete.iter().any(|i| i
            == "loop1: 3 request(s) in flight now that the probes did not follow (issued before tracing began, seen only as they complete; or, with --requests around-calls, while no watched call was in flight)"),
        "{:?}",
        e.evidence.incomplete
    );
    h.set_unfollowed(&[]);
    assert_eq!(explain_it(&c, &h).verdict, Verdict::DeviceStall);
    // Those that completed in the call are in the history: a stall all the same.
    h.io(late_io(8192, 3, 4900));
    assert_eq!(explain_it(&c, &h).verdict, Verdict::DeviceStall);
}

/// The same on a bare disk: a few requests of unknown owner in flight cannot have kept it
/// from completing anything for most of the call (a flood of others' would need a deep
/// queue, and nothing lies below it to hold it up): it stopped, and the look says so, with
/// how many it did not follow. As many as a flood of others' could be leave it unknown.
#[test]
fn a_bare_disk_that_stops_under_a_few_requests_not_followed_is_a_stall_while_it_lasts() {
    let (c, mut h) = stopped_under_unfollowed(false);
    h.set_unfollowed(&[(DISK, 3)]);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    let l = &e.evidence.layers[0];
    assert!(
        !l.complete && l.complete_but_unfollowed && l.unfollowed == 3,
        "{l:?}"
    );
    let link = e.chain.iter().find(|k| k.what == "device_stalled").unwrap();
    assert_eq!(
        link.detail,
        "loop1: 1 request(s) in flight and 3 more not followed, no completion"
    );
    // Enough of them to be a neighbour's flood saturating it: not known.
    h.set_unfollowed(&[(DISK, 7)]);
    assert_eq!(explain_it(&c, &h).verdict, Verdict::Unknown);
    // Nor when anything else about the disk is missing: completions unseen in the call.
    h.set_unfollowed(&[(DISK, 3)]);
    h.unseen(DISK, t(2000), t(3000));
    assert_eq!(explain_it(&c, &h).verdict, Verdict::Unknown);
}

/// A call on DISK (a loop device with `on_loop`) that waited from 5 to 4950 ms for its one
/// write, in flight from 5 ms with no completion until 4900.
fn stopped_under_unfollowed(on_loop: bool) -> (Span, History) {
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 1, 2));
    h.io(io(ZK, "SyncThread:1", 4096, 5, 4900));
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        4950,
        Some(4950),
        &["io_schedule+0x3f", "folio_wait_writeback+0x2a"],
        Some("loop1"),
    ));
    let mut c = call(0, 5000);
    if on_loop {
        c.disks.layers[0].kind = LayerKind::Loop {
            backing_file: "/outer/inner.img".into(),
        };
    }
    (c, h)
}

/// Seen in the 6.1 guest: a look at a call stuck on loop1 (stopped, with requests nobody
/// followed in flight on it) named jbd2's small writes on the disk under it as contention.
/// Where the call waited is loop1, which is not known then: the disk under it cannot be
/// said to have held it. With loop1 known, the stall is loop1's.
#[test]
fn contention_below_a_layer_that_is_not_known_is_not_claimed() {
    let mut h = History::default();
    watched(&mut h);
    // The call's write on loop1 (DISK), issued at 10, not completed by the look at 1060.
    let mut own = io(ZK, "SyncThread:1", 4096, 10, 1060);
    own.completed = None;
    h.io(own);
    // jbd2's small writes on loop0 (LOWER) meanwhile: 20 of 4 KiB.
    for i in 0..20 {
        h.io(io_on(
            LOWER,
            134,
            134,
            "jbd2/vda-8",
            4096,
            20 + i * 50,
            30 + i * 50,
        ));
    }
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        1060,
        None,
        &["folio_wait_writeback"],
        None,
    ));
    let mut c = call(0, 1061);
    c.disks.layers.push(layer(LOWER, "loop0", 1));
    c.running = true;
    h.set_unfollowed(&[(DISK, 17)]);
    let e = explain_it(&c, &h);
    assert_ne!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    h.set_unfollowed(&[]);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
}

/// Seen in the 6.1 guest: the look at a call as it crossed the threshold (1001 ms), on a
/// disk that others' I/O had kept busy and that had then stopped 489 ms before, said their
/// contention. The pause, still open and half the call, is too short yet to be a stall: the
/// look says so, and the next one, with the pause past 500 ms and half the call, says it
/// stalled. When the call has ended, a pause that ended with it is judged as before.
#[test]
fn a_look_at_a_pause_still_open_but_short_says_so_until_it_is_a_stall() {
    let look = |at: u64| {
        let mut h = History::default();
        watched(&mut h);
        // fio's 64 KiB writes, one after another, until 480 ms: 2.5 MB.
        for i in 0..40 {
            h.io(io(300, "fio", 65536, i * 12, i * 12 + 12));
        }
        // From 505 ms, two of fio's and the call's own write: none completes.
        for (pid, comm, bytes, issued) in [
            (300, "fio", 65536, 505),
            (300, "fio", 65536, 508),
            (ZK, "SyncThread:1", 4096, 510),
        ] {
            let mut r = io(pid, comm, bytes, issued, at);
            r.completed = None;
            h.io(r);
        }
        h.blocked(blocked(
            SYNC,
            SchedState::DiskSleep,
            5,
            at,
            None,
            &["folio_wait_writeback+0x2a"],
            None,
        ));
        let mut c = call(0, at);
        c.running = true;
        explain_it(&c, &h)
    };
    let e = look(1001);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(
        e.headline
            .contains("loop1 has completed nothing for the last 496 ms with 3 request(s) in flight: a stop if it lasts"),
        "{}",
        e.headline
    );
    assert!(
        e.chain.iter().any(|k| k.what == "pause_open"),
        "{:?}",
        e.chain
    );
    let e = look(1101);
    assert_eq!(e.verdict, Verdict::DeviceStall, "{}", e.headline);
    // A short look (a low threshold): 90 ms without a completion is 36% of a 250 ms call
    // but within a disk's usual worst (a cache flush), not a pause.
    let mut h = History::default();
    watched(&mut h);
    h.io(io(ZK, "SyncThread:1", 4096, 5, 15));
    let mut r = io(ZK, "SyncThread:1", 4096, 160, 250);
    r.completed = None;
    h.io(r);
    h.blocked(blocked(
        SYNC,
        SchedState::DiskSleep,
        5,
        250,
        None,
        &["folio_wait_writeback+0x2a"],
        None,
    ));
    let mut c = call(0, 250);
    c.running = true;
    let e = explain_it(&c, &h);
    assert!(
        !e.chain.iter().any(|k| k.what == "pause_open"),
        "{}",
        e.headline
    );
}

/// A neighbour flooding the disk under ZooKeeper's loop device (fio on the filesystem that
/// holds loop1's backing file): the commit's flush sat on loop1 while loop0 under it was
/// busy with fio's requests. Not a commit slow on its own: fio is the cause, via the journal.
#[test]
fn a_commit_held_by_a_flood_on_the_disk_under_its_loop_device_is_contention_naming_it() {
    // `fio` requests on loop0 over the call; `before` MiB written to loop1 a second before;
    // the commit's flush held `x` ms longer.
    let commit_x = |fio: u64, before: u64, x: u64| {
        let mut h = History::default();
        watched(&mut h);
        for i in 0..before {
            h.io(io(
                778,
                "ext4lazyinit",
                1 << 20,
                1_000 + i * 9,
                1_005 + i * 9,
            ));
        }
        h.io(io(0, "jbd2/loop1-8", 8192, 2_006, 2_007));
        h.io(io(0, "jbd2/loop1-8", 0, 2_007, 2_082 + x));
        h.io(io(0, "jbd2/loop1-8", 4096, 2_083 + x, 2_090 + x));
        // fio's 4 KiB direct writes on loop0, four a millisecond.
        for i in 0..fio {
            h.io(io_on(
                LOWER,
                900,
                900,
                "fio",
                4096,
                2_000 + i / 4,
                2_001 + i / 4,
            ));
        }
        h.commit(Commit {
            dev: DISK.0,
            transaction: 65,
            tid: 30,
            start: t(2_005),
            end: t(2_091 + x),
            locking_ms: Some(0.0),
            flushing_ms: Some(0.0),
            logging_ms: Some(86.0 + x as f64),
            handles: Some(34),
            blocks: Some(7),
        });
        waits_on_loop1s_commit(&mut h, 2_004, 2_092 + x);
        h
    };
    let commit = |fio, before| commit_x(fio, before, 0);
    let c = call_on_loop1(2_000, 2_094);
    // 360 requests (1.5 MB) over the call.
    let e = explain_it(&c, &commit(360, 0));
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.via, Some("journal"));
    assert_eq!(e.contenders[0].comm, "fio");
    assert!(
        e.headline
            .starts_with("fio (pid 900) kept loop0 busy under loop1"),
        "{}",
        e.headline
    );
    assert!(
        e.chain.iter().any(|l| l.what == "held_from_below"),
        "{:?}",
        e.chain
    );
    // With 4 MB written to loop1 in the seconds before (ext4lazyinit's, say): loop0 was busy
    // with fio's requests, not with writing back loop1's, and fio is named (a real fio
    // flood of vda under loop0 was called ext4lazyinit's, 338 calls of 371).
    let e = explain_it(&c, &commit(360, 4));
    assert!(
        e.evidence
            .journal
            .as_ref()
            .unwrap()
            .backing_writers
            .is_some(),
        "{:?}",
        e.evidence.journal
    );
    assert_eq!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    assert_eq!(e.contenders[0].comm, "fio", "{}", e.headline);
    // Four of fio's requests: loop0 was not what held loop1, and no one is named.
    let e = explain_it(&c, &commit(4, 0));
    assert_ne!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
    // fio's flood ending 25 ms into the call: loop0 held loop1's flush for 18 of its 75 ms,
    // too little to name fio, and too much to call the commit slow on its own (seen as a
    // flood began under ZooKeeper's loop device: 20 MB of fio's on vda over a 17 ms call,
    // loop0 paused 8 ms, 3 of them waiting on vda).
    let e = explain_it(&c, &commit(100, 0));
    assert_eq!(e.evidence.layers[0].backing_held_ms, 18.0);
    assert_eq!(e.verdict, Verdict::Unknown, "{}", e.headline);
    assert!(
        e.headline.contains(
            "loop0 under loop1 carried 410 KB of others' I/O over the call, and held the commit's writes for 18 ms of loop1's 75 ms pause"
        ),
        "{}",
        e.headline
    );
    // The same with loop0 busier writing loop1's own 2 MiB there than with fio's: loop1's
    // commit waited on its own traffic, slow on its own.
    let mut h = commit(100, 0);
    h.io(relayed_from_loop1(2_010, 2_030));
    h.io(relayed_from_loop1(2_030, 2_050));
    in_arrival_order(&mut h);
    let e = explain_it(&c, &h);
    assert_eq!(e.verdict, Verdict::JournalWait, "{}", e.headline);
    // loop0 itself paused, for 1 s, under 20 requests of others' (1.3 MB) that complete
    // only after the commit (its backing filesystem frozen, fsfreeze's own writes caught):
    // loop1 waited on a disk that was not working, not on others' load there.
    let mut h = commit_x(0, 0, 1_000);
    for i in 0..20u64 {
        h.io(io_on(
            LOWER,
            901,
            901,
            "fsfreeze",
            65536,
            2_000 + i / 4,
            3_093,
        ));
    }
    let mut long = call(2_000, 3_094);
    long.disks = c.disks.clone();
    let e = explain_it(&long, &h);
    let below = &e.evidence.layers[1];
    assert!(below.longest_completion_gap_ms >= 1_000.0, "{below:?}");
    assert_ne!(e.verdict, Verdict::DeviceContention, "{}", e.headline);
}
