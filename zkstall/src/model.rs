//! The model: timed calls built from enter/exit pairs. A call's file is resolved at entry
//! (by the caller, through `enrich`) and carried here until its exit arrives.

use std::collections::HashMap;

use zkstall_common::Syscall;

use crate::{clock::MonoNs, decode::Task, enrich::FileInfo};

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
}

impl Call {
    /// Nanoseconds from entry to exit, or to `now` for a call still running.
    pub fn duration_ns(&self, now: MonoNs) -> u64 {
        self.end.unwrap_or(now).since(self.start)
    }
}

#[derive(Clone, Debug)]
struct Open {
    syscall: Syscall,
    start: MonoNs,
    arg: u64,
    file: Option<FileInfo>,
}

/// Open calls by tid (a thread is inside at most one syscall).
#[derive(Default)]
pub struct Calls {
    open: HashMap<u32, (Task, Open)>,
    /// Open calls dropped because the table was full.
    pub evicted: u64,
}

impl Calls {
    pub fn enter(
        &mut self,
        task: Task,
        syscall: Syscall,
        start: MonoNs,
        arg: u64,
        file: Option<FileInfo>,
    ) {
        if self.open.len() >= MAX_OPEN_CALLS && !self.open.contains_key(&task.tid) {
            // Evict the oldest: its exit will still produce a call, only without the file
            // resolved at entry.
            if let Some(&tid) = self
                .open
                .iter()
                .min_by_key(|(_, (_, o))| o.start)
                .map(|(t, _)| t)
            {
                self.open.remove(&tid);
                self.evicted += 1;
            }
        }
        self.open.insert(
            task.tid,
            (
                task,
                Open {
                    syscall,
                    start,
                    arg,
                    file,
                },
            ),
        );
    }

    /// Closes the call `task` was in. The kernel timed it, so the result does not depend on
    /// having seen the entry; the entry only contributes the file resolved back then.
    #[allow(clippy::too_many_arguments)]
    pub fn exit(
        &mut self,
        task: Task,
        syscall: Syscall,
        start: MonoNs,
        end: MonoNs,
        arg: u64,
        ret: i64,
        comm: String,
    ) -> Call {
        let file = match self.open.remove(&task.tid) {
            Some((_, o)) if o.syscall == syscall && o.start == start => o.file,
            _ => None,
        };
        Call {
            task,
            syscall,
            arg,
            file,
            start,
            end: Some(end),
            ret: Some(ret),
            comm,
        }
    }

    /// Calls still running, oldest first.
    pub fn unfinished(&self) -> Vec<Call> {
        let mut v: Vec<Call> = self
            .open
            .values()
            .map(|(task, o)| Call {
                task: *task,
                syscall: o.syscall,
                arg: o.arg,
                file: o.file.clone(),
                start: o.start,
                end: None,
                ret: None,
                comm: String::new(),
            })
            .collect();
        v.sort_by_key(|c| c.start);
        v
    }

    /// Drops the open calls of a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        self.open.retain(|_, (t, _)| t.pid != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Task = Task { pid: 1, tid: 2 };

    fn file() -> Option<FileInfo> {
        Some(FileInfo {
            path: "/d/log.1".into(),
            dev: None,
            ino: Some(3),
        })
    }

    #[test]
    fn pairs_enter_and_exit_by_tid() {
        let mut c = Calls::default();
        c.enter(T, Syscall::Fdatasync, MonoNs(100), 5, file());
        let call = c.exit(
            T,
            Syscall::Fdatasync,
            MonoNs(100),
            MonoNs(350),
            5,
            0,
            "SyncThread:1".into(),
        );
        assert_eq!(call.duration_ns(MonoNs(0)), 250);
        assert_eq!(call.file, file());
        assert!(c.unfinished().is_empty());
    }

    #[test]
    fn an_exit_without_its_entry_is_still_timed() {
        let mut c = Calls::default();
        let call = c.exit(T, Syscall::Fsync, MonoNs(10), MonoNs(30), 5, 0, "x".into());
        assert_eq!(call.duration_ns(MonoNs(0)), 20);
        assert_eq!(call.file, None);
    }

    #[test]
    fn a_stale_entry_does_not_lend_its_file_to_another_call() {
        let mut c = Calls::default();
        c.enter(T, Syscall::Fsync, MonoNs(10), 5, file());
        // The exit of that fsync was lost; the next call's exit must not pick it up.
        let call = c.exit(
            T,
            Syscall::Fdatasync,
            MonoNs(50),
            MonoNs(60),
            6,
            0,
            "x".into(),
        );
        assert_eq!(call.file, None);
    }

    #[test]
    fn running_calls_are_reported_unfinished() {
        let mut c = Calls::default();
        c.enter(T, Syscall::Fdatasync, MonoNs(100), 5, file());
        c.enter(Task { pid: 1, tid: 3 }, Syscall::Fsync, MonoNs(50), 6, None);
        let u = c.unfinished();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].start, MonoNs(50));
        assert_eq!(u[1].duration_ns(MonoNs(1100)), 1000);
        c.forget_pid(1);
        assert!(c.unfinished().is_empty());
    }
}
