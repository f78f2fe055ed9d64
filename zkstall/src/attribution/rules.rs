//! The verdict: an ordered table of rules, one function per verdict, the first that holds
//! wins. Each names the root cause; the mechanism it acted through goes in `via` (a dd
//! that saturated the disk under a journal commit the call waited on is
//! `device_contention` via `journal`). Thresholds live in [`Thresholds`], in one place.

use serde::Serialize;

use super::{
    Link, Span,
    evidence::{Gathered, LayerEvidence, LayerKindName, Site, Stage},
    ms,
};

/// Every verdict zkstall can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A disk under the file had requests in flight and completed none for most of the
    /// call.
    DeviceStall,
    /// The disk was busy with others' I/O (another process, or another thread of the same
    /// process).
    DeviceContention,
    /// The call waited for a journal commit that was slow on its own.
    JournalWait,
    /// The thread was paused in balance_dirty_pages.
    DirtyThrottle,
    /// Blocked in the filesystem with no I/O in flight (frozen, or a lock).
    FsBlocked,
    /// Runnable but not running.
    CpuStarvation,
    /// The syscall returned, then the JVM held the thread (a safepoint: the process's
    /// other threads stopped too).
    JvmPause,
    /// Its own I/O, at the device's usual speed.
    OwnIo,
    /// Its cgroup's I/O limit (blk-throttle, v1 blkio.throttle.* or v2 io.max) held its
    /// I/O back.
    IoThrottled,
    /// It had to reclaim memory first (its memory cgroup at its limit, or the system short).
    MemoryReclaim,
    /// Writeback forced by low free space on the filesystem.
    LowSpace,
    /// The whole host stopped (every CPU's heartbeat silent at once: a VM paused by its
    /// hypervisor).
    HostFreeze,
    /// Nothing the signals show accounts for the time.
    Unknown,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::DeviceStall => "device_stall",
            Verdict::DeviceContention => "device_contention",
            Verdict::JournalWait => "journal_wait",
            Verdict::DirtyThrottle => "dirty_throttle",
            Verdict::FsBlocked => "fs_blocked",
            Verdict::CpuStarvation => "cpu_starvation",
            Verdict::JvmPause => "jvm_pause",
            Verdict::OwnIo => "own_io",
            Verdict::IoThrottled => "io_throttled",
            Verdict::MemoryReclaim => "memory_reclaim",
            Verdict::LowSpace => "low_space",
            Verdict::HostFreeze => "host_freeze",
            Verdict::Unknown => "unknown",
        }
    }

    /// When the verdict is reached, with the numbers of [`Thresholds::DEFAULT`] (the
    /// README's table is checked against these, so a threshold changed here shows there).
    pub fn describe(self) -> String {
        let t = Thresholds::DEFAULT;
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        let (stall, dominant, starved) = (
            pct(t.stall_share),
            pct(t.dominant_share),
            pct(t.starvation_share),
        );
        match self {
            Verdict::HostFreeze => format!(
                "every CPU's heartbeat ({} Hz, a timer that runs on idle CPUs too) was silent at once for >= {stall} of the call: the whole host stopped (a VM paused by its hypervisor), not its disk",
                zkstall_common::HEARTBEAT_HZ
            ),
            Verdict::DeviceStall => format!(
                "a disk under the file had requests in flight and completed none for >= {stall} of the call and >= {} ms, while the call waited on something a stopped disk holds up (not a frozen filesystem or a lock) for >= {stall} of it (the lowest such layer is named; its history must cover the call, but for fewer than {} requests in flight in all on a bare disk that were not followed; not a disk saturated by others, >= {} requests in flight, for no longer than they take one after another at its usual latency if it is a bare disk (or {} s when the requests it had over the call, at that latency, add up to >= {} of the pause), unless it is a loop device whose disk under it was busy or throttling it for < {} of the pause; nor a loop device held back by the disk under it)",
                t.stall_min_ns / 1_000_000,
                t.saturated_depth,
                t.saturated_depth,
                t.saturated_pause_ns / 1_000_000_000,
                pct(t.saturated_work_share),
                pct(t.loop_alone_share)
            ),
            Verdict::CpuStarvation => format!(
                "runnable but not running for >= {starved} of the call; or the journal commit it waited on (for >= {dominant} of the call, and no less than for its own I/O) was, its journal thread runnable for >= {starved} of the commit (counted from the call's wait when the commit began later and the call waited on the journal for >= {stall} of it); or the JVM pause it was held in after the return was, the JVM's other threads runnable for >= {starved} of it"
            ),
            Verdict::JvmPause => format!(
                "the syscall returned, then a JVM held the thread (woken by its VM thread, with >= {} other threads stopped, or inside a safepoint HotSpot's own probes marked) for >= {starved} of what its caller measured, and most of that wait was not ended by one of its own threads handing it work",
                t.pause_min_stopped
            ),
            Verdict::MemoryReclaim => format!(
                "reclaiming memory itself (direct or memory-cgroup reclaim) for >= {dominant} of the call; or the JVM pause it was held in after the return was, the JVM's other threads reclaiming memory for >= {starved} of it"
            ),
            Verdict::LowSpace => {
                format!("waiting >= {dominant} of the call for writeback forced by low free space")
            }
            Verdict::DirtyThrottle => {
                format!("paused in balance_dirty_pages for >= {dominant} of the call")
            }
            Verdict::IoThrottled => format!(
                "waiting >= {dominant} of the call for its own I/O while its cgroup has an I/O limit on the disk, with that cgroup's I/O at >= {} of the limit or held above the block layer",
                pct(t.throttle_utilization)
            ),
            Verdict::DeviceContention => format!(
                "waiting >= {dominant} of the call for its own I/O or a journal commit (the journal when it waited on it no less than on its own I/O) while others' I/O dominated the disk (>= {} MiB or {} requests, more than its own; discards by their number only, their length not being data moved; a disk under the file's own only when every layer above it is known; for a commit on a loop device whose pause the disk under it held (busy or throttling it) for >= half of it, that disk when others' I/O there was more than the loop device's own, unless it paused itself for >= {} ms and half that hold), or for a commit whose flush of a loop device had to write back what others wrote to it in the 30 s before (tried first when the disk under it was busier with the loop device's own requests than with others'); via journal, writeback or block_queue",
                t.contention_min_bytes >> 20,
                t.contention_min_requests,
                t.stall_min_ns / 1_000_000
            ),
            Verdict::JournalWait => format!(
                "waiting >= {dominant} of the call, and no less than for its own I/O, for a journal commit that was slow on its own (every disk under the file had all its requests known over the call and the commit: a window with records lost or completions unseen leaves the call unknown; so do requests of unknown submitters as many as would be contention, and a disk under the commit's loop device that held part of its pause while others' I/O dominated it, more than the loop device's own there)"
            ),
            Verdict::OwnIo => format!(
                "waiting >= {dominant} of the call for its own I/O at the disk's usual latency (under {}x its usual p50, or {} ms when that is not known), others' I/O there less than its own or too little to be contention (under {} MiB and {} requests), and the same of requests whose submitter is unknown, with all of the disk's requests over the call known",
                t.slow_factor,
                t.slow_abs_ms,
                t.contention_min_bytes >> 20,
                t.contention_min_requests
            ),
            Verdict::FsBlocked => format!(
                "blocked >= {dominant} of the call in the filesystem (a lock, a frozen filesystem) with no I/O of its own in flight"
            ),
            Verdict::Unknown => format!(
                "none of the above: the headline names where the time went as far as it is known, the frame it waited at, and what is missing. Also a call still running, waiting on its disk, whose disk has completed nothing for >= {dominant} of it and >= {} ms and still has not, not yet for as long as `device_stall` needs (tried right after it): a stop if it lasts",
                t.slow_abs_ms
            ),
        }
    }

    pub const ALL: [Verdict; 13] = [
        Verdict::HostFreeze,
        Verdict::DeviceStall,
        Verdict::DeviceContention,
        Verdict::JournalWait,
        Verdict::DirtyThrottle,
        Verdict::FsBlocked,
        Verdict::CpuStarvation,
        Verdict::JvmPause,
        Verdict::OwnIo,
        Verdict::IoThrottled,
        Verdict::MemoryReclaim,
        Verdict::LowSpace,
        Verdict::Unknown,
    ];
}

/// The thresholds every rule uses.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// A disk stalled: no completion for at least this share of the call...
    pub stall_share: f64,
    /// ... and at least this long (a single slow request of a short call is not a stall).
    pub stall_min_ns: u64,
    /// A stage "explains" the call from this share on.
    pub dominant_share: f64,
    /// Run-queue time that makes it CPU starvation.
    pub starvation_share: f64,
    /// Others' traffic below both of these is not contention (a few metadata blocks).
    pub contention_min_bytes: u64,
    pub contention_min_requests: u32,
    /// Own I/O latency this many times the disk's usual is not "own I/O at normal speed";
    /// when the usual is not known, above this (ms) it is not either.
    pub slow_factor: f64,
    pub slow_abs_ms: f64,
    /// Other threads stopped with it that make an after-return sleep a JVM pause.
    pub pause_min_stopped: u32,
    /// Requests in flight from which a pause in completions, under others' load, is
    /// saturation rather than a stop.
    pub saturated_depth: u32,
    /// A bare disk's queue explains a pause up to this long whatever its usual pace (a
    /// SATA disk's cache flush after a flood holds every request that long or so); longer
    /// only as long as its queue takes at that pace.
    pub saturated_pause_ns: u64,
    /// ... when the requests the disk had over the call, each at its usual latency, add
    /// up to this share of the pause or more (a load that could have filled its cache).
    pub saturated_work_share: f64,
    /// A loop device's pause in which the disk under it was busy or throttled it for less
    /// than this share was the loop device blocked itself, however deep its queue.
    pub loop_alone_share: f64,
    /// A cgroup's I/O at this share of its limit or more is held back by it.
    pub throttle_utilization: f64,
}

impl Thresholds {
    pub const DEFAULT: Thresholds = Thresholds {
        stall_share: 0.5,
        stall_min_ns: 500_000_000,
        dominant_share: 0.3,
        starvation_share: 0.5,
        contention_min_bytes: 1 << 20,
        contention_min_requests: 16,
        slow_factor: 10.0,
        slow_abs_ms: 100.0,
        pause_min_stopped: 2,
        saturated_depth: 8,
        saturated_pause_ns: 2_000_000_000,
        saturated_work_share: 0.25,
        loop_alone_share: 0.25,
        throttle_utilization: 0.5,
    };
}

/// What the rules found.
#[derive(Clone, Debug)]
pub struct Finding {
    pub verdict: Verdict,
    pub via: Option<&'static str>,
    pub chain: Vec<Link>,
    /// The layer a device verdict is about (index into the evidence's layers).
    pub layer: Option<usize>,
    /// The stage that explains the call.
    pub stage: Option<Stage>,
}

type Rule = fn(&Span, &Gathered, &Thresholds) -> Option<Finding>;

/// The rules, in order: the first that holds wins.
pub const RULES: &[(Verdict, Rule)] = &[
    (Verdict::HostFreeze, host_freeze),
    (Verdict::DeviceStall, device_stall),
    (Verdict::Unknown, pause_still_open),
    (Verdict::CpuStarvation, cpu_starvation),
    (Verdict::CpuStarvation, starvation_via_pause),
    (Verdict::MemoryReclaim, reclaim_via_pause),
    (Verdict::JvmPause, jvm_pause),
    (Verdict::MemoryReclaim, memory_reclaim),
    (Verdict::LowSpace, low_space),
    (Verdict::DirtyThrottle, dirty_throttle),
    (Verdict::IoThrottled, io_throttled),
    (Verdict::CpuStarvation, starvation_via_journal),
    (Verdict::DeviceContention, contention_via_journal),
    (Verdict::JournalWait, journal_wait),
    (Verdict::DeviceContention, device_contention),
    (Verdict::OwnIo, own_io),
    (Verdict::FsBlocked, fs_blocked),
];

pub fn decide(call: &Span, g: &Gathered, t: &Thresholds) -> Finding {
    for (_, rule) in RULES {
        if let Some(f) = rule(call, g, t) {
            return f;
        }
    }
    Finding {
        verdict: Verdict::Unknown,
        via: None,
        chain: vec![call_link(call, g)],
        layer: None,
        stage: dominant(g, &[]).map(|(s, _)| s),
    }
}

fn call_link(call: &Span, g: &Gathered) -> Link {
    Link {
        what: "call",
        detail: format!("{} by {} ({})", call.syscall, call.thread, call.tid),
        start_ns: call.start.0,
        duration_ms: ms(g.dur_ns),
    }
}

/// The largest stage other than those in `except`, and its time.
fn dominant(g: &Gathered, except: &[Stage]) -> Option<(Stage, u64)> {
    g.stages
        .iter()
        .filter(|(s, _)| !except.contains(s))
        .max_by_key(|(_, v)| **v)
        .map(|(s, v)| (*s, *v))
}

fn share(g: &Gathered, ns: u64) -> f64 {
    ns as f64 / g.dur_ns.max(1) as f64
}

/// How long the call waited for its own I/O: at the device (queued or in service), or
/// for writeback held above it; not its wait on the journal (the commit's requests queued
/// behind others are the journal's).
fn own_device_ns(g: &Gathered) -> u64 {
    g.stage(Stage::DeviceQueue)
        .saturating_sub(g.journal_queue_ns)
        + g.stage(Stage::DeviceService)
        + g.stage(Stage::WritebackWait)
        + g.stage(Stage::QueueHeld)
        + g.stage(Stage::IoThrottle)
}

/// The journal explains the call only when it waited on the journal at least as long as
/// on its own I/O: a call that waited longer on its own data at a busy or slow disk is
/// for the device rules, whatever its journal part did.
fn journal_leads(g: &Gathered) -> bool {
    g.journal_ns > 0 && g.journal_ns >= own_device_ns(g)
}

/// How the call was stuck on the disk: through the journal, or its own writeback.
fn mechanism(g: &Gathered) -> Option<&'static str> {
    if journal_leads(g) {
        Some("journal")
    } else if own_device_ns(g) > 0 {
        Some("writeback")
    } else {
        None
    }
}

fn stalled(le: &LayerEvidence, layers: &[LayerEvidence], dur: u64, t: &Thresholds) -> bool {
    let gap = (le.longest_completion_gap_ms * 1e6) as u64;
    (le.complete || stopped_whoevers(le, t))
        && le.inflight_max.saturating_add(le.unfollowed) > 0
        && gap >= t.stall_min_ns
        && gap as f64 >= t.stall_share * dur as f64
        && !held_from_below(le)
        && !saturated(le, layers, t)
}

/// A running call (looked at, or still running when tracing ended) whose disk has completed
/// nothing for `dominant_share` of it or more (and `slow_abs_ms`) and still has not, but not yet for as long as
/// [`device_stall`] needs: a stop if it lasts, and too soon to call one. Said as such
/// (`unknown`), so that no rule after names what ran before the pause (a commit, others'
/// I/O) as the cause: a disk completing nothing now is not busy serving them. Every stall
/// crosses the threshold before its pause is as long as the call, so without this the look
/// at the crossing (the agent's first log line) named those (seen in the 6.1 guest: a look
/// at 1001 ms into a call on a disk that had stopped 489 ms before said fio's contention).
fn pause_still_open(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    if !call.running || share(g, device_dependent_ns(g)) < t.stall_share {
        return None;
    }
    let layers = &g.ev.layers;
    let end = call.end.0;
    let (idx, l) = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let gap = (l.longest_completion_gap_ms * 1e6) as u64;
            (l.complete || stopped_whoevers(l, t))
                && l.inflight_at_end > 0
                // Still open: it runs to the end of the window (to a ms).
                && l
                    .gap_start_ns
                    .is_some_and(|s| s.saturating_add(gap).saturating_add(1_000_000) >= end)
                && gap as f64 >= t.dominant_share * g.dur_ns as f64
                // Shorter is a disk's usual worst (a cache flush), not a pause.
                && gap as f64 >= t.slow_abs_ms * 1e6
                && !held_from_below(l)
                && !saturated(l, layers, t)
        })
        .max_by_key(|(_, l)| l.depth)?;
    Some(Finding {
        verdict: Verdict::Unknown,
        via: Some("pause_open"),
        chain: vec![
            call_link(call, g),
            Link {
                what: "pause_open",
                detail: format!(
                    "{} has completed nothing for the last {:.0} ms with {} request(s) in flight: a stop if it lasts",
                    l.disk, l.longest_completion_gap_ms, l.inflight_at_end
                ),
                start_ns: l.gap_start_ns.unwrap_or(0),
                duration_ms: l.longest_completion_gap_ms,
            },
        ],
        layer: Some(idx),
        stage: dominant(g, &[]).map(|(s, _)| s),
    })
}

/// A disk (not a loop device) whose history is known but for a few requests in flight that
/// the probes did not follow (`--requests around-calls`, issued while no traced call was
/// in flight): whoever's they are, it stopped if it completed nothing. Too few are in
/// flight, with every request it did complete, for [`saturated`]'s flood of others' to
/// explain a pause, and a bare disk has no layer below to be held up by. A loop device
/// could be (see [`held_from_below`]), so its unknown requests leave it unknown.
fn stopped_whoevers(le: &LayerEvidence, t: &Thresholds) -> bool {
    le.complete_but_unfollowed
        && le.kind == LayerKindName::Disk
        && le.inflight_max.saturating_add(le.unfollowed) < t.saturated_depth
}

/// A disk with a deep queue of others' requests (its own, or relayed from a loop device
/// above whose traffic others dominated) that pauses completing is saturated by them, not
/// stopped: a flood is the cause the evidence supports (the pause is in the chain).
/// Except a loop device that paused on its own: see [`blocked_alone`].
fn saturated(le: &LayerEvidence, layers: &[LayerEvidence], t: &Thresholds) -> bool {
    let Some(top) = layers.first() else {
        return false;
    };
    le.inflight_max >= t.saturated_depth
        && (contended(le, t)
            || (le.bytes_from_above >= t.contention_min_bytes && contended(top, t)))
        && !blocked_alone(le, layers, t)
        && queue_explains_pause(le, t)
}

/// A bare disk's queue can hold it up as long as draining it at the disk's usual pace
/// would take: every request in flight served one after another, each at the usual
/// latency before the call (which, under a flood, already includes the device's own
/// queueing). Up to `saturated_pause_ns` too when the load was heavy enough to fill its
/// cache: the requests it had over the call, at that pace, at least
/// `saturated_work_share` of the pause (a few dozen requests of 0.5 ms each do not hold a
/// disk 1.9 s: in the 6.1 guest, a 3 s stop whose first second still completed requests
/// caught before it was called fio's contention twice, ci90 and CI on 2e8dd2e). A longer
/// pause with requests in flight is the disk stopping, whoever's they are: a hypervisor
/// or SAN stall hits every request (seen in the 6.1 guest: its virtio disk stopped by the
/// host for 3 s under fio's 17 queued writes was called fio's contention). A loop device
/// has its own tests ([`blocked_alone`]); with no usual latency known, the queue is taken
/// to explain the pause.
fn queue_explains_pause(le: &LayerEvidence, t: &Thresholds) -> bool {
    let gap = le.longest_completion_gap_ms;
    match (le.kind, le.usual_p50_ms) {
        (LayerKindName::Disk, Some(p50)) => {
            let work = p50 * (le.completions + le.inflight_at_end) as f64;
            gap <= p50 * le.inflight_max as f64
                || (gap * 1e6 <= t.saturated_pause_ns as f64
                    && work >= t.saturated_work_share * gap)
        }
        _ => true,
    }
}

/// A loop device's work is writing its backing file: however deep its queue, it can only
/// fall behind a flood while the disk under that file is busy or its writes are dirty-
/// throttled there. One that completed nothing while that disk (watched for the whole
/// call) was idle and nothing throttled it for most of the pause was blocked itself: its
/// backing filesystem frozen, or stuck. The requests queued behind it, whoever's, did not
/// cause that (seen in the 6.1 guest: a frozen backing filesystem with ext4lazyinit's
/// requests queued was called a journal wait).
fn blocked_alone(le: &LayerEvidence, layers: &[LayerEvidence], t: &Thresholds) -> bool {
    le.kind == LayerKindName::Loop
        && layers
            .iter()
            .any(|b| b.depth == le.depth + 1 && b.watched && b.complete)
        && le.backing_held_ms < t.loop_alone_share * le.longest_completion_gap_ms
}

/// A loop device whose gap was mostly the disk under it busy (with requests in flight
/// and completing them) or its backing filesystem's dirty throttling: the layer did not
/// stop, it waited on the one below.
pub(crate) fn held_from_below(le: &LayerEvidence) -> bool {
    le.backing_held_ms > 0.0 && le.backing_held_ms * 2.0 >= le.longest_completion_gap_ms
}

/// The chain link for a disk that paused completing without having stopped: saturated
/// by others, or a loop layer held back by the disk under it.
fn backing_link(g: &Gathered, t: &Thresholds) -> Option<Link> {
    let layers = &g.ev.layers;
    if let Some(l) = layers.iter().find(|l| {
        l.longest_completion_gap_ms * 1e6 >= t.stall_min_ns as f64 && saturated(l, layers, t)
    }) {
        // A bare disk's pause longer than its queue takes at its usual pace is saturation
        // only by the allowance for a cache flush under others' writes: said, since a
        // stop looks the same.
        let beyond_queue = match (l.kind, l.usual_p50_ms) {
            (LayerKindName::Disk, Some(p50)) => {
                let drain = p50 * l.inflight_max as f64;
                (l.longest_completion_gap_ms > drain).then(|| {
                    format!(
                        "; {:.0} ms is longer than that queue takes at its usual {p50:.1} ms a request ({drain:.0} ms): a cache flush of their writes can hold a disk that long, and so can a stop",
                        l.longest_completion_gap_ms
                    )
                })
            }
            _ => None,
        };
        return Some(Link {
            what: "saturated",
            detail: format!(
                "{} completed nothing with up to {} request(s) in flight, saturated by others' I/O{}",
                l.disk,
                l.inflight_max,
                beyond_queue.unwrap_or_default()
            ),
            start_ns: l.gap_start_ns.unwrap_or(0),
            duration_ms: l.longest_completion_gap_ms,
        });
    }
    let l = layers.iter().find(|l| held_from_below(l))?;
    let below = layers.iter().find(|b| b.depth == l.depth + 1)?;
    let how = if l.backing_throttled_ms > l.backing_busy_ms {
        format!(
            "its writes to its backing file dirty-throttled on {} ({} paused longest)",
            below.disk,
            l.backing_throttled.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "waiting on {} under it, busy with its backing file",
            below.disk
        )
    };
    Some(Link {
        what: "held_from_below",
        detail: format!("{} completed nothing, {how}", l.disk),
        start_ns: l.gap_start_ns.unwrap_or(0),
        duration_ms: l.backing_held_ms,
    })
}

/// The whole host stopped for most of the call: a stopped disk, a starved thread and a
/// slow commit all look alike from inside a paused VM, so this is tried first.
fn host_freeze(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let hf = g.ev.host_freeze.as_ref()?;
    if hf.frozen_ms * 1e6 < t.stall_share * g.dur_ns as f64 {
        return None;
    }
    Some(Finding {
        verdict: Verdict::HostFreeze,
        via: None,
        chain: vec![
            call_link(call, g),
            Link {
                what: "host_frozen",
                detail: format!("all {} CPUs' heartbeats silent", hf.cpus),
                start_ns: hf.start_ns,
                duration_ms: hf.longest_ms,
            },
        ],
        layer: None,
        stage: None,
    })
}

/// A disk stopped completing I/O for most of the call. The root is the lowest stalled
/// layer: a loop device stalls when the disk under it does.
fn device_stall(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    // The call must have been waiting on something a stopped disk holds up (its own I/O,
    // a commit, writeback, dirty throttling, reclaim...), not on a frozen filesystem or a
    // lock, nor running: a disk pausing beside a call stuck elsewhere is not its cause.
    if share(g, device_dependent_ns(g)) < t.stall_share {
        return None;
    }
    let layers = &g.ev.layers;
    let idx = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| stalled(l, layers, g.dur_ns, t))
        .max_by_key(|(_, l)| l.depth)
        .map(|(i, _)| i)?;
    let l = &layers[idx];
    let mut chain = vec![call_link(call, g)];
    if let Some(j) = &g.ev.journal
        && g.journal_ns > 0
    {
        chain.push(commit_link(g, j));
    }
    for above in layers
        .iter()
        .filter(|a| a.depth < l.depth && a.inflight_max > 0)
    {
        chain.push(Link {
            what: "device",
            detail: format!("{} waiting on the layer below", above.disk),
            start_ns: above.gap_start_ns.unwrap_or(0),
            duration_ms: above.longest_completion_gap_ms,
        });
    }
    chain.push(Link {
        what: "device_stalled",
        detail: if l.unfollowed > 0 {
            format!(
                "{}: {} request(s) in flight and {} more not followed, no completion",
                l.disk, l.inflight_max, l.unfollowed
            )
        } else {
            format!(
                "{}: {} request(s) in flight, no completion",
                l.disk, l.inflight_max
            )
        },
        start_ns: l.gap_start_ns.unwrap_or(0),
        duration_ms: l.longest_completion_gap_ms,
    });
    Some(Finding {
        verdict: Verdict::DeviceStall,
        via: mechanism(g),
        chain,
        layer: Some(idx),
        stage: None,
    })
}

/// The call's time spent in waits a stopped disk can cause.
fn device_dependent_ns(g: &Gathered) -> u64 {
    g.stages
        .iter()
        .filter(|(s, _)| {
            !matches!(
                s,
                Stage::OnCpu
                    | Stage::RunQueue
                    | Stage::IoThrottle
                    | Stage::AfterReturn
                    | Stage::FsLock
                    | Stage::Sleep
                    | Stage::ShortSleeps
                    | Stage::Unaccounted
            )
        })
        .map(|(_, v)| *v)
        .sum()
}

fn cpu_starvation(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let rq = g.stage(Stage::RunQueue);
    if share(g, rq) < t.starvation_share {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "run_queue",
        detail: "runnable, waiting for a CPU".into(),
        start_ns: call.start.0,
        duration_ms: ms(rq),
    });
    Some(Finding {
        verdict: Verdict::CpuStarvation,
        via: if g.after_runq_ns * 2 >= rq {
            Some("after_return")
        } else if g.before_runq_ns * 2 >= rq {
            Some("before_entry")
        } else {
            None
        },
        chain,
        layer: None,
        stage: Some(Stage::RunQueue),
    })
}

/// Slept right after the return, in a JVM, with other threads stopped too (a safepoint),
/// or woken by the JVM's own VM thread; not parked on its own work queue. Returns the
/// pause's length and the other threads stopped.
fn in_jvm_pause(g: &Gathered, t: &Thresholds) -> Option<(u64, u32)> {
    let a = g.stage(Stage::AfterReturn);
    if share(g, a) < t.starvation_share || !g.jvm || g.after_woken_by_own_work {
        return None;
    }
    let stopped = g.ev.other_threads_stopped.unwrap_or(0);
    // HotSpot's own markers, where its probes are attached: a safepoint covering most of
    // the wait is proof enough.
    let marked =
        g.ev.safepoint
            .as_ref()
            .is_some_and(|s| s.overlap_ms * 1e6 >= t.starvation_share * a as f64);
    if stopped < t.pause_min_stopped && !g.after_woken_by_vm && !marked {
        return None;
    }
    Some((a, stopped))
}

/// A JVM pause that lasted because the JVM's threads could not get a CPU (the VM thread
/// that runs the safepoint, or threads still to reach it, runnable for most of it): the
/// root is the CPU, the pause the mechanism.
fn starvation_via_pause(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let rq = (g.ev.after_others_runq_ms? * 1e6) as u64;
    via_pause(
        call,
        g,
        t,
        rq,
        (Verdict::CpuStarvation, "run_queue"),
        "the JVM's other threads runnable, waiting for a CPU".into(),
    )
}

/// A JVM pause that lasted because the JVM's other threads were reclaiming memory (the VM
/// thread running the safepoint, or threads still to reach it, freeing memory first: their
/// cgroup at its limit): the root is the memory, the pause the mechanism.
fn reclaim_via_pause(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let r = g.ev.after_others_reclaim.as_ref()?;
    via_pause(
        call,
        g,
        t,
        (r.ms * 1e6) as u64,
        (Verdict::MemoryReclaim, "reclaim"),
        format!(
            "the JVM's other threads reclaiming memory ({})",
            r.threads.join(", ")
        ),
    )
}

/// A JVM pause the JVM's other threads spent `cause_ns` of in `what` (half of it or more):
/// `verdict` via the pause.
fn via_pause(
    call: &Span,
    g: &Gathered,
    t: &Thresholds,
    cause_ns: u64,
    (verdict, what): (Verdict, &'static str),
    detail: String,
) -> Option<Finding> {
    let (a, stopped) = in_jvm_pause(g, t)?;
    if (cause_ns as f64) < t.starvation_share * a as f64 {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "after_return",
        detail: format!("parked with {stopped} other thread(s) of the JVM"),
        start_ns: g.syscall_end.0,
        duration_ms: ms(a),
    });
    chain.push(Link {
        what,
        detail,
        start_ns: g.syscall_end.0,
        duration_ms: ms(cause_ns),
    });
    Some(Finding {
        verdict,
        via: Some("jvm_pause"),
        chain,
        layer: None,
        stage: Some(Stage::AfterReturn),
    })
}

fn jvm_pause(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let (a, stopped) = in_jvm_pause(g, t)?;
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "after_return",
        detail: match &g.ev.safepoint {
            Some(s) => format!(
                "in a JVM safepoint{}",
                s.op.as_deref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default()
            ),
            None => format!("parked with {stopped} other thread(s) of the JVM"),
        },
        start_ns: g.syscall_end.0,
        duration_ms: ms(a),
    });
    Some(Finding {
        verdict: Verdict::JvmPause,
        via: None,
        chain,
        layer: None,
        stage: Some(Stage::AfterReturn),
    })
}

fn dirty_throttle(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let s = g
        .stage(Stage::DirtyThrottle)
        .max((g.ev.throttle_pause_ms * 1e6) as u64);
    if share(g, s) < t.dominant_share {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "dirty_throttle",
        detail: "paused in balance_dirty_pages".into(),
        start_ns: call.start.0,
        duration_ms: ms(s),
    });
    Some(Finding {
        verdict: Verdict::DirtyThrottle,
        via: None,
        chain,
        layer: None,
        stage: Some(Stage::DirtyThrottle),
    })
}

fn memory_reclaim(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let r = g.stage(Stage::Reclaim);
    if share(g, r) < t.dominant_share {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "reclaim",
        detail: match (&g.ev.mem_limit, g.ev.memcg_reclaim) {
            (Some(l), _) => format!("reclaiming memory in cgroup {}", l.cgroup),
            (None, Some(false)) => "direct reclaim: the system was short of memory".into(),
            _ => "reclaiming memory".into(),
        },
        start_ns: call.start.0,
        duration_ms: ms(r),
    });
    Some(Finding {
        verdict: Verdict::MemoryReclaim,
        via: None,
        chain,
        layer: None,
        stage: Some(Stage::Reclaim),
    })
}

fn low_space(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let s = g.stage(Stage::LowSpace);
    if share(g, s) < t.dominant_share {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "low_space",
        detail: "writeback forced by low free space".into(),
        start_ns: call.start.0,
        duration_ms: ms(s),
    });
    Some(Finding {
        verdict: Verdict::LowSpace,
        via: None,
        chain,
        layer: None,
        stage: Some(Stage::LowSpace),
    })
}

/// Held back by its cgroup's I/O limit on a disk under the file: it waited for its own
/// I/O, and that cgroup's I/O ran near the limit (or was held above the block layer).
fn io_throttled(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let lim = g.ev.io_limit.as_ref()?;
    let held = g.stage(Stage::WritebackWait) + g.stage(Stage::IoThrottle);
    let wait = held
        + g.stage(Stage::DeviceQueue)
        + g.stage(Stage::DeviceService)
        + g.stage(Stage::ShortDeviceWaits);
    if share(g, wait) < t.dominant_share {
        return None;
    }
    if lim.utilization < t.throttle_utilization && share(g, held) < t.dominant_share {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "io_limit",
        detail: format!("cgroup {} limited on {}", lim.limit.cgroup, lim.disk_name),
        start_ns: call.start.0,
        duration_ms: ms(wait),
    });
    Some(Finding {
        verdict: Verdict::IoThrottled,
        via: None,
        chain,
        layer: g.ev.layers.iter().position(|l| l.disk == lim.disk_name),
        stage: Some(Stage::IoThrottle),
    })
}

/// Every disk under the file has all its requests known over the call, and the journal's
/// disk over the commit (see `disk_known` in evidence).
fn disks_known(g: &Gathered) -> bool {
    !g.ev.layers.is_empty()
        && g.ev.layers.iter().all(|l| l.complete)
        && g.ev
            .journal
            .as_ref()
            .and_then(|j| j.disk_during.as_ref())
            .is_none_or(|d| d.complete)
}

fn contended(le: &LayerEvidence, t: &Thresholds) -> bool {
    (le.bytes_others > le.bytes_thread
        && (le.bytes_others >= t.contention_min_bytes
            || le.requests_others >= t.contention_min_requests))
        // Discards (fstrim; a deleted file's blocks on a `discard` mount) move no data: by
        // their number.
        || (le.discards_others >= t.contention_min_requests
            && le.discards_others > le.requests_thread)
}

/// Requests whose submitter is unknown (first seen at their completion) as many as would
/// make the disk contended if they were others': "no contention" cannot be said. They
/// cannot name a contender either (they may be the journal's own, or writeback).
pub(crate) fn unknown_could_contend(le: &LayerEvidence, t: &Thresholds) -> bool {
    le.bytes_unknown > le.bytes_thread
        && (le.bytes_unknown >= t.contention_min_bytes
            || le.requests_unknown >= t.contention_min_requests)
}

/// Whether any disk the call or its commit waited on had requests of unknown submitters
/// enough to hide contention (see [`unknown_could_contend`]).
fn hidden_contention(g: &Gathered, t: &Thresholds) -> bool {
    g.ev.layers.iter().any(|l| unknown_could_contend(l, t))
        || g.ev
            .journal
            .as_ref()
            .and_then(|j| j.disk_during.as_ref())
            .is_some_and(|d| unknown_could_contend(d, t))
}

/// How long the journal thread sat runnable without a CPU, over how long a span, and of
/// that before the commit began (ms). The span is the commit; or, when the commit began
/// only after the call had started waiting for it and that wait is at least
/// `stall_share` of the call, from the call's wait on (a thread that could not get a CPU
/// to begin the commit). Below that share, a call mostly waiting elsewhere (its own data
/// at a busy device) is not called starved by a short journal wait at its end.
pub fn journal_thread_starved(
    g: &Gathered,
    j: &crate::attribution::evidence::JournalEvidence,
    t: &Thresholds,
) -> (f64, f64, f64) {
    let during = j.thread_runq_ms.unwrap_or(0.0);
    match (j.thread_runq_before_ms, j.start_delay_ms) {
        (Some(before), Some(delay)) if share(g, g.journal_ns) >= t.stall_share => {
            (during + before, j.duration_ms + delay, before)
        }
        _ => (during, j.duration_ms, 0.0),
    }
}

/// Waited for a journal commit that was slow because its journal thread could not get a
/// CPU.
fn starvation_via_journal(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let jw = g.journal_ns;
    if share(g, jw) < t.dominant_share || !journal_leads(g) {
        return None;
    }
    let j = g.ev.journal.as_ref()?;
    j.thread_runq_ms?;
    let (rq, span, _) = journal_thread_starved(g, j, t);
    if rq < t.starvation_share * span {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(commit_link(g, j));
    chain.push(Link {
        what: "run_queue",
        detail: format!(
            "{} runnable, waiting for a CPU",
            j.thread.as_deref().unwrap_or("the journal thread")
        ),
        start_ns: g
            .commit
            .map_or(0, |c| c.start.0)
            .saturating_sub(((span - j.duration_ms).max(0.0) * 1e6) as u64),
        duration_ms: rq,
    });
    Some(Finding {
        verdict: Verdict::CpuStarvation,
        via: Some("journal"),
        chain,
        layer: None,
        stage: Some(Stage::JournalWait),
    })
}

/// Waited for a journal commit whose disk was busy with others' I/O: the others are the
/// root cause, the journal the mechanism.
fn contention_via_journal(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let jw = g.journal_ns;
    if share(g, jw) < t.dominant_share || !journal_leads(g) {
        return None;
    }
    let j = g.ev.journal.as_ref();
    // The journal's disk during the commit (jbd2), or during the call (an XFS log force,
    // which has no commit records).
    let during = match j {
        Some(j) => j.disk_during.as_ref()?,
        None => g.ev.layers.first()?,
    };
    if !contended(during, t) || !during.complete {
        // A commit on a loop device held by the disk under it: by others' requests there
        // (a neighbour flooding it), or by writing back what was written to the loop device
        // before (its flush). The one tried first is what that disk was busy with over the
        // call: others' requests, or the loop device's own relayed. (A fio flood of vda
        // under loop0, 90 MB over a 22 ms call, was called ext4lazyinit's 4 MB written to
        // loop0 in the 30 s before.)
        let neighbours =
            g.ev.layers
                .iter()
                .find(|b| b.depth == during.depth + 1)
                .is_some_and(|b| b.bytes_others > b.bytes_from_above);
        return if neighbours {
            contended_below(call, g, t, during).or_else(|| backing_flush(call, g, t))
        } else {
            backing_flush(call, g, t).or_else(|| contended_below(call, g, t, during))
        };
    }
    let top = g.journal_contenders().first();
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "journal_commit",
        detail: match j {
            Some(j) => format!(
                "transaction {}{}",
                j.transaction,
                j.flushing_ms
                    .filter(|f| *f >= 1.0)
                    .map(|f| format!(", {f:.0} ms flushing ordered data"))
                    .unwrap_or_default()
            ),
            None => format!(
                "log force at {}",
                g.ev.wait_frame.as_deref().unwrap_or("the journal")
            ),
        },
        start_ns: g.commit.map_or(call.start.0, |c| c.start.0),
        duration_ms: j.map_or(ms(jw), |j| j.duration_ms),
    });
    let span_ms = j.map_or(ms(jw), |j| j.duration_ms);
    chain.extend(backing_link(g, t));
    chain.push(Link {
        what: "device_queue",
        detail: format!(
            "{} busy with {}",
            during.disk,
            super::render::others_io(during)
        ),
        start_ns: g.commit.map_or(call.start.0, |c| c.start.0),
        duration_ms: span_ms,
    });
    if let Some(c) = top {
        chain.push(Link {
            what: "requests_of",
            detail: super::render::who(c),
            start_ns: g.commit.map_or(call.start.0, |c| c.start.0),
            duration_ms: span_ms,
        });
    }
    Some(via_journal(chain))
}

/// A commit on a loop device that spent it waiting on the disk under it: the loop
/// device's flush is an fsync of its backing file, which must first write back what was
/// written to the device before; when others wrote much more there than the thread, they
/// are the cause (a device cache flush behind others' writes works the same way).
fn backing_flush(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let j = g.ev.journal.as_ref()?;
    let bw = j.backing_writers.as_ref()?;
    let top = bw.contenders.first()?;
    if !(bw.bytes_others > bw.bytes_thread
        && (bw.bytes_others >= t.contention_min_bytes
            || bw.requests_others >= t.contention_min_requests))
    {
        return None;
    }
    let during = j.disk_during.as_ref()?;
    let start = g.commit.map_or(call.start.0, |c| c.start.0);
    let mut chain = vec![call_link(call, g)];
    chain.push(commit_link(g, j));
    chain.push(Link {
        what: "backing_flush",
        detail: format!(
            "{}'s flush writing back its backing file (held {:.0} ms by the disk under it)",
            during.disk, during.backing_held_ms
        ),
        start_ns: start,
        duration_ms: during.backing_held_ms,
    });
    chain.push(Link {
        what: "requests_of",
        detail: format!(
            "{} ({} written to {} in the {:.0} s before)",
            super::render::who(top),
            super::render::size(top.bytes),
            bw.disk,
            bw.window_ms / 1e3
        ),
        start_ns: start.saturating_sub((bw.window_ms * 1e6) as u64),
        duration_ms: bw.window_ms,
    });
    Some(via_journal(chain))
}

/// A commit on a loop device that waited on the disk under it (held from below for most of
/// its pause) while others' I/O dominated that disk: a neighbour flooding the disk under
/// ZooKeeper's loop device. The neighbour is the cause, not a commit slow on its own.
fn contended_below(
    call: &Span,
    g: &Gathered,
    t: &Thresholds,
    during: &LayerEvidence,
) -> Option<Finding> {
    // A jbd2 commit the call waited on, and both disks' requests known: the loop device's
    // (a pause in an incomplete history may be records lost) and the one's under it.
    let j = g.ev.journal.as_ref()?;
    if during.kind != LayerKindName::Loop || !during.complete || !held_from_below(during) {
        return None;
    }
    let layers = &g.ev.layers;
    let idx = layers.iter().position(|b| b.depth == during.depth + 1)?;
    let below = &layers[idx];
    // The disk under it working through others' requests, not paused itself (for as long
    // as a stall lasts, and most of the hold): requests in flight there that do not
    // complete hold the loop device as a stop does (the native flood test's inner loop
    // device, its backing filesystem frozen: loop0 under it had 17 requests of fsfreeze's
    // own and completed nothing for 1043 ms of its 1076 ms hold). A saturated disk's
    // shorter pauses between completions are its load's.
    let paused = below.longest_completion_gap_ms * 1e6 >= t.stall_min_ns as f64
        && below.longest_completion_gap_ms * 2.0 >= during.backing_held_ms;
    // Others' I/O there more than the loop device's own relayed (its writes, writeback of
    // what was written to it: `backing_flush`'s): otherwise the disk was busy with the
    // loop device's own traffic.
    if !contended(below, t)
        || below.bytes_others <= below.bytes_from_above
        || !below.complete
        || paused
    {
        return None;
    }
    let start = g.commit.map_or(call.start.0, |c| c.start.0);
    let span_ms = j.duration_ms;
    let mut chain = vec![call_link(call, g), commit_link(g, j)];
    chain.push(Link {
        what: "held_from_below",
        detail: format!(
            "{} completed nothing, waiting on {} under it",
            during.disk, below.disk
        ),
        start_ns: during.gap_start_ns.unwrap_or(start),
        duration_ms: during.backing_held_ms,
    });
    chain.push(Link {
        what: "device_queue",
        detail: format!(
            "{} busy with {}",
            below.disk,
            super::render::others_io(below)
        ),
        start_ns: start,
        duration_ms: span_ms,
    });
    if let Some(c) = g.contenders_by_layer.get(idx).and_then(|c| c.first()) {
        chain.push(Link {
            what: "requests_of",
            detail: super::render::who(c),
            start_ns: start,
            duration_ms: span_ms,
        });
    }
    Some(Finding {
        layer: Some(idx),
        ..via_journal(chain)
    })
}

/// The journal commit the call waited on, as a link of its chain.
fn commit_link(g: &Gathered, j: &crate::attribution::evidence::JournalEvidence) -> Link {
    Link {
        what: "journal_commit",
        detail: format!("transaction {}", j.transaction),
        start_ns: g.commit.map_or(0, |c| c.start.0),
        duration_ms: j.duration_ms,
    }
}

/// Others' I/O, through the journal commit the call waited on.
fn via_journal(chain: Vec<Link>) -> Finding {
    Finding {
        verdict: Verdict::DeviceContention,
        via: Some("journal"),
        chain,
        layer: Some(0),
        stage: Some(Stage::JournalWait),
    }
}

/// A jbd2 commit's loop device that the disk under it held for part of its pause, too
/// little for `contended_below`, while others' I/O dominated that disk over the call (and
/// was more than the loop device's own relayed there): (the commit's disk, the disk under
/// it). Neither "slow on its own" nor the neighbour's contention can be said.
pub(crate) fn busy_below<'a>(
    g: &'a Gathered,
    t: &Thresholds,
) -> Option<(&'a LayerEvidence, &'a LayerEvidence)> {
    let during = g.ev.journal.as_ref()?.disk_during.as_ref()?;
    if during.kind != LayerKindName::Loop || during.backing_held_ms <= 0.0 {
        return None;
    }
    let below = g.ev.layers.iter().find(|b| b.depth == during.depth + 1)?;
    (contended(below, t) && below.complete && below.bytes_others > below.bytes_from_above)
        .then_some((during, below))
}

/// Waited for a journal commit that was slow on its own. "On its own" is a claim about
/// the disks too (none stalled, none was contended): with any disk's requests during the
/// call or the commit not all known, the rules cannot make it, and the call stays unknown
/// with what is missing named. So it does when the disk under the commit's loop device was
/// busy with others' I/O and held the commit for part of its pause (a neighbour's flood
/// beginning under ZooKeeper's loop device: fio's 20 MB on vda over a 17 ms call, whose
/// commit loop0 paused 8 ms, 3 of them waiting on vda).
fn journal_wait(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let jw = g.journal_ns;
    if share(g, jw) < t.dominant_share
        || !journal_leads(g)
        || !disks_known(g)
        || hidden_contention(g, t)
        || busy_below(g, t).is_some()
    {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    if let Some(j) = &g.ev.journal {
        chain.push(commit_link(g, j));
    }
    Some(Finding {
        verdict: Verdict::JournalWait,
        via: None,
        chain,
        layer: None,
        stage: Some(Stage::JournalWait),
    })
}

/// Waited at the device (queued, or for its own writeback) while others' I/O dominated
/// the disk.
fn device_contention(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let wait =
        g.stage(Stage::DeviceQueue) + g.stage(Stage::DeviceService) + g.stage(Stage::WritebackWait);
    if share(g, wait) < t.dominant_share {
        return None;
    }
    // A layer under the file's own is only where the call waited if every layer above it
    // is known: one that is not (an unfollowed request in flight on a stopped loop device)
    // may be where it really waited, whatever the disk under it did (seen in the 6.1 guest:
    // jbd2's small writes on vda named while loop1 above it was stopped).
    let layers = &g.ev.layers;
    let (idx, le) = layers.iter().enumerate().find(|(_, l)| {
        contended(l, t)
            && l.complete
            && layers
                .iter()
                .filter(|a| a.depth < l.depth)
                .all(|a| a.complete)
    })?;
    let mut chain = vec![call_link(call, g)];
    chain.extend(backing_link(g, t));
    chain.push(Link {
        what: "device_queue",
        detail: format!("{} busy with {}", le.disk, super::render::others_io(le)),
        start_ns: call.start.0,
        duration_ms: ms(wait),
    });
    if let Some(c) = g.contenders_by_layer.get(idx).and_then(|c| c.first()) {
        chain.push(Link {
            what: "requests_of",
            detail: super::render::who(c),
            start_ns: call.start.0,
            duration_ms: ms(wait),
        });
    }
    Some(Finding {
        verdict: Verdict::DeviceContention,
        via: Some(if g.by_site.contains_key(&Site::BlockQueue) {
            "block_queue"
        } else {
            "writeback"
        }),
        chain,
        layer: Some(idx),
        stage: Some(Stage::DeviceQueue),
    })
}

/// Its own I/O dominates and the disk answered at its usual speed.
fn own_io(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let wait = g.stage(Stage::DeviceQueue)
        + g.stage(Stage::DeviceService)
        + g.stage(Stage::ShortDeviceWaits);
    let le = g.ev.layers.first()?;
    // Not its own when the layer spent most of that wait held by the disk under it (a
    // loop device whose backing file's disk was busy with others): the wait is theirs.
    // "Others' I/O was small" and "its usual speed" need all of the disk's requests.
    if share(g, wait) < t.dominant_share
        || !le.complete
        || le.bytes_thread == 0
        || (le.bytes_thread < le.bytes_others && contended(le, t))
        || unknown_could_contend(le, t)
        || le.backing_held_ms * 1e6 >= t.stall_share * wait as f64
    {
        return None;
    }
    let slow = match (&le.latency_ms, le.usual_p50_ms) {
        (Some(l), Some(usual)) if usual > 0.0 => l.p50 > usual * t.slow_factor,
        (Some(l), _) => l.p50 > t.slow_abs_ms,
        (None, _) => true,
    };
    if slow {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "device",
        detail: format!(
            "{} writing its own {}",
            le.disk,
            super::render::size(le.bytes_thread)
        ),
        start_ns: call.start.0,
        duration_ms: ms(wait),
    });
    Some(Finding {
        verdict: Verdict::OwnIo,
        via: None,
        chain,
        layer: Some(0),
        stage: Some(Stage::DeviceService),
    })
}

/// Blocked in the filesystem (a lock, a frozen filesystem) with nothing of its own in
/// flight.
fn fs_blocked(call: &Span, g: &Gathered, t: &Thresholds) -> Option<Finding> {
    let s = g.stage(Stage::FsLock);
    if share(g, s) < t.dominant_share {
        return None;
    }
    let mut chain = vec![call_link(call, g)];
    chain.push(Link {
        what: "fs_wait",
        detail: g
            .ev
            .wait_frame
            .clone()
            .unwrap_or_else(|| "a filesystem lock".into()),
        start_ns: call.start.0,
        duration_ms: ms(s),
    });
    Some(Finding {
        verdict: Verdict::FsBlocked,
        via: None,
        chain,
        layer: None,
        stage: Some(Stage::FsLock),
    })
}
