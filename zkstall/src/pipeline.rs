//! The per-record path: decode -> enrich -> model -> sink. Live tracing feeds it from the
//! ring buffer; recordings will feed it from a file, through this same code.

use std::{collections::HashMap, io};

use zkstall_common::{ArgKind, JournalPhase, Syscall, ThreadChange};

use crate::{
    attribution::{self, Span},
    clock::{MonoNs, WallClock},
    decode::{Event, Task, decode},
    enrich::{DevId, Enricher, FileInfo, bounded_insert},
    history::{self, History, Party},
    model::{Call, Calls},
    sinks::{
        CallRecord, EventRecord, Sink, Summary,
        events::{
            BlockedRecord, DirtyRecord, IoRecord, JournalRecord, ThreadRecord, ThrottleRecord, Who,
            WritebackRecord,
        },
    },
};

const DIRTIERS: usize = 65536;
/// A thread that goes off CPU within this of a syscall's return did so on its way back
/// to its caller: preempted on exit to user space, or parked at a JVM safepoint on the
/// native-to-Java transition (both within microseconds). Later, it is the caller's own
/// code that blocks (ZooKeeper's SyncThread waiting for the next requests): not the call.
const AFTER_GAP_NS: u64 = 50_000;
/// A held call whose thread shows nothing for this long is released as it is.
const HOLD_MAX_NS: u64 = 1_000_000_000;
const MAX_HELD: usize = 65536;
const OPEN_COMMITS: usize = 1024;

/// A jbd2 commit between its start and end records.
#[derive(Clone, Debug, Default)]
struct Commit {
    start: Option<MonoNs>,
    locking: Option<MonoNs>,
    flushing: Option<MonoNs>,
    logging: Option<MonoNs>,
    task: Option<Task>,
    stats: Option<(u32, u32, u32)>,
}

pub struct Pipeline {
    calls: Calls,
    /// Names for kernel identifiers: live from /proc and /sys, or from a recording.
    enrich: Box<dyn Enricher>,
    /// inode -> the last process that dirtied its pages.
    dirtiers: HashMap<u64, Who>,
    commits: HashMap<(u32, u32), Commit>,
    /// Recent activity, for attribution.
    history: History,
    /// fsync-family calls held until the thread's next event says whether it ran again
    /// right after the syscall returned (what the JVM's timing of force() includes).
    held: HashMap<u32, Call>,
    held_order: std::collections::VecDeque<(MonoNs, u32)>,
    /// The newest record's timestamp: the clock for releasing held calls.
    last_ts: MonoNs,
    /// jbd2 thread comms, learned from the journal records' tasks.
    comms: HashMap<u32, String>,
    wall: WallClock,
    threshold_ns: u64,
    /// Also send the records around the calls (`trace --events`).
    events_out: bool,
    pub by_type: std::collections::BTreeMap<&'static str, u64>,
    /// Counts for the summary.
    pub events: u64,
    pub calls_seen: u64,
    pub reported: u64,
    pub decode_errors: u64,
}

impl Pipeline {
    pub fn new(enrich: Box<dyn Enricher>, wall: WallClock, threshold_ns: u64) -> Self {
        Pipeline {
            calls: Calls::default(),
            enrich,
            dirtiers: HashMap::new(),
            commits: HashMap::new(),
            history: History::default(),
            held: HashMap::new(),
            held_order: Default::default(),
            last_ts: MonoNs(0),
            comms: HashMap::new(),
            wall,
            threshold_ns,
            events_out: false,
            by_type: Default::default(),
            events: 0,
            calls_seen: 0,
            reported: 0,
            decode_errors: 0,
        }
    }

    /// A fact read from a recording.
    pub fn learn(&mut self, f: crate::enrich::Fact) {
        self.enrich.learn(f);
    }

    /// Reads the thread names of a new target (live).
    pub fn seed_threads(&mut self, pid: u32) {
        self.enrich.seed_threads(pid);
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
            untimed: t.untimed + self.evicted(),
            exit_without_enter: t.exit_without_enter,
            read_errors: t.read_errors,
            io_unmatched: t.io_unmatched,
            map_full: t.map_full,
            stack_errors: t.stack_errors,
            disabled,
            ..Default::default()
        };
        self.summarize(&mut s);
        s
    }

    /// Facts the enricher answered since the last call (for a recording).
    pub fn take_facts(&mut self) -> Vec<crate::enrich::Fact> {
        self.enrich.take_facts()
    }

    /// Sends the records around the calls too (block I/O, off-CPU intervals, ...).
    pub fn with_events(mut self, on: bool) -> Self {
        self.events_out = on;
        self
    }

    fn count(&mut self, kind: &'static str) {
        *self.by_type.entry(kind).or_default() += 1;
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
        };
        self.count(kind);
        if self.events_out {
            sink.event(&rec)
        } else {
            Ok(())
        }
    }

    fn device(&mut self, dev: DevId, pid: u32) -> Option<String> {
        self.enrich.device_name(dev, pid)
    }

    fn bdi(&mut self, bdi: &str, pid: u32) -> (String, Option<String>) {
        match DevId::parse(bdi) {
            Some(d) => (d.to_string(), self.device(d, pid)),
            None => (bdi.to_string(), None),
        }
    }

    fn stack(&mut self, id: u32) -> Vec<String> {
        self.enrich.stack(id)
    }

    /// Handles one record from the kernel.
    pub fn handle(&mut self, rec: &[u8], sink: &mut dyn Sink) -> io::Result<()> {
        self.events += 1;
        let ev = match decode(rec) {
            Ok(ev) => ev,
            Err(e) => {
                self.decode_errors += 1;
                tracing::debug!("undecodable record: {e}");
                return Ok(());
            }
        };
        if !self.events_out {
            // Without --events, dirtying and writeback records only feed state.
            match &ev {
                Event::Writeback { .. } => {
                    self.count("writeback");
                    return Ok(());
                }
                Event::Dirty {
                    task, comm, ino, ..
                } => {
                    let who = Who {
                        pid: task.pid,
                        tid: task.tid,
                        comm: comm.clone(),
                        cgroup: None,
                    };
                    bounded_insert(&mut self.dirtiers, DIRTIERS, *ino, who);
                    self.count("dirty");
                    return Ok(());
                }
                _ => {}
            }
        }
        if let Some(ts) = rec
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        {
            self.last_ts = self.last_ts.max(MonoNs(ts));
        }
        // The thread made another call: it ran right after the held one returned.
        if let Event::SyscallEnter { task, .. } = &ev
            && let Some(c) = self.held.remove(&task.tid)
        {
            self.release(c, None, sink)?;
        }
        self.handle_event(ev, sink)?;
        self.release_stale(sink)
    }

    fn handle_event(&mut self, ev: Event, sink: &mut dyn Sink) -> io::Result<()> {
        match ev {
            Event::SyscallEnter {
                task,
                ts,
                syscall,
                arg,
            } => {
                let file = self.resolve(task, syscall, arg);
                self.calls.enter(task, syscall, ts, arg, file);
            }
            Event::SyscallExit {
                task,
                start,
                end,
                syscall,
                ret,
                arg,
                comm,
            } => {
                self.enrich.observe_thread(task.tid, &comm);
                let mut call = self.calls.exit(task, syscall, start, end, arg, ret, comm);
                self.calls_seen += 1;
                if syscall.is_write() {
                    // Only slow ones reach userspace; nothing to wait for.
                    if call.duration_ns(end) >= self.threshold_ns {
                        if call.file.is_none() {
                            call.file = self.resolve(task, syscall, arg);
                        }
                        self.reported += 1;
                        let rec = self.record(&call, end, None);
                        sink.call(&rec)?;
                    }
                } else {
                    if call.file.is_none() {
                        call.file = self.resolve(task, syscall, arg);
                    }
                    if let Some(prev) = self.held.remove(&task.tid) {
                        self.release(prev, None, sink)?;
                    }
                    if self.held.len() >= MAX_HELD {
                        // Bounded: release the oldest as it is.
                        if let Some((_, tid)) = self.held_order.pop_front()
                            && let Some(c) = self.held.remove(&tid)
                        {
                            self.release(c, None, sink)?;
                        }
                    }
                    self.held_order.push_back((end, task.tid));
                    self.held.insert(task.tid, call);
                }
            }
            Event::Io {
                task,
                comm,
                cgroup_id,
                dev,
                sector,
                bytes,
                rwbs,
                error,
                requeues,
                insert,
                issue,
                complete,
                ino,
            } => {
                let dev = DevId::from_kernel(dev);
                let device = self.device(dev, task.pid);
                let model = self.enrich.device_model(dev);
                let dirtier = (ino != 0)
                    .then(|| self.dirtiers.get(&ino).cloned())
                    .flatten()
                    .filter(|d| d.pid != task.pid);
                let (op, sync, flush, fua) = rwbs_flags(&rwbs);
                let cgroup = self.enrich.cgroup_path(cgroup_id);
                let charged = match &dirtier {
                    Some(d) => Party {
                        pid: d.pid,
                        comm: d.comm.clone(),
                        cgroup: d.cgroup.clone(),
                    },
                    None => Party {
                        pid: task.pid,
                        comm: comm.clone(),
                        cgroup: cgroup.clone(),
                    },
                };
                self.history.io(history::Io {
                    dev,
                    pid: task.pid,
                    charged,
                    bytes,
                    write: op == "write",
                    queued: insert,
                    issued: issue,
                    completed: complete,
                });
                if !self.events_out {
                    self.count("io");
                    return Ok(());
                }
                let rec = IoRecord {
                    kind: "io",
                    dev: dev.to_string(),
                    device,
                    model,
                    sector,
                    bytes,
                    rwbs,
                    op,
                    sync,
                    flush,
                    fua,
                    pid: task.pid,
                    tid: task.tid,
                    comm,
                    cgroup,
                    queued_ns: insert.map(|i| i.0),
                    issue_ns: issue.map(|i| i.0),
                    complete_ns: complete.0,
                    queue_ms: insert.zip(issue).map(|(q, i)| i.since(q) as f64 / 1e6),
                    service_ms: issue.map(|i| complete.since(i) as f64 / 1e6),
                    error,
                    requeues,
                    ino: (ino != 0).then_some(ino),
                    dirtier,
                };
                self.out(sink, EventRecord::Io(rec))?;
            }
            Event::Blocked {
                task,
                off,
                on,
                wake,
                state,
                syscall,
                waker,
                stack_id,
            } => {
                let thread = self
                    .enrich
                    .thread_name(task.pid, task.tid)
                    .unwrap_or_default();
                let runq = match wake {
                    Some(w) => on.since(w),
                    None if state & 0xff == 0 => on.since(off), // preempted: runnable throughout
                    None => 0,
                };
                let stack = match stack_id {
                    Some(id) if state & 0x2 != 0 => self.stack(id),
                    _ => Vec::new(),
                };
                let syscall = syscall.map(syscall_name);
                self.history.blocked(history::Blocked {
                    pid: task.pid,
                    tid: task.tid,
                    thread: thread.clone(),
                    state: state_name(state),
                    off,
                    on,
                    wake,
                    syscall: syscall.clone(),
                    waker: waker.as_ref().map(|(t, c)| (t.pid, t.tid, c.clone())),
                    stack: stack.clone(),
                });
                // Off CPU right after a held call returned: the caller saw that wait too.
                if let Some(c) = self.held.remove(&task.tid) {
                    let after = c
                        .end
                        .filter(|e| off.since(*e) <= AFTER_GAP_NS && off >= *e)
                        .map(|_| on);
                    self.release(c, after, sink)?;
                }
                if !self.events_out {
                    self.count("blocked");
                    return Ok(());
                }
                let rec = BlockedRecord {
                    kind: "blocked",
                    pid: task.pid,
                    tid: task.tid,
                    thread,
                    state: state_name(state),
                    start_ns: off.0,
                    start_unix_ms: self.wall.unix_ms(off),
                    duration_ms: on.since(off) as f64 / 1e6,
                    runq_ms: runq as f64 / 1e6,
                    syscall,
                    waker: waker.map(|(t, comm)| Who {
                        pid: t.pid,
                        tid: t.tid,
                        comm,
                        cgroup: None,
                    }),
                    stack,
                };
                self.out(sink, EventRecord::Blocked(rec))?;
            }
            Event::Thread {
                actor,
                ts,
                change,
                tid,
                comm,
            } => {
                let change = match change {
                    ThreadChange::New => "new",
                    ThreadChange::Exit => "exit",
                    ThreadChange::Rename => "rename",
                };
                if change != "exit" {
                    self.enrich.observe_thread(tid, &comm);
                }
                let rec = ThreadRecord {
                    kind: "thread",
                    change,
                    pid: actor.pid,
                    tid,
                    thread: comm,
                    ts_ns: ts.0,
                };
                self.out(sink, EventRecord::Thread(rec))?;
                if change == "exit" {
                    self.enrich.forget_thread(tid);
                }
            }
            Event::Dirty {
                task,
                ts,
                comm,
                cgroup_id,
                ino,
                pages,
                bdi,
            } => {
                let cgroup = self.enrich.cgroup_path(cgroup_id);
                let who = Who {
                    pid: task.pid,
                    tid: task.tid,
                    comm: comm.clone(),
                    cgroup: cgroup.clone(),
                };
                bounded_insert(&mut self.dirtiers, DIRTIERS, ino, who);
                let (dev, device) = self.bdi(&bdi, task.pid);
                let rec = DirtyRecord {
                    kind: "dirty",
                    pid: task.pid,
                    tid: task.tid,
                    comm,
                    cgroup,
                    dev,
                    device,
                    ino,
                    folios: pages,
                    ts_ns: ts.0,
                };
                self.out(sink, EventRecord::Dirty(rec))?;
            }
            Event::Writeback {
                task,
                ts,
                start,
                ino,
                pages,
                bdi,
            } => {
                let (dev, device) = self.bdi(&bdi, task.pid);
                let comm = self
                    .enrich
                    .thread_name(task.pid, task.tid)
                    .unwrap_or_default();
                let rec = WritebackRecord {
                    kind: "writeback",
                    pid: task.pid,
                    tid: task.tid,
                    comm,
                    dev,
                    device,
                    ino,
                    pages,
                    start_ns: start.map(|s| s.0),
                    duration_ms: start.map(|s| ts.since(s) as f64 / 1e6),
                    ts_ns: ts.0,
                    dirtier: self
                        .dirtiers
                        .get(&ino)
                        .cloned()
                        .filter(|d| d.pid != task.pid),
                };
                self.out(sink, EventRecord::Writeback(rec))?;
            }
            Event::Throttle {
                task,
                ts,
                comm,
                pause_ms,
                paused_ms,
                dirty,
                limit,
                bdi,
            } => {
                self.history.throttle(history::Throttle {
                    pid: task.pid,
                    tid: task.tid,
                    at: ts,
                    pause_ms,
                });
                if !self.events_out {
                    self.count("throttle");
                    return Ok(());
                }
                let (dev, device) = self.bdi(&bdi, task.pid);
                let rec = ThrottleRecord {
                    kind: "throttle",
                    pid: task.pid,
                    tid: task.tid,
                    comm,
                    dev,
                    device,
                    pause_ms,
                    paused_ms,
                    dirty_pages: dirty,
                    limit_pages: limit,
                    ts_ns: ts.0,
                    start_unix_ms: self.wall.unix_ms(ts),
                };
                self.out(sink, EventRecord::Throttle(rec))?;
            }
            Event::Journal {
                task,
                ts,
                dev,
                transaction,
                phase,
            } => {
                if self.commits.len() >= OPEN_COMMITS
                    && !self.commits.contains_key(&(dev, transaction))
                {
                    self.commits.clear();
                }
                let c = self.commits.entry((dev, transaction)).or_default();
                c.task.get_or_insert(task);
                match phase {
                    JournalPhase::Start => c.start = Some(ts),
                    JournalPhase::Locking => c.locking = Some(ts),
                    JournalPhase::Flushing => c.flushing = Some(ts),
                    JournalPhase::Logging => c.logging = Some(ts),
                    JournalPhase::End => {
                        let c = self.commits.remove(&(dev, transaction)).unwrap_or_default();
                        self.journal(sink, dev, transaction, c, ts)?;
                    }
                }
            }
            Event::JournalStats {
                dev,
                transaction,
                handles,
                blocks,
                blocks_logged,
            } => {
                if let Some(c) = self.commits.get_mut(&(dev, transaction)) {
                    c.stats = Some((handles, blocks, blocks_logged));
                }
            }
        }
        Ok(())
    }

    fn journal(
        &mut self,
        sink: &mut dyn Sink,
        dev: u32,
        transaction: u32,
        c: Commit,
        end: MonoNs,
    ) -> io::Result<()> {
        let Some(start) = c.start else { return Ok(()) }; // tracing began mid-commit
        let task = c.task.unwrap_or(Task { pid: 0, tid: 0 });
        let dev = DevId::from_kernel(dev);
        let device = self.device(dev, task.pid);
        let comm = match self.comms.get(&task.tid) {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .enrich
                    .thread_name(task.pid, task.tid)
                    .unwrap_or_default();
                bounded_insert(&mut self.comms, 1024, task.tid, c.clone());
                c
            }
        };
        let span = |a: Option<MonoNs>, b: Option<MonoNs>| match (a, b) {
            (Some(a), Some(b)) => Some(b.since(a) as f64 / 1e6),
            _ => None,
        };
        self.history.commit(history::Commit {
            dev,
            transaction,
            start,
            end,
            locking_ms: span(c.locking, c.flushing),
            flushing_ms: span(c.flushing, c.logging),
            logging_ms: span(c.logging, Some(end)),
            handles: c.stats.map(|s| s.0),
            blocks: c.stats.map(|s| s.1),
        });
        if !self.events_out {
            self.count("journal");
            return Ok(());
        }
        let rec = JournalRecord {
            kind: "journal",
            dev: dev.to_string(),
            device,
            transaction,
            pid: task.pid,
            comm,
            start_ns: start.0,
            duration_ms: end.since(start) as f64 / 1e6,
            locking_ms: span(c.locking, c.flushing),
            flushing_ms: span(c.flushing, c.logging),
            logging_ms: span(c.logging, Some(end)),
            handles: c.stats.map(|s| s.0),
            blocks: c.stats.map(|s| s.1),
            blocks_logged: c.stats.map(|s| s.2),
        };
        self.out(sink, EventRecord::Journal(rec))
    }

    /// Reports calls still running at `now` that are already over the threshold.
    pub fn finish(&mut self, now: MonoNs, sink: &mut dyn Sink) -> io::Result<()> {
        while let Some((_, tid)) = self.held_order.pop_front() {
            if let Some(c) = self.held.remove(&tid) {
                self.release(c, None, sink)?;
            }
        }
        for call in self.calls.unfinished() {
            if call.duration_ns(now) >= self.threshold_ns && self.threshold_ns > 0 {
                self.reported += 1;
                let rec = self.record(&call, now, None);
                sink.call(&rec)?;
            }
        }
        Ok(())
    }

    /// Reports a held call if it was slow as its caller saw it: until `ran_again` when the
    /// thread went off CPU right after the syscall returned, else until the return.
    fn release(
        &mut self,
        mut call: Call,
        ran_again: Option<MonoNs>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        let end = call.end.unwrap_or(call.start);
        let visible_end = ran_again.filter(|r| *r > end);
        if visible_end.unwrap_or(end).since(call.start) < self.threshold_ns {
            return Ok(());
        }
        if call.file.is_none() {
            call.file = self.resolve(call.task, call.syscall, call.arg);
        }
        self.reported += 1;
        let rec = self.record(&call, end, visible_end);
        sink.call(&rec)
    }

    /// Held calls whose thread has done nothing traced for a while: it ran on.
    fn release_stale(&mut self, sink: &mut dyn Sink) -> io::Result<()> {
        while let Some(&(exit, tid)) = self.held_order.front() {
            if self.last_ts.since(exit) < HOLD_MAX_NS {
                break;
            }
            self.held_order.pop_front();
            if self.held.get(&tid).is_some_and(|c| c.end == Some(exit))
                && let Some(c) = self.held.remove(&tid)
            {
                self.release(c, None, sink)?;
            }
        }
        Ok(())
    }

    /// Forgets a process that exited.
    /// Reports what was held for it first.
    pub fn forget_pid(&mut self, pid: u32, sink: &mut dyn Sink) -> io::Result<()> {
        let tids: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, c)| c.task.pid == pid)
            .map(|(t, _)| *t)
            .collect();
        for tid in tids {
            if let Some(c) = self.held.remove(&tid) {
                self.release(c, None, sink)?;
            }
        }
        self.calls.forget_pid(pid);
        self.enrich.forget_pid(pid);
        Ok(())
    }

    pub fn evicted(&self) -> u64 {
        self.calls.evicted
    }

    fn resolve(&mut self, task: Task, syscall: Syscall, arg: u64) -> Option<FileInfo> {
        match syscall.arg().1 {
            ArgKind::Fd => self.enrich.file_by_fd(task.pid, arg as i64 as i32),
            ArgKind::Addr => self.enrich.file_by_addr(task.pid, arg),
            ArgKind::None => None,
        }
    }

    /// The printed record of a call. `visible_end`: when the thread ran again, if it went
    /// off CPU right after the syscall returned.
    fn record(&mut self, call: &Call, now: MonoNs, visible_end: Option<MonoNs>) -> CallRecord {
        let thread = if call.comm.is_empty() {
            self.enrich
                .thread_name(call.task.pid, call.task.tid)
                .unwrap_or_default()
        } else {
            call.comm.clone()
        };
        let dev = call.file.as_ref().and_then(|f| f.dev);
        let device = dev.and_then(|d| self.enrich.device_name(d, call.task.pid));
        let why = attribution::explain(
            &Span {
                pid: call.task.pid,
                tid: call.task.tid,
                syscall: call.syscall.name(),
                dev,
                device: device.clone(),
                start: call.start,
                end: visible_end.unwrap_or(call.end.unwrap_or(now)),
                syscall_end: visible_end.and(call.end),
            },
            &self.history,
        );
        let syscall_end = call.end.unwrap_or(now);
        let after_ms = visible_end.map(|v| v.since(syscall_end) as f64 / 1e6);
        CallRecord {
            kind: if call.syscall.is_write() {
                "write"
            } else {
                "fsync"
            },
            pid: call.task.pid,
            tid: call.task.tid,
            thread,
            syscall: call.syscall.name(),
            fd: match call.syscall.arg().1 {
                ArgKind::Fd => Some(call.arg as i64 as i32),
                _ => None,
            },
            path: call.file.as_ref().map(|f| f.path.clone()),
            dev: dev.map(|d| d.to_string()),
            device,
            start_ns: call.start.0,
            start_unix_ms: self.wall.unix_ms(call.start),
            duration_ms: call.duration_ns(now) as f64 / 1e6,
            ret: call.ret,
            unfinished: call.end.is_none(),
            after_ms,
            visible_ms: visible_end.map(|v| v.since(call.start) as f64 / 1e6),
            why: Some(why),
        }
    }

    /// Fills the pipeline's part of the summary.
    pub fn summarize(&self, s: &mut Summary) {
        s.events = self.events;
        s.calls = self.calls_seen;
        s.reported = self.reported;
        s.decode_errors = self.decode_errors;
        s.threshold_ms = self.threshold_ns as f64 / 1e6;
        s.by_type = self.by_type.clone();
        s.history_shed = self.history.shed;
        s.by_type.insert("call", self.reported);
    }
}

/// The op and the flags of an rwbs string (`FWFS`: preflush + write + FUA + sync).
pub fn rwbs_flags(rwbs: &str) -> (&'static str, bool, bool, bool) {
    let b = rwbs.as_bytes();
    let (preflush, rest) = match b {
        [b'F', r @ ..] if !r.is_empty() => (true, r),
        _ => (false, b),
    };
    let op = match rest.first() {
        Some(b'R') => "read",
        Some(b'W') => "write",
        Some(b'D') => "discard",
        Some(b'E') => "secure_erase",
        Some(b'F') => "flush",
        Some(b'N') => "none",
        _ => "other",
    };
    let flags = rest.get(1..).unwrap_or(&[]);
    let flush = preflush || op == "flush";
    (op, flags.contains(&b'S'), flush, flags.contains(&b'F'))
}

/// sched_switch's prev_state as ps(1) letters: D, S, R (preempted), ...
pub fn state_name(state: u64) -> String {
    const LETTERS: [(u64, char); 8] = [
        (0x1, 'S'),
        (0x2, 'D'),
        (0x4, 'T'),
        (0x8, 't'),
        (0x10, 'X'),
        (0x20, 'Z'),
        (0x40, 'P'),
        (0x80, 'I'),
    ];
    let s: String = LETTERS
        .iter()
        .filter(|(bit, _)| state & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if s.is_empty() { "R".into() } else { s }
}

/// The name of an x86_64 syscall number.
pub fn syscall_name(nr: i64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall {nr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{enrich::Live, sinks::JsonSink, targets::ProcRoot};
    use zkstall_common::{COMM_LEN, EventHeader, EventKind, SyscallEnterEvent, SyscallExitEvent};

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over the plain wire records.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn enter(pid: u32, tid: u32, ts: u64, sc: Syscall, arg: u64) -> Vec<u8> {
        bytes_of(&SyscallEnterEvent {
            hdr: EventHeader {
                kind: EventKind::SyscallEnter as u32,
                size: 40,
                ts_ns: ts,
                tgid: pid,
                tid,
            },
            syscall: sc as u32,
            _pad: 0,
            arg,
        })
    }

    fn exit(pid: u32, tid: u32, start: u64, end: u64, sc: Syscall, arg: u64) -> Vec<u8> {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"sync");
        bytes_of(&SyscallExitEvent {
            hdr: EventHeader {
                kind: EventKind::SyscallExit as u32,
                size: 72,
                ts_ns: end,
                tgid: pid,
                tid,
            },
            syscall: sc as u32,
            _pad: 0,
            start_ns: start,
            ret: 0,
            arg,
            comm,
        })
    }

    #[test]
    fn a_call_is_as_slow_as_its_caller_saw_it() {
        use zkstall_common::BlockedEvent;
        let mut p = Pipeline::new(
            Box::new(Live::new(
                ProcRoot(std::path::PathBuf::from("/nonexistent")),
                "/nonexistent",
            )),
            WallClock { offset_ns: 0 },
            20_000_000,
        );
        let ms = |v: u64| v * 1_000_000;
        let blocked = |tid: u32, off: u64, on: u64, state: u64| BlockedEvent {
            hdr: EventHeader {
                kind: EventKind::Blocked as u32,
                size: 88,
                ts_ns: on,
                tgid: 7,
                tid,
            },
            off_ns: off,
            wake_ns: 0,
            state,
            syscall: -1,
            waker_tgid: 0,
            waker_tid: 0,
            waker_comm: [0; COMM_LEN],
            stack_id: -1,
        };
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out);
            // 12 ms fdatasync, then preempted 15 ms right after it returned: 27 ms as seen.
            p.handle(&enter(7, 8, ms(100), Syscall::Fdatasync, 3), &mut sink)
                .unwrap();
            p.handle(
                &exit(7, 8, ms(100), ms(112), Syscall::Fdatasync, 3),
                &mut sink,
            )
            .unwrap();
            p.handle(
                &bytes_of(&blocked(8, ms(112) + 5_000, ms(127), 0x100)),
                &mut sink,
            )
            .unwrap();
            // 12 ms fdatasync, then the thread runs on (its next call): not reported.
            p.handle(&enter(7, 8, ms(200), Syscall::Fdatasync, 3), &mut sink)
                .unwrap();
            p.handle(
                &exit(7, 8, ms(200), ms(212), Syscall::Fdatasync, 3),
                &mut sink,
            )
            .unwrap();
            p.handle(&enter(7, 8, ms(213), Syscall::Fsync, 3), &mut sink)
                .unwrap();
            // Off CPU 100 µs after returning: its caller's own code blocked, not the call.
            p.handle(&exit(7, 8, ms(213), ms(225), Syscall::Fsync, 3), &mut sink)
                .unwrap();
            p.handle(&bytes_of(&blocked(8, ms(230), ms(260), 0x1)), &mut sink)
                .unwrap();
            p.finish(MonoNs(ms(300)), &mut sink).unwrap();
        }
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let r = &lines[0];
        assert_eq!(r["duration_ms"], 12.0);
        assert_eq!(r["after_ms"], 15.0);
        assert_eq!(r["visible_ms"], 27.0);
        assert_eq!(r["verdict"], "cpu_starvation", "{}", r["headline"]);
        assert_eq!(p.calls_seen, 3);
    }

    #[test]
    fn rwbs_flags_and_states() {
        assert_eq!(rwbs_flags("WS"), ("write", true, false, false));
        assert_eq!(rwbs_flags("FWFS"), ("write", true, true, true));
        assert_eq!(rwbs_flags("FN"), ("none", false, true, false));
        assert_eq!(rwbs_flags("R"), ("read", false, false, false));
        assert_eq!(state_name(2), "D");
        assert_eq!(state_name(1), "S");
        assert_eq!(state_name(0x100), "R");
        assert_eq!(syscall_name(75), "fdatasync");
        assert_eq!(syscall_name(202), "futex");
    }

    #[test]
    fn flusher_io_is_charged_to_dirtier() {
        use zkstall_common::{DirtyEvent, IoEvent};
        let mut p = Pipeline::new(
            Box::new(Live::new(
                ProcRoot(std::path::PathBuf::from("/nonexistent")),
                "/nonexistent",
            )),
            WallClock { offset_ns: 0 },
            0,
        )
        .with_events(true);
        let mut out = Vec::new();
        let mut dd = [0u8; COMM_LEN];
        dd[..2].copy_from_slice(b"dd");
        let mut kw = [0u8; COMM_LEN];
        kw[..12].copy_from_slice(b"kworker/u8:3");
        {
            let mut sink = JsonSink::new(&mut out);
            let dirty = DirtyEvent {
                hdr: EventHeader {
                    kind: EventKind::Dirty as u32,
                    size: 80,
                    ts_ns: 10,
                    tgid: 500,
                    tid: 500,
                },
                ino: 77,
                pages: 1,
                _pad: 0,
                cgroup_id: 0,
                bdi: *b"7:0\0\0\0\0\0\0\0\0\0\0\0\0\0",
                comm: dd,
            };
            p.handle(&bytes_of(&dirty), &mut sink).unwrap();
            let io = |tgid: u32, ino: u64, comm: [u8; COMM_LEN]| IoEvent {
                hdr: EventHeader {
                    kind: EventKind::Io as u32,
                    size: 104,
                    ts_ns: 900,
                    tgid,
                    tid: tgid,
                },
                dev: 7 << 20,
                error: 0,
                sector: 8,
                bytes: 4096,
                requeues: 0,
                rwbs: *b"W\0\0\0\0\0\0\0",
                insert_ns: 100,
                issue_ns: 300,
                ino,
                cgroup_id: 0,
                comm,
            };
            p.handle(&bytes_of(&io(90, 77, kw)), &mut sink).unwrap(); // flusher, inode 77
            p.handle(&bytes_of(&io(90, 0, kw)), &mut sink).unwrap(); // flusher, unknown inode
            p.handle(&bytes_of(&io(500, 77, dd)), &mut sink).unwrap(); // dd's own fsync I/O
        }
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let ios: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "io").collect();
        assert_eq!(ios.len(), 3);
        assert_eq!(ios[0]["comm"], "kworker/u8:3");
        assert_eq!(ios[0]["dirtier"]["comm"], "dd");
        assert_eq!(ios[0]["dirtier"]["pid"], 500);
        assert_eq!(ios[0]["queue_ms"], 0.0002);
        assert_eq!(ios[0]["service_ms"], 0.0006);
        assert!(ios[1].get("dirtier").is_none(), "no inode, no dirtier");
        assert!(
            ios[2].get("dirtier").is_none(),
            "own I/O is not charged to itself"
        );
    }

    #[test]
    fn journal_phases_become_one_commit_record() {
        use zkstall_common::{JournalEvent, JournalStatsEvent};
        let mut p = Pipeline::new(
            Box::new(Live::new(
                ProcRoot(std::path::PathBuf::from("/nonexistent")),
                "/nonexistent",
            )),
            WallClock { offset_ns: 0 },
            0,
        )
        .with_events(true);
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out);
            let ph = |ts: u64, phase: JournalPhase| JournalEvent {
                hdr: EventHeader {
                    kind: EventKind::Journal as u32,
                    size: 40,
                    ts_ns: ts,
                    tgid: 30,
                    tid: 30,
                },
                dev: 7 << 20,
                transaction: 5,
                phase: phase as u32,
                _pad: 0,
            };
            p.handle(&bytes_of(&ph(1_000_000, JournalPhase::Start)), &mut sink)
                .unwrap();
            p.handle(&bytes_of(&ph(2_000_000, JournalPhase::Locking)), &mut sink)
                .unwrap();
            p.handle(&bytes_of(&ph(3_000_000, JournalPhase::Flushing)), &mut sink)
                .unwrap();
            p.handle(&bytes_of(&ph(9_000_000, JournalPhase::Logging)), &mut sink)
                .unwrap();
            let st = JournalStatsEvent {
                hdr: EventHeader {
                    kind: EventKind::JournalStats as u32,
                    size: 48,
                    ts_ns: 9_500_000,
                    tgid: 30,
                    tid: 30,
                },
                dev: 7 << 20,
                transaction: 5,
                handle_count: 12,
                blocks: 8,
                blocks_logged: 10,
                _pad: 0,
            };
            p.handle(&bytes_of(&st), &mut sink).unwrap();
            p.handle(&bytes_of(&ph(10_000_000, JournalPhase::End)), &mut sink)
                .unwrap();
            // An end whose start was never seen is dropped, not invented.
            let mut orphan = ph(11_000_000, JournalPhase::End);
            orphan.transaction = 4;
            p.handle(&bytes_of(&orphan), &mut sink).unwrap();
        }
        let v: serde_json::Value =
            serde_json::from_slice(out.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(v["type"], "journal");
        assert_eq!(v["dev"], "7:0");
        assert_eq!(v["duration_ms"], 9.0);
        assert_eq!(v["locking_ms"], 1.0);
        assert_eq!(v["flushing_ms"], 6.0);
        assert_eq!(v["logging_ms"], 1.0);
        assert_eq!(v["handles"], 12);
        assert_eq!(
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(),
            1
        );
    }

    #[test]
    fn reports_only_calls_at_or_above_the_threshold_with_their_file() {
        // This process's own fd 0..2 are open; use a real file so resolution works.
        let f = tempfile::NamedTempFile::new().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(f.as_file()) as u64;
        let me = std::process::id();
        let mut p = Pipeline::new(
            Box::new(Live::new(ProcRoot::default(), "/sys")),
            WallClock { offset_ns: 0 },
            1_000_000,
        );
        let mut out = Vec::new();
        {
            let mut sink = JsonSink::new(&mut out);
            p.handle(&enter(me, 5, 1_000, Syscall::Fdatasync, fd), &mut sink)
                .unwrap();
            p.handle(
                &exit(me, 5, 1_000, 2_000_000, Syscall::Fdatasync, fd),
                &mut sink,
            )
            .unwrap();
            p.handle(&enter(me, 5, 3_000_000, Syscall::Fsync, fd), &mut sink)
                .unwrap();
            p.handle(
                &exit(me, 5, 3_000_000, 3_500_000, Syscall::Fsync, fd),
                &mut sink,
            )
            .unwrap();
            p.handle(&[0u8; 7], &mut sink).unwrap();
            // Still running at the end: reported as unfinished.
            p.handle(&enter(me, 6, 4_000_000, Syscall::Sync, 0), &mut sink)
                .unwrap();
            p.finish(MonoNs(9_000_000), &mut sink).unwrap();
        }
        let lines: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["syscall"], "fdatasync");
        assert_eq!(lines[0]["duration_ms"], 1.999);
        assert_eq!(lines[0]["path"], f.path().to_string_lossy().as_ref());
        assert_eq!(lines[0]["thread"], "sync");
        assert_eq!(lines[1]["syscall"], "sync");
        assert_eq!(lines[1]["unfinished"], true);
        assert_eq!(lines[1]["fd"], serde_json::Value::Null);
        assert_eq!(
            (p.events, p.calls_seen, p.reported, p.decode_errors),
            (6, 2, 2, 1)
        );
    }
}
