//! Page dirtying, flusher writeback and dirty throttling (probes/writeback.rs). Dirtying
//! feeds the (bdi, inode) -> dirtier table that charges flusher I/O; throttling pauses go
//! into the history.

use std::io;

use super::Pipeline;
use crate::{
    clock::MonoNs,
    decode::Task,
    enrich::DevId,
    history,
    sinks::{
        EventRecord, Sink,
        events::{DirtyRecord, ThrottleRecord, Who, WritebackRecord},
    },
};

impl Pipeline {
    fn bdi(&mut self, bdi: &str, pid: u32) -> (String, Option<String>) {
        match DevId::parse(bdi) {
            Some(d) => (d.to_string(), self.enrich.device_name(d, pid)),
            None => (bdi.to_string(), None),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_dirty(
        &mut self,
        task: Task,
        ts: MonoNs,
        comm: String,
        cgroup_id: u64,
        ino: u64,
        pages: u32,
        bdi: String,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        if !self.events_out {
            // Only feeds the table; the cgroup is resolved when the I/O is charged.
            let who = Who {
                pid: task.pid,
                tid: task.tid,
                comm,
                cgroup: None,
            };
            self.dirtiers.put((bdi, ino), who);
            self.count("dirty");
            return Ok(());
        }
        let cgroup = self.enrich.cgroup_path(cgroup_id);
        let who = Who {
            pid: task.pid,
            tid: task.tid,
            comm: comm.clone(),
            cgroup: cgroup.clone(),
        };
        self.dirtiers.put((bdi.clone(), ino), who);
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
        self.out(sink, EventRecord::Dirty(rec))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_writeback(
        &mut self,
        task: Task,
        ts: MonoNs,
        start: Option<MonoNs>,
        ino: u64,
        pages: u64,
        bdi: String,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        if !self.events_out {
            self.count("writeback");
            return Ok(());
        }
        let (dev, device) = self.bdi(&bdi, task.pid);
        let comm = self.thread_name(task.pid, task.tid).unwrap_or_default();
        let dirtier = self
            .dirtiers
            .peek(&(bdi, ino))
            .cloned()
            .filter(|d| d.pid != task.pid);
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
            dirtier,
        };
        self.out(sink, EventRecord::Writeback(rec))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_throttle(
        &mut self,
        task: Task,
        ts: MonoNs,
        comm: String,
        pause_ms: i64,
        paused_ms: u64,
        dirty: u64,
        limit: u64,
        bdi: String,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        self.history.throttle(history::Throttle {
            pid: task.pid,
            tid: task.tid,
            comm: comm.clone(),
            at: ts,
            pause_ms,
            bdi: bdi.clone(),
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
        self.out(sink, EventRecord::Throttle(rec))
    }
}
