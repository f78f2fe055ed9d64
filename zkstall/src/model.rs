//! The model: watched calls, built from enter/exit pairs, notes of calls already running
//! at attach, and calls closed by their thread's exit. A call's file is resolved at entry
//! (by the caller, through `enrich`) and carried here until its exit arrives.

use rustc_hash::FxHashMap as HashMap;

use zkstall_common::Syscall;

use crate::{
    clock::MonoNs,
    decode::{Accounting, Task},
    enrich::FileInfo,
};

/// How many calls can be open at once; beyond that the oldest is dropped (and counted).
pub const MAX_OPEN_CALLS: usize = 65536;

/// One watched syscall, finished or still running.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub task: Task,
    pub syscall: Syscall,
    /// fd, msync address, or 0 (sync).
    pub arg: u64,
    pub file: Option<FileInfo>,
    pub start: MonoNs,
    /// None while the call has not returned.
    pub end: Option<MonoNs>,
    pub ret: Option<i64>,
    /// Thread name at exit (empty when unknown).
    pub comm: String,
    /// The start is only a bound: running since before tracing began.
    pub start_bound: bool,
    /// On/off-CPU split measured in the kernel (None: not covered).
    pub accounting: Option<Accounting>,
    /// The thread went off CPU right after the return, for this long (what the caller
    /// measured includes it).
    pub after_ns: Option<u64>,
    /// The thread was preempted (runnable, not running) until just before the entry: from
    /// that preemption to the entry, which a caller that read its clock right before the
    /// call counts too.
    pub before_ns: Option<u64>,
    /// A return to CPU within the call ran no probe: one off-CPU interval is missing.
    pub switch_unseen: bool,
}

impl Call {
    /// Nanoseconds from entry to exit, or to `now` for a call still running.
    pub fn duration_ns(&self, now: MonoNs) -> u64 {
        self.end.unwrap_or(now).since(self.start)
    }

    /// When the caller may have started its clock: the entry, less a preemption that
    /// ended just before it.
    pub fn visible_start(&self) -> MonoNs {
        MonoNs(self.start.0.saturating_sub(self.before_ns.unwrap_or(0)))
    }

    /// When the caller could go on: the return, plus the wait right after it.
    pub fn visible_end(&self, now: MonoNs) -> MonoNs {
        let end = self.end.unwrap_or(now);
        MonoNs(end.0 + self.after_ns.unwrap_or(0))
    }
}

#[derive(Clone, Debug)]
pub struct Open {
    pub task: Task,
    pub syscall: Syscall,
    pub start: MonoNs,
    pub arg: u64,
    pub file: Option<FileInfo>,
    pub start_bound: bool,
    /// Already reported as crossing the threshold while running: the verdict it was last
    /// reported with (a later look reports it again only when that changed).
    pub crossed: Option<&'static str>,
}

/// Why an open call was closed without its exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandoned {
    /// The thread entered another watched call: this one's exit record was lost.
    ExitLost,
    /// The thread (or its process) exited inside the call.
    ThreadExited,
}

/// Open calls by tid (a thread is inside at most one syscall).
#[derive(Default)]
pub struct Calls {
    open: HashMap<u32, Open>,
    /// Open calls dropped because the table was full.
    pub evicted: u64,
    /// Calls whose exit never arrived (lost with a full ring buffer, or the thread exited).
    pub exit_lost: u64,
    pub thread_exited: u64,
}

impl Calls {
    /// A call began (or, with `start_bound`, was found running at attach).
    pub fn enter(&mut self, o: Open) -> Option<Abandoned> {
        let mut abandoned = None;
        if self.open.remove(&o.task.tid).is_some() {
            self.exit_lost += 1;
            abandoned = Some(Abandoned::ExitLost);
        }
        if self.open.len() >= MAX_OPEN_CALLS {
            // Evict the oldest: its exit will still produce a call, only without the file
            // resolved at entry.
            if let Some(&tid) = self
                .open
                .iter()
                .min_by_key(|(_, o)| o.start)
                .map(|(t, _)| t)
            {
                self.open.remove(&tid);
                self.evicted += 1;
            }
        }
        self.open.insert(o.task.tid, o);
        abandoned
    }

    /// The open call of `tid`, if any.
    pub fn get(&self, tid: u32) -> Option<&Open> {
        self.open.get(&tid)
    }

    pub fn get_mut(&mut self, tid: u32) -> Option<&mut Open> {
        self.open.get_mut(&tid)
    }

    /// Closes the call `tid` was in, if it is the one that returned (same syscall and
    /// start; the kernel timed it, so a call whose entry was missed is still complete).
    pub fn exit(&mut self, tid: u32, syscall: Syscall, start: MonoNs) -> Option<Open> {
        match self.open.get(&tid) {
            Some(o) if o.syscall == syscall && (o.start == start || o.start_bound) => {
                self.open.remove(&tid)
            }
            Some(_) => {
                // A stale entry: its exit was lost.
                self.open.remove(&tid);
                self.exit_lost += 1;
                None
            }
            None => None,
        }
    }

    /// A thread exited: its open call, if any, never returns.
    pub fn thread_exit(&mut self, tid: u32) -> Option<Open> {
        let o = self.open.remove(&tid);
        if o.is_some() {
            self.thread_exited += 1;
        }
        o
    }

    /// Drops the open calls of a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        let before = self.open.len();
        self.open.retain(|_, o| o.task.pid != pid);
        self.thread_exited += (before - self.open.len()) as u64;
    }

    /// Open calls, oldest first.
    pub fn open_calls(&self) -> Vec<Open> {
        let mut v: Vec<Open> = self.open.values().cloned().collect();
        v.sort_by_key(|o| o.start);
        v
    }

    /// Forgets every open call (the end of tracing: what is still open was not confirmed
    /// running by the kernel, so its exit was lost). Returns how many.
    pub fn close_all(&mut self) -> u64 {
        let n = self.open.len() as u64;
        self.open.clear();
        self.exit_lost += n;
        n
    }

    pub fn remove(&mut self, tid: u32) -> Option<Open> {
        self.open.remove(&tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Task = Task { pid: 1, tid: 2 };

    fn open(tid: u32, sc: Syscall, start: u64) -> Open {
        Open {
            task: Task { pid: 1, tid },
            syscall: sc,
            start: MonoNs(start),
            arg: 5,
            file: None,
            start_bound: false,
            crossed: None,
        }
    }

    #[test]
    fn pairs_enter_and_exit_by_tid() {
        let mut c = Calls::default();
        assert_eq!(c.enter(open(T.tid, Syscall::Fdatasync, 100)), None);
        let o = c.exit(T.tid, Syscall::Fdatasync, MonoNs(100)).unwrap();
        assert_eq!(o.start, MonoNs(100));
        assert!(c.open_calls().is_empty());
    }

    #[test]
    fn a_new_entry_closes_a_call_whose_exit_was_lost() {
        let mut c = Calls::default();
        c.enter(open(T.tid, Syscall::Fsync, 10));
        assert_eq!(
            c.enter(open(T.tid, Syscall::Fdatasync, 50)),
            Some(Abandoned::ExitLost)
        );
        assert_eq!(c.exit_lost, 1);
        // The later exit does not pick up the stale file.
        assert!(c.exit(T.tid, Syscall::Fsync, MonoNs(10)).is_none());
    }

    #[test]
    fn a_call_seeded_at_attach_pairs_with_its_exit_whatever_its_bound() {
        let mut c = Calls::default();
        let mut o = open(T.tid, Syscall::Fdatasync, 1_000);
        o.start_bound = true;
        c.enter(o);
        assert!(c.exit(T.tid, Syscall::Fdatasync, MonoNs(1_000)).is_some());
    }

    #[test]
    fn thread_and_process_exits_close_calls_without_reporting_them() {
        let mut c = Calls::default();
        c.enter(open(2, Syscall::Fdatasync, 100));
        c.enter(open(3, Syscall::Fsync, 50));
        assert!(c.thread_exit(2).is_some());
        assert_eq!(c.open_calls().len(), 1);
        c.forget_pid(1);
        assert!(c.open_calls().is_empty());
        assert_eq!(c.thread_exited, 2);
    }
}
