//! jbd2 commits (probes/journal.rs): phase records become one commit, kept in the history
//! and, with --events, printed.

use std::{collections::HashMap, io};

use zkstall_common::JournalPhase;

use super::Pipeline;
use crate::{
    clock::MonoNs,
    decode::Task,
    enrich::DevId,
    history,
    sinks::{EventRecord, Sink, events::JournalRecord},
};

/// Open commits beyond this are a leak (ends we never saw): the oldest go.
const OPEN_COMMITS: usize = 1024;

/// A jbd2 commit between its start and end records.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    start: Option<MonoNs>,
    locking: Option<MonoNs>,
    flushing: Option<MonoNs>,
    logging: Option<MonoNs>,
    task: Option<Task>,
    stats: Option<(u32, u32, u32)>,
}

#[derive(Default)]
pub struct OpenCommits {
    open: HashMap<(u32, u32), Commit>,
    /// jbd2 thread names, learned once per thread.
    comms: HashMap<u32, String>,
}

impl OpenCommits {
    pub fn stats(&mut self, dev: u32, transaction: u32, handles: u32, blocks: u32, logged: u32) {
        if let Some(c) = self.open.get_mut(&(dev, transaction)) {
            c.stats = Some((handles, blocks, logged));
        }
    }
}

impl Pipeline {
    pub(super) fn on_journal(
        &mut self,
        task: Task,
        ts: MonoNs,
        dev: u32,
        transaction: u32,
        phase: JournalPhase,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        let open = &mut self.commits.open;
        if open.len() >= OPEN_COMMITS && !open.contains_key(&(dev, transaction)) {
            let oldest = open
                .iter()
                .min_by_key(|(_, c)| c.start.unwrap_or(MonoNs(0)))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                open.remove(&k);
            }
        }
        let c = open.entry((dev, transaction)).or_default();
        c.task.get_or_insert(task);
        // The journal thread of a filesystem a traced call uses: trace its scheduling too
        // (a commit can be slow because that thread cannot get a CPU).
        if phase == JournalPhase::Start
            && self
                .file_devs
                .contains_key(&crate::enrich::FileDev(DevId::from_kernel(dev)))
            && !self.helpers.contains_key(&task.tid)
            && self.asked_helpers.insert(task.tid)
        {
            self.want_helpers
                .push((task.tid, format!("journal of {}", DevId::from_kernel(dev))));
        }
        match phase {
            JournalPhase::Start => c.start = Some(ts),
            JournalPhase::Locking => c.locking = Some(ts),
            JournalPhase::Flushing => c.flushing = Some(ts),
            JournalPhase::Logging => c.logging = Some(ts),
            JournalPhase::End => {
                let c = open.remove(&(dev, transaction)).unwrap_or_default();
                return self.commit_done(sink, dev, transaction, c, ts);
            }
        }
        Ok(())
    }

    fn commit_done(
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
        let span = |a: Option<MonoNs>, b: Option<MonoNs>| match (a, b) {
            (Some(a), Some(b)) => Some(b.since(a) as f64 / 1e6),
            _ => None,
        };
        self.history.commit(history::Commit {
            dev,
            transaction,
            tid: task.tid,
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
        let device = self.enrich.device_name(dev, task.pid);
        let comm = match self.commits.comms.get(&task.tid) {
            Some(c) => c.clone(),
            None => {
                let c = self.thread_name(task.pid, task.tid).unwrap_or_default();
                if self.commits.comms.len() < 1024 {
                    self.commits.comms.insert(task.tid, c.clone());
                }
                c
            }
        };
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
}
