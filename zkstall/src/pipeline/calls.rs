//! Watched calls (probes/syscalls.rs): entries, exits, calls found running at attach, and
//! calls crossing the threshold while still running. A call is reported when what its
//! caller measured (the syscall plus the wait right after it) reaches the threshold, as it
//! crosses the threshold, and when it ends.

use std::io;

use zkstall_common::{ArgKind, Syscall};

use super::{Note, Pipeline, notes::syscall_by_name};
use crate::{
    attribution::{self, OffNow, Span},
    clock::MonoNs,
    decode::{Exit, SchedState, Task},
    enrich::{DevId, FileDev, FileInfo},
    model::{Call, Open},
    sinks::{CallRecord, Observation, Sink},
};

/// Where a reported call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// It returned.
    Done,
    /// Still running; it has just crossed the threshold.
    InProgress,
    /// Still running when tracing ended.
    Unfinished,
}

/// A preemption that ended this close to a syscall's entry may lie inside its caller's
/// clock window (a JNI call's worth of instructions).
pub const BEFORE_GAP_NS: u64 = 100_000;

/// How far out of end order off-CPU intervals may arrive. They come through one ring
/// buffer in the order they were reserved, each stamped just before: CPUs disagree by
/// microseconds. Ten milliseconds is a wide margin that still bounds a walk back.
const ARRIVAL_SLACK_NS: u64 = 10_000_000;

impl Pipeline {
    /// The file a call works on; `kernel_id` as [`crate::enrich::Enricher::file_by_fd`]'s.
    pub(super) fn resolve(
        &mut self,
        task: Task,
        syscall: Syscall,
        arg: u64,
        kernel_id: Option<(u32, u64)>,
    ) -> Option<FileInfo> {
        match syscall.arg().1 {
            ArgKind::Fd => self
                .enrich
                .file_by_fd(task.pid, arg as i64 as i32, kernel_id),
            ArgKind::Addr => self.enrich.file_by_addr(task.pid, arg),
            ArgKind::None => None,
        }
    }

    /// A new file: the disks serving it are watched from now on (while `pid` lives).
    fn watch_file(&mut self, file: &Option<FileInfo>, pid: u32) {
        if let Some(f) = file
            && let Some(dev) = f.dev
        {
            self.want_disks_of(FileDev(dev), Some(pid), &f.path);
        }
    }

    pub(super) fn on_enter(
        &mut self,
        task: Task,
        ts: MonoNs,
        syscall: Syscall,
        arg: u64,
        file_id: Option<(u32, u64)>,
        _sink: &mut dyn Sink,
    ) -> io::Result<()> {
        let file = self.resolve(task, syscall, arg, file_id);
        self.watch_file(&file, task.pid);
        self.calls.enter(Open {
            task,
            syscall,
            start: ts,
            arg,
            file,
            start_bound: false,
            crossed: None,
        });
        Ok(())
    }

    pub(super) fn on_exit(&mut self, x: Exit, sink: &mut dyn Sink) -> io::Result<()> {
        self.enrich.observe_thread(x.task.tid, &x.comm);
        self.stats.calls_seen += 1;
        let open = self.calls.exit(x.task.tid, x.syscall, x.start);
        let crossed = open.as_ref().is_some_and(|o| o.crossed.is_some())
            | self
                .crossed_writes
                .remove(&(x.task.tid, x.start.0))
                .is_some();
        let (file, start_bound, start) = match open {
            Some(o) => (o.file, o.start_bound || x.start_bound, x.start.min(o.start)),
            None => (None, x.start_bound, x.start),
        };
        let after_ns = x
            .after_ns
            .and_then(|a| self.after_counted(x.task, x.end, a));
        let before_ns = if start_bound {
            None
        } else {
            self.before_counted(x.task, start)
        };
        let mut call = Call {
            task: x.task,
            syscall: x.syscall,
            arg: x.arg,
            file,
            start,
            end: Some(x.end),
            ret: Some(x.ret),
            comm: x.comm,
            start_bound,
            accounting: x.accounting,
            after_ns,
            before_ns,
            switch_unseen: x.switch_unseen,
        };
        let dev = call.file.as_ref().and_then(|f| f.dev);
        let disk = dev.and_then(|d| {
            self.enrich
                .disk_path(FileDev(d))
                .top()
                .map(|l| l.name.clone())
        });
        // A fast write sent for its way back is not a sample of the write family's
        // latency (the kernel sends only the writes slower than the threshold).
        if !x.fast {
            sink.observe(&Observation::Call {
                syscall: call.syscall.name(),
                write_family: call.syscall.is_write(),
                thread: &call.comm,
                dev,
                disk: disk.as_deref(),
                duration_ns: x.end.since(call.start),
                pid: call.task.pid,
                tid: call.task.tid,
                start_ns: call.start.0,
            });
        }
        let visible = call.visible_end(x.end).since(call.visible_start());
        if visible < self.threshold_ns && !crossed {
            return Ok(());
        }
        if call.file.as_ref().is_none_or(|f| f.dev.is_none()) {
            // Not resolved at the entry, or without its device (closed between two reads):
            // asked again, kept only if better.
            let again = self.resolve(call.task, call.syscall, call.arg, None);
            if call.file.is_none() || again.as_ref().is_some_and(|f| f.dev.is_some()) {
                call.file = again;
            }
        }
        self.report(&call, x.end, Phase::Done, None, sink)
    }

    /// How long the thread sat preempted right before the call's entry, when that
    /// preemption ended at most [`BEFORE_GAP_NS`] before it (the JVM's few instructions
    /// between the caller's clock read and the syscall: ZooKeeper's System.nanoTime()
    /// before force()). A caller that read its clock before it was preempted counts the
    /// wait; one that read it after does not, and cannot be told apart: the record says
    /// `before_ms`, what the caller may have counted.
    fn before_counted(&self, task: Task, start: MonoNs) -> Option<u64> {
        let b = self
            .history
            .blocked
            .iter()
            .rev()
            // Intervals are kept in the order they ended: stop at the first that ended too
            // long before the entry (a millisecond of slack for records that arrive out of
            // order), so a thread that was not preempted costs a few steps, not 256.
            .take(256)
            .take_while(|b| b.on.0 + BEFORE_GAP_NS + 1_000_000 >= start.0)
            .find(|b| b.tid == task.tid && b.on <= start)?;
        if b.state != SchedState::Runnable || b.seeded || start.since(b.on) > BEFORE_GAP_NS {
            return None;
        }
        // From the preemption on: the few µs it ran after it, up to the entry, too.
        (b.on > b.off).then(|| start.since(b.off))
    }

    /// How much of the way back from a call (`after_ns` past its return, over one or more
    /// off-CPU intervals) its caller measured. A preemption is part of it, and so is a
    /// D sleep (a page fault on the way). A sleep is the caller's own next step (its next
    /// syscall: a sleep, a work queue) unless it is a JVM safepoint: the process is a JVM
    /// and the JVM's own thread woke it, or its other threads were stopped too. The way
    /// back ends at the first wait that is the caller's own.
    fn after_counted(&mut self, task: Task, end: MonoNs, after_ns: u64) -> Option<u64> {
        let until = MonoNs(end.0 + after_ns);
        // (off, on, state, woken by the JVM's own thread): what is needed of each wait,
        // not a copy of the interval with its names and stack.
        let mut waits: Vec<(MonoNs, MonoNs, SchedState, bool)> = self
            .history
            .blocked
            .iter()
            .rev()
            .take(256)
            .filter(|b| b.tid == task.tid && b.after_call && b.off >= end && b.off < until)
            .map(|b| {
                let by_vm = matches!(&b.waker, Some(crate::history::WakerInfo::Task { pid, thread, .. })
                    if *pid == task.pid && crate::attribution::evidence::is_jvm_internal(thread));
                (b.off, b.on, b.state, by_vm)
            })
            .collect();
        waits.sort_by_key(|w| w.0);
        if waits.is_empty() {
            return None;
        }
        let jvm = self.enrich.is_jvm(task.pid);
        for (off, on, state, by_vm) in waits {
            let counts = match state {
                SchedState::Runnable | SchedState::DiskSleep => true,
                _ if !jvm => false,
                _ => {
                    by_vm
                        || self.in_safepoint(task.pid, off, on)
                        || self.others_stopped(task, off, on)
                            >= crate::attribution::rules::Thresholds::DEFAULT.pause_min_stopped
                                as usize
                }
            };
            if !counts {
                let part = off.since(end);
                return (part > 0).then_some(part);
            }
        }
        Some(after_ns)
    }

    /// HotSpot's probes saw a safepoint of `pid` over at least half of [off, on].
    fn in_safepoint(&self, pid: u32, off: MonoNs, on: MonoNs) -> bool {
        let covered: u64 = self
            .history
            .jvm_pauses
            .iter()
            .rev()
            .take(256)
            .filter(|p| p.pid == pid)
            .map(|p| crate::history::overlap((p.start, p.end_at(on)), (off, on)))
            .sum();
        covered > 0 && covered * 2 >= on.since(off)
    }

    /// Threads of `task`'s process off CPU through at least half of [off, on].
    ///
    /// Runs for every sleep on a JVM thread's way back from a watched call (ZooKeeper's
    /// SyncThread after each append): it walks back only as far as intervals that can
    /// overlap [off, on]. Intervals are kept in the order they ended; one that ended before
    /// `off` (with [`ARRIVAL_SLACK_NS`] for records that arrive out of order) has no part
    /// in it, nor has any older one.
    fn others_stopped(&self, task: Task, off: MonoNs, on: MonoNs) -> usize {
        let half = on.since(off) / 2;
        // (tid, off-CPU time inside [off, on]): a JVM has tens of threads, a Vec beats
        // hashing each interval.
        let mut stopped: Vec<(u32, u64)> = Vec::new();
        for o in self
            .history
            .blocked
            .iter()
            .rev()
            .take(4096)
            .take_while(|o| o.on.0.saturating_add(ARRIVAL_SLACK_NS) >= off.0)
        {
            if o.pid != task.pid || o.tid == task.tid {
                continue;
            }
            let part = crate::history::overlap((o.off, o.on), (off, on));
            if part == 0 {
                continue;
            }
            match stopped.iter_mut().find(|(tid, _)| *tid == o.tid) {
                Some((_, t)) => *t += part,
                None => stopped.push((o.tid, part)),
            }
        }
        stopped.iter().filter(|&&(_, t)| t >= half).count()
    }

    /// A thread found inside a watched syscall at attach: its call is open from now (a
    /// bound), and its /proc stack stands in for the kernel's for its seeded interval.
    pub(super) fn on_stuck(&mut self, n: &Note) -> io::Result<()> {
        let Note::Stuck {
            ts_ns,
            pid,
            tid,
            thread,
            syscall,
            arg,
            stack,
            ..
        } = n
        else {
            return Ok(());
        };
        let Some(sc) = syscall_by_name(syscall) else {
            return Ok(());
        };
        let task = Task {
            pid: *pid,
            tid: *tid,
        };
        self.enrich.observe_thread(*tid, thread);
        let file = self.resolve(task, sc, *arg, None);
        self.watch_file(&file, task.pid);
        self.stuck_stacks.insert(*tid, stack.clone());
        if !sc.is_write() {
            self.calls.enter(Open {
                task,
                syscall: sc,
                start: MonoNs(*ts_ns),
                arg: *arg,
                file,
                start_bound: true,
                crossed: None,
            });
        }
        Ok(())
    }

    /// A call still running crossed the threshold (reported with what it waits on so far,
    /// and again on a later look only if that verdict changed), or was still running at
    /// the end (reported as unfinished).
    pub(super) fn on_running(&mut self, n: &Note, sink: &mut dyn Sink) -> io::Result<()> {
        let Note::Running {
            ts_ns,
            pid,
            tid,
            syscall,
            arg,
            start_ns,
            start_bound,
            at_end,
            state,
            stack,
            off_ns,
            wake_ns,
            in_flight,
            unfollowed,
            ..
        } = n
        else {
            return Ok(());
        };
        let Some(sc) = syscall_by_name(syscall) else {
            return Ok(());
        };
        let task = Task {
            pid: *pid,
            tid: *tid,
        };
        let now = MonoNs(*ts_ns);
        let open = if *at_end {
            self.calls.remove(*tid)
        } else {
            self.calls.get(*tid).cloned()
        };
        let (file, start, bound) = match &open {
            Some(o) if o.syscall == sc => (o.file.clone(), o.start, o.start_bound || *start_bound),
            _ => (None, MonoNs(*start_ns), *start_bound),
        };
        // Below this pipeline's threshold: a recording made with a lower one, reported with
        // a higher one (the call's final record is then judged on its own).
        if now.since(start) < self.threshold_ns {
            return Ok(());
        }
        // Reported once as it crosses; a later look (the tracer looks again each time the
        // call doubles its length) reports it again only if the verdict so far changed: a
        // disk that has just stopped is a journal wait at 500 ms and a device stall later.
        let before = if *at_end {
            None
        } else {
            self.reported_verdict(*tid, sc, *start_ns)
        };
        let file = file.or_else(|| self.resolve(task, sc, *arg, None));
        // The kernel's name (the record says the Java one apart).
        let comm = self.enrich.thread_name(*pid, *tid).unwrap_or_default();
        let call = Call {
            task,
            syscall: sc,
            arg: *arg,
            file,
            start,
            end: None,
            ret: None,
            comm,
            start_bound: bound,
            accounting: None,
            after_ns: None,
            before_ns: None,
            switch_unseen: false,
        };
        let off = off_ns.map(|off| OffNow {
            off: MonoNs(off),
            wake: wake_ns.map(MonoNs),
            state: state
                .as_deref()
                .and_then(|s| s.chars().next())
                .map_or(SchedState::Other, SchedState::from_letter),
            stack: stack.clone(),
        });
        let phase = if *at_end {
            Phase::Unfinished
        } else {
            Phase::InProgress
        };
        let unfollowed: Vec<(crate::enrich::DiskDev, u64)> = unfollowed
            .iter()
            .filter_map(|(d, n)| Some((crate::enrich::DiskDev(DevId::parse(d)?), *n)))
            .collect();
        let mut rec = self.record_with_in_flight(&call, now, phase, off, in_flight, &unfollowed);
        if !*at_end {
            let verdict = rec.why.as_ref().map_or("unknown", |w| w.verdict.name());
            if before == Some(verdict) {
                return Ok(());
            }
            self.remember_verdict(*tid, sc, *start_ns, verdict);
            rec.revised = before.is_some();
        }
        match phase {
            Phase::InProgress if before.is_none() => self.stats.crossed += 1,
            Phase::InProgress => {}
            _ => self.stats.reported += 1,
        }
        sink.call(&rec)
    }

    /// The verdict a running call was last reported with (fsync-family calls keep it in
    /// their open entry; write-family calls have none and are keyed by their start).
    fn reported_verdict(&self, tid: u32, sc: Syscall, start_ns: u64) -> Option<&'static str> {
        match self.calls.get(tid) {
            Some(o) if o.syscall == sc => o.crossed,
            _ => self.crossed_writes.get(&(tid, start_ns)).copied(),
        }
    }

    fn remember_verdict(&mut self, tid: u32, sc: Syscall, start_ns: u64, verdict: &'static str) {
        match self.calls.get_mut(tid) {
            Some(o) if o.syscall == sc => o.crossed = Some(verdict),
            _ => {
                self.crossed_writes.insert((tid, start_ns), verdict);
            }
        }
    }

    /// The record of a running call, explained with the requests in flight now as part of
    /// the evidence (a disk that stopped has completed none of them yet), and the count of
    /// those the probes did not follow; they leave the history again once it is explained.
    fn record_with_in_flight(
        &mut self,
        call: &Call,
        now: MonoNs,
        phase: Phase,
        off: Option<OffNow>,
        in_flight: &[String],
        unfollowed: &[(crate::enrich::DiskDev, u64)],
    ) -> CallRecord {
        let open: Vec<crate::history::Io> = in_flight
            .iter()
            .filter_map(|h| super::notes::from_hex(h))
            .filter_map(|rec| match crate::decode::decode(&rec) {
                Ok(crate::decode::Event::Io(io)) => Some(io),
                _ => None,
            })
            .map(|io| self.io_entry(&io))
            .collect();
        let added = self.history.add_open(open);
        self.history.set_unfollowed(unfollowed);
        let rec = self.record(call, now, phase, off);
        self.history.set_unfollowed(&[]);
        self.history.remove_open(added);
        rec
    }

    /// Explains and prints one call.
    fn report(
        &mut self,
        call: &Call,
        now: MonoNs,
        phase: Phase,
        off_now: Option<OffNow>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        match phase {
            Phase::InProgress => self.stats.crossed += 1,
            _ => self.stats.reported += 1,
        }
        let rec = self.record(call, now, phase, off_now);
        sink.call(&rec)
    }

    /// The printed record of a call.
    fn record(
        &mut self,
        call: &Call,
        now: MonoNs,
        phase: Phase,
        off_now: Option<OffNow>,
    ) -> CallRecord {
        let kernel_name = if call.comm.is_empty() {
            self.enrich
                .thread_name(call.task.pid, call.task.tid)
                .unwrap_or_default()
        } else {
            call.comm.clone()
        };
        let (thread, thread_source) = match self.java_name(call.task.tid) {
            Some((n, s)) => (n.to_string(), Some(s.name())),
            None => (kernel_name.clone(), None),
        };
        let comm = (thread_source.is_some() && kernel_name != thread).then_some(kernel_name);
        let dev = call.file.as_ref().and_then(|f| f.dev);
        let device = dev.and_then(|d| self.enrich.device_name(d, call.task.pid));
        let disks = dev
            .map(|d| self.enrich.disk_path(FileDev(d)))
            .unwrap_or_default();
        let visible_end = call.visible_end(now);
        let span = Span {
            pid: call.task.pid,
            tid: call.task.tid,
            thread: thread.clone(),
            syscall: call.syscall.name(),
            write_family: call.syscall.is_write(),
            file_dev: dev.map(FileDev),
            device: device.clone(),
            disks: disks.clone(),
            start: call.start,
            before_ns: call.before_ns.unwrap_or(0),
            syscall_end: call.end,
            end: visible_end,
            accounting: call.accounting,
            start_bound: call.start_bound,
            running: call.end.is_none(),
            off_now,
            switch_unseen: call.switch_unseen,
        };
        let why = attribution::explain(&span, &self.history, &mut *self.enrich);
        let after_ms = call.after_ns.map(|a| a as f64 / 1e6);
        CallRecord {
            kind: if call.syscall.is_write() {
                "write"
            } else {
                "fsync"
            },
            pid: call.task.pid,
            tid: call.task.tid,
            thread,
            thread_source,
            comm,
            syscall: call.syscall.name(),
            fd: match call.syscall.arg().1 {
                ArgKind::Fd => Some(call.arg as i64 as i32),
                _ => None,
            },
            path: call.file.as_ref().map(|f| f.path.clone()),
            dev: dev.map(|d| d.to_string()),
            device,
            disk: disks.top().map(|l| l.name.clone()),
            start_ns: call.start.0,
            start_unix_ms: self.wall.unix_ms(call.start),
            duration_ms: call.duration_ns(now) as f64 / 1e6,
            ret: call.ret,
            unfinished: phase == Phase::Unfinished,
            in_progress: phase == Phase::InProgress,
            revised: false,
            start_bound: call.start_bound,
            after_ms,
            before_ms: call.before_ns.map(|b| b as f64 / 1e6),
            visible_ms: (call.after_ns.is_some() || call.before_ns.is_some())
                .then(|| visible_end.since(call.visible_start()) as f64 / 1e6),
            why: Some(why),
        }
    }
}
