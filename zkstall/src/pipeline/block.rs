//! Block requests on watched disks (probes/block.rs): each is charged to whoever caused it
//! and kept in the disk's history.
//!
//! Charging, most specific first: flusher writeback goes to the thread that dirtied the
//! inode (keyed by the inode's bdi and number); I/O a kernel thread relayed (throttling or
//! loop workers, kblockd) goes to the cgroup the block layer charged (the bio's blkcg);
//! jbd2 is the journal; the rest to the task that submitted it.

use std::io;

use super::Pipeline;
use crate::{
    decode::IoDone,
    enrich::DiskDev,
    history::{self, Name, Op, Party, PartyKind},
    probes::ReqBits,
    sinks::{
        EventRecord, Observation, Sink,
        events::{IoRecord, Who},
    },
};

/// The op and flags of a request, from `cmd_flags` and this kernel's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqFlags {
    pub op: Op,
    pub sync: bool,
    pub meta: bool,
    pub fua: bool,
    pub preflush: bool,
    pub rahead: bool,
}

pub fn req_flags(cmd_flags: u32, b: &ReqBits) -> ReqFlags {
    let op_v = cmd_flags & 0xff;
    let op = if op_v == b.op_read {
        Op::Read
    } else if op_v == b.op_write {
        Op::Write
    } else if op_v == b.op_flush {
        Op::Flush
    } else if op_v == b.op_discard {
        Op::Discard
    } else if op_v == b.op_secure_erase {
        Op::SecureErase
    } else if op_v == b.op_write_zeroes {
        Op::WriteZeroes
    } else {
        Op::Other
    };
    let bit = |n: u32| n < 32 && cmd_flags & (1u32 << n) != 0;
    ReqFlags {
        op,
        sync: bit(b.sync),
        meta: bit(b.meta),
        fua: bit(b.fua),
        preflush: bit(b.preflush),
        rahead: bit(b.rahead),
    }
}

impl ReqFlags {
    /// The block layer's rwbs string (as blktrace and block tracepoints print it).
    pub fn rwbs(&self) -> String {
        let mut s = String::new();
        if self.preflush {
            s.push('F');
        }
        s.push(match self.op {
            Op::Read => 'R',
            Op::Write => 'W',
            Op::Flush => {
                if self.preflush {
                    'N'
                } else {
                    'F'
                }
            }
            Op::Discard => 'D',
            Op::SecureErase => 'E',
            Op::WriteZeroes => 'W',
            Op::Other => 'N',
        });
        if self.fua {
            s.push('F');
        }
        if self.rahead {
            s.push('A');
        }
        if self.sync {
            s.push('S');
        }
        if self.meta {
            s.push('M');
        }
        s
    }

    pub fn op_name(&self) -> &'static str {
        match self.op {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Discard => "discard",
            Op::SecureErase => "secure_erase",
            Op::WriteZeroes => "write_zeroes",
            Op::Other => "other",
        }
    }
}

/// blk_status_t as a negative errno (the kernel's blk_errors table).
pub fn status_errno(status: u32) -> i32 {
    match status {
        0 => 0,
        1 => -95,  // NOTSUPP: EOPNOTSUPP
        2 => -110, // TIMEOUT: ETIMEDOUT
        3 => -28,  // NOSPC
        4 => -67,  // TRANSPORT: ENOLINK
        5 => -121, // TARGET: EREMOTEIO
        6 => -52,  // NEXUS / RESV_CONFLICT: EBADE
        7 => -61,  // MEDIUM: ENODATA
        8 => -84,  // PROTECTION: EILSEQ
        9 => -12,  // RESOURCE: ENOMEM
        12 => -11, // AGAIN
        _ => -5,   // IOERR and the rest: EIO
    }
}

/// The submitter of a request not followed from its start, as a party's name says it.
const LATE_SUBMITTER: &str = "not followed: issued while no traced call was in flight";

/// What the per-request path would otherwise look up and intern for every request: a
/// plain task's party by (tid, task cgroup) and a blkcg's path by id. Only answers that
/// were found are kept (a cgroup not resolved yet is asked again), and the answer is the
/// enricher's first one, which is also what a recording logged: live and `report` agree.
#[derive(Default)]
pub(crate) struct Charges {
    tasks: rustc_hash::FxHashMap<(u32, u64), Party>,
    blkcgs: rustc_hash::FxHashMap<u64, Name>,
}

impl Charges {
    /// Entries kept at most (each map starts over past it).
    const MAX: usize = 4096;
}

impl Pipeline {
    /// Who caused a request.
    fn charge(&mut self, io: &IoDone) -> Party {
        if io.ino != 0
            && let Some(dev) = self.loop_backing.get(&(io.wb_bdi.clone(), io.ino))
        {
            return Party {
                kind: PartyKind::Layer,
                pid: 0,
                tid: 0,
                comm: self.names.get(dev),
                cgroup: None,
            };
        }
        if io.ino != 0
            && let Some(d) = self.dirtiers.get(&(io.wb_bdi.clone(), io.ino)).cloned()
        {
            return Party {
                kind: PartyKind::Task,
                pid: d.pid,
                tid: d.tid,
                comm: self.names.get(&d.comm),
                cgroup: d.cgroup.as_deref().map(|c| self.names.get(c)),
            };
        }
        if io.unmatched && io.submitter.pid == 0 {
            let mut p = Party::unknown();
            if io.late {
                p.comm = self.names.get(LATE_SUBMITTER);
            }
            return p;
        }
        if io.comm.starts_with("jbd2/") {
            return Party {
                kind: PartyKind::Journal,
                pid: io.submitter.pid,
                tid: io.submitter.tid,
                comm: self.names.get(&io.comm),
                cgroup: None,
            };
        }
        if io.kthread {
            // A relay: the blkcg says on whose behalf, unless it is the root cgroup; a
            // cgroup holding one process says whose exactly.
            let path = self.enrich.blk_cgroup_path(io.blk_cgroup);
            if let Some(p) = path.as_deref().filter(|p| *p != "/")
                && let [pid] = self.enrich.blk_cgroup_procs(p)[..]
            {
                let comm = self
                    .thread_name(pid, pid)
                    .unwrap_or_else(|| format!("pid {pid}"));
                return Party {
                    kind: PartyKind::Process,
                    pid,
                    tid: 0,
                    comm: self.names.get(&comm),
                    cgroup: Some(self.names.get(p)),
                };
            }
            return match path {
                Some(p) if p != "/" => Party {
                    kind: PartyKind::Cgroup,
                    pid: 0,
                    tid: 0,
                    comm: self.names.get(&format!("cgroup {p}")),
                    cgroup: Some(self.names.get(&p)),
                },
                _ => Party {
                    kind: PartyKind::Kernel,
                    pid: io.submitter.pid,
                    tid: io.submitter.tid,
                    comm: self.names.get(&io.comm),
                    cgroup: None,
                },
            };
        }
        let key = (io.submitter.tid, io.task_cgroup);
        if let Some(p) = self.charges.tasks.get(&key)
            && p.pid == io.submitter.pid
            && *p.comm == *io.comm
        {
            return p.clone();
        }
        let cgroup = self
            .enrich
            .cgroup_path(io.task_cgroup)
            .map(|c| self.names.get(&c));
        let p = Party {
            kind: PartyKind::Task,
            pid: io.submitter.pid,
            tid: io.submitter.tid,
            comm: self.names.get(&io.comm),
            cgroup,
        };
        if p.cgroup.is_some() || io.task_cgroup == 0 {
            if self.charges.tasks.len() >= Charges::MAX {
                self.charges.tasks.clear();
            }
            self.charges.tasks.insert(key, p.clone());
        }
        p
    }

    /// The path of the blkcg `id` (the io controller's hierarchy), interned.
    fn blkcg_name(&mut self, id: u64) -> Option<Name> {
        if let Some(n) = self.charges.blkcgs.get(&id) {
            return Some(n.clone());
        }
        let n = self
            .enrich
            .blk_cgroup_path(id)
            .map(|c| self.names.get(&c))?;
        if self.charges.blkcgs.len() >= Charges::MAX {
            self.charges.blkcgs.clear();
        }
        self.charges.blkcgs.insert(id, n.clone());
        Some(n)
    }

    /// The history entry of a request: charged to whoever caused it.
    pub(super) fn io_entry(&mut self, io: &IoDone) -> history::Io {
        let flags = req_flags(io.cmd_flags, &self.req_bits);
        let charged = self.charge(io);
        let blkcg = if io.blk_cgroup != 0 {
            self.blkcg_name(io.blk_cgroup)
        } else {
            None
        };
        history::Io {
            disk: DiskDev(io.disk),
            part: io.part,
            sector: io.sector,
            pid: io.submitter.pid,
            tid: io.submitter.tid,
            charged,
            blkcg,
            bytes: if io.open { io.bytes } else { io.nr_bytes },
            op: flags.op,
            sync: flags.sync,
            flush: flags.preflush || flags.op == Op::Flush,
            fua: flags.fua,
            queued: io.queued,
            issued: io.issued,
            completed: (!io.open).then_some(io.completed),
            unmatched: io.unmatched,
            late: io.late,
            requeues: io.requeues,
            status: io.status,
        }
    }

    pub(super) fn on_io(&mut self, io: IoDone, sink: &mut dyn Sink) -> io::Result<()> {
        let flags = req_flags(io.cmd_flags, &self.req_bits);
        let entry = self.io_entry(&io);
        // Only the record printed with --events needs it after the history has the entry.
        let charged = self.events_out.then(|| entry.charged.clone());
        let disk = DiskDev(io.disk);
        self.history.io(entry);
        if !io.open && self.watched.contains_key(&disk) {
            sink.observe(&Observation::Io {
                disk,
                service_ns: io.issued.map(|i| io.completed.since(i)),
                queue_ns: io.queued.zip(io.issued).map(|(q, i)| i.since(q)),
            });
        }
        let Some(charged) = charged else {
            self.count("io");
            return Ok(());
        };
        let device = self.enrich.device_name(io.disk, io.submitter.pid);
        let model = self.enrich.device_model(io.disk);
        let part_name = io
            .part
            .filter(|p| *p != io.disk)
            .and_then(|p| self.enrich.device_name(p, io.submitter.pid));
        let cgroup = self.enrich.cgroup_path(io.task_cgroup);
        let dirtier =
            (charged.kind == PartyKind::Task && charged.tid != io.submitter.tid).then(|| Who {
                pid: charged.pid,
                tid: charged.tid,
                comm: charged.comm.to_string(),
                cgroup: charged.cgroup.as_deref().map(str::to_string),
            });
        let rec = IoRecord {
            kind: "io",
            dev: io.disk.to_string(),
            device,
            model,
            part: io.part.filter(|p| *p != io.disk).map(|p| p.to_string()),
            part_name,
            sector: (io.sector != u64::MAX).then_some(io.sector),
            bytes: if io.open { io.bytes } else { io.nr_bytes },
            rwbs: flags.rwbs(),
            op: flags.op_name(),
            sync: flags.sync,
            flush: flags.preflush || flags.op == Op::Flush,
            fua: flags.fua,
            pid: io.submitter.pid,
            tid: io.submitter.tid,
            comm: io.comm.to_string(),
            cgroup,
            charged_to: party_label(&charged),
            queued_ns: io.queued.map(|i| i.0),
            issue_ns: io.issued.map(|i| i.0),
            complete_ns: io.completed.0,
            queue_ms: io
                .queued
                .zip(io.issued)
                .map(|(q, i)| i.since(q) as f64 / 1e6),
            service_ms: io.issued.map(|i| io.completed.since(i) as f64 / 1e6),
            error: status_errno(io.status),
            requeues: io.requeues as u32,
            ino: (io.ino != 0).then_some(io.ino),
            dirtier,
            partial: io.partial,
            in_flight_at_end: io.open,
            unmatched: io.unmatched,
            late: io.late,
        };
        self.out(sink, EventRecord::Io(rec))
    }
}

/// How a party is shown: `dd (pid 812)`, `jbd2/sda1-8`, `cgroup /backup.slice`.
impl Pipeline {
    /// A second of a watched disk's requests the kernel summed (`--requests around-calls`):
    /// into the disk's history, to the sinks' observers, and out as an `io_summary` record.
    pub(super) fn on_io_summary(&mut self, n: &super::Note, sink: &mut dyn Sink) -> io::Result<()> {
        let super::Note::IoSummary {
            from_ns,
            to_ns,
            disk,
            name,
            requests,
            bytes,
            service_ns,
            hist,
        } = n
        else {
            return Ok(());
        };
        let Some(d) = crate::enrich::DevId::parse(disk) else {
            return Ok(());
        };
        let d = DiskDev(d);
        let hist: Vec<u64> = hist
            .iter()
            .copied()
            .take(zkstall_common::IO_HIST_BUCKETS)
            .collect();
        sink.observe(&Observation::IoSummary {
            disk: d,
            hist: &hist,
        });
        let rec = crate::sinks::events::IoSummaryRecord {
            kind: "io_summary",
            dev: disk.clone(),
            device: (!name.is_empty()).then(|| name.clone()),
            start_ns: *from_ns,
            end_ns: *to_ns,
            requests: *requests,
            bytes: *bytes,
            service_ms: *service_ns as f64 / 1e6 / (*requests).max(1) as f64,
            hist: hist.clone(),
        };
        self.out(sink, EventRecord::IoSummary(rec))?;
        self.history.summed(
            d,
            history::IoSummed {
                from: crate::clock::MonoNs(*from_ns),
                to: crate::clock::MonoNs(*to_ns),
                requests: *requests,
                bytes: *bytes,
                service_ns: *service_ns,
                hist,
            },
        );
        Ok(())
    }
}

pub fn party_label(p: &Party) -> String {
    match p.kind {
        PartyKind::Task if p.pid != 0 => format!("{} (pid {} tid {})", p.comm, p.pid, p.tid),
        PartyKind::Layer => format!("{} (writing its backing file)", p.comm),
        PartyKind::Process => format!(
            "{} (pid {}, relayed for cgroup {})",
            p.comm,
            p.pid,
            p.cgroup.as_deref().unwrap_or("?")
        ),
        PartyKind::Task | PartyKind::Journal | PartyKind::Kernel | PartyKind::Cgroup => {
            p.comm.to_string()
        }
        PartyKind::Unknown if p.comm.is_empty() => "unknown (queued before tracing)".into(),
        PartyKind::Unknown => format!("unknown ({})", p.comm),
    }
}

/// Is `io` on the partition `part` (by the block layer's partition, or the sector range)?
pub fn on_partition(io: &history::Io, part: &crate::enrich::PartRange) -> bool {
    match io.part {
        Some(p) if p != io.disk.0 => p == part.dev,
        _ => part.contains(io.sector),
    }
}

/// A disk's name for output, `loop3 (7:3)`.
pub fn disk_label(name: &str, d: DiskDev) -> String {
    format!("{name} ({d})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decode_with_the_kernels_own_bit_numbers() {
        let b = ReqBits::default();
        let f = req_flags(1 | (1 << b.sync) | (1 << b.fua) | (1 << b.preflush), &b);
        assert_eq!(f.op, Op::Write);
        assert!(f.sync && f.fua && f.preflush);
        assert_eq!(f.rwbs(), "FWFS");
        assert_eq!(req_flags(b.op_flush, &b).rwbs(), "F");
        assert_eq!(req_flags(0, &b).rwbs(), "R");
        // Another kernel's numbering.
        let other = ReqBits {
            sync: 3,
            ..ReqBits::default()
        };
        assert!(req_flags(1 | (1 << 3), &other).sync);
        assert!(!req_flags(1 | (1 << 3), &b).sync);
        assert_eq!(status_errno(10), -5);
        assert_eq!(status_errno(2), -110);
    }
}
