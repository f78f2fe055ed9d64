//! The per-record path: decode -> enrich -> model -> history -> attribution -> sink. One
//! module per event family, mirroring `zkstall-ebpf/src/probes/`: `calls` (syscalls),
//! `block`, `sched`, `writeback`, `journal`; `notes` are what userspace observed outside
//! the ring buffer. Live tracing feeds the pipeline from the ring buffer and /proc;
//! `report` feeds it from a recording, through this same code, so both give the same
//! answer.

mod block;
mod calls;
mod journal;
pub mod jvm;
pub mod notes;
mod sched;
mod writeback;

use std::{
    collections::{BTreeMap, HashSet},
    io,
    num::NonZeroUsize,
};

use lru::LruCache;
use rustc_hash::FxHashMap as HashMap;

pub use block::{disk_label, on_partition, party_label, req_flags, status_errno};
pub use notes::Note;

use crate::{
    clock::{MonoNs, WallClock},
    decode::{Event, decode},
    enrich::{DiskDev, Enricher, Fact, FileDev},
    history::History,
    model::Calls,
    probes::ReqBits,
    sinks::{EventRecord, Sink, Summary, events::Who},
};

/// Interned names: every request of a flood shares its submitter's name and cgroup.
#[derive(Default)]
pub(crate) struct Names(HashMap<String, crate::history::Name>);

impl Names {
    /// Bounded: past this many distinct names the table starts over (entries already made
    /// keep theirs).
    const MAX: usize = 8192;

    pub(crate) fn get(&mut self, s: &str) -> crate::history::Name {
        if let Some(n) = self.0.get(s) {
            return n.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let n: crate::history::Name = s.into();
        self.0.insert(s.to_string(), n.clone());
        n
    }
}

/// Dirtied inodes remembered, per (bdi, inode), least recently used first out.
const DIRTIERS: usize = 65536;

/// Counts for the summary.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Kernel records received.
    pub events: u64,
    pub calls_seen: u64,
    pub reported: u64,
    pub decode_errors: u64,
    /// Calls reported while still running, as they crossed the threshold.
    pub crossed: u64,
    /// Records of each type sent to the output (or, without --events, handled).
    pub by_type: BTreeMap<&'static str, u64>,
    /// Records lost (kernel ring full, reader shed), and in how many windows.
    pub lost_ringbuf_full: u64,
    pub lost_shed: u64,
    pub lost_windows: u64,
    /// Completions on watched disks the probes never saw (the block layer's count was
    /// higher), requests that looked in flight but were not, and the windows they fell in.
    pub unseen_completions: u64,
    pub stale_requests: u64,
    pub unseen_windows: u64,
    /// Disks no longer watched because no traced process used them any more.
    pub unwatched: u64,
}

pub struct Pipeline {
    /// Names for kernel identifiers: live from /proc and /sys, or from a recording.
    enrich: Box<dyn Enricher>,
    wall: WallClock,
    threshold_ns: u64,
    /// Also send the records around the calls (`trace --events`).
    events_out: bool,
    req_bits: ReqBits,
    calls: Calls,
    /// Recent activity, for attribution.
    history: History,
    /// (bdi, inode) -> the thread that last dirtied its pages.
    dirtiers: LruCache<(String, u64), Who>,
    commits: journal::OpenCommits,
    /// /proc stacks of threads found stuck at attach (their seeded intervals have none).
    stuck_stacks: HashMap<u32, Vec<String>>,
    /// Disks watched (their requests traced one by one), by name; and every disk that
    /// was, for the summary.
    watched: BTreeMap<DiskDev, String>,
    ever_watched: BTreeMap<DiskDev, String>,
    /// Disks that should be watched (live: the tracer adds them and notes it).
    want_watch: Vec<(DiskDev, String, String)>,
    /// Disks no traced process uses any more (live: the tracer stops watching them).
    want_unwatch: Vec<(DiskDev, String)>,
    asked: HashSet<DiskDev>,
    /// Filesystems of traced files, and the traced processes using each (`None`: asked
    /// for by --disk, kept for the whole run).
    file_devs: HashMap<FileDev, HashSet<Option<u32>>>,
    /// Write-family calls reported while running (they have no open entry), by (tid, start):
    /// the verdict they were last reported with.
    crossed_writes: HashMap<(u32, u64), &'static str>,
    /// (bdi, inode) of loop devices' backing files -> the loop device's name.
    loop_backing: HashMap<(String, u64), String>,
    /// Kernel threads whose scheduling is traced because traced calls wait on them (the
    /// journal threads of traced filesystems): tid -> why.
    helpers: HashMap<u32, String>,
    want_helpers: Vec<(u32, String)>,
    asked_helpers: HashSet<u32>,
    /// Filesystems of traced files newly seen, whose journal thread (live: found in /proc)
    /// is traced from now, not only from its first commit seen.
    want_journals: Vec<FileDev>,
    /// The newest kernel timestamp seen.
    last_ts: MonoNs,
    /// Names shared by history entries.
    names: Names,
    /// Resolved names the block path asks for per request (see block.rs's `Charges`).
    charges: block::Charges,
    /// Java names of threads (from HotSpot's probes or jcmd), by tid.
    java_names: HashMap<u32, (String, jvm::NameSource)>,
    /// (pid, from, to) of safepoints zkstall caused itself (its jcmd).
    own_safepoints: Vec<(u32, MonoNs, MonoNs)>,
    pub stats: Stats,
}

impl Pipeline {
    pub fn new(enrich: Box<dyn Enricher>, wall: WallClock, threshold_ns: u64) -> Self {
        Pipeline {
            enrich,
            wall,
            threshold_ns,
            events_out: false,
            req_bits: ReqBits::default(),
            calls: Calls::default(),
            history: History::default(),
            dirtiers: LruCache::new(NonZeroUsize::new(DIRTIERS).expect("nonzero")),
            commits: journal::OpenCommits::default(),
            stuck_stacks: HashMap::default(),
            watched: BTreeMap::new(),
            ever_watched: BTreeMap::new(),
            want_watch: Vec::new(),
            want_unwatch: Vec::new(),
            asked: HashSet::new(),
            file_devs: HashMap::default(),
            crossed_writes: HashMap::default(),
            loop_backing: HashMap::default(),
            helpers: HashMap::default(),
            want_helpers: Vec::new(),
            asked_helpers: HashSet::new(),
            want_journals: Vec::new(),
            last_ts: MonoNs(0),
            names: Names::default(),
            charges: block::Charges::default(),
            java_names: HashMap::default(),
            own_safepoints: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Sends the records around the calls too (block I/O, off-CPU intervals, ...).
    pub fn with_events(mut self, on: bool) -> Self {
        self.events_out = on;
        self
    }

    /// The caps of the history kept for attribution.
    pub fn with_history_limits(mut self, limits: crate::history::HistoryLimits) -> Self {
        self.history = History::with_limits(limits);
        self
    }

    /// How this kernel numbers request ops and flags (from BTF, or a recording's header).
    pub fn with_req_bits(mut self, bits: ReqBits) -> Self {
        self.req_bits = bits;
        self
    }

    /// A fact read from a recording.
    pub fn learn(&mut self, f: Fact) {
        self.enrich.learn(f);
    }

    /// Facts the enricher answered since the last call (for a recording).
    pub fn take_facts(&mut self) -> Vec<Fact> {
        self.enrich.take_facts()
    }

    /// Disks the traced files turned out to live on, not yet watched: (disk, name, why).
    /// Live tracing watches them and hands back a [`Note::Watch`] each.
    pub fn take_wanted_disks(&mut self) -> Vec<(DiskDev, String, String)> {
        std::mem::take(&mut self.want_watch)
    }

    /// Kernel threads traced calls wait on, to be traced too: (tid, why). Live tracing
    /// adds them and hands back a [`Note::Helper`] each.
    pub fn take_wanted_helpers(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.want_helpers)
    }

    /// Filesystems whose journal thread should be traced (see `want_journals`).
    pub fn take_wanted_journals(&mut self) -> Vec<FileDev> {
        std::mem::take(&mut self.want_journals)
    }

    /// Disks no traced process uses any more: (disk, name). Live tracing stops watching
    /// them and hands back a [`Note::Unwatch`] each.
    pub fn take_unwanted_disks(&mut self) -> Vec<(DiskDev, String)> {
        std::mem::take(&mut self.want_unwatch)
    }

    /// Asks for the disks serving filesystem `dev` to be watched, for process `user`
    /// (`None`: for the whole run, as --disk asks).
    pub fn want_disks_of(&mut self, dev: FileDev, user: Option<u32>, why: &str) {
        if self.file_devs.get(&dev).is_some_and(|u| u.contains(&user)) {
            return;
        }
        if self.file_devs.len() >= 4096 && !self.file_devs.contains_key(&dev) {
            return;
        }
        if !self.file_devs.contains_key(&dev) && self.want_journals.len() < 64 {
            self.want_journals.push(dev);
        }
        self.file_devs.entry(dev).or_default().insert(user);
        let path = self.enrich.disk_path(dev);
        for l in path.layers {
            if !self.watched.contains_key(&l.disk) && self.asked.insert(l.disk) {
                self.want_watch
                    .push((l.disk, l.name.clone(), why.to_string()));
            }
        }
    }

    /// Process `pid` is gone: the disks only it used are no longer wanted.
    fn release_disks_of(&mut self, pid: u32) {
        let mut changed = false;
        self.file_devs.retain(|_, users| {
            changed |= users.remove(&Some(pid));
            !users.is_empty()
        });
        if !changed {
            return;
        }
        let mut still: HashSet<DiskDev> = HashSet::new();
        let devs: Vec<FileDev> = self.file_devs.keys().copied().collect();
        for dev in devs {
            for l in self.enrich.disk_path(dev).layers {
                still.insert(l.disk);
            }
        }
        for (disk, name) in &self.watched {
            if !still.contains(disk) && !self.want_unwatch.iter().any(|(d, _)| d == disk) {
                self.want_unwatch.push((*disk, name.clone()));
            }
        }
    }

    /// The history's caps now.
    pub fn history_limits(&self) -> crate::history::HistoryLimits {
        self.history.limits
    }

    /// Lowers the history's caps (the agent near its memory bound), shedding the oldest.
    pub fn shrink_history(&mut self, limits: crate::history::HistoryLimits) {
        self.history.shrink(limits);
    }

    /// How much the history holds now: (requests, off-CPU intervals, other entries).
    pub fn history_len(&self) -> (usize, usize, usize) {
        let h = &self.history;
        (
            h.disks.values().map(|d| d.ios.len()).sum(),
            h.blocked.len(),
            h.throttles.len() + h.reclaims.len() + h.commits.len() + h.lost.len(),
        )
    }

    /// History entries shed to stay within bounds so far.
    pub fn history_shed(&self) -> u64 {
        self.history.shed
    }

    /// The disks watched so far.
    pub fn watched(&self) -> &BTreeMap<DiskDev, String> {
        &self.watched
    }

    fn count(&mut self, kind: &'static str) {
        *self.stats.by_type.entry(kind).or_default() += 1;
    }

    fn out(&mut self, sink: &mut dyn Sink, rec: EventRecord) -> io::Result<()> {
        let kind = match &rec {
            EventRecord::Io(_) => "io",
            EventRecord::Blocked(_) => "blocked",
            EventRecord::Thread(_) => "thread",
            EventRecord::Dirty(_) => "dirty",
            EventRecord::Writeback(_) => "writeback",
            EventRecord::Throttle(_) => "throttle",
            EventRecord::Journal(_) => "journal",
            EventRecord::IoSummary(_) => "io_summary",
        };
        self.count(kind);
        if self.events_out {
            sink.event(&rec)
        } else {
            Ok(())
        }
    }

    /// Handles one kernel record (from the ring buffer, or synthesized at the end of
    /// tracing from the kernel's maps in the same layout).
    pub fn handle(&mut self, rec: &[u8], sink: &mut dyn Sink) -> io::Result<()> {
        self.stats.events += 1;
        let ev = match decode(rec) {
            Ok(ev) => ev,
            Err(e) => {
                self.stats.decode_errors += 1;
                tracing::debug!("undecodable record: {e}");
                return Ok(());
            }
        };
        if let Some(ts) = rec
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        {
            self.last_ts = self.last_ts.max(MonoNs(ts));
        }
        match ev {
            Event::SyscallEnter {
                task,
                ts,
                syscall,
                arg,
                file_id,
            } => self.on_enter(task, ts, syscall, arg, file_id, sink),
            Event::SyscallExit(x) => self.on_exit(x, sink),
            Event::Io(io) => self.on_io(io, sink),
            Event::Blocked(b) => self.on_blocked(b, sink),
            Event::Thread {
                actor,
                ts,
                change,
                tid,
                comm,
            } => self.on_thread(actor, ts, change, tid, comm, sink),
            Event::Dirty {
                task,
                ts,
                comm,
                cgroup_id,
                ino,
                pages,
                bdi,
            } => self.on_dirty(task, ts, comm, cgroup_id, ino, pages, bdi, sink),
            Event::Writeback {
                task,
                ts,
                start,
                ino,
                pages,
                bdi,
            } => self.on_writeback(task, ts, start, ino, pages, bdi, sink),
            Event::Throttle {
                task,
                ts,
                comm,
                pause_ms,
                paused_ms,
                dirty,
                limit,
                bdi,
            } => self.on_throttle(task, ts, comm, pause_ms, paused_ms, dirty, limit, bdi, sink),
            Event::Jvm {
                task,
                ts,
                probe,
                name,
                a,
                b,
            } => self.on_jvm(task, ts, probe, name, a, b, sink),
            Event::HostGap { cpu, from, to } => {
                self.history.host_gap(cpu, from, to);
                self.count("host_gap");
                Ok(())
            }
            Event::LowSpace {
                task,
                ts,
                sb_dev,
                nr_pages,
            } => {
                self.history.low_space(crate::history::LowSpaceQueued {
                    pid: task.pid,
                    tid: task.tid,
                    at: ts,
                    dev: crate::enrich::DevId::from_kernel(sb_dev),
                    nr_pages,
                });
                self.count("low_space");
                Ok(())
            }
            Event::Journal {
                task,
                ts,
                dev,
                transaction,
                phase,
            } => self.on_journal(task, ts, dev, transaction, phase, sink),
            Event::Reclaim {
                task,
                start,
                end,
                nr_reclaimed,
                memcg,
            } => {
                self.history.reclaim(crate::history::Reclaim {
                    pid: task.pid,
                    tid: task.tid,
                    start,
                    end,
                    nr_reclaimed,
                    memcg,
                });
                self.count("reclaim");
                Ok(())
            }
            Event::JournalStats {
                dev,
                transaction,
                handles,
                blocks,
                blocks_logged,
            } => {
                self.commits
                    .stats(dev, transaction, handles, blocks, blocks_logged);
                Ok(())
            }
        }
    }

    /// Reads a target's open files again (live tracing, periodically).
    pub fn refresh_files(&mut self, pid: u32) {
        self.enrich.refresh_files(pid);
    }

    /// Handles one userspace observation.
    pub fn note(&mut self, n: &Note, sink: &mut dyn Sink) -> io::Result<()> {
        match n {
            Note::Target { pid, .. } => {
                self.enrich.seed_threads(*pid);
                Ok(())
            }
            Note::TargetExit { pid, .. } => {
                self.calls.forget_pid(*pid);
                self.enrich.forget_pid(*pid);
                self.release_disks_of(*pid);
                // A safepoint it was in never ends.
                while let Some(o) = self.history.open_jvm_pause(*pid) {
                    o.open = false;
                }
                Ok(())
            }
            Note::JavaNames {
                ts_ns,
                end_ns,
                pid,
                names,
            } => {
                self.on_java_names(*pid, MonoNs(*ts_ns), MonoNs(*end_ns), names);
                Ok(())
            }
            Note::Host { cpus, .. } => {
                self.history.host_cpus = Some(*cpus);
                Ok(())
            }
            Note::Unwatch { disk, .. } => {
                if let Some(d) = crate::enrich::DevId::parse(disk) {
                    let d = DiskDev(d);
                    self.watched.remove(&d);
                    self.asked.remove(&d);
                    self.history.unwatch(d);
                    self.stats.unwatched += 1;
                }
                Ok(())
            }
            Note::Unseen {
                from_ns,
                to_ns,
                disk,
                completions,
                stale,
                ..
            } => {
                if let Some(d) = crate::enrich::DevId::parse(disk) {
                    let (d, from, to) = (DiskDev(d), MonoNs(*from_ns), MonoNs(*to_ns));
                    if *completions > 0 {
                        self.history.unseen(d, from, to);
                    }
                    if *stale > 0 {
                        self.history.stale(d, from, to);
                    }
                }
                self.stats.unseen_completions += completions;
                self.stats.stale_requests += stale;
                self.stats.unseen_windows += 1;
                Ok(())
            }
            Note::Watch {
                ts_ns,
                disk,
                name,
                backing_bdi,
                backing_ino,
                ..
            } => {
                if let Some(d) = crate::enrich::DevId::parse(disk) {
                    let d = DiskDev(d);
                    self.watched.insert(d, name.clone());
                    if self.ever_watched.len() < 4096 {
                        self.ever_watched.insert(d, name.clone());
                    }
                    self.history.watch(d, MonoNs(*ts_ns));
                }
                if let (Some(b), Some(i)) = (backing_bdi, backing_ino)
                    && self.loop_backing.len() < 4096
                {
                    self.loop_backing.insert((b.clone(), *i), name.clone());
                }
                Ok(())
            }
            Note::Helper { pid, why, .. } => {
                if self.helpers.len() < 1024 {
                    self.helpers.insert(*pid, why.clone());
                }
                Ok(())
            }
            Note::Stuck { .. } => self.on_stuck(n),
            Note::Running { .. } => self.on_running(n, sink),
            Note::IoSummary { .. } => self.on_io_summary(n, sink),
            Note::Lost {
                from_ns,
                to_ns,
                ringbuf_full,
                shed,
            } => {
                self.history.lost(MonoNs(*from_ns), MonoNs(*to_ns));
                self.stats.lost_ringbuf_full += ringbuf_full;
                self.stats.lost_shed += shed;
                self.stats.lost_windows += 1;
                Ok(())
            }
        }
    }

    /// The end of the stream: calls still open that the kernel did not confirm running
    /// (with a [`Note::Running`] at the end) lost their exit; they are counted, not
    /// reported as phantom calls as long as the trace.
    pub fn finish(&mut self, _now: MonoNs, _sink: &mut dyn Sink) -> io::Result<()> {
        self.calls.close_all();
        Ok(())
    }

    /// The summary of a run from its trailer: the same numbers live and from a recording.
    pub fn summary(
        &self,
        t: &crate::recording::Trailer,
        started_ns: u64,
        disabled: Vec<crate::sinks::DisabledSignal>,
    ) -> Summary {
        let mut s = Summary {
            kind: "summary",
            pids: t.pids.clone(),
            duration_s: t.end_ns.saturating_sub(started_ns) as f64 / 1e9,
            dropped: t.dropped,
            probe_misses: t.probe_misses,
            untimed: t.untimed + self.calls.evicted,
            exit_without_enter: t.exit_without_enter,
            read_errors: t.read_errors,
            io_unmatched: t.io_unmatched,
            io_before_watch: t.io_before_watch,
            switch_unseen: t.switch_unseen,
            io_summed: t.io_summed,
            io_late: t.io_late,
            map_full: t.map_full,
            map_busy: t.map_busy,
            stack_errors: t.stack_errors,
            io_merged: t.io_merged,
            io_stale: t.io_stale,
            io_partial: t.io_partial,
            io_flush: t.io_flush,
            io_flush_seq_end: t.io_flush_seq_end,
            io_watched: t.io_watched,
            io_other_disks: t.io_other_disks,
            other_disks: t.other_disks.clone(),
            io_unseen: t.io_unseen,
            unseen_disks: t.unseen_disks.clone(),
            // The trailer counts what the reader shed while the file was written; an
            // incident's window before its trigger says its own in its `lost` notes.
            shed_by_reader: t.shed_by_reader.max(self.stats.lost_shed),
            disabled,
            ..Default::default()
        };
        s.events = self.stats.events;
        s.calls = self.stats.calls_seen;
        s.reported = self.stats.reported;
        s.crossed = self.stats.crossed;
        s.decode_errors = self.stats.decode_errors;
        s.threshold_ms = self.threshold_ns as f64 / 1e6;
        s.by_type = self.stats.by_type.clone();
        s.by_type.insert("call", self.stats.reported);
        s.history_shed = self.history.shed;
        s.lost_windows = self.stats.lost_windows;
        s.calls_exit_lost = self.calls.exit_lost;
        s.calls_thread_exited = self.calls.thread_exited;
        s.watched = self
            .ever_watched
            .iter()
            .map(|(d, n)| format!("{n} ({d})"))
            .collect();
        s.unwatched = self.stats.unwatched;
        s.unseen_watched = self.stats.unseen_completions;
        s.stale_requests = self.stats.stale_requests;
        s.unseen_windows = self.stats.unseen_windows;
        s
    }
}

#[cfg(test)]
mod tests;
