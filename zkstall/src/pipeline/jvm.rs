//! HotSpot's USDT probes (probes/jvm.rs in the kernel crate): Java threads' full names, and
//! safepoints with the VM operation and GC they ran, kept in the history for `jvm_pause`'s
//! proof. Names found by `jcmd Thread.print` at attach (for threads that started before
//! tracing) come as a note, with the safepoint that command cost marked as zkstall's own.

use std::io;

use zkstall_common::JvmProbe;

use super::Pipeline;
use crate::{clock::MonoNs, decode::Task, history::JvmPause, sinks::Sink};

/// Java names kept at most (threads come and go; the oldest answers go first).
const JAVA_NAMES: usize = 65536;

/// Where a thread's name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameSource {
    /// HotSpot's thread__start probe: the whole Java name.
    Usdt,
    /// `jcmd PID Thread.print` at attach.
    Jcmd,
}

impl NameSource {
    pub fn name(self) -> &'static str {
        match self {
            NameSource::Usdt => "usdt",
            NameSource::Jcmd => "jcmd",
        }
    }
}

impl Pipeline {
    // The record's fields, as decoded: bundling them would only move the list elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_jvm(
        &mut self,
        task: Task,
        ts: MonoNs,
        probe: JvmProbe,
        name: String,
        a: u64,
        b: u64,
        _sink: &mut dyn Sink,
    ) -> io::Result<()> {
        self.count("jvm");
        match probe {
            JvmProbe::ThreadStart => {
                let tid = b as u32;
                if tid != 0 && !name.is_empty() {
                    crate::enrich::bounded_insert(
                        &mut self.java_names,
                        JAVA_NAMES,
                        tid,
                        (name, NameSource::Usdt),
                    );
                }
            }
            JvmProbe::ThreadStop => {
                self.java_names.remove(&(b as u32));
            }
            JvmProbe::SafepointBegin => {
                // Recorded open at once: the threads it holds run again (and their calls
                // are explained) before its end probe fires.
                if let Some(o) = self.history.open_jvm_pause(task.pid) {
                    o.open = false;
                }
                let by_zkstall = self
                    .own_safepoints
                    .iter()
                    .any(|(p, from, to)| *p == task.pid && ts >= *from && ts <= *to);
                self.history.jvm_pause(JvmPause {
                    pid: task.pid,
                    start: ts,
                    end: ts,
                    op: None,
                    gc: None,
                    by_zkstall,
                    open: true,
                });
            }
            JvmProbe::VmopBegin => {
                if let Some(o) = self.history.open_jvm_pause(task.pid)
                    && !name.is_empty()
                {
                    o.op = Some(name);
                }
            }
            JvmProbe::GcBegin => {
                if let Some(o) = self.history.open_jvm_pause(task.pid) {
                    o.gc = Some(a != 0);
                }
            }
            JvmProbe::SafepointEnd => {
                if let Some(o) = self.history.open_jvm_pause(task.pid) {
                    o.end = ts;
                    o.open = false;
                }
            }
            JvmProbe::VmopEnd | JvmProbe::GcEnd => {}
        }
        Ok(())
    }

    /// Names learned by `jcmd Thread.print` (tid -> Java name), and the span of the
    /// safepoint that cost the JVM (zkstall's own).
    pub(super) fn on_java_names(
        &mut self,
        pid: u32,
        from: MonoNs,
        to: MonoNs,
        names: &[(u32, String)],
    ) {
        for (tid, name) in names {
            // A name from the probe (a thread that started since) wins.
            if self
                .java_names
                .get(tid)
                .is_some_and(|(_, s)| *s == NameSource::Usdt)
            {
                continue;
            }
            crate::enrich::bounded_insert(
                &mut self.java_names,
                JAVA_NAMES,
                *tid,
                (name.clone(), NameSource::Jcmd),
            );
        }
        if self.own_safepoints.len() >= 64 {
            self.own_safepoints.remove(0);
        }
        self.own_safepoints.push((pid, from, to));
    }

    /// A thread's name: its Java name when known, else what the kernel calls it.
    pub(crate) fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String> {
        match self.java_names.get(&tid) {
            Some((n, _)) => Some(n.clone()),
            None => self.enrich.thread_name(pid, tid),
        }
    }

    /// The Java name of `tid`, and where it came from, when known.
    pub(crate) fn java_name(&self, tid: u32) -> Option<(&str, NameSource)> {
        self.java_names.get(&tid).map(|(n, s)| (n.as_str(), *s))
    }
}
