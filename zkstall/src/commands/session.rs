//! A tracing session: find the targets, load the probes, seed what is already running,
//! attach, and stream every record through the pipeline; then close what is still open
//! (off-CPU intervals, requests in flight, calls still running) from the kernel's maps,
//! and report everything that was lost. `trace` and `agent` drive one each, with their own
//! event loops around [`Session::next`], [`Session::record`] and [`Session::tick`].
//!
//! Everything the pipeline consumes (kernel records, notes of what userspace saw, facts)
//! also goes to the recording and to the tap (the agent's flight recorder), in the order
//! it was consumed: `report` replays it exactly.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;
use zkstall_common::{
    BLOCKED_OPEN, BLOCKED_SEEDED, BlockedEvent, CALL_AFTER, CALL_FAST, CALL_START_BOUND, Counter,
    EventKind, Inflight, IoEvent, RQ_OPEN, THREAD_AFTER, THREAD_OFF, THREAD_PENDING,
    THREAD_PENDING_FAST, ThreadState,
};

use crate::{
    clock::{MonoNs, WallClock},
    decode::record_bytes,
    enrich::{DevId, FileDev, Live, Topology},
    history::HistoryLimits,
    pipeline::{Note, Pipeline},
    probes::{KernelCounters, Probes, btf::Btf, layout, tracefs::Tracefs},
    reader::{Batch, Reader},
    recording::{
        self, DeviceInfo, FrameOut, Header, OtherDisk, TargetInfo, Trailer, UnseenDisk, Writer,
    },
    sinks::{DisabledSignal, Sink, Summary},
    targets::{self, ProcRoot, Target},
    threads_now,
};

/// How often calls crossing the threshold and losses are looked for.
pub const TICK: Duration = Duration::from_millis(100);
/// How often exited targets are noticed, and (without --pid) new ZooKeepers found.
const TARGET_EVERY: u32 = 5;
const REDISCOVER_EVERY: u32 = 10;
/// How often watched disks' completions are checked against the block layer's count.
const DISK_CHECK_EVERY: u32 = 10;
/// With --threshold 0 every call is reported when it ends; a call still running is
/// reported as it crosses this.
const CROSSING_AT_ZERO: Duration = Duration::from_secs(1);

/// What to trace and how to report it.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub pids: Vec<u32>,
    pub duration: Option<Duration>,
    pub threshold: Duration,
    pub events: bool,
    pub blocked_min: Duration,
    pub output: Option<std::path::PathBuf>,
    /// Replace an existing --output file.
    pub force: bool,
    /// Disks to watch besides those behind the targets' files.
    pub disks: Vec<String>,
    /// Only processes in these cgroups (or below), as /proc/PID/cgroup paths.
    pub cgroups: Vec<String>,
    /// How much history the pipeline keeps (the agent's are smaller).
    pub history: HistoryLimits,
    /// Records queued between the ring-buffer reader and the pipeline at most (then the
    /// reader sheds, counted).
    pub channel_records: usize,
    /// Name a JVM's threads that started before tracing with `jcmd PID Thread.print` (once,
    /// where the kernel's names are cut or missing; it costs the JVM a safepoint).
    pub jcmd: bool,
    /// Which requests on the watched disks are sent one by one.
    pub requests: Requests,
}

/// Which requests on the watched disks the kernel sends one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Requests {
    /// Every request.
    All,
    /// Those a watched call of a traced process overlapped, the traced processes' own,
    /// those slower than 10 ms (queue to completion) and any unusual one (an error, a
    /// requeue, a partial completion); the rest are summed per disk each second
    /// (count, bytes, service-time histogram). What a verdict looks at is the same; a
    /// busy neighbour on the disk costs far less.
    AroundCalls,
}

/// With `--requests around-calls`, requests from this slow (queue to completion) are sent
/// one by one even when no call overlapped them.
pub const IO_SLOW: Duration = Duration::from_millis(10);
/// Ticks between two reads of the kernel's request summaries.
const SUMMARY_EVERY: u32 = 10;

/// The device a `--disk` argument names: `sdb`, `7:3`, or a path on it.
pub fn resolve_disk_arg(arg: &str) -> anyhow::Result<DevId> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if let Some(d) = DevId::parse(arg) {
        return Ok(d);
    }
    let name = arg.strip_prefix("/dev/").unwrap_or(arg);
    if !name.contains('/')
        && let Ok(s) = std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        && let Some(d) = DevId::parse(&s)
    {
        return Ok(d);
    }
    let meta = std::fs::metadata(arg).with_context(|| {
        format!("--disk {arg}: not a block device name (see /sys/class/block), MAJ:MIN, or an existing path")
    })?;
    Ok(if meta.file_type().is_block_device() {
        DevId::from_dev_t(meta.rdev())
    } else {
        DevId::from_dev_t(meta.dev())
    })
}

/// The pipeline plus the recording: everything consumed goes through here, so the
/// recording holds exactly what the live run saw, in order.
struct Feed<'s> {
    pipeline: Pipeline,
    writer: Option<Writer>,
    /// Another consumer of every frame (the agent's flight recorder).
    tap: Option<&'s mut dyn FrameOut>,
    sink: &'s mut dyn Sink,
    topology: Topology,
    /// Records the reader shed, in all.
    shed_total: u64,
    /// Helper kernel threads added to the targets.
    helpers: BTreeSet<u32>,
    /// A disk was watched since the last disk check: the session checks at once, so the
    /// new disk's first counts are taken now, not up to a second later (a completion
    /// missed in between would be in the totals but in no window).
    newly_watched: bool,
}

impl Feed<'_> {
    fn facts(&mut self) -> anyhow::Result<()> {
        if self.writer.is_none() && self.tap.is_none() {
            return Ok(());
        }
        for f in self.pipeline.take_facts() {
            if let Some(w) = &mut self.writer {
                w.fact(&f).context("writing the recording")?;
            }
            if let Some(t) = &mut self.tap {
                t.fact(&f).context("recording a fact")?;
            }
        }
        Ok(())
    }

    fn kernel(&mut self, rec: &[u8], probes: &mut Probes) -> anyhow::Result<()> {
        self.pipeline
            .handle(rec, self.sink)
            .context("writing output")?;
        self.facts()?;
        if let Some(w) = &mut self.writer {
            w.kernel(rec).context("writing the recording")?;
        }
        if let Some(t) = &mut self.tap {
            t.kernel(rec).context("recording a kernel record")?;
        }
        self.watch_wanted(probes)
    }

    fn note(&mut self, n: Note, probes: &mut Probes) -> anyhow::Result<()> {
        self.record(&n)?;
        self.watch_wanted(probes)
    }

    /// Hands a note to the pipeline and the recording (after the facts it asked for).
    fn record(&mut self, n: &Note) -> anyhow::Result<()> {
        self.pipeline.note(n, self.sink).context("writing output")?;
        self.facts()?;
        if let Some(w) = &mut self.writer {
            w.note(n).context("writing the recording")?;
        }
        if let Some(t) = &mut self.tap {
            t.note(n).context("recording a note")?;
        }
        Ok(())
    }

    /// The kernel threads to trace now: those the pipeline saw traced calls wait on, and
    /// the journal thread of each traced filesystem first seen (from now: a commit slow
    /// because it could not get a CPU is seen as such from the first one).
    fn wanted_helpers(&mut self) -> Vec<(u32, String)> {
        let mut wanted = self.pipeline.take_wanted_helpers();
        // Every filesystem first seen since the last look, found in one walk of /proc.
        let named: Vec<(crate::enrich::FileDev, String)> = self
            .pipeline
            .take_wanted_journals()
            .into_iter()
            .filter_map(|dev| Some((dev, self.topology.name_of(dev.0)?)))
            .collect();
        let names: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
        let tids = crate::enrich::threads::journal_threads(&ProcRoot::default(), &names);
        for ((dev, _), tid) in named.iter().zip(tids) {
            if let Some(tid) = tid
                && !self.helpers.contains(&tid)
                && !wanted.iter().any(|(t, _)| *t == tid)
            {
                wanted.push((tid, format!("journal of {}", dev.0)));
            }
        }
        wanted
    }

    /// Traces kernel thread `tid`; asleep now (a journal thread between commits), its
    /// sleep is sent when it ends, so its first wakeup's wait for a CPU is seen too.
    fn trace_helper(&mut self, probes: &mut Probes, tid: u32, why: String) -> anyhow::Result<()> {
        if let Err(e) = probes.add_target(tid) {
            tracing::warn!("cannot trace {why} (tid {tid}): {e}");
            return Ok(());
        }
        self.helpers.insert(tid);
        let proc = ProcRoot::default();
        if let Some(st) = threads_now::state(&proc, tid, tid)
            .and_then(|state| asleep_since(MonoNs::now(), tid, state, -1))
            && let Err(e) = probes.seed_thread(tid, st)
        {
            tracing::debug!("cannot seed {why} (tid {tid}): {e}");
        }
        let comm = threads_now::comm(&proc, tid, tid);
        tracing::debug!("tracing {comm} ({tid}), the {why}");
        let n = Note::Helper {
            ts_ns: MonoNs::now().0,
            pid: tid,
            comm,
            why,
        };
        self.record(&n)
    }

    /// Watches the disks the pipeline found traced files on (and their partitions), and
    /// traces the kernel threads it found traced calls waiting on.
    fn watch_wanted(&mut self, probes: &mut Probes) -> anyhow::Result<()> {
        for (tid, why) in self.wanted_helpers() {
            self.trace_helper(probes, tid, why)?;
        }
        for (disk, name, why) in self.pipeline.take_wanted_disks() {
            for dev in self.topology.disk_and_partitions(disk) {
                if let Err(e) = probes.watch_dev(dev.to_kernel()) {
                    tracing::warn!("cannot watch {name} ({dev}): {e}");
                }
            }
            self.newly_watched = true;
            tracing::debug!("watching {name} ({disk}) for {why}");
            let (backing_bdi, backing_ino) = loop_backing(&self.topology, disk);
            let n = Note::Watch {
                ts_ns: MonoNs::now().0,
                disk: disk.to_string(),
                name,
                why,
                backing_bdi,
                backing_ino,
            };
            self.record(&n)?;
        }
        for (disk, name) in self.pipeline.take_unwanted_disks() {
            for dev in self.topology.disk_and_partitions(disk) {
                if let Err(e) = probes.unwatch_dev(dev.to_kernel()) {
                    tracing::warn!("cannot stop watching {name} ({dev}): {e}");
                }
            }
            tracing::debug!("no traced process uses {name} ({disk}) any more: not watched");
            let n = Note::Unwatch {
                ts_ns: MonoNs::now().0,
                disk: disk.to_string(),
                name,
            };
            self.record(&n)?;
        }
        Ok(())
    }
}

/// Each watched disk's completions as the block layer counts them (/proc/diskstats)
/// against the probes' count, every second and at once when a disk is newly watched (its
/// first counts are taken then): the kernel can skip a program's run without
/// counting it anywhere (see enrich/diskstats.rs), and a skipped completion leaves a
/// request that looks in flight for ever. A shortfall marks the disk's history incomplete
/// over that second; requests held in flight that the disk no longer has are dropped.
///
/// Each second's comparison gives the probes the benefit of the doubt (their count is
/// read on both sides of the block layer's), so a shortfall can hide in that slack second
/// after second and still show in the run's totals, which compare once from start to end.
/// The same comparison from the disk's first check on catches it up: what it finds beyond
/// what was already noted is noted over the last two seconds (a miss hidden in one check's
/// slack shows at the next).
#[derive(Default)]
struct DiskCheck {
    at: Option<MonoNs>,
    /// The check before the last.
    before_at: Option<MonoNs>,
    /// By disk (kernel dev_t): the probes' count read before the block layer's, and the
    /// block layer's, at the last check.
    last: BTreeMap<u32, (u64, u64)>,
    /// By disk: the comparison from its first check on.
    run_long: BTreeMap<u32, RunLong>,
    /// Requests judged stale at a check, by disk: dropped only if they still are at a later
    /// one (see [`confirm_stale`]).
    suspects: BTreeMap<u32, Suspects>,
    /// What may account for requests found stale (see [`drop_stale_requests`]).
    lost: StaleBudget,
    /// The maps' refusals (`map_busy`) at the last check.
    busy_at: u64,
}

/// What may account for requests found stale at a check, each thing for one request issued
/// before it: completions the block layer counted on a disk beyond the probes' (by disk,
/// dated by the end of the window they were noted over), and the maps' refusals counted as
/// `map_busy` (any disk, dated by the check that found them; some of them refused the
/// removal of a completed request's entry). A few hundred of each at most, the oldest
/// forgotten first.
#[derive(Default)]
struct StaleBudget {
    unseen: BTreeMap<u32, VecDeque<(u64, u64)>>,
    busy: VecDeque<(u64, u64)>,
}

impl StaleBudget {
    const KEPT: usize = 256;

    fn add(q: &mut VecDeque<(u64, u64)>, at: u64, n: u64) {
        if n == 0 {
            return;
        }
        if q.len() >= Self::KEPT {
            q.pop_front();
        }
        q.push_back((at, n));
    }

    /// Takes one thing that happened after `issued` from `q`, if any.
    fn take_one(q: &mut VecDeque<(u64, u64)>, issued: u64) -> bool {
        let Some(e) = q.iter_mut().find(|(at, n)| *at > issued && *n > 0) else {
            return false;
        };
        e.1 -= 1;
        q.retain(|(_, n)| *n > 0);
        true
    }

    /// Of `stale` (issued at, rq; oldest first) on disk `k`, those something lost since
    /// their issue accounts for: unseen completions on `k` first, then refusals. Stops at
    /// the first one nothing accounts for (a newer one has less to draw from).
    fn accounted(&mut self, k: u32, stale: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for r in stale {
            let unseen = self.unseen.entry(k).or_default();
            if !Self::take_one(unseen, r.0) && !Self::take_one(&mut self.busy, r.0) {
                break;
            }
            out.push(r);
        }
        out
    }
}

/// Requests (issued at, rq) judged stale at a check, and when.
#[derive(Debug, Default)]
struct Suspects {
    at: u64,
    requests: Vec<(u64, u64)>,
}

/// A request judged stale is dropped when judged so again at least this much later.
const STALE_CONFIRM_NS: u64 = 500_000_000;

/// One disk's comparison from its first check on.
#[derive(Default)]
struct RunLong {
    /// (the probes' count read before the block layer's, the block layer's) at the first
    /// check.
    first: Option<(u64, u64)>,
    /// Completions noted unseen since.
    noted: u64,
}

/// Requests issued longer ago than this that the disk does not count in flight are stale.
const STALE_AFTER_NS: u64 = 1_000_000_000;

impl DiskCheck {
    fn run(
        &mut self,
        probes: &mut Probes,
        feed: &mut Feed,
        op_flush: u32,
        now: MonoNs,
    ) -> anyhow::Result<()> {
        let disks: Vec<(crate::enrich::DiskDev, String)> = feed
            .pipeline
            .watched()
            .iter()
            .map(|(d, n)| (*d, n.clone()))
            .collect();
        // A disk no longer watched starts over if it is watched again (its completions
        // in between were counted as an unwatched disk's).
        let watched: BTreeSet<u32> = disks.iter().map(|(d, _)| d.0.to_kernel()).collect();
        self.run_long.retain(|k, _| watched.contains(k));
        self.suspects.retain(|k, _| watched.contains(k));
        self.lost.unseen.retain(|k, _| watched.contains(k));
        let mut notes = self.unseen_completions(probes, &disks, now);
        self.count_refusals(probes, now);
        notes.extend(drop_stale_requests(
            probes,
            &disks,
            op_flush,
            now,
            &mut self.suspects,
            &mut self.lost,
        ));
        for n in notes {
            tracing::debug!("{n:?}");
            feed.record(&n)?;
        }
        Ok(())
    }

    /// Each watched disk's completions the block layer counted beyond the probes' (its
    /// second's shortfall, and what the comparison from its first check catches up), as
    /// notes, and kept to account for stale requests.
    fn unseen_completions(
        &mut self,
        probes: &Probes,
        disks: &[(crate::enrich::DiskDev, String)],
        now: MonoNs,
    ) -> Vec<Note> {
        let before: BTreeMap<u32, u64> = disks
            .iter()
            .map(|(d, _)| (d.0.to_kernel(), probes.watched_completions(d.0.to_kernel())))
            .collect();
        let block = crate::enrich::diskstats::DiskStats::read(
            std::path::Path::new("/proc"),
            std::path::Path::new("/sys"),
        );
        let mut notes = Vec::new();
        let mut next = BTreeMap::new();
        for (disk, name) in disks {
            let k = disk.0.to_kernel();
            let Some(&d_now) = block.0.get(&k) else {
                continue;
            };
            let a_now = before.get(&k).copied().unwrap_or(0);
            let b_now = probes.watched_completions(k);
            let prev = self.at.and(self.last.get(&k).copied());
            let (unseen, catch_up) = self
                .run_long
                .entry(k)
                .or_default()
                .shortfall(prev, (a_now, d_now, b_now));
            StaleBudget::add(
                self.lost.unseen.entry(k).or_default(),
                now.0,
                unseen + catch_up,
            );
            // The second's own shortfall, then the one caught up over the last two.
            for (from, completions) in [(self.at, unseen), (self.before_at.or(self.at), catch_up)] {
                if let Some(from) = from.filter(|_| completions > 0) {
                    notes.push(Note::Unseen {
                        from_ns: from.0,
                        to_ns: now.0,
                        disk: disk.to_string(),
                        name: name.clone(),
                        completions,
                        stale: 0,
                    });
                }
            }
            next.insert(k, (a_now, d_now));
        }
        self.last = next;
        self.before_at = self.at;
        self.at = Some(now);
        notes
    }

    /// The maps' refusals since the last check, kept to account for stale requests.
    fn count_refusals(&mut self, probes: &Probes, now: MonoNs) {
        if let Ok(c) = probes.counters() {
            let busy = c.get(Counter::MapBusy);
            StaleBudget::add(
                &mut self.lost.busy,
                now.0,
                busy.saturating_sub(self.busy_at),
            );
            self.busy_at = busy;
        }
    }
}

impl RunLong {
    /// One disk at one check: the completions unseen over the last second, and those
    /// found only by comparing from the disk's first check (beyond what was noted since).
    /// `prev` is (the probes' count read before the block layer's, the block layer's) at
    /// the last check; `now` is (probes before, block layer, probes after). Both are lower
    /// bounds: the probes' count is read on both sides of the block layer's. The first
    /// counts are taken (and the noted ones cleared) on the disk's first check, or when
    /// the probes' count went back (its entry was evicted).
    fn shortfall(
        &mut self,
        prev: Option<(u64, u64)>,
        (a_now, d_now, b_now): (u64, u64, u64),
    ) -> (u64, u64) {
        let went_back = prev.is_some_and(|(a_prev, _)| b_now < a_prev);
        let mut unseen = 0;
        if let Some((a_prev, d_prev)) = prev
            && !went_back
        {
            unseen = d_now.saturating_sub(d_prev).saturating_sub(b_now - a_prev);
        }
        self.noted += unseen;
        match self.first {
            Some((a_first, d_first)) if b_now >= a_first && !went_back => {
                let short = d_now
                    .saturating_sub(d_first)
                    .saturating_sub(b_now - a_first);
                let catch_up = short.saturating_sub(self.noted);
                self.noted += catch_up;
                (unseen, catch_up)
            }
            _ => {
                self.first = Some((a_now, d_now));
                self.noted = 0;
                (unseen, 0)
            }
        }
    }
}

/// Requests the kernel's map holds as issued on a disk whose own in-flight count
/// (/sys/dev/block/D/inflight, counted by the block layer when the queue's iostats is on)
/// is lower: the oldest of them, issued over a second ago, completed unseen, if they still
/// are at the next check (see [`confirm_stale`]), and only as far as something lost since
/// their issue accounts for them (`lost`): a completion the block layer counted on that
/// disk beyond the probes', or a map's refusal. Flushes are never counted by the block
/// layer in flight, so they are never judged.
///
/// An entry can only outlive its request if its completion went unseen (the block layer
/// then completed one more than the probes saw) or its removal was refused (counted), both
/// after the request's issue.
/// Without either, a lower in-flight count says nothing of which request is not in flight,
/// and taking the oldest took the very request a stuck call waited on: in CI, a device
/// stopped under a call (6.18 natively, with no completion unseen and no refusal; and in
/// the 6.1 guest) had a request it held judged completed unseen, and the stall became
/// `unknown`. Such a request now stays, and the call keeps its evidence.
fn drop_stale_requests(
    probes: &mut Probes,
    disks: &[(crate::enrich::DiskDev, String)],
    op_flush: u32,
    now: MonoNs,
    suspects: &mut BTreeMap<u32, Suspects>,
    lost: &mut StaleBudget,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let requests = probes.requests().unwrap_or_default();
    for (disk, name) in disks {
        let k = disk.0.to_kernel();
        let Some(judged) = beyond_block_count(&requests, *disk, op_flush, now) else {
            suspects.remove(&k);
            continue;
        };
        let stale = lost.accounted(
            k,
            confirm_stale(suspects.entry(k).or_default(), judged, now.0),
        );
        if stale.is_empty() {
            continue;
        }
        for (_, rq) in &stale {
            probes.remove_request(*rq);
        }
        notes.push(Note::Unseen {
            from_ns: stale[0].0,
            to_ns: now.0,
            disk: disk.to_string(),
            name: name.clone(),
            completions: 0,
            stale: stale.len() as u64,
        });
    }
    notes
}

/// The requests (issued at, rq; oldest first) the kernel's map holds as issued on `disk`
/// beyond the block layer's own in-flight count there, of those the oldest, issued over
/// [`STALE_AFTER_NS`] before `now`. None when the map holds no more than the block layer
/// counts, or the disk keeps no count.
fn beyond_block_count(
    requests: &[(u64, zkstall_common::Request)],
    disk: crate::enrich::DiskDev,
    op_flush: u32,
    now: MonoNs,
) -> Option<Vec<(u64, u64)>> {
    let k = disk.0.to_kernel();
    let mut issued: Vec<(u64, u64)> = requests
        .iter()
        .filter(|(_, r)| counted_in_flight(r, k, op_flush))
        .map(|(rq, r)| (r.issue_ns, *rq))
        .collect();
    if issued.is_empty() {
        return None;
    }
    let kernel_inflight = block_inflight(disk)?;
    if issued.len() as u64 <= kernel_inflight {
        return None;
    }
    issued.sort();
    let excess = issued.len() - kernel_inflight as usize;
    Some(
        issued
            .into_iter()
            .take(excess)
            .filter(|(at, _)| now.0.saturating_sub(*at) > STALE_AFTER_NS)
            .collect(),
    )
}

/// Of the requests (issued at, rq) judged stale `now`, those judged so at a check at least
/// [`STALE_CONFIRM_NS`] before (the same request: same rq, same issue instant); the rest
/// become the suspects. A check sooner than that (a disk newly watched runs one at once)
/// confirms nothing and keeps the suspects as they were.
///
/// One look cannot tell a request that completed unseen from one completing while it is
/// taken: the block layer stops counting a request in flight before the completion
/// tracepoint runs, and the map is read before the in-flight count. A stopped disk that
/// resumes while a check runs then has requests issued seconds ago that look stale for
/// an instant (the likely cause of the 6.1 guest's device stops whose evidence was marked
/// incomplete, so that no verdict could be given). A request that completed unseen is
/// still in the map half a second later; one that was completing is not.
fn confirm_stale(s: &mut Suspects, judged: Vec<(u64, u64)>, now: u64) -> Vec<(u64, u64)> {
    if !s.requests.is_empty() && now.saturating_sub(s.at) < STALE_CONFIRM_NS {
        return Vec::new();
    }
    let (confirmed, new): (Vec<_>, Vec<_>) =
        judged.into_iter().partition(|r| s.requests.contains(r));
    *s = Suspects {
        at: now,
        requests: new,
    };
    confirmed
}

/// For a loop device: the bdi (its disk's `MAJ:MIN`) and inode of its backing file.
fn loop_backing(topo: &Topology, disk: crate::enrich::DiskDev) -> (Option<String>, Option<u64>) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(f) = std::fs::read_to_string(format!("/sys/dev/block/{disk}/loop/backing_file")) else {
        return (None, None);
    };
    let Ok(meta) = std::fs::metadata(f.trim()) else {
        return (None, None);
    };
    let fs = topo.resolve(FileDev(DevId::from_dev_t(meta.dev())));
    match fs.top() {
        Some(l) => (Some(l.disk.to_string()), Some(meta.ino())),
        None => (None, None),
    }
}

/// One tracing run, from loading the probes to the summary.
pub struct Session<'s> {
    opts: TraceOptions,
    proc: ProcRoot,
    probes: Probes,
    feed: Feed<'s>,
    reader: Reader,
    rx: mpsc::Receiver<Batch>,
    /// Targets alive now, and every pid traced.
    live: BTreeMap<u32, Target>,
    all_pids: BTreeSet<u32>,
    explicit: bool,
    crossing: Duration,
    crossed: HashMap<(u32, u64), u64>,
    last_check: MonoNs,
    last_counters: KernelCounters,
    ticks: u32,
    started: MonoNs,
    start_totals: KernelTotals,
    wall: WallClock,
    disabled: Vec<DisabledSignal>,
    req_bits: crate::probes::ReqBits,
    stopping: bool,
    waiting_logged: bool,
    disk_check: DiskCheck,
    /// The kernel's request summaries at the last read (`--requests around-calls`), and
    /// when it was.
    summed: Vec<(u32, zkstall_common::IoSummary)>,
    summed_at: MonoNs,
    /// By disk, the kernel's count of requests in flight unfollowed that is drift, not
    /// requests (see [`LateBase`]).
    late_base: LateBase,
}

impl<'s> Session<'s> {
    /// Loads and attaches everything and starts reading; `on_attached` runs once the
    /// probes are live, with the targets found. Without --pid and no ZooKeeper running,
    /// it waits for one (found within a second of its start).
    pub async fn start(
        opts: &TraceOptions,
        sink: &'s mut dyn Sink,
        tap: Option<&'s mut dyn FrameOut>,
        on_attached: impl FnOnce(&[Target]),
    ) -> anyhow::Result<Session<'s>> {
        // A recording is never written over by accident: refused before anything else.
        if let Some(out) = &opts.output
            && !opts.force
            && std::fs::symlink_metadata(out).is_ok()
        {
            bail!(
                "{} exists: choose another --output, or add --force to overwrite it",
                out.display()
            );
        }
        let proc = ProcRoot::default();
        let explicit = !opts.pids.is_empty();
        let mut initial = if explicit {
            targets::explicit(&proc, &opts.pids)?
        } else {
            targets::discover_zookeeper(&proc)?
        };
        initial.retain(|t| targets::in_cgroups(&proc, t.pid, &opts.cgroups));
        if explicit && initial.is_empty() {
            bail!(
                "none of --pid {} is in --cgroup {}: check /proc/PID/cgroup",
                opts.pids
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                opts.cgroups.join(", ")
            );
        }

        if let Err(why) = super::privileges() {
            bail!("cannot trace: {why}");
        }
        let tracefs = Tracefs::find_or_mount()?;
        if tracefs.mounted_by_us {
            tracing::info!(
                "tracefs was not mounted; mounted it at {}",
                tracefs.root.display()
            );
        }
        let btf = match Btf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!("no usable BTF ({e}): block requests are not traced");
                None
            }
        };
        let mut layout = layout::build(&tracefs, btf.as_ref())?;
        drop(btf);
        // Slow writes are what matters; a JVM makes too many fast ones to ship them all.
        layout.config.write_min_ns = opts.threshold.as_nanos() as u64;
        // Off-CPU intervals of the target's threads feed the verdicts (and --events).
        layout.config.blocked_min_ns = opts.blocked_min.as_nanos() as u64;
        layout.config.io_slow_ns = match opts.requests {
            Requests::All => 0,
            Requests::AroundCalls => IO_SLOW.as_nanos() as u64,
        };
        for d in &layout.disabled {
            tracing::warn!("signal {} is off on this kernel: {}", d.signal, d.reason);
        }
        let disabled: Vec<DisabledSignal> = layout
            .disabled
            .iter()
            .map(|d| DisabledSignal {
                signal: d.signal.into(),
                reason: d.reason.clone(),
            })
            .collect();
        let req_bits = layout.req_bits;

        let mut probes = Probes::load(layout)?;
        let wall = WallClock::sample();
        sink.clock(&wall);
        let mut enrich = Live::new(proc.clone(), "/sys").preload();
        if opts.output.is_some() || tap.is_some() {
            enrich = enrich.recording();
        }
        let pipeline = Pipeline::new(Box::new(enrich), wall, opts.threshold.as_nanos() as u64)
            .with_events(opts.events)
            .with_req_bits(req_bits)
            .with_history_limits(opts.history);

        // Reader first, then targets (seeded), then attach: nothing is missed between.
        let ring = probes.take_events()?;
        let (tx, rx) = mpsc::channel(crate::reader::channel_batches(opts.channel_records));
        let reader = Reader::spawn(ring, tx).context("starting the ring-buffer reader")?;

        let started = MonoNs::now();
        let writer = match &opts.output {
            Some(path) => {
                let header = header(
                    &initial,
                    &proc,
                    wall,
                    started,
                    opts.threshold,
                    opts.blocked_min,
                    &disabled,
                    req_bits,
                );
                Some(Writer::create_with(path, &header, opts.force).map_err(|e| match e {
                    crate::recording::RecordingError::Open(p, e)
                        if e.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        anyhow::anyhow!(
                            "{p} exists: choose another --output, or add --force to overwrite it"
                        )
                    }
                    e => e.into(),
                })?)
            }
            None => None,
        };
        let feed = Feed {
            pipeline,
            writer,
            tap,
            sink,
            topology: Topology::new("/sys"),
            shed_total: 0,
            helpers: BTreeSet::new(),
            newly_watched: false,
        };
        let last_counters = probes.counters()?;
        let start_totals = KernelTotals::read(&probes);
        let mut s = Session {
            opts: opts.clone(),
            proc,
            probes,
            feed,
            reader,
            rx,
            live: BTreeMap::new(),
            all_pids: BTreeSet::new(),
            explicit,
            crossing: if opts.threshold.is_zero() {
                CROSSING_AT_ZERO
            } else {
                opts.threshold
            },
            crossed: HashMap::new(),
            last_check: MonoNs::now(),
            last_counters,
            ticks: 0,
            started,
            start_totals,
            wall,
            disabled,
            req_bits,
            stopping: false,
            waiting_logged: false,
            disk_check: DiskCheck::default(),
            summed: Vec::new(),
            summed_at: MonoNs::now(),
            late_base: LateBase::default(),
        };
        for d in &opts.disks {
            let dev = resolve_disk_arg(d)?;
            s.feed
                .pipeline
                .want_disks_of(FileDev(dev), None, &format!("--disk {d}"));
        }
        s.feed.watch_wanted(&mut s.probes)?;
        for t in &initial {
            s.add(t)?;
        }
        s.probes.attach()?;
        match s.probes.attach_heartbeat() {
            Ok(cpus) => {
                let n = Note::Host {
                    ts_ns: MonoNs::now().0,
                    cpus,
                };
                s.feed.note(n, &mut s.probes)?;
            }
            Err(e) => tracing::info!(
                "no per-CPU heartbeat ({e}): a whole-host pause (a VM stopped by its hypervisor) cannot be told from a device stall"
            ),
        }
        s.start_totals.rebase_disks(&s.probes);
        // The disk check's first counts, taken with the run's own: a completion the probes
        // miss in the first second is then in a window like any other, not only in the
        // totals.
        s.feed.newly_watched = false;
        s.disk_check.run(
            &mut s.probes,
            &mut s.feed,
            s.req_bits.op_flush,
            MonoNs::now(),
        )?;
        let desc: Vec<String> = initial
            .iter()
            .map(|t| format!("{} ({}, {})", t.pid, t.comm, t.reason))
            .collect();
        let which = if opts.threshold.is_zero() {
            "every call".to_string()
        } else {
            format!("calls >= {}", humantime::format_duration(opts.threshold))
        };
        tracing::info!(
            "tracing {} process(es): {}; reporting {which}; Ctrl-C to stop",
            initial.len(),
            desc.join(", "),
        );
        if initial.is_empty() {
            tracing::info!(
                "no ZooKeeper JVM is running (no command line with QuorumPeerMain or ZooKeeperServerMain): waiting for one"
            );
            s.waiting_logged = true;
        }
        on_attached(&initial);
        Ok(s)
    }

    fn add(&mut self, t: &Target) -> anyhow::Result<()> {
        add_target(t, &self.proc, &mut self.probes, &mut self.feed)?;
        attach_jvm(
            t,
            &self.proc,
            &mut self.probes,
            &mut self.feed,
            self.opts.jcmd,
        )?;
        self.live.insert(t.pid, t.clone());
        self.all_pids.insert(t.pid);
        Ok(())
    }

    /// The next batch of records from the ring buffer; None once the reader has stopped
    /// and the ring is drained.
    pub async fn next(&mut self) -> Option<Batch> {
        self.rx.recv().await
    }

    /// Notes what was lost since the last look (ring buffer full, shed by the reader) up
    /// to `now`.
    fn note_losses(&mut self, now: MonoNs) -> anyhow::Result<()> {
        losses(
            &self.probes,
            &self.reader,
            &mut self.feed,
            &mut self.last_counters,
            self.last_check,
            now,
        )?;
        self.last_check = now;
        Ok(())
    }

    /// Hands a batch of kernel records to the pipeline (and the recording, and the tap).
    pub fn records(&mut self, batch: &Batch) -> anyhow::Result<()> {
        if self.reader.shed.pending() {
            // The reader shed records since the last look: noted before this batch, whose
            // first records may be calls kept out of a shed batch (see reader.rs), so that
            // such a call is explained knowing its window lost records.
            self.note_losses(MonoNs::now())?;
        }
        for rec in batch.records() {
            self.feed.kernel(rec, &mut self.probes)?;
        }
        self.check_new_disks()
    }

    /// The disk check, at once when a disk was watched since the last one: its first
    /// counts (the baseline of everything the check compares) are then taken right after
    /// the watch.
    fn check_new_disks(&mut self) -> anyhow::Result<()> {
        if std::mem::take(&mut self.feed.newly_watched) {
            self.disk_check.run(
                &mut self.probes,
                &mut self.feed,
                self.req_bits.op_flush,
                MonoNs::now(),
            )?;
        }
        Ok(())
    }

    /// Stops reading: [`Session::next`] returns what is left, then None.
    pub fn stop(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.reader.stop();
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Every [`TICK`]: losses, calls crossing the threshold, targets that exited or
    /// appeared. With --pid, stops once every target has exited.
    pub fn tick(&mut self) -> anyhow::Result<()> {
        if self.stopping {
            return Ok(());
        }
        self.ticks += 1;
        self.probes.flush_logs();
        if let Some(w) = &mut self.feed.writer {
            // A quiet host: close the recording's open chunk after a second.
            w.tick().context("writing the recording")?;
        }
        let now = MonoNs::now();
        self.note_losses(now)?;
        if self.opts.requests == Requests::AroundCalls {
            if let Err(e) = self.probes.look_for_calls() {
                tracing::debug!("looking for calls in flight: {e}");
            }
            if self.ticks.is_multiple_of(SUMMARY_EVERY) {
                self.summaries(now)?;
            }
        }
        let live: BTreeSet<u32> = self.live.keys().copied().collect();
        let unfollowed = Unfollowed {
            late_base: &self.late_base,
            watched: self.watched_disks(),
            op_flush: self.req_bits.op_flush,
        };
        for n in running_notes(
            &self.probes,
            &live,
            &self.proc,
            Some((self.crossing, &mut self.crossed)),
            &unfollowed,
            now,
        ) {
            self.feed.note(n, &mut self.probes)?;
        }
        if self.ticks.is_multiple_of(DISK_CHECK_EVERY) {
            self.disk_check.run(
                &mut self.probes,
                &mut self.feed,
                self.req_bits.op_flush,
                now,
            )?;
        }
        if self.ticks.is_multiple_of(TARGET_EVERY) {
            for pid in &live {
                self.feed.pipeline.refresh_files(*pid);
            }
            for tid in self.feed.helpers.clone() {
                if !self.proc.is_alive(tid) {
                    self.feed.helpers.remove(&tid);
                    self.probes.remove_target(tid)?;
                }
            }
            for pid in live {
                if !self.proc.is_alive(pid) {
                    tracing::info!("process {pid} exited");
                    self.live.remove(&pid);
                    self.probes.remove_target(pid)?;
                    self.probes.detach_jvm(pid);
                    self.feed.note(
                        Note::TargetExit {
                            ts_ns: MonoNs::now().0,
                            pid,
                        },
                        &mut self.probes,
                    )?;
                }
            }
        }
        if !self.explicit && self.ticks.is_multiple_of(REDISCOVER_EVERY) {
            for t in targets::discover_zookeeper(&self.proc).unwrap_or_default() {
                if !self.live.contains_key(&t.pid)
                    && targets::in_cgroups(&self.proc, t.pid, &self.opts.cgroups)
                {
                    tracing::info!("found ZooKeeper {} ({}); tracing it", t.pid, t.reason);
                    self.add(&t)?;
                    self.waiting_logged = false;
                }
            }
            if self.live.is_empty() && !self.waiting_logged {
                tracing::info!("no ZooKeeper JVM is running now: waiting for one");
                self.waiting_logged = true;
            }
        }
        if self.explicit && self.live.is_empty() {
            tracing::info!("every traced process has exited");
            self.stop();
        }
        self.check_new_disks()
    }

    /// The requests the kernel summed since the last read, as one note per disk.
    fn summaries(&mut self, now: MonoNs) -> anyhow::Result<()> {
        summaries(
            &mut self.probes,
            &mut self.feed,
            &mut self.summed,
            &mut self.summed_at,
            &mut self.late_base,
            now,
        )
    }

    /// Batches of records waiting between the reader and the pipeline.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// The targets alive now.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.live.values()
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.feed.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.feed.pipeline
    }

    /// Records the reader shed so far (the pipeline fell behind), and kernel drops.
    pub fn shed_total(&self) -> u64 {
        self.feed.shed_total
    }

    pub fn started(&self) -> MonoNs {
        self.started
    }

    /// The header a recording of the targets made now would carry.
    pub fn header_now(&self, started: MonoNs) -> Header {
        let targets: Vec<Target> = self.live.values().cloned().collect();
        header(
            &targets,
            &self.proc,
            self.wall,
            started,
            self.opts.threshold,
            self.opts.blocked_min,
            &self.disabled,
            self.req_bits,
        )
    }

    /// The disks whose requests are followed one by one now.
    fn watched_disks(&self) -> Vec<crate::enrich::DiskDev> {
        self.feed.pipeline.watched().keys().copied().collect()
    }

    /// Where a look reads the requests in flight that the probes did not follow.
    fn unfollowed(&self) -> Unfollowed<'_> {
        Unfollowed {
            late_base: &self.late_base,
            watched: self.watched_disks(),
            op_flush: self.req_bits.op_flush,
        }
    }

    /// What is open in the kernel now (requests in flight, off-CPU intervals, exits held),
    /// as the records it will send, and the calls still running, as notes at the end of a
    /// recording: what an incident closed now needs to explain a call still stuck. Nothing
    /// is handed to the pipeline.
    pub fn open_now(&self) -> (Vec<Vec<u8>>, Vec<Note>) {
        let live: BTreeSet<u32> = self.live.keys().copied().collect();
        let now = MonoNs::now();
        let recs = open_records(&self.probes, &live, now, &self.proc);
        let notes = running_notes(
            &self.probes,
            &live,
            &self.proc,
            None,
            &self.unfollowed(),
            now,
        );
        (recs, notes)
    }

    /// Drains the ring, closes what is open, writes the trailer and returns the summary.
    pub async fn finish(mut self) -> anyhow::Result<Summary> {
        self.stop();
        while let Some(batch) = self.rx.recv().await {
            self.records(&batch)?;
        }
        self.reader.join().context("reading the ring buffer")?;

        let now = MonoNs::now();
        let mut last = self.last_counters;
        losses_final(
            &self.probes,
            &mut self.feed,
            &mut last,
            self.last_check,
            now,
        )?;
        let live: BTreeSet<u32> = self.live.keys().copied().collect();
        let end = MonoNs::now();
        self.disk_check.run(
            &mut self.probes,
            &mut self.feed,
            self.req_bits.op_flush,
            end,
        )?;
        // The run's totals end here, with the last disk check: a completion the probes
        // missed after it (while the pipeline finishes) would be counted unseen with no
        // window noted for it.
        let totals = KernelTotals::read(&self.probes).since(&self.start_totals);
        if self.opts.requests == Requests::AroundCalls {
            summaries(
                &mut self.probes,
                &mut self.feed,
                &mut self.summed,
                &mut self.summed_at,
                &mut self.late_base,
                end,
            )?;
        }
        for rec in open_records(&self.probes, &live, end, &self.proc) {
            self.feed.kernel(&rec, &mut self.probes)?;
        }
        // From the fields: the reader is gone by now.
        let unfollowed = Unfollowed {
            late_base: &self.late_base,
            watched: self.feed.pipeline.watched().keys().copied().collect(),
            op_flush: self.req_bits.op_flush,
        };
        for n in running_notes(&self.probes, &live, &self.proc, None, &unfollowed, end) {
            self.feed.note(n, &mut self.probes)?;
        }
        self.feed
            .pipeline
            .finish(end, self.feed.sink)
            .context("writing output")?;
        for (prog, n) in self.probes.recursion_misses() {
            tracing::debug!("program {prog}: {n} run(s) skipped by the kernel (recursion)");
        }
        let trailer = trailer(&totals, end, &self.all_pids, self.feed.shed_total);
        let summary = self
            .feed
            .pipeline
            .summary(&trailer, self.started.0, self.disabled.clone());
        self.feed.sink.summary(&summary).context("writing output")?;
        if let Some(mut w) = self.feed.writer.take() {
            for f in self.feed.pipeline.take_facts() {
                w.fact(&f).context("writing the recording")?;
            }
            w.finish(&trailer).context("writing the recording")?;
            if let Some(p) = &self.opts.output {
                tracing::info!(
                    "recording written to {} (read it with `zkstall report {}`)",
                    p.display(),
                    p.display()
                );
            }
        }
        if summary.dropped > 0 || summary.shed_by_reader > 0 {
            tracing::warn!(
                "{} kernel record(s) were dropped (ring buffer full) and {} shed by the reader: verdicts over those windows say they are incomplete",
                summary.dropped,
                summary.shed_by_reader
            );
        }
        let t = std::time::Instant::now();
        self.probes.close();
        tracing::debug!("probes detached in {:?}", t.elapsed());
        Ok(summary)
    }
}

/// The kernel's count of requests in flight that the probes did not follow (issued while
/// no watched call could be in flight, `--requests around-calls`), by disk: what the
/// programs counted issued, less given back and seen completing (`IoSummary::late_*`),
/// less a base.
///
/// The count is exact but for rare slips: a request allocated before its disk was watched
/// and issued after, a completion whose program run the kernel skipped. The base takes
/// them out: whenever the block layer counts nothing in flight on the disk both before and
/// after the count is read, whatever the count says is drift and becomes the base. A slip
/// upwards until then leaves the disk unknown while a call runs (never a wrong answer); a
/// count below its base is taken as the new base at once.
#[derive(Default)]
struct LateBase {
    base: BTreeMap<u32, u64>,
}

impl LateBase {
    fn count(v: &zkstall_common::IoSummary) -> u64 {
        v.late_issued
            .wrapping_sub(v.late_requeued)
            .wrapping_sub(v.late_done)
    }

    /// In flight unfollowed by `count`, by kernel dev_t.
    fn in_flight(&self, disk: u32, count: u64) -> i64 {
        count.wrapping_sub(self.base.get(&disk).copied().unwrap_or(0)) as i64
    }

    /// By disk (`MAJ:MIN`), the requests in flight now that the probes did not follow.
    fn unfollowed(&self, probes: &Probes) -> Vec<(String, u64)> {
        probes
            .io_summaries()
            .unwrap_or_default()
            .iter()
            .filter_map(|(disk, v)| {
                let n = self.in_flight(*disk, Self::count(v));
                (n > 0).then(|| (DevId::from_kernel(*disk).to_string(), n as u64))
            })
            .collect()
    }

    /// Takes in a read of the counts (`all`); `idle`: the disks the block layer counted
    /// nothing in flight on both just before and just after it.
    fn rebase(&mut self, all: &[(u32, zkstall_common::IoSummary)], idle: &BTreeSet<u32>) {
        for (disk, v) in all {
            let c = Self::count(v);
            if idle.contains(disk) || self.in_flight(*disk, c) < 0 {
                self.base.insert(*disk, c);
            }
        }
    }
}

/// What a look needs to count the requests in flight that the probes did not follow: the
/// around-calls count ([`LateBase`]), the watched disks and this kernel's flush op.
struct Unfollowed<'a> {
    late_base: &'a LateBase,
    watched: Vec<crate::enrich::DiskDev>,
    op_flush: u32,
}

impl Unfollowed<'_> {
    /// By disk (`MAJ:MIN`), the requests in flight now that the probes did not follow:
    /// those issued unfollowed around calls, or, if more, those the block layer counts in
    /// flight (/sys/dev/block/D/inflight, iostats on) beyond the issued ones the probes
    /// hold: requests in flight since before tracing began, seen only as they complete (a
    /// call stuck on a stopped disk at attach). The block layer's count is read before and
    /// after the probes' map and the lower one taken: a followed request issued or
    /// completed in between is then never counted as unfollowed (only requests in flight
    /// all along are). Flushes, which the block layer never counts, are left out.
    fn now(&self, probes: &Probes) -> Vec<(String, u64)> {
        let mut by: BTreeMap<String, u64> = self.late_base.unfollowed(probes).into_iter().collect();
        let before: Vec<Option<u64>> = self.watched.iter().map(|d| block_inflight(*d)).collect();
        let requests = probes.requests().unwrap_or_default();
        for (d, before) in self.watched.iter().zip(before) {
            let Some(block) = before.zip(block_inflight(*d)).map(|(a, b)| a.min(b)) else {
                continue;
            };
            let k = d.0.to_kernel();
            let held = requests
                .iter()
                .filter(|(_, r)| counted_in_flight(r, k, self.op_flush))
                .count() as u64;
            let extra = block.saturating_sub(held);
            if extra > 0 {
                let n = by.entry(d.to_string()).or_default();
                *n = (*n).max(extra);
            }
        }
        by.into_iter().collect()
    }
}

/// Whether the probes' entry `r` is a request of `disk` (kernel dev_t) that the block
/// layer counts in flight: issued, with data, not a flush (which it never counts).
fn counted_in_flight(r: &zkstall_common::Request, disk: u32, op_flush: u32) -> bool {
    r.disk == disk && r.issue_ns != 0 && r.bytes > 0 && r.cmd_flags & 0xff != op_flush
}

/// The block layer's count of requests in flight on `disk` now, when its queue keeps I/O
/// statistics (else not known).
fn block_inflight(disk: crate::enrich::DiskDev) -> Option<u64> {
    let sys = format!("/sys/dev/block/{disk}");
    if !std::fs::read_to_string(format!("{sys}/queue/iostats")).is_ok_and(|v| v.trim() == "1") {
        return None;
    }
    let t = std::fs::read_to_string(format!("{sys}/inflight")).ok()?;
    Some(
        t.split_whitespace()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum(),
    )
}

/// Whether the block layer counts no request in flight on `disk` (kernel dev_t) now. Only
/// a queue that keeps I/O statistics counts them: otherwise no (not known).
fn disk_idle(disk: u32) -> bool {
    block_inflight(crate::enrich::DiskDev(DevId::from_kernel(disk))) == Some(0)
}

/// See [`Session::summaries`].
fn summaries(
    probes: &mut Probes,
    feed: &mut Feed,
    summed: &mut Vec<(u32, zkstall_common::IoSummary)>,
    summed_at: &mut MonoNs,
    late_base: &mut LateBase,
    now: MonoNs,
) -> anyhow::Result<()> {
    // Idle before the read (the disks of the last one; a new disk waits for the next).
    let idle_before: BTreeSet<u32> = summed
        .iter()
        .map(|(d, _)| *d)
        .filter(|d| disk_idle(*d))
        .collect();
    let Ok(all) = probes.io_summaries() else {
        return Ok(());
    };
    let idle: BTreeSet<u32> = idle_before.into_iter().filter(|d| disk_idle(*d)).collect();
    late_base.rebase(&all, &idle);
    let from = std::mem::replace(summed_at, now);
    for (disk, v) in &all {
        let before = summed
            .iter()
            .find(|(d, _)| d == disk)
            .map(|(_, b)| *b)
            .unwrap_or_default();
        if v.requests <= before.requests {
            continue;
        }
        let dev = DevId::from_kernel(*disk);
        let n = Note::IoSummary {
            from_ns: from.0,
            to_ns: now.0,
            disk: dev.to_string(),
            name: std::fs::read_link(format!("/sys/dev/block/{dev}"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            requests: v.requests - before.requests,
            bytes: v.bytes.saturating_sub(before.bytes),
            service_ns: v.service_ns.saturating_sub(before.service_ns),
            hist: v
                .hist
                .iter()
                .zip(before.hist.iter())
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        };
        feed.note(n, probes)?;
    }
    *summed = all;
    Ok(())
}

/// Starts tracing process `t`: its disks are watched, calls it is already inside are
/// seeded so their exits are timed, and noted.
/// HotSpot's probes for a JVM target (Java thread names, safepoints); then the names of
/// its threads that started before them, from `jcmd Thread.print`, once, where the kernel's
/// names are cut or missing.
fn attach_jvm(
    t: &Target,
    proc: &ProcRoot,
    probes: &mut Probes,
    feed: &mut Feed,
    jcmd: bool,
) -> anyhow::Result<()> {
    let jvm = std::fs::read_to_string(proc.pid_dir(t.pid).join("maps"))
        .is_ok_and(|m| m.contains("/libjvm.so"));
    if !jvm {
        return Ok(());
    }
    match probes.attach_jvm(t.pid) {
        Ok(n) => tracing::info!(
            "HotSpot probes attached to {} ({n} sites): whole Java thread names, safepoints and GCs",
            t.pid
        ),
        Err(e) => tracing::info!(
            "no HotSpot probes for {}: {e}; thread names stay the kernel's, and JVM pauses are inferred from its threads' states",
            t.pid
        ),
    }
    if !jcmd || !crate::enrich::java::names_cut(proc, t.pid) {
        return Ok(());
    }
    let from = MonoNs::now();
    match crate::enrich::java::thread_names(proc, t.pid, Duration::from_secs(10)) {
        Ok(names) => {
            let to = MonoNs::now();
            tracing::info!(
                "named {} thread(s) of {} with jcmd Thread.print ({:.0} ms; its safepoint is zkstall's own)",
                names.len(),
                t.pid,
                to.since(from) as f64 / 1e6
            );
            feed.note(
                Note::JavaNames {
                    ts_ns: from.0,
                    end_ns: to.0,
                    pid: t.pid,
                    names,
                },
                probes,
            )?;
        }
        Err(e) => tracing::info!(
            "threads of {} that started before tracing keep the kernel's names (cut at 15 characters): jcmd: {e}",
            t.pid
        ),
    }
    Ok(())
}

/// Whether fd `fd` of `pid` is a regular file or a block device (true when that cannot be
/// read: the fd closed meanwhile, /proc unreadable).
fn writes_to_storage(proc: &ProcRoot, pid: u32, fd: u64) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::metadata(proc.pid_dir(pid).join("fd").join(fd.to_string())) {
        Ok(m) => m.file_type().is_file() || m.file_type().is_block_device(),
        Err(_) => true,
    }
}

fn add_target(
    t: &Target,
    proc: &ProcRoot,
    probes: &mut Probes,
    feed: &mut Feed,
) -> anyhow::Result<()> {
    probes.add_target(t.pid)?;
    let now = MonoNs::now();
    feed.note(
        Note::Target {
            ts_ns: now.0,
            pid: t.pid,
            comm: t.comm.clone(),
            reason: t.reason.clone(),
        },
        probes,
    )?;
    for (dev, path) in threads_now::open_file_devs(proc, t.pid) {
        feed.pipeline
            .want_disks_of(FileDev(DevId::from_dev_t(dev)), Some(t.pid), &path);
    }
    feed.watch_wanted(probes)?;
    for tid in threads_now::tids(proc, t.pid) {
        let th = threads_now::read(proc, t.pid, tid);
        let Some(sc) = th.syscall.as_ref() else {
            continue;
        };
        let Some(syscall) = threads_now::watched_syscall(sc.nr) else {
            continue;
        };
        // As the kernel does at entry: a write is followed only to a regular file or a
        // block device (and when that cannot be told).
        if syscall.is_write() && !writes_to_storage(proc, t.pid, sc.arg0) {
            continue;
        }
        // Seed the kernel so the exit is timed (from now: a bound) and the sleep it is in
        // is sent when it ends.
        let now = MonoNs::now();
        probes.seed_call(
            tid,
            Inflight {
                start_ns: now.0,
                arg: sc.arg0,
                on_ns: 0,
                short_ns: [0; 3],
                syscall: syscall as u32,
                tgid: t.pid,
                flags: CALL_START_BOUND,
                _pad: 0,
            },
        )?;
        if let Some(state @ ('D' | 'S')) = th.state
            && let Some(st) = asleep_since(now, t.pid, state, sc.nr)
        {
            probes.seed_thread(tid, st)?;
        }
        // It may have left the call while this was being done.
        let again = threads_now::read(proc, t.pid, tid);
        if again.syscall.as_ref().map(|s| s.nr) != Some(sc.nr) {
            probes.unseed_call(tid);
            continue;
        }
        feed.note(
            Note::Stuck {
                ts_ns: now.0,
                pid: t.pid,
                tid,
                thread: th.comm.clone(),
                syscall: syscall.name().into(),
                arg: sc.arg0,
                state: th.state.map(String::from).unwrap_or_default(),
                wchan: th.wchan.clone(),
                stack: th.stack.clone(),
            },
            probes,
        )?;
    }
    Ok(())
}

/// The kernel's state for a thread of `tgid` found asleep (`state`: /proc's letter) in
/// `syscall` (-1: none) when tracing began: off CPU from `from`, the interval sent when it
/// ends whatever its length (`BLOCKED_SEEDED`). None for a thread not asleep.
fn asleep_since(from: MonoNs, tgid: u32, state: char, syscall: i64) -> Option<ThreadState> {
    let state = match state {
        'D' => 0x2,
        'S' => 0x1,
        'I' => 0x80,
        _ => return None,
    };
    let mut st = zero_thread();
    st.tgid = tgid;
    st.flags = THREAD_OFF;
    st.off.off_ns = from.0;
    st.off.state = state;
    st.off.syscall = syscall;
    st.off.flags = BLOCKED_SEEDED;
    Some(st)
}

fn zero_thread() -> ThreadState {
    ThreadState {
        off: BlockedEvent::default(),
        on_since_ns: 0,
        on_ns: 0,
        short_ns: [0; 3],
        tgid: 0,
        flags: 0,
        after_cpu_ns: 0,
        irq_mark_ns: 0,
        pending: Default::default(),
    }
}

/// By (tid, call start), how long a running call must run before it is looked at again.
type Looked = HashMap<(u32, u64), u64>;

/// Calls in progress at `now` (the same instant as the open records closing a trace or an
/// incident), with where they wait. With `due` (crossing, looked): those running for longer
/// than `crossing`, as they cross it, then each time they double in length (`looked` holds,
/// by (tid, call start), how long each call must run before it is looked at again);
/// without: all of them, at the end.
fn running_notes(
    probes: &Probes,
    live: &BTreeSet<u32>,
    proc: &ProcRoot,
    mut due: Option<(Duration, &mut Looked)>,
    unfollowed_from: &Unfollowed,
    now: MonoNs,
) -> Vec<Note> {
    let at_end = due.is_none();
    let mut notes = Vec::new();
    // The requests in flight now, for the calls that crossed (taken once per scan), and
    // the count of those not followed.
    let mut in_flight: Option<Vec<String>> = None;
    let mut unfollowed: Option<Vec<(String, u64)>> = None;
    let calls = probes.inflight().unwrap_or_default();
    // The threads' states, read (a map walk: a syscall per thread) only when a call is due
    // for a look, not every tick.
    let mut threads: Option<HashMap<u32, ThreadState>> = None;
    // Calls that ended are not looked at again.
    if let Some((_, looked)) = &mut due {
        let open: HashSet<(u32, u64)> = calls.iter().map(|(t, c)| (*t, c.start_ns)).collect();
        looked.retain(|k, _| open.contains(k));
    }
    for (tid, c) in calls {
        if !live.contains(&c.tgid) || c.start_ns > now.0 {
            continue;
        }
        if let Some((crossing, looked)) = &mut due {
            let ran = now.since(MonoNs(c.start_ns));
            let due = looked
                .get(&(tid, c.start_ns))
                .copied()
                .unwrap_or(crossing.as_nanos() as u64);
            if ran < due {
                continue;
            }
            looked.insert((tid, c.start_ns), ran.saturating_mul(2));
        }
        let Some(sc) = zkstall_common::Syscall::ALL
            .get(c.syscall as usize)
            .copied()
        else {
            continue;
        };
        let th = threads_now::read(proc, c.tgid, tid);
        let threads = threads.get_or_insert_with(|| {
            if at_end {
                Default::default()
            } else {
                probes.threads().unwrap_or_default().into_iter().collect()
            }
        });
        let off = threads.get(&tid).filter(|s| s.flags & THREAD_OFF != 0);
        let in_flight = if at_end {
            // At the end, the open requests are handed to the pipeline as records first.
            Vec::new()
        } else {
            in_flight
                .get_or_insert_with(|| {
                    open_requests(probes, now)
                        .iter()
                        .map(|r| crate::pipeline::notes::to_hex(r))
                        .collect()
                })
                .clone()
        };
        notes.push(Note::Running {
            ts_ns: now.0,
            pid: c.tgid,
            tid,
            syscall: sc.name().into(),
            arg: c.arg,
            start_ns: c.start_ns,
            start_bound: c.flags & CALL_START_BOUND != 0,
            at_end,
            state: th.state.map(String::from),
            off_ns: off.map(|s| s.off.off_ns),
            wake_ns: off.map(|s| s.off.wake_ns).filter(|w| *w != 0),
            wchan: th.wchan,
            stack: th.stack,
            in_flight,
            unfollowed: unfollowed
                .get_or_insert_with(|| unfollowed_from.now(probes))
                .clone(),
        });
    }
    notes
}

/// What is open now, from the kernel's maps, as the records the kernel would send when it
/// ends: requests in flight, off-CPU intervals in progress, exits still pending.
///
/// A D sleep in progress has no kernel stack yet when the programs take it at the wakeup
/// (`Config::stack_at_wake`): its thread's /proc stack stands in, as frames (through
/// kallsyms, read for this and dropped again: a few MB an agent does not keep).
fn open_records(
    probes: &Probes,
    live_pids: &BTreeSet<u32>,
    now: MonoNs,
    proc: &ProcRoot,
) -> Vec<Vec<u8>> {
    let mut symbols: Option<crate::enrich::symbols::Symbols> = None;
    let mut out = open_requests(probes, now);
    let mut threads = probes.threads().unwrap_or_default();
    threads.sort_by_key(|(_, s)| s.off.off_ns);
    for (tid, st) in &threads {
        if !live_pids.contains(&st.tgid) {
            continue;
        }
        if st.flags & THREAD_OFF != 0 {
            let mut b = st.off;
            b.hdr = zkstall_common::EventHeader {
                kind: EventKind::Blocked as u32,
                size: size_of::<BlockedEvent>() as u32,
                ts_ns: now.0,
                tgid: st.tgid,
                tid: *tid,
            };
            b.flags |= BLOCKED_OPEN;
            if b.nframes == 0
                && crate::decode::SchedState::from_report(b.state)
                    == crate::decode::SchedState::DiskSleep
                && b.flags & BLOCKED_SEEDED == 0
            {
                let symbols = symbols
                    .get_or_insert_with(|| crate::enrich::symbols::Symbols::new("/proc/kallsyms"));
                proc_stack_frames(&mut b, proc, st.tgid, *tid, symbols);
            }
            out.push(record_bytes(&b));
        }
        if st.flags & THREAD_PENDING != 0 {
            let mut x = st.pending;
            if st.flags & THREAD_AFTER != 0 {
                // Still off CPU on its way back: what the caller waits for so far.
                x.flags |= CALL_AFTER;
                x.after_ns = now.since(MonoNs(x.hdr.ts_ns));
            }
            if st.flags & THREAD_PENDING_FAST != 0 {
                // A fast write, sent as the kernel would: only if its way back made it
                // slow, with the name the kernel reads only then.
                let seen = x.hdr.ts_ns.saturating_sub(x.start_ns) + x.after_ns;
                if seen < probes.layout.config.write_min_ns {
                    continue;
                }
                x.flags |= CALL_FAST;
                let comm = threads_now::comm(proc, st.tgid, *tid);
                let n = comm.len().min(x.comm.len() - 1);
                x.comm = [0; zkstall_common::COMM_LEN];
                x.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
            }
            out.push(record_bytes(&x));
        }
    }
    out
}

/// Fills an open interval's frames from its thread's /proc stack, each frame's address
/// looked up in kallsyms (the names come back the same when the record is symbolized).
/// Stops at the first frame kallsyms does not name.
fn proc_stack_frames(
    b: &mut BlockedEvent,
    proc: &ProcRoot,
    pid: u32,
    tid: u32,
    symbols: &mut crate::enrich::symbols::Symbols,
) {
    let stack = threads_now::read(proc, pid, tid).stack;
    let frames: Vec<u64> = stack
        .iter()
        .map_while(|f| symbols.address_of(f))
        .take(zkstall_common::MAX_FRAMES)
        .collect();
    b.frames[..frames.len()].copy_from_slice(&frames);
    b.nframes = frames.len() as u32;
}

/// The requests in flight on watched disks now, as the records the kernel will send when
/// they complete (flagged open).
fn open_requests(probes: &Probes, now: MonoNs) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut requests = probes.requests().unwrap_or_default();
    requests.sort_by_key(|(_, r)| r.queued_ns);
    for (_, r) in requests {
        let mut rq = r;
        rq.flags |= RQ_OPEN;
        let ev = IoEvent {
            hdr: zkstall_common::EventHeader {
                kind: EventKind::Io as u32,
                size: size_of::<IoEvent>() as u32,
                ts_ns: now.0,
                tgid: r.tgid,
                tid: r.tid,
            },
            rq,
            nr_bytes: 0,
            status: 0,
        };
        out.push(record_bytes(&ev));
    }
    out
}

/// Notes a loss window when the kernel dropped records or the reader shed some.
fn losses(
    probes: &Probes,
    reader: &Reader,
    feed: &mut Feed,
    last: &mut KernelCounters,
    from: MonoNs,
    to: MonoNs,
) -> anyhow::Result<()> {
    let k = probes.counters()?;
    let full = k
        .get(Counter::RingbufFull)
        .saturating_sub(last.get(Counter::RingbufFull));
    let shed = reader.shed.take();
    *last = k;
    if full == 0 && shed.is_none() {
        return Ok(());
    }
    let (n_shed, a, b) = shed.unwrap_or((0, from.0, to.0));
    let (lo, hi) = if full > 0 {
        (from.0.min(a), to.0.max(b))
    } else {
        (a, b)
    };
    feed.shed_total += n_shed;
    let n = Note::Lost {
        from_ns: lo,
        to_ns: hi,
        ringbuf_full: full,
        shed: n_shed,
    };
    feed.record(&n)
}

fn losses_final(
    probes: &Probes,
    feed: &mut Feed,
    last: &mut KernelCounters,
    from: MonoNs,
    to: MonoNs,
) -> anyhow::Result<()> {
    let k = probes.counters()?;
    let full = k
        .get(Counter::RingbufFull)
        .saturating_sub(last.get(Counter::RingbufFull));
    *last = k;
    if full == 0 {
        return Ok(());
    }
    let n = Note::Lost {
        from_ns: from.0,
        to_ns: to.0,
        ringbuf_full: full,
        shed: 0,
    };
    feed.record(&n)
}

/// The kernel's counters and its summary of unwatched disks at one instant: a trailer is
/// made from the difference between two of these (a recording's start and end, an
/// incident's window).
#[derive(Clone, Debug, Default)]
pub struct KernelTotals {
    pub counters: KernelCounters,
    pub other_io: Vec<(zkstall_common::OtherIoKey, zkstall_common::OtherIo)>,
    /// Program runs the kernel skipped, all programs.
    pub misses: u64,
    /// The block layer's own counts, read between two reads of the probes' (`other_io`
    /// before, `other_io` after), so that over any two snapshots the probes' interval
    /// covers the block layer's: a difference is a lower bound of what the probes missed,
    /// never an artefact of when each was read.
    pub disks: crate::enrich::diskstats::DiskStats,
    pub other_io_before_disks: Vec<(zkstall_common::OtherIoKey, zkstall_common::OtherIo)>,
    /// Devices ever watched (their requests are not in `other_io`).
    pub watched: BTreeSet<u32>,
    /// Set by [`KernelTotals::since`]: by disk, requests the block layer completed that
    /// the probes never saw.
    pub unseen: Vec<(u32, u64, u64)>,
}

impl KernelTotals {
    pub fn read(probes: &Probes) -> KernelTotals {
        let other_io_before_disks = probes.other_io().unwrap_or_default();
        let disks = crate::enrich::diskstats::DiskStats::read(
            std::path::Path::new("/proc"),
            std::path::Path::new("/sys"),
        );
        KernelTotals {
            counters: probes.counters().unwrap_or_default(),
            other_io: probes.other_io().unwrap_or_default(),
            misses: probes.recursion_misses().iter().map(|(_, n)| n).sum(),
            disks,
            other_io_before_disks,
            watched: probes.watched_devs().unwrap_or_default(),
            unseen: Vec::new(),
        }
    }

    /// Takes the block layer's counts again, after the programs were attached: requests
    /// completed between the first snapshot and the attach were never the probes' to see.
    pub fn rebase_disks(&mut self, probes: &Probes) {
        let now = KernelTotals::read(probes);
        self.other_io_before_disks = now.other_io_before_disks;
        self.disks = now.disks;
    }

    /// What happened between `earlier` and this.
    pub fn since(&self, earlier: &KernelTotals) -> KernelTotals {
        let mut counters = self.counters;
        for (c, e) in counters.0.iter_mut().zip(earlier.counters.0.iter()) {
            *c = c.saturating_sub(*e);
        }
        let delta =
            |later: &[(zkstall_common::OtherIoKey, zkstall_common::OtherIo)],
             before: &[(zkstall_common::OtherIoKey, zkstall_common::OtherIo)]| {
                later
                    .iter()
                    .map(|(k, v)| {
                        let b = before
                            .iter()
                            .find(|(ek, _)| ek == k)
                            .map(|(_, ev)| *ev)
                            .unwrap_or_default();
                        (
                            *k,
                            zkstall_common::OtherIo {
                                requests: v.requests.saturating_sub(b.requests),
                                bytes: v.bytes.saturating_sub(b.bytes),
                            },
                        )
                    })
                    .filter(|(_, v)| v.requests > 0)
                    .collect::<Vec<_>>()
            };
        let other_io = delta(&self.other_io, &earlier.other_io);
        // The probes' count over an interval that covers the block layer's.
        let mut counted: BTreeMap<u32, u64> = BTreeMap::new();
        for (k, v) in delta(&self.other_io, &earlier.other_io_before_disks) {
            *counted.entry(k.disk).or_default() += v.requests;
        }
        // Watched disks' completions are counted too (under OTHER_IO_WATCHED): a disk
        // watched part of the time has both kinds of entries.
        let mut unseen = Vec::new();
        for (disk, after) in &self.disks.0 {
            let Some(before) = earlier.disks.0.get(disk) else {
                continue;
            };
            let block_layer = after.saturating_sub(*before);
            let seen = counted.get(disk).copied().unwrap_or(0);
            if block_layer > seen {
                unseen.push((*disk, block_layer, seen));
            }
        }
        KernelTotals {
            counters,
            other_io,
            misses: self.misses.saturating_sub(earlier.misses),
            disks: Default::default(),
            other_io_before_disks: Vec::new(),
            watched: self.watched.clone(),
            unseen,
        }
    }
}

/// The end of a recording (or incident) from the kernel's totals over it.
pub fn trailer(t: &KernelTotals, end: MonoNs, pids: &BTreeSet<u32>, shed: u64) -> Trailer {
    let k = &t.counters;
    // The blkcg a request was charged to, by its cgroup id in the io (blkio) hierarchy.
    let mounts = crate::enrich::cgroups::Mounts::detect();
    let mut blkcgs =
        crate::enrich::cgroups::Cgroups::new(mounts.blkio_root().map(|p| p.to_path_buf()));
    let mut other: Vec<OtherDisk> = t
        .other_io
        .iter()
        .filter(|(key, _)| key.blk_cgroup != zkstall_common::OTHER_IO_WATCHED)
        .map(|(key, v)| {
            let disk = DevId::from_kernel(key.disk);
            let cgroup = blkcgs.path(key.blk_cgroup);
            OtherDisk {
                disk: disk.to_string(),
                name: std::fs::read_link(format!("/sys/dev/block/{disk}"))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                cgroup,
                requests: v.requests,
                bytes: v.bytes,
            }
        })
        .collect();
    other.sort_by_key(|d| std::cmp::Reverse(d.bytes));
    other.truncate(20);
    let disk_name = |disk: DevId| {
        std::fs::read_link(format!("/sys/dev/block/{disk}"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let unseen_disks: Vec<UnseenDisk> = t
        .unseen
        .iter()
        .map(|&(disk, block_layer, counted)| {
            let disk = DevId::from_kernel(disk);
            UnseenDisk {
                disk: disk.to_string(),
                name: disk_name(disk),
                block_layer,
                counted,
            }
        })
        .collect();
    Trailer {
        end_ns: end.0,
        pids: pids.iter().copied().collect(),
        dropped: k.dropped(),
        untimed: k.get(Counter::InflightFull),
        exit_without_enter: k.get(Counter::ExitWithoutEnter),
        read_errors: k.get(Counter::ReadError),
        io_unmatched: k.get(Counter::IoUnmatched),
        io_before_watch: k.get(Counter::IoBeforeWatch),
        switch_unseen: k.get(Counter::SwitchUnseen),
        io_summed: k.get(Counter::IoSummed),
        io_late: k.get(Counter::IoLate),
        map_full: k.get(Counter::MapFull),
        map_busy: k.get(Counter::MapBusy),
        stack_errors: k.get(Counter::StackError),
        io_watched: k.get(Counter::IoWatched),
        io_merged: k.get(Counter::IoMerged),
        io_stale: k.get(Counter::IoStale),
        io_partial: k.get(Counter::IoPartial),
        io_flush: k.get(Counter::IoFlush),
        io_flush_seq_end: k.get(Counter::IoFlushSeqEnd),
        io_other_disks: k.get(Counter::IoOther),
        other_disks: other,
        shed_by_reader: shed,
        probe_misses: t.misses,
        io_unseen: unseen_disks.iter().map(|d| d.block_layer - d.counted).sum(),
        unseen_disks,
    }
}

/// What a recording says about where it was made: the host, the targets and their
/// threads now, the devices and mounts.
#[allow(clippy::too_many_arguments)]
pub fn header(
    targets: &[Target],
    proc: &ProcRoot,
    wall: WallClock,
    started: MonoNs,
    threshold: Duration,
    blocked_min: Duration,
    disabled: &[DisabledSignal],
    req_bits: crate::probes::ReqBits,
) -> Header {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut threads = Vec::new();
    for t in targets {
        for tid in threads_now::tids(proc, t.pid) {
            if let Ok(name) = std::fs::read_to_string(
                proc.pid_dir(t.pid)
                    .join("task")
                    .join(tid.to_string())
                    .join("comm"),
            ) {
                threads.push((tid, name.trim_end().to_string()));
            }
        }
    }
    let devices = std::fs::read_dir("/sys/dev/block")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = std::fs::read_link(e.path())
                        .ok()?
                        .file_name()?
                        .to_string_lossy()
                        .into_owned();
                    Some(DeviceInfo {
                        dev: e.file_name().to_string_lossy().into_owned(),
                        name,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mounts = targets
        .first()
        .and_then(|t| std::fs::read_to_string(proc.pid_dir(t.pid).join("mountinfo")).ok())
        .map(|m| m.lines().map(str::to_string).collect())
        .unwrap_or_default();
    Header {
        format: recording::FORMAT.into(),
        version: recording::VERSION,
        host: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        wall_offset_ns: wall.offset_ns as i64,
        started_ns: started.0,
        threshold_ns: threshold.as_nanos() as u64,
        blocked_min_ns: blocked_min.as_nanos() as u64,
        targets: targets
            .iter()
            .map(|t| TargetInfo {
                pid: t.pid,
                comm: t.comm.clone(),
                reason: t.reason.clone(),
                ensemble: targets::zk_ensemble(proc, t.pid),
            })
            .collect(),
        threads,
        devices,
        mounts,
        disabled: disabled.to_vec(),
        req_bits,
        clock: Some(crate::clock::ClockSync::sample()),
    }
}

#[cfg(test)]
mod tests {
    use super::{LateBase, RunLong, StaleBudget, Suspects, confirm_stale};

    fn late(issued: u64, requeued: u64, done: u64) -> zkstall_common::IoSummary {
        zkstall_common::IoSummary {
            late_issued: issued,
            late_requeued: requeued,
            late_done: done,
            ..Default::default()
        }
    }

    /// Requests are dropped as stale only as far as something lost after their issue
    /// accounts for them: unseen completions on their own disk first, then refusals (any
    /// disk); each accounts for one, and nothing before a request's issue does.
    #[test]
    fn stale_requests_are_dropped_only_as_far_as_something_lost_since_accounts_for_them() {
        let mut b = StaleBudget::default();
        StaleBudget::add(b.unseen.entry(7).or_default(), 100, 2);
        StaleBudget::add(&mut b.busy, 50, 1);
        StaleBudget::add(&mut b.busy, 200, 1);
        // Disk 8 lost no completion: a request issued at 60 draws from the refusal at 200,
        // not the one at 50; one issued at 210 from neither.
        assert_eq!(b.accounted(8, vec![(60, 0xa)]), vec![(60, 0xa)]);
        assert_eq!(b.accounted(8, vec![(210, 0xb)]), vec![]);
        assert_eq!(b.busy, [(50, 1)]);
        // The one at 50 accounts for a request issued before it.
        assert_eq!(b.accounted(8, vec![(40, 0xb)]), vec![(40, 0xb)]);
        // Disk 7's two completions unseen at 100: one request issued before them, not
        // one issued after, and the refusals are all used up.
        assert_eq!(b.accounted(7, vec![(90, 0xc), (150, 0xd)]), vec![(90, 0xc)]);
        assert_eq!(b.accounted(7, vec![(95, 0xe), (99, 0xf)]), vec![(95, 0xe)]);
        assert!(b.unseen[&7].is_empty() && b.busy.is_empty());
    }

    /// The count of requests in flight unfollowed is issued less requeued less done, less
    /// what was counted while the disk was idle (drift); a count below its base is the new
    /// base. Per-CPU parts wrap (one CPU issues, another completes): the sum is exact.
    #[test]
    fn requests_in_flight_unfollowed_are_counted_less_the_drift_found_while_idle() {
        let mut b = LateBase::default();
        let none = std::collections::BTreeSet::new();
        let at = |b: &LateBase, v: &zkstall_common::IoSummary| b.in_flight(7, LateBase::count(v));
        // Issued on one CPU, done on the other: wrapping parts sum right.
        let v = late(10, 1, 6u64.wrapping_add(0));
        assert_eq!(at(&b, &v), 3);
        let wrapped = late(
            10u64.wrapping_add(u64::MAX - 4),
            1,
            6u64.wrapping_add(u64::MAX - 4),
        );
        assert_eq!(at(&b, &wrapped), 3);
        // Not idle: nothing is rebased, the 3 stay in flight.
        b.rebase(&[(7, v)], &none);
        assert_eq!(at(&b, &v), 3);
        // Idle on both sides of a read that still counts 2: drift, taken out.
        let idle = std::collections::BTreeSet::from([7]);
        let v = late(20, 1, 17);
        b.rebase(&[(7, v)], &idle);
        assert_eq!(at(&b, &v), 0);
        // Then 4 more issued unfollowed: 4 in flight.
        assert_eq!(at(&b, &late(24, 1, 17)), 4);
        // A completion seen that was never counted issued (allocated before the watch):
        // the count drops below its base, which follows it down.
        let v = late(20, 1, 18);
        assert!(at(&b, &v) < 0);
        b.rebase(&[(7, v)], &none);
        assert_eq!(at(&b, &v), 0);
    }

    /// A request is dropped as stale only when judged so at two checks half a second or
    /// more apart: one completing while the first looked is gone by the second.
    #[test]
    fn a_request_is_stale_only_when_two_checks_apart_say_so() {
        const S: u64 = 1_000_000_000;
        let mut suspects = Suspects::default();
        // Two look stale for an instant (a disk resuming while the check runs).
        assert!(confirm_stale(&mut suspects, vec![(10, 0xa), (11, 0xb)], S).is_empty());
        // A check 10 ms later (a disk newly watched) confirms nothing and keeps them.
        assert!(confirm_stale(&mut suspects, vec![(11, 0xb)], S + 10_000_000).is_empty());
        assert_eq!(suspects.requests, vec![(10, 0xa), (11, 0xb)]);
        // A second later one is gone, one is still there, one is new.
        assert_eq!(
            confirm_stale(&mut suspects, vec![(11, 0xb), (12, 0xc)], 2 * S),
            vec![(11, 0xb)]
        );
        assert_eq!(suspects.requests, vec![(12, 0xc)]);
        // The same request struct reused for a later request is another request.
        assert!(confirm_stale(&mut suspects, vec![(13, 0xc)], 3 * S).is_empty());
        assert_eq!(
            confirm_stale(&mut suspects, vec![(13, 0xc)], 4 * S),
            vec![(13, 0xc)]
        );
        assert!(suspects.requests.is_empty());
    }

    /// (probes before, block layer, probes after) at successive checks of one disk.
    fn run(checks: &[(u64, u64, u64)]) -> Vec<(u64, u64)> {
        let (mut run_long, mut prev) = (RunLong::default(), None);
        checks
            .iter()
            .map(|&(a, d, b)| {
                let r = run_long.shortfall(prev, (a, d, b));
                prev = Some((a, d));
                r
            })
            .collect()
    }

    #[test]
    fn a_miss_hidden_in_one_checks_slack_is_caught_up_at_the_next() {
        // Second 1: 100 completions, one of them missed by the probes; two more complete
        // between the block layer's read and the probes' second read, which hides the miss
        // in that second's comparison. Second 2: one more, seen.
        let r = run(&[(0, 0, 0), (98, 100, 101), (101, 102, 101)]);
        assert_eq!(r, vec![(0, 0), (0, 0), (0, 1)]);
    }

    #[test]
    fn nothing_missed_notes_nothing_and_nothing_is_noted_twice() {
        assert!(
            run(&[(0, 0, 0), (10, 12, 14), (20, 25, 26), (30, 30, 31)])
                .iter()
                .all(|&r| r == (0, 0))
        );
        // A miss the second's own comparison finds is not caught up again.
        let r = run(&[(0, 0, 0), (5, 10, 8), (8, 10, 8), (8, 11, 9)]);
        assert_eq!(r, vec![(0, 0), (2, 0), (0, 0), (0, 0)]);
    }

    #[test]
    fn a_count_that_went_back_starts_over_without_a_false_miss() {
        // The probes' entry was evicted at the third check: its count restarts at 0.
        let r = run(&[(0, 0, 0), (50, 50, 50), (0, 60, 0), (5, 65, 5)]);
        assert_eq!(r, vec![(0, 0), (0, 0), (0, 0), (0, 0)]);
    }
}
