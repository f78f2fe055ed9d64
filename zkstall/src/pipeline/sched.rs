//! Scheduler events of the target's threads (probes/sched.rs): off-CPU intervals into the
//! history (with their stack, syscall and waker resolved to names), thread lifecycle.

use std::io;

use zkstall_common::ThreadChange;

use super::Pipeline;
use crate::{
    clock::MonoNs,
    decode::{OffCpu, Task, Waker},
    history::{self, WakerInfo},
    sinks::{
        EventRecord, Sink,
        events::{BlockedRecord, ThreadRecord, Who},
    },
};

/// The name of an x86_64 syscall number.
pub fn syscall_name(nr: i64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall {nr}"))
}

impl Pipeline {
    fn waker_info(&mut self, w: &Waker, of_pid: u32) -> WakerInfo {
        match w {
            Waker::Task { task, comm } => {
                let process = (task.pid != of_pid && task.pid != 0)
                    .then(|| {
                        if task.pid == task.tid {
                            Some(comm.clone())
                        } else {
                            self.thread_name(task.pid, task.pid)
                        }
                    })
                    .flatten();
                WakerInfo::from_waker(w, comm.clone(), process)
            }
            other => WakerInfo::from_waker(other, String::new(), None),
        }
    }

    pub(super) fn on_blocked(&mut self, b: OffCpu, sink: &mut dyn Sink) -> io::Result<()> {
        let thread = self.thread_name(b.task.pid, b.task.tid).unwrap_or_default();
        let runq = {
            let (a, z) = history::Blocked {
                pid: 0,
                tid: 0,
                thread: String::new(),
                state: b.state,
                off: b.off,
                on: b.on,
                wake: b.wake,
                syscall: None,
                waker: None,
                stack: Vec::new(),
                after_call: false,
                seeded: false,
                open: false,
            }
            .runq();
            z.since(a)
        };
        let mut stack = self.enrich.stack(&b.frames);
        if b.seeded
            && stack.is_empty()
            && let Some(s) = self.stuck_stacks.remove(&b.task.tid)
        {
            stack = s;
        }
        let syscall = b.syscall.map(syscall_name);
        let waker = b.waker.as_ref().map(|w| self.waker_info(w, b.task.pid));
        self.history.blocked(history::Blocked {
            pid: b.task.pid,
            tid: b.task.tid,
            thread: thread.clone(),
            state: b.state,
            off: b.off,
            on: b.on,
            wake: b.wake,
            syscall: syscall.clone(),
            waker: waker.clone(),
            stack: stack.clone(),
            after_call: b.after_call,
            seeded: b.seeded,
            open: b.open,
        });
        if !self.events_out {
            self.count("blocked");
            return Ok(());
        }
        let rec = BlockedRecord {
            kind: "blocked",
            pid: b.task.pid,
            tid: b.task.tid,
            thread,
            state: b.state.letter().to_string(),
            start_ns: b.off.0,
            start_unix_ms: self.wall.unix_ms(b.off),
            duration_ms: b.on.since(b.off) as f64 / 1e6,
            runq_ms: runq as f64 / 1e6,
            syscall,
            waker: waker.as_ref().and_then(|w| match w {
                WakerInfo::Task {
                    pid, tid, thread, ..
                } => Some(Who {
                    pid: *pid,
                    tid: *tid,
                    comm: thread.clone(),
                    cgroup: None,
                }),
                _ => None,
            }),
            waker_context: waker.as_ref().map(|w| match w {
                WakerInfo::Task { .. } => "task",
                WakerInfo::Irq => "irq",
                WakerInfo::Softirq => "softirq",
                WakerInfo::Timer => "timer",
            }),
            stack,
            after_call: b.after_call,
            since_before_tracing: b.seeded,
            still_off_at_end: b.open,
        };
        self.out(sink, EventRecord::Blocked(rec))
    }

    pub(super) fn on_thread(
        &mut self,
        actor: Task,
        ts: MonoNs,
        change: ThreadChange,
        tid: u32,
        comm: String,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        let exited = change == ThreadChange::Exit;
        let change = match change {
            ThreadChange::New => "new",
            ThreadChange::Exit => "exit",
            ThreadChange::Rename => "rename",
        };
        if exited {
            // A call it was inside never returns: closed, not reported later.
            self.calls.thread_exit(tid);
            self.stuck_stacks.remove(&tid);
        } else {
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
        if exited {
            self.enrich.forget_thread(tid);
        }
        Ok(())
    }
}
