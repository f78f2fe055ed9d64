//! The agent's flight recorder and its incident files.
//!
//! Every frame the pipeline consumes (kernel records, notes, facts: the frames of a
//! recording) is kept in memory for the last `--window`, in zstd-compressed chunks of about
//! a second, within a byte budget: when a flood would exceed it, the oldest chunks go first
//! and are counted (the window is then shorter, and an incident says so with a `lost`
//! note). An incident is a recording that `report` reads like any other: a header, a
//! preamble that re-creates what the live pipeline knew at the window's start (targets,
//! watched disks, traced helper threads, the latest answer to every enrichment question),
//! the window's frames, then the live frames until `--post` after the last trigger, then
//! the records and notes that close what is still open, and a trailer with the kernel's
//! counters over the incident.
//!
//! The incident file is written as soon as a trigger arrives and flushed every tick, so a
//! stall still in progress is on disk while it lasts (`report` reads a file without its
//! trailer, saying so); files are created 0600; the oldest are removed beyond
//! `--max-incidents` or `--max-incident-bytes`.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::File,
    io::{self, BufWriter, Write as _},
    num::NonZeroUsize,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use lru::LruCache;

use crate::{
    clock::MonoNs,
    commands::session::KernelTotals,
    enrich::Fact,
    pipeline::Note,
    recording::{FrameOut, Header, Trailer},
};

/// Frames of one chunk before it is sealed (compressed), or after this long.
const CHUNK_RAW_MAX: usize = 256 << 10;
const CHUNK_SPAN_NS: u64 = 1_000_000_000;
/// Latest answers kept for incident preambles (one per question).
const FACTS_KEPT: usize = 8192;
/// Incident files are named `zkstall-incident-...zst`; retention only touches those.
pub const INCIDENT_PREFIX: &str = "zkstall-incident-";

/// How the flight recorder and its incidents are bounded.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// History kept before a trigger.
    pub window_ns: u64,
    /// Recording after the last trigger.
    pub post_ns: u64,
    /// The longest incident (a trigger that keeps coming back, a stall that never ends).
    pub max_incident_ns: u64,
    /// Compressed bytes the window may hold.
    pub budget_bytes: usize,
    pub dir: PathBuf,
    pub max_incidents: usize,
    pub max_incident_bytes: u64,
}

struct Chunk {
    first_ns: u64,
    last_ns: u64,
    frames: u64,
    raw_len: usize,
    /// zstd of the frames, in recording framing.
    data: Vec<u8>,
    /// The kernel's totals when the chunk began.
    totals: KernelTotals,
}

/// What the recorder shed to stay within its budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shed {
    pub chunks: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Frames up to this instant were shed (the window is incomplete before it).
    pub until_ns: u64,
}

/// Why an incident was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A watched call crossed the threshold (pid, tid, the call's start), and is still
    /// running (`ongoing`: the incident stays open until it ends), or ended.
    Stall {
        pid: u32,
        tid: u32,
        start_ns: u64,
        ongoing: bool,
    },
    /// SIGUSR1.
    Signal,
    /// POST /trigger.
    Http,
}

impl Trigger {
    fn tag(&self) -> String {
        match self {
            Trigger::Stall { pid, tid, .. } => format!("stall-{pid}-{tid}"),
            Trigger::Signal => "sigusr1".into(),
            Trigger::Http => "http".into(),
        }
    }
}

/// An incident file being written.
struct Incident {
    path: PathBuf,
    z: zstd::Encoder<'static, BufWriter<File>>,
    /// Recording until then (extended by later triggers, up to `hard_end_ns`).
    end_ns: u64,
    hard_end_ns: u64,
    totals_at_start: KernelTotals,
    pids: Vec<u32>,
    frames: u64,
    triggers: Vec<Trigger>,
    /// Stalls still running (pid, tid, start): the incident ends after they do.
    ongoing: std::collections::HashSet<(u32, u32, u64)>,
}

impl Incident {
    fn track(&mut self, t: &Trigger) {
        if let Trigger::Stall {
            pid,
            tid,
            start_ns,
            ongoing,
        } = *t
        {
            if ongoing {
                self.ongoing.insert((pid, tid, start_ns));
            } else {
                self.ongoing.remove(&(pid, tid, start_ns));
            }
        }
        let key = |t: &Trigger| match *t {
            Trigger::Stall {
                pid, tid, start_ns, ..
            } => (1, pid, tid, start_ns),
            Trigger::Signal => (2, 0, 0, 0),
            Trigger::Http => (3, 0, 0, 0),
        };
        if !self.triggers.iter().any(|x| key(x) == key(t)) {
            self.triggers.push(t.clone());
        }
    }
}

/// An incident that was finished: where, and why.
#[derive(Clone, Debug)]
pub struct Finished {
    pub path: PathBuf,
    pub bytes: u64,
    pub frames: u64,
    pub triggers: usize,
}

pub struct FlightRecorder {
    cfg: RecorderConfig,
    chunks: VecDeque<Chunk>,
    stored: usize,
    open: Vec<u8>,
    open_first_ns: Option<u64>,
    open_frames: u64,
    open_totals: KernelTotals,
    last_totals: KernelTotals,
    last_ns: u64,
    facts: LruCache<String, Fact>,
    targets: BTreeMap<u32, Note>,
    watches: BTreeMap<String, Note>,
    helpers: BTreeMap<u32, Note>,
    pub shed: Shed,
    incident: Option<Incident>,
    /// Set by a write error on the incident (reported once, then the incident is dropped).
    pub errors: u64,
}

impl FlightRecorder {
    pub fn new(cfg: RecorderConfig) -> FlightRecorder {
        FlightRecorder {
            cfg,
            chunks: VecDeque::new(),
            stored: 0,
            open: Vec::with_capacity(CHUNK_RAW_MAX + 4096),
            open_first_ns: None,
            open_frames: 0,
            open_totals: KernelTotals::default(),
            last_totals: KernelTotals::default(),
            last_ns: 0,
            facts: LruCache::new(NonZeroUsize::new(FACTS_KEPT).expect("nonzero")),
            targets: BTreeMap::new(),
            watches: BTreeMap::new(),
            helpers: BTreeMap::new(),
            shed: Shed::default(),
            incident: None,
            errors: 0,
        }
    }

    /// Compressed bytes held, and the span of time they cover.
    pub fn stored_bytes(&self) -> usize {
        self.stored + self.open.len()
    }

    pub fn window_covered_ns(&self) -> u64 {
        let first = self
            .chunks
            .front()
            .map(|c| c.first_ns)
            .or(self.open_first_ns);
        first.map_or(0, |f| self.last_ns.saturating_sub(f))
    }

    pub fn incident_path(&self) -> Option<&Path> {
        self.incident.as_ref().map(|i| i.path.as_path())
    }

    /// Lowers the byte budget (the agent's memory is over its bound): older chunks go.
    pub fn shrink_budget(&mut self, budget: usize) {
        self.cfg.budget_bytes = budget.max(CHUNK_RAW_MAX);
        self.prune();
    }

    pub fn budget(&self) -> usize {
        self.cfg.budget_bytes
    }

    pub fn set_budget(&mut self, budget: usize) {
        self.cfg.budget_bytes = budget.max(CHUNK_RAW_MAX);
    }

    fn push_frame(&mut self, tag: u8, payload: &[u8], ts_ns: Option<u64>) {
        let ts = ts_ns.unwrap_or(self.last_ns);
        self.last_ns = self.last_ns.max(ts);
        if self.open_first_ns.is_none() {
            self.open_first_ns = Some(ts);
            self.open_totals = self.last_totals.clone();
        }
        let start = self.open.len();
        self.open.push(tag);
        self.open
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.open.extend_from_slice(payload);
        self.open_frames += 1;
        if let Some(inc) = &mut self.incident {
            inc.frames += 1;
            if let Err(e) = inc.z.write_all(&self.open[start..]) {
                tracing::warn!("writing incident {}: {e}", inc.path.display());
                self.errors += 1;
                self.incident = None;
            }
        }
        if self.open.len() >= CHUNK_RAW_MAX {
            self.seal();
        }
    }

    fn seal(&mut self) {
        let Some(first) = self.open_first_ns.take() else {
            return;
        };
        // zstd's fastest regular level (-1, `--fast=1`): on 256 KiB chunks of a flood's
        // records (zstd -b -B256K, 96 MB) it compressed 988 MB/s to 9.29x where level 1 did
        // 793 MB/s to 9.16x; --fast=3 was 1237 MB/s but 8.84x, --fast=5 5.0x.
        let data = zstd::bulk::compress(&self.open, -1).unwrap_or_else(|_| self.open.clone());
        self.stored += data.len();
        self.chunks.push_back(Chunk {
            first_ns: first,
            last_ns: self.last_ns,
            frames: self.open_frames,
            raw_len: self.open.len(),
            data,
            totals: std::mem::take(&mut self.open_totals),
        });
        self.open.clear();
        self.open_frames = 0;
        self.prune();
    }

    /// Drops chunks older than the window, and the oldest beyond the budget (counted).
    fn prune(&mut self) {
        let horizon = self.last_ns.saturating_sub(self.cfg.window_ns);
        while let Some(c) = self.chunks.front() {
            let over = self.stored > self.cfg.budget_bytes;
            if c.last_ns >= horizon && !over {
                break;
            }
            let c = self.chunks.pop_front().expect("front");
            self.stored -= c.data.len();
            if c.last_ns >= horizon {
                self.shed.chunks += 1;
                self.shed.frames += c.frames;
                self.shed.bytes += c.raw_len as u64;
                self.shed.until_ns = self.shed.until_ns.max(c.last_ns);
            }
        }
    }

    /// Every tick: seals a chunk a second old, notes the kernel's totals (chunks carry
    /// them), keeps the incident's file flushed and finishes it when its time is up.
    /// Returns the incident finished, if one was.
    pub fn tick(
        &mut self,
        now: MonoNs,
        totals: KernelTotals,
        closing: impl FnOnce() -> (Vec<Vec<u8>>, Vec<Note>),
    ) -> Option<Finished> {
        self.last_ns = self.last_ns.max(now.0);
        self.last_totals = totals;
        if self
            .open_first_ns
            .is_some_and(|f| now.0.saturating_sub(f) >= CHUNK_SPAN_NS)
        {
            self.seal();
        } else {
            self.prune();
        }
        let done = match &mut self.incident {
            Some(inc) => {
                if let Err(e) = inc.z.flush() {
                    tracing::warn!("writing incident {}: {e}", inc.path.display());
                    self.errors += 1;
                    self.incident = None;
                    return None;
                }
                // Done once `post` has passed since the last trigger and every stall it
                // recorded has ended (or it is as long as an incident may be).
                (now.0 >= inc.end_ns && inc.ongoing.is_empty()) || now.0 >= inc.hard_end_ns
            }
            None => false,
        };
        if done {
            let (recs, notes) = closing();
            return self.finish(now, &recs, &notes);
        }
        None
    }

    /// Starts an incident now (or extends the one being written): `header` describes the
    /// host and targets now; its start is set to the window's. Returns the file's path.
    pub fn trigger(
        &mut self,
        trigger: Trigger,
        now: MonoNs,
        mut header: Header,
        host: &str,
    ) -> io::Result<PathBuf> {
        if let Some(inc) = &mut self.incident {
            inc.end_ns = (now.0 + self.cfg.post_ns)
                .min(inc.hard_end_ns)
                .max(inc.end_ns);
            inc.track(&trigger);
            return Ok(inc.path.clone());
        }
        // The window: chunks from `now - window` on (or what the budget left of it).
        let want_from = now.0.saturating_sub(self.cfg.window_ns);
        let first = self
            .chunks
            .iter()
            .position(|c| c.last_ns >= want_from)
            .unwrap_or(self.chunks.len());
        let from_ns = self
            .chunks
            .get(first)
            .map(|c| c.first_ns.max(want_from))
            .or(self.open_first_ns)
            .unwrap_or(now.0);
        let totals_at_start = self
            .chunks
            .get(first)
            .map(|c| c.totals.clone())
            .unwrap_or_else(|| self.open_totals.clone());
        header.started_ns = from_ns;
        std::fs::create_dir_all(&self.cfg.dir)?;
        let path = self
            .cfg
            .dir
            .join(incident_name(host, now, header.wall_offset_ns, &trigger));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut z = zstd::Encoder::new(BufWriter::new(f), 3)?;
        serde_json::to_writer(&mut z, &header).map_err(io::Error::other)?;
        z.write_all(b"\n")?;
        let mut frames = 0u64;
        let mut put = |z: &mut zstd::Encoder<'static, BufWriter<File>>,
                       tag: u8,
                       payload: &[u8]|
         -> io::Result<()> {
            frames += 1;
            z.write_all(&[tag])?;
            z.write_all(&(payload.len() as u32).to_le_bytes())?;
            z.write_all(payload)
        };
        // The preamble: what the live pipeline knew at the window's start.
        let facts: Vec<&Fact> = self.facts.iter().map(|(_, f)| f).collect();
        for f in facts.into_iter().rev() {
            put(
                &mut z,
                b'F',
                &serde_json::to_vec(f).map_err(io::Error::other)?,
            )?;
        }
        for n in self
            .targets
            .values()
            .chain(self.watches.values())
            .chain(self.helpers.values())
        {
            let n = with_ts(n, from_ns);
            put(
                &mut z,
                b'N',
                &serde_json::to_vec(&n).map_err(io::Error::other)?,
            )?;
        }
        if self.shed.until_ns >= want_from && self.shed.frames > 0 {
            // The budget cut the window short: calls there cannot be explained fully.
            let n = Note::Lost {
                from_ns: want_from,
                to_ns: from_ns,
                ringbuf_full: 0,
                shed: self.shed.frames,
            };
            put(
                &mut z,
                b'N',
                &serde_json::to_vec(&n).map_err(io::Error::other)?,
            )?;
        }
        // The window's frames, as they were consumed.
        for c in self.chunks.iter().skip(first) {
            let raw = zstd::bulk::decompress(&c.data, c.raw_len.max(1))?;
            z.write_all(&raw)?;
            frames += c.frames;
        }
        z.write_all(&self.open)?;
        frames += self.open_frames;
        z.flush()?;
        let pids = self.targets.keys().copied().collect();
        let mut inc = Incident {
            path: path.clone(),
            z,
            end_ns: now.0 + self.cfg.post_ns,
            hard_end_ns: now.0 + self.cfg.max_incident_ns.max(self.cfg.post_ns),
            totals_at_start,
            pids,
            frames,
            triggers: Vec::new(),
            ongoing: Default::default(),
        };
        inc.track(&trigger);
        self.incident = Some(inc);
        Ok(path)
    }

    /// Ends the incident being written (at its time, or when the agent stops): the
    /// records and notes that close what is open now, then the trailer.
    pub fn finish(
        &mut self,
        now: MonoNs,
        closing_records: &[Vec<u8>],
        closing_notes: &[Note],
    ) -> Option<Finished> {
        let mut inc = self.incident.take()?;
        let result = (|| -> io::Result<()> {
            for r in closing_records {
                inc.z.write_all(b"K")?;
                inc.z.write_all(&(r.len() as u32).to_le_bytes())?;
                inc.z.write_all(r)?;
            }
            for n in closing_notes {
                let v = serde_json::to_vec(n).map_err(io::Error::other)?;
                inc.z.write_all(b"N")?;
                inc.z.write_all(&(v.len() as u32).to_le_bytes())?;
                inc.z.write_all(&v)?;
            }
            let totals = self.last_totals.since(&inc.totals_at_start);
            let pids: std::collections::BTreeSet<u32> = inc
                .pids
                .iter()
                .copied()
                .chain(self.targets.keys().copied())
                .collect();
            let mut t: Trailer =
                crate::commands::session::trailer(&totals, now, &pids, self.shed.frames);
            t.end_ns = now.0;
            let v = serde_json::to_vec(&t).map_err(io::Error::other)?;
            inc.z.write_all(b"E")?;
            inc.z.write_all(&(v.len() as u32).to_le_bytes())?;
            inc.z.write_all(&v)?;
            inc.z.finish()?.flush()
        })();
        if let Err(e) = result {
            tracing::warn!("finishing incident {}: {e}", inc.path.display());
            self.errors += 1;
        }
        let bytes = std::fs::metadata(&inc.path).map(|m| m.len()).unwrap_or(0);
        let done = Finished {
            path: inc.path.clone(),
            bytes,
            frames: inc.frames,
            triggers: inc.triggers.len(),
        };
        if let Err(e) = retain(
            &self.cfg.dir,
            self.cfg.max_incidents,
            self.cfg.max_incident_bytes,
        ) {
            tracing::warn!("incident retention in {}: {e}", self.cfg.dir.display());
        }
        Some(done)
    }

    /// Keeps the state an incident's preamble re-creates.
    fn remember_note(&mut self, n: &Note) {
        const KEEP: usize = 4096;
        match n {
            Note::Target { pid, .. } if self.targets.len() < KEEP => {
                self.targets.insert(*pid, n.clone());
            }
            Note::TargetExit { pid, .. } => {
                self.targets.remove(pid);
            }
            Note::Watch { disk, .. } if self.watches.len() < KEEP => {
                self.watches.insert(disk.clone(), n.clone());
            }
            Note::Unwatch { disk, .. } => {
                self.watches.remove(disk);
            }
            Note::Helper { pid, .. } if self.helpers.len() < KEEP => {
                self.helpers.insert(*pid, n.clone());
            }
            _ => {}
        }
    }
}

impl FrameOut for FlightRecorder {
    fn kernel(&mut self, rec: &[u8]) -> io::Result<()> {
        // Bytes 8..16 of every record are its timestamp (EventHeader::ts_ns).
        let ts = rec
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes);
        self.push_frame(b'K', rec, ts);
        Ok(())
    }

    fn note(&mut self, n: &Note) -> io::Result<()> {
        self.remember_note(n);
        let v = serde_json::to_vec(n).map_err(io::Error::other)?;
        self.push_frame(b'N', &v, Some(n.ts_ns()));
        Ok(())
    }

    fn fact(&mut self, f: &Fact) -> io::Result<()> {
        let v = serde_json::to_vec(f).map_err(io::Error::other)?;
        self.facts.put(f.key(), f.clone());
        self.push_frame(b'F', &v, None);
        Ok(())
    }
}

/// A note of the preamble, stamped at the window's start.
fn with_ts(n: &Note, ts: u64) -> Note {
    let mut n = n.clone();
    match &mut n {
        Note::Target { ts_ns, .. } | Note::Watch { ts_ns, .. } | Note::Helper { ts_ns, .. } => {
            *ts_ns = ts
        }
        _ => {}
    }
    n
}

/// `zkstall-incident-<host>-<UTC time>-<why>.zst`: sorts by time, names the host.
fn incident_name(host: &str, now: MonoNs, wall_offset_ns: i64, t: &Trigger) -> String {
    let unix_ns = (now.0 as i128 + wall_offset_ns as i128).max(0) as u128;
    let secs = (unix_ns / 1_000_000_000) as u64;
    let ms = (unix_ns / 1_000_000 % 1000) as u32;
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    )
    .to_string()
    .replace([':', '-'], "")
    .trim_end_matches('Z')
    .to_string();
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{INCIDENT_PREFIX}{host}-{when}.{ms:03}Z-{}.zst", t.tag())
}

/// Removes the oldest incident files beyond `max_files` or `max_bytes` in all.
pub fn retain(dir: &Path, max_files: usize, max_bytes: u64) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(INCIDENT_PREFIX))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect();
    // Names sort by time.
    files.sort();
    let mut total: u64 = files.iter().map(|(_, l)| *l).sum();
    let mut removed = Vec::new();
    let mut n = files.len();
    for (p, len) in &files {
        if n <= max_files.max(1) && total <= max_bytes {
            break;
        }
        if n == 1 {
            // The newest one stays, whatever its size.
            break;
        }
        std::fs::remove_file(p)?;
        removed.push(p.clone());
        total -= len;
        n -= 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    use crate::recording::{Frame, Reader};

    fn header() -> Header {
        Header {
            format: crate::recording::FORMAT.into(),
            version: crate::recording::VERSION,
            host: "zk1".into(),
            kernel: "6.18".into(),
            boot_id: "b".into(),
            wall_offset_ns: 1_700_000_000_000_000_000,
            started_ns: 0,
            threshold_ns: 500_000_000,
            blocked_min_ns: 1_000_000,
            targets: vec![],
            threads: vec![],
            devices: vec![],
            mounts: vec![],
            disabled: vec![],
            req_bits: Default::default(),
            clock: None,
        }
    }

    fn cfg(dir: &Path) -> RecorderConfig {
        RecorderConfig {
            window_ns: 10_000_000_000,
            post_ns: 1_000_000_000,
            max_incident_ns: 60_000_000_000,
            budget_bytes: 64 << 20,
            dir: dir.to_path_buf(),
            max_incidents: 3,
            max_incident_bytes: 1 << 30,
        }
    }

    /// A kernel record of `len` bytes stamped `ts` (bytes 8..16).
    fn rec(ts: u64, len: usize, fill: u8) -> Vec<u8> {
        let mut r = vec![fill; len.max(16)];
        r[8..16].copy_from_slice(&ts.to_le_bytes());
        r
    }

    const S: u64 = 1_000_000_000;

    fn frames(path: &Path) -> (Header, Vec<Frame>) {
        let mut r = Reader::open(path).unwrap();
        let h = r.header.clone();
        let mut out = Vec::new();
        while let Ok(Some(f)) = r.next_frame() {
            out.push(f);
        }
        (h, out)
    }

    #[test]
    fn an_incident_holds_the_window_before_the_trigger_the_state_then_and_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FlightRecorder::new(cfg(dir.path()));
        f.note(&Note::Target {
            ts_ns: 1,
            pid: 7,
            comm: "java".into(),
            reason: "QuorumPeerMain".into(),
        })
        .unwrap();
        f.fact(&Fact::Cgroup {
            id: 1,
            path: Some("/old".into()),
        })
        .unwrap();
        f.fact(&Fact::Cgroup {
            id: 1,
            path: Some("/zk".into()),
        })
        .unwrap();
        // 30 s of records, one a second; only the last 10 s are in the window.
        for t in 1..=30 {
            f.kernel(&rec(t * S, 64, t as u8)).unwrap();
            f.tick(MonoNs(t * S + 1), KernelTotals::default(), || {
                (vec![], vec![])
            });
        }
        let path = f
            .trigger(
                Trigger::Stall {
                    pid: 7,
                    tid: 8,
                    start_ns: 29 * S,
                    ongoing: true,
                },
                MonoNs(30 * S + 2),
                header(),
                "zk1",
            )
            .unwrap();
        assert!(path.file_name().unwrap().to_string_lossy().contains("zk1"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Written at once: readable while the stall lasts (no trailer yet).
        let (h, now) = frames(&path);
        assert!(
            h.started_ns >= 19 * S && h.started_ns <= 21 * S,
            "{}",
            h.started_ns
        );
        assert!(
            now.iter()
                .any(|f| matches!(f, Frame::Kernel(k) if k[0] == 30))
        );
        // Post: the incident goes on while the stall runs, past `post`.
        for t in 31..=34 {
            f.kernel(&rec(t * S, 64, t as u8)).unwrap();
            assert!(
                f.tick(MonoNs(t * S + 1), KernelTotals::default(), || (
                    vec![],
                    vec![]
                ))
                .is_none(),
                "still open at {t} s: the stall has not ended"
            );
        }
        f.trigger(
            Trigger::Stall {
                pid: 7,
                tid: 8,
                start_ns: 29 * S,
                ongoing: false,
            },
            MonoNs(34 * S + 5),
            header(),
            "zk1",
        )
        .unwrap();
        let done = f
            .tick(MonoNs(36 * S), KernelTotals::default(), || {
                (vec![rec(36 * S, 40, 0xee)], vec![])
            })
            .expect("finished 1 s after the stall ended");
        assert_eq!(done.path, path);
        let (_, all) = frames(&path);
        let kernel: Vec<u8> = all
            .iter()
            .filter_map(|f| match f {
                Frame::Kernel(k) => Some(k[0]),
                _ => None,
            })
            .collect();
        // The window (20..=30 s), the post records, then the closing one.
        assert_eq!(kernel.first(), Some(&20), "{kernel:?}");
        assert!(
            kernel.windows(2).all(|w| w[0] < w[1] || w[1] == 0xee),
            "{kernel:?}"
        );
        assert_eq!(kernel.last(), Some(&0xee));
        // The preamble re-creates the target (stamped at the window's start) and the
        // latest answer to each question.
        assert!(all.iter().any(|f| matches!(
            f,
            Frame::Note(Note::Target { pid: 7, ts_ns, .. }) if *ts_ns >= 19 * S
        )));
        let cgroups: Vec<&Fact> = all
            .iter()
            .filter_map(|f| match f {
                Frame::Fact(x @ Fact::Cgroup { .. }) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(
            cgroups,
            vec![&Fact::Cgroup {
                id: 1,
                path: Some("/zk".into())
            }]
        );
        assert!(matches!(all.last(), Some(Frame::End(_))));
    }

    #[test]
    fn a_flood_over_the_budget_sheds_the_oldest_chunks_and_the_incident_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        // One and a half chunks: an incompressible chunk is about CHUNK_RAW_MAX stored, a
        // few bytes either side by zstd level, so two of them against a budget of exactly
        // two would fit or not by those bytes.
        c.budget_bytes = CHUNK_RAW_MAX * 3 / 2;
        let mut f = FlightRecorder::new(c);
        // Incompressible records, 20 chunks' worth in 10 s.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..(20 * CHUNK_RAW_MAX / 200) as u64 {
            let mut r = vec![0u8; 200];
            for b in r.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let ts = S + i * 10_000_000 / 2;
            r[8..16].copy_from_slice(&ts.to_le_bytes());
            f.kernel(&r).unwrap();
        }
        assert!(
            f.stored_bytes() <= CHUNK_RAW_MAX * 3,
            "{}",
            f.stored_bytes()
        );
        assert!(f.shed.chunks > 10 && f.shed.frames > 0, "{:?}", f.shed);
        let now = MonoNs(f.last_ns + 1);
        let path = f.trigger(Trigger::Signal, now, header(), "zk1").unwrap();
        let (_, all) = frames(&path);
        assert!(
            all.iter()
                .any(|f| matches!(f, Frame::Note(Note::Lost { shed, .. }) if *shed > 0)),
            "the incident says its window was cut"
        );
    }

    #[test]
    fn retention_removes_the_oldest_incidents_only() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(
                dir.path()
                    .join(format!("{INCIDENT_PREFIX}h-2026120{i}T000000.000Z-x.zst")),
                vec![0u8; 1000],
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let removed = retain(dir.path(), 3, 1 << 30).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(removed[0].to_string_lossy().contains("20261200"));
        assert!(dir.path().join("notes.txt").exists());
        // By bytes: at most 1500 bytes leaves one (the newest stays in any case).
        let removed = retain(dir.path(), 10, 1500).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(
            dir.path()
                .join(format!("{INCIDENT_PREFIX}h-20261204T000000.000Z-x.zst"))
                .exists()
        );
    }
}
