//! The per-record path: decode -> enrich -> model -> sink. Live tracing feeds it from the
//! ring buffer; recordings will feed it from a file, through this same code.

use std::io;

use zkstall_common::{ArgKind, Syscall};

use crate::{
    clock::{MonoNs, WallClock},
    decode::{Event, Task, decode},
    enrich::{Devices, FileInfo, Files, Threads},
    model::{Call, Calls},
    sinks::{CallRecord, Sink, Summary},
    targets::ProcRoot,
};

pub struct Pipeline {
    calls: Calls,
    files: Files,
    devices: Devices,
    threads: Threads,
    wall: WallClock,
    threshold_ns: u64,
    /// Counts for the summary.
    pub events: u64,
    pub calls_seen: u64,
    pub reported: u64,
    pub decode_errors: u64,
}

impl Pipeline {
    pub fn new(proc: ProcRoot, sys: &str, wall: WallClock, threshold_ns: u64) -> Self {
        Pipeline {
            calls: Calls::default(),
            files: Files::new(proc.clone()),
            devices: Devices::new(sys, proc.clone()),
            threads: Threads::new(proc),
            wall,
            threshold_ns,
            events: 0,
            calls_seen: 0,
            reported: 0,
            decode_errors: 0,
        }
    }

    pub fn threads_mut(&mut self) -> &mut Threads {
        &mut self.threads
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
                self.threads.observe(task.tid, &comm);
                let mut call = self.calls.exit(task, syscall, start, end, arg, ret, comm);
                self.calls_seen += 1;
                if call.duration_ns(end) >= self.threshold_ns {
                    if call.file.is_none() {
                        call.file = self.resolve(task, syscall, arg);
                    }
                    self.reported += 1;
                    let rec = self.record(&call, end);
                    sink.call(&rec)?;
                }
            }
        }
        Ok(())
    }

    /// Reports calls still running at `now` that are already over the threshold.
    pub fn finish(&mut self, now: MonoNs, sink: &mut dyn Sink) -> io::Result<()> {
        for call in self.calls.unfinished() {
            if call.duration_ns(now) >= self.threshold_ns && self.threshold_ns > 0 {
                self.reported += 1;
                let rec = self.record(&call, now);
                sink.call(&rec)?;
            }
        }
        Ok(())
    }

    /// Forgets a process that exited.
    pub fn forget_pid(&mut self, pid: u32) {
        self.calls.forget_pid(pid);
        self.files.forget_pid(pid);
    }

    pub fn evicted(&self) -> u64 {
        self.calls.evicted
    }

    fn resolve(&mut self, task: Task, syscall: Syscall, arg: u64) -> Option<FileInfo> {
        match syscall.arg().1 {
            ArgKind::Fd => self.files.by_fd(task.pid, arg as i64 as i32),
            ArgKind::Addr => self.files.by_addr(task.pid, arg),
            ArgKind::None => None,
        }
    }

    fn record(&mut self, call: &Call, now: MonoNs) -> CallRecord {
        let thread = if call.comm.is_empty() {
            self.threads
                .name(call.task.pid, call.task.tid)
                .unwrap_or_default()
        } else {
            call.comm.clone()
        };
        let dev = call.file.as_ref().and_then(|f| f.dev);
        let device = dev.and_then(|d| self.devices.name(d, call.task.pid));
        CallRecord {
            kind: "fsync",
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
        }
    }

    /// Fills the pipeline's part of the summary.
    pub fn summarize(&self, s: &mut Summary) {
        s.events = self.events;
        s.calls = self.calls_seen;
        s.reported = self.reported;
        s.decode_errors = self.decode_errors;
        s.threshold_ms = self.threshold_ns as f64 / 1e6;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::JsonSink;
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
    fn reports_only_calls_at_or_above_the_threshold_with_their_file() {
        // This process's own fd 0..2 are open; use a real file so resolution works.
        let f = tempfile::NamedTempFile::new().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(f.as_file()) as u64;
        let me = std::process::id();
        let mut p = Pipeline::new(
            ProcRoot::default(),
            "/sys",
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
