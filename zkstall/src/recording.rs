//! Recordings: what `trace --output` writes and `report` reads. A zstd stream holding a
//! JSON header line, then frames in the order the live pipeline processed them, then a
//! trailer:
//!
//! ```text
//! {"format":"zkstall-recording","version":1,"host":..,"kernel":..,"boot_id":..,...}\n
//! frame*:  tag (1 byte) | length (u32, little endian) | payload
//!   'K'  one kernel record, as it came out of the ring buffer (or, at the end, as
//!        synthesized from the kernel's maps in the same layout)
//!   'N'  one note (JSON): what userspace observed outside the ring buffer (targets,
//!        watched disks, calls running at attach or crossing the threshold, losses)
//!   'F'  one enrichment answer (JSON): fd -> path, dev -> name, tid -> name, stack...
//!   'E'  trailer (JSON): end time and the kernel-side counters
//! ```
//!
//! The facts precede the record whose processing asked for them, so `report` answers
//! every question exactly as the live run did: same code, same output.
//!
//! Version 3 writes that stream in self-contained chunks (2 MiB or 2 s of records each):
//! a zstd skippable frame holding the chunk's index entry (its time range, sizes), then
//! the chunk as a zstd frame of its own. Every chunk after the first opens with a
//! preamble frame `'C'` (the facts and state notes known then), so a time window is read
//! by skipping the chunks before it without decompressing them, and a crash loses at
//! most the last chunk. The whole file is still one zstd stream (`zstd -dc` reads it).

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    path::Path,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{enrich::Fact, pipeline::Note, probes::ReqBits, sinks::DisabledSignal};

pub const FORMAT: &str = "zkstall-recording";
/// 2: requests keyed by pointer with their submitter and disk, per-thread accounting,
/// notes. 3: chunks (below) and the host's clock discipline in the header. Version 1
/// recordings are refused with a message naming the release to use.
pub const VERSION: u32 = 3;
/// The oldest version read: 2 has the same frames, in one zstd frame.
pub const MIN_VERSION: u32 = 2;
/// Larger frames are corruption, not data (kernel records are ~100 bytes).
const MAX_FRAME: u32 = 16 << 20;
/// Decompressed bytes read ahead: large enough that a record costs a copy, not a call.
const READ_BUF: usize = 64 << 10;

#[derive(Debug, Error)]
pub enum RecordingError {
    #[error("cannot open {0}: {1}")]
    Open(String, io::Error),
    #[error("{0} is not a zkstall recording (not a zstd stream, or no header): {1}")]
    NotARecording(String, String),
    #[error(
        "{0} was written by a newer zkstall (recording version {1}, this one reads {VERSION}): upgrade zkstall to read it"
    )]
    TooNew(String, u32),
    #[error(
        "{0} was written by an older zkstall (recording version {1}, this one reads {VERSION}): report it with the zkstall that recorded it"
    )]
    TooOld(String, u32),
    #[error("{0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("writing the recording: {0}")]
    Write(#[from] io::Error),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    pub reason: String,
    /// A ZooKeeper server's ensemble (its zoo.cfg's server lines and myid), for `merge`'s
    /// quorum picture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<crate::targets::Ensemble>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub dev: String,
    pub name: String,
}

/// Everything needed to read the stream without the host it came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub host: String,
    pub kernel: String,
    pub boot_id: String,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, in ns, when tracing started.
    pub wall_offset_ns: i64,
    /// CLOCK_MONOTONIC when tracing started.
    pub started_ns: u64,
    /// The live run's --threshold: write-family calls below it were never recorded.
    pub threshold_ns: u64,
    pub blocked_min_ns: u64,
    pub targets: Vec<TargetInfo>,
    /// Thread names of the targets at start.
    pub threads: Vec<(u32, String)>,
    pub devices: Vec<DeviceInfo>,
    /// /proc/<first target>/mountinfo at start.
    pub mounts: Vec<String>,
    pub disabled: Vec<DisabledSignal>,
    /// How the recording kernel numbers request ops and flags.
    #[serde(default)]
    pub req_bits: ReqBits,
    /// The host's clock discipline when tracing started (adjtimex), for `merge`: how far
    /// its wall clock may be off. None in recordings made before it was recorded.
    #[serde(default)]
    pub clock: Option<crate::clock::ClockSync>,
}

/// Requests on a disk nobody watched, by cgroup (from the kernel's summary).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OtherDisk {
    pub disk: String,
    pub name: Option<String>,
    pub cgroup: Option<String>,
    pub requests: u64,
    pub bytes: u64,
}

/// Requests the block layer completed on a disk nobody watched that the probes never saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnseenDisk {
    pub disk: String,
    pub name: Option<String>,
    /// Completed requests by the block layer's count (/proc/diskstats), and by the probes'.
    pub block_layer: u64,
    pub counted: u64,
}

/// The end of a recording: the kernel-side counters and what they summarize.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Trailer {
    pub end_ns: u64,
    pub pids: Vec<u32>,
    pub dropped: u64,
    pub untimed: u64,
    pub exit_without_enter: u64,
    pub read_errors: u64,
    pub io_unmatched: u64,
    /// Unpaired because already in flight when their disk was watched (older recordings:
    /// counted in `io_unmatched`).
    pub io_before_watch: u64,
    /// Scheduler switches back onto a CPU the kernel ran no program for, found at a
    /// syscall of the thread (older recordings: 0).
    pub switch_unseen: u64,
    /// Requests on watched disks summed per disk instead of sent one by one (older
    /// recordings: 0, every request was sent).
    pub io_summed: u64,
    /// Requests on watched disks not followed from their start, first seen completing
    /// (older recordings: 0).
    #[serde(default)]
    pub io_late: u64,
    pub map_full: u64,
    /// Map updates and removals refused because a bucket lock was held on the CPU (a
    /// program interrupting another; older recordings: 0, counted in `map_full` or not
    /// at all).
    pub map_busy: u64,
    pub stack_errors: u64,
    pub io_watched: u64,
    pub io_merged: u64,
    pub io_stale: u64,
    pub io_partial: u64,
    pub io_flush: u64,
    pub io_flush_seq_end: u64,
    pub io_other_disks: u64,
    pub other_disks: Vec<OtherDisk>,
    pub shed_by_reader: u64,
    /// Program runs the kernel skipped (bpf_prog_info.recursion_misses).
    pub probe_misses: u64,
    /// Requests on unwatched disks the block layer completed and the probes never saw
    /// (a lower bound), and by disk.
    pub io_unseen: u64,
    pub unseen_disks: Vec<UnseenDisk>,
}

/// Anything that takes the frames of a recording as they are consumed: the recording's
/// [`Writer`], the agent's flight recorder.
pub trait FrameOut {
    fn kernel(&mut self, rec: &[u8]) -> io::Result<()>;
    fn note(&mut self, n: &Note) -> io::Result<()>;
    fn fact(&mut self, f: &Fact) -> io::Result<()>;
}

/// A chunk closes at this much raw data, or this long of recorded time (or of wall time,
/// on a quiet host: [`Writer::tick`]): a crash loses at most that.
const CHUNK_RAW: usize = 2 << 20;
const CHUNK_NS: u64 = 2_000_000_000;
/// The zstd skippable frame that precedes each chunk with its index entry (zstd's
/// decoders, `zstd -d` included, skip it: the file stays one readable zstd stream).
const INDEX_MAGIC: u32 = 0x184D_2A5A;
/// Facts carried by a chunk's preamble at most (the most recently learnt).
const PREAMBLE_FACTS: usize = 8192;

/// A chunk's index entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkIndex {
    pub seq: u32,
    /// Times (CLOCK_MONOTONIC ns) of its first and last timed frame.
    pub first_ns: u64,
    pub last_ns: u64,
    pub frames: u32,
    /// Bytes of the zstd frame that follows, and of its content.
    pub zlen: u64,
    pub raw_len: u64,
}

/// What a chunk carries for reading it without the ones before (frame 'C'): the facts
/// known and the state notes (targets, watched disks, helpers) when it began. A reader
/// going from the start skips it: it has seen all of that already.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Preamble {
    pub ts_ns: u64,
    pub facts: Vec<Fact>,
    pub notes: Vec<Note>,
}

/// Writes a recording in self-contained chunks: each one an index entry (skippable
/// frame) and a zstd frame of its own, the later ones opening with a preamble.
pub struct Writer {
    out: BufWriter<File>,
    raw: Vec<u8>,
    seq: u32,
    first_ns: Option<u64>,
    last_ns: u64,
    frames: u32,
    opened: std::time::Instant,
    facts: lru::LruCache<String, Fact>,
    state: std::collections::BTreeMap<String, Note>,
    /// Bytes of the open chunk taken by its preamble (not counted against CHUNK_RAW).
    preamble_len: usize,
}

impl Writer {
    /// Creates `path`, refusing an existing file (pass `force` to replace it).
    pub fn create_with(
        path: &Path,
        header: &Header,
        force: bool,
    ) -> Result<Writer, RecordingError> {
        let mut o = std::fs::OpenOptions::new();
        o.write(true);
        if force {
            o.create(true).truncate(true);
        } else {
            o.create_new(true);
        }
        let f = o
            .open(path)
            .map_err(|e| RecordingError::Open(path.display().to_string(), e))?;
        let mut w = Writer {
            out: BufWriter::new(f),
            raw: Vec::with_capacity(CHUNK_RAW + 4096),
            seq: 0,
            first_ns: None,
            last_ns: 0,
            frames: 0,
            opened: std::time::Instant::now(),
            facts: lru::LruCache::new(
                std::num::NonZeroUsize::new(PREAMBLE_FACTS).expect("nonzero"),
            ),
            state: Default::default(),
            preamble_len: 0,
        };
        serde_json::to_writer(&mut w.raw, header).map_err(io::Error::other)?;
        w.raw.push(b'\n');
        w.timed(header.started_ns);
        // The header is a chunk of its own, on disk at once: a crash never loses it.
        w.close_chunk()?;
        Ok(w)
    }

    /// Creates (or replaces) `path`.
    pub fn create(path: &Path, header: &Header) -> Result<Writer, RecordingError> {
        Self::create_with(path, header, true)
    }

    fn timed(&mut self, ts: u64) {
        if self.first_ns.is_none() {
            self.first_ns = Some(ts);
        }
        self.last_ns = self.last_ns.max(ts);
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        self.raw.push(tag);
        self.raw
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(payload);
        self.frames += 1;
        let long = self
            .first_ns
            .is_some_and(|f| self.last_ns.saturating_sub(f) >= CHUNK_NS);
        if self.raw.len() - self.preamble_len >= CHUNK_RAW || long {
            self.close_chunk()?;
        }
        Ok(())
    }

    /// Compresses and writes the open chunk; the next one opens with a preamble.
    fn close_chunk(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        // Level 1: on 2 MiB chunks of ZooKeeper under load as small as level 3 (ratio
        // 10.8 both) at 1.7x the speed; 3% larger on a block flood's chunks.
        let z = zstd::bulk::compress(&self.raw, 1)?;
        let idx = ChunkIndex {
            seq: self.seq,
            first_ns: self.first_ns.unwrap_or(self.last_ns),
            last_ns: self.last_ns,
            frames: self.frames,
            zlen: z.len() as u64,
            raw_len: self.raw.len() as u64,
        };
        let ij = serde_json::to_vec(&idx).map_err(io::Error::other)?;
        self.out.write_all(&INDEX_MAGIC.to_le_bytes())?;
        self.out.write_all(&(ij.len() as u32).to_le_bytes())?;
        self.out.write_all(&ij)?;
        self.out.write_all(&z)?;
        self.out.flush()?;
        self.seq += 1;
        self.raw.clear();
        self.frames = 0;
        self.first_ns = None;
        self.opened = std::time::Instant::now();
        // The preamble of the next chunk: what is known now.
        let p = Preamble {
            ts_ns: self.last_ns,
            facts: self.facts.iter().rev().map(|(_, f)| f.clone()).collect(),
            notes: self.state.values().cloned().collect(),
        };
        let v = serde_json::to_vec(&p).map_err(io::Error::other)?;
        self.raw.push(b'C');
        self.raw.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(&v);
        self.preamble_len = self.raw.len();
        Ok(())
    }

    /// Closes the open chunk if it has been open a second (a quiet host): called on the
    /// session's tick.
    pub fn tick(&mut self) -> io::Result<()> {
        if self.frames > 0 && self.opened.elapsed() >= std::time::Duration::from_secs(1) {
            self.close_chunk()?;
        }
        Ok(())
    }

    pub fn kernel(&mut self, rec: &[u8]) -> io::Result<()> {
        // Bytes 8..16 of every record are its timestamp (EventHeader::ts_ns).
        if let Some(ts) = rec
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
        {
            self.timed(ts);
        }
        self.frame(b'K', rec)
    }

    pub fn note(&mut self, n: &Note) -> io::Result<()> {
        const KEEP: usize = 4096;
        match n {
            Note::Target { pid, .. } if self.state.len() < KEEP => {
                self.state.insert(format!("target {pid}"), n.clone());
            }
            Note::TargetExit { pid, .. } => {
                self.state.remove(&format!("target {pid}"));
            }
            Note::Watch { disk, .. } if self.state.len() < KEEP => {
                self.state.insert(format!("watch {disk}"), n.clone());
            }
            Note::Unwatch { disk, .. } => {
                self.state.remove(&format!("watch {disk}"));
            }
            Note::Helper { pid, .. } if self.state.len() < KEEP => {
                self.state.insert(format!("helper {pid}"), n.clone());
            }
            _ => {}
        }
        self.timed(n.ts_ns());
        let v = serde_json::to_vec(n).map_err(io::Error::other)?;
        self.frame(b'N', &v)
    }

    pub fn fact(&mut self, f: &Fact) -> io::Result<()> {
        self.facts.put(f.key(), f.clone());
        let v = serde_json::to_vec(f).map_err(io::Error::other)?;
        self.frame(b'F', &v)
    }

    pub fn finish(mut self, t: &Trailer) -> io::Result<()> {
        let v = serde_json::to_vec(t).map_err(io::Error::other)?;
        self.timed(t.end_ns);
        self.raw.push(b'E');
        self.raw.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(&v);
        self.frames += 1;
        self.close_chunk()?;
        self.out.flush()
    }
}

impl FrameOut for Writer {
    fn kernel(&mut self, rec: &[u8]) -> io::Result<()> {
        Writer::kernel(self, rec)
    }
    fn note(&mut self, n: &Note) -> io::Result<()> {
        Writer::note(self, n)
    }
    fn fact(&mut self, f: &Fact) -> io::Result<()> {
        Writer::fact(self, f)
    }
}

/// One frame read back.
#[derive(Debug)]
pub enum Frame {
    Kernel(Vec<u8>),
    Note(Note),
    Fact(Fact),
    End(Trailer),
    /// The preamble of the first chunk read by [`Reader::open_at`] (never from the start).
    Preamble(Preamble),
}

pub struct Reader {
    name: String,
    z: BufReader<zstd::Decoder<'static, BufReader<File>>>,
    pub header: Header,
    pub frames: u64,
    /// Return the next preamble (a window's first chunk) instead of skipping it.
    want_preamble: bool,
    /// Chunks skipped without decompressing them (open_at).
    pub chunks_skipped: u32,
    /// A kernel frame's buffer handed back by [`Reader::recycle`], reused for the next.
    spare: Vec<u8>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, RecordingError> {
        let name = path.display().to_string();
        let f = File::open(path).map_err(|e| RecordingError::Open(name.clone(), e))?;
        let z = zstd::Decoder::new(f)
            .map_err(|e| RecordingError::NotARecording(name.clone(), e.to_string()))?;
        let mut z = BufReader::with_capacity(READ_BUF, z);
        let mut line = Vec::new();
        // The header is one line; a bounded read keeps garbage input from growing memory.
        let mut byte = [0u8; 1];
        loop {
            match z.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) if line.len() < (1 << 20) => line.push(byte[0]),
                Ok(_) => return Err(RecordingError::NotARecording(name, "no header line".into())),
                Err(e) => return Err(RecordingError::NotARecording(name, e.to_string())),
            }
        }
        #[derive(Deserialize)]
        struct Probe {
            format: String,
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(&line)
            .map_err(|e| RecordingError::NotARecording(name.clone(), format!("header: {e}")))?;
        if probe.format != FORMAT {
            return Err(RecordingError::NotARecording(
                name,
                format!("format is {:?}", probe.format),
            ));
        }
        if probe.version > VERSION {
            return Err(RecordingError::TooNew(name, probe.version));
        }
        if probe.version < MIN_VERSION {
            return Err(RecordingError::TooOld(name, probe.version));
        }
        let header: Header = serde_json::from_slice(&line)
            .map_err(|e| RecordingError::Corrupt(name.clone(), format!("header: {e}")))?;
        Ok(Reader {
            name,
            z,
            header,
            frames: 0,
            want_preamble: false,
            chunks_skipped: 0,
            spare: Vec::new(),
        })
    }

    /// Opens `path` at the chunk holding `from_ns` (CLOCK_MONOTONIC), skipping the chunks
    /// before it unread; its preamble comes first. Files without an index (version 2,
    /// the agent's incidents) are read from the start.
    pub fn open_at(path: &Path, from_ns: u64) -> Result<Reader, RecordingError> {
        use std::io::{Seek as _, SeekFrom};
        let mut r = Reader::open(path)?;
        let name = path.display().to_string();
        let mut f = File::open(path).map_err(|e| RecordingError::Open(name.clone(), e))?;
        let mut pos = 0u64;
        let mut skipped = 0u32;
        let mut target = None;
        loop {
            let mut hdr = [0u8; 8];
            if f.read_exact(&mut hdr).is_err() {
                break;
            }
            let magic = u32::from_le_bytes(hdr[..4].try_into().expect("4 bytes"));
            let len = u32::from_le_bytes(hdr[4..].try_into().expect("4 bytes"));
            if magic != INDEX_MAGIC || len > 1 << 16 {
                break; // not indexed (or not from here on): read sequentially
            }
            let mut ij = vec![0u8; len as usize];
            if f.read_exact(&mut ij).is_err() {
                break;
            }
            let Ok(idx) = serde_json::from_slice::<ChunkIndex>(&ij) else {
                break;
            };
            if idx.seq > 0 && idx.last_ns >= from_ns {
                target = Some(pos);
                break;
            }
            if idx.seq > 0 {
                skipped += 1;
            }
            pos += 8 + len as u64 + idx.zlen;
            if f.seek(SeekFrom::Start(pos)).is_err() {
                break;
            }
            if idx.last_ns >= from_ns {
                // The window begins in the first chunk: read from the start.
                break;
            }
        }
        if let Some(pos) = target {
            f.seek(SeekFrom::Start(pos))
                .map_err(|e| RecordingError::Open(name.clone(), e))?;
            let z = zstd::Decoder::new(f)
                .map_err(|e| RecordingError::NotARecording(name.clone(), e.to_string()))?;
            r.z = BufReader::with_capacity(READ_BUF, z);
            r.want_preamble = true;
            r.chunks_skipped = skipped;
        }
        Ok(r)
    }

    /// The next frame; Ok(None) at a clean end. A recording cut short (the tracer was
    /// killed) ends with an error saying so, after every complete frame was returned.
    /// Hands a kernel frame's buffer back: the next frame is read into it instead of a new
    /// allocation (a recording is mostly kernel frames).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.spare = buf;
    }

    /// Reads one frame's tag and payload (appended to `payload`); None at the end. Most
    /// frames are a kernel record of a few hundred bytes that lies whole in the read
    /// buffer: it is copied out of there once, with no zero-filling.
    fn read_frame(&mut self, payload: &mut Vec<u8>) -> Result<Option<u8>, RecordingError> {
        let buf = match self.z.fill_buf() {
            Ok(b) => b,
            Err(e) => return Err(self.corrupt(e.to_string())),
        };
        if buf.is_empty() {
            return Ok(None);
        }
        if let [tag, a, b, c, d, ..] = *buf {
            let len = self.frame_len(&[tag, a, b, c, d])?;
            if let Some(body) = self.z.buffer().get(5..5 + len) {
                payload.extend_from_slice(body);
                self.z.consume(5 + len);
                return Ok(Some(tag));
            }
        }
        // The frame straddles the buffer's end.
        let mut head = [0u8; 5];
        self.z
            .read_exact(&mut head)
            .map_err(|e| self.corrupt(format!("frame {}: {e}", self.frames)))?;
        let len = self.frame_len(&head)?;
        payload.resize(len, 0);
        self.z
            .read_exact(payload)
            .map_err(|e| self.corrupt(format!("frame {}: {e}", self.frames)))?;
        Ok(Some(head[0]))
    }

    /// The payload length in a frame's 5-byte head (tag, then u32 LE), within bounds.
    fn frame_len(&self, head: &[u8]) -> Result<usize, RecordingError> {
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_FRAME {
            return Err(self.corrupt(format!("frame {} claims {len} bytes", self.frames)));
        }
        Ok(len as usize)
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordingError> {
        // A loop only to pass over preambles read from the start.
        loop {
            let mut payload = std::mem::take(&mut self.spare);
            payload.clear();
            let Some(tag) = self.read_frame(&mut payload)? else {
                return Ok(None);
            };
            self.frames += 1;
            let frame = match tag {
                b'K' => Frame::Kernel(payload),
                b'N' => Frame::Note(
                    serde_json::from_slice(&payload)
                        .map_err(|e| self.corrupt(format!("note: {e}")))?,
                ),
                b'F' => Frame::Fact(
                    serde_json::from_slice(&payload)
                        .map_err(|e| self.corrupt(format!("fact: {e}")))?,
                ),
                b'E' => Frame::End(
                    serde_json::from_slice(&payload)
                        .map_err(|e| self.corrupt(format!("trailer: {e}")))?,
                ),
                b'C' if self.want_preamble => {
                    self.want_preamble = false;
                    Frame::Preamble(
                        serde_json::from_slice(&payload)
                            .map_err(|e| self.corrupt(format!("preamble: {e}")))?,
                    )
                }
                // Read from the start: everything in it was seen already.
                b'C' => continue,
                t => return Err(self.corrupt(format!("unknown frame tag {t:#x}"))),
            };
            return Ok(Some(frame));
        }
    }

    fn corrupt(&self, what: String) -> RecordingError {
        RecordingError::Corrupt(
            self.name.clone(),
            format!(
                "{what} (after {} complete frames; truncated by a crash?)",
                self.frames
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            host: "zk1".into(),
            kernel: "6.18".into(),
            boot_id: "b".into(),
            wall_offset_ns: 1_700_000_000_000_000_000,
            started_ns: 5,
            threshold_ns: 100_000_000,
            blocked_min_ns: 1_000_000,
            targets: vec![TargetInfo {
                pid: 1,
                comm: "java".into(),
                reason: "--pid".into(),
                ensemble: None,
            }],
            threads: vec![(2, "SyncThread:1".into())],
            devices: vec![],
            mounts: vec![],
            disabled: vec![],
            req_bits: ReqBits::default(),
            clock: None,
        }
    }

    /// A kernel record stamped `ts` (bytes 8..16), numbered `i`.
    fn rec(i: u32, ts: u64) -> Vec<u8> {
        let mut v = vec![0u8; 24];
        v[..4].copy_from_slice(&i.to_le_bytes());
        v[8..16].copy_from_slice(&ts.to_le_bytes());
        v
    }

    /// 10 s of records, 1000 a second, a fact in the first second and one at 5 s.
    fn chunked(p: &Path) {
        let mut w = Writer::create(p, &header()).unwrap();
        w.note(&Note::Target {
            ts_ns: 5,
            pid: 1,
            comm: "java".into(),
            reason: "--pid".into(),
        })
        .unwrap();
        w.fact(&Fact::Cgroup {
            id: 3,
            path: Some("/a".into()),
        })
        .unwrap();
        for i in 0..10_000u32 {
            let ts = 5 + i as u64 * 1_000_000;
            if i == 5_000 {
                w.fact(&Fact::Cgroup {
                    id: 4,
                    path: Some("/b".into()),
                })
                .unwrap();
            }
            w.kernel(&rec(i, ts)).unwrap();
        }
        w.finish(&Trailer {
            end_ns: 10_000_000_005,
            ..Default::default()
        })
        .unwrap();
    }

    fn kernel_ids(r: &mut Reader) -> (Vec<u32>, Vec<Frame>, bool) {
        let (mut ids, mut other, mut end) = (Vec::new(), Vec::new(), false);
        while let Ok(Some(f)) = r.next_frame() {
            match f {
                Frame::Kernel(k) => ids.push(u32::from_le_bytes(k[..4].try_into().unwrap())),
                Frame::End(_) => end = true,
                f => other.push(f),
            }
        }
        (ids, other, end)
    }

    #[test]
    fn chunks_read_from_the_start_are_the_frames_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.zst");
        chunked(&p);
        let mut r = Reader::open(&p).unwrap();
        let (ids, other, end) = kernel_ids(&mut r);
        assert_eq!(ids, (0..10_000).collect::<Vec<_>>());
        assert!(end);
        // The note and the two facts, no preambles.
        assert_eq!(other.len(), 3, "{other:?}");
        // Several chunks, and still one zstd stream for other tools.
        let raw = zstd::stream::decode_all(File::open(&p).unwrap()).unwrap();
        assert!(raw.starts_with(b"{\"format\":\"zkstall-recording\""));
        assert!(raw.windows(2).filter(|w| w[0] == b'C' && w[1] != 0).count() > 0);
    }

    #[test]
    fn a_window_skips_the_chunks_before_it_and_opens_with_what_was_known() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.zst");
        chunked(&p);
        let mut r = Reader::open_at(&p, 7_000_000_000).unwrap();
        assert!(r.chunks_skipped >= 2, "{} skipped", r.chunks_skipped);
        let first = r.next_frame().unwrap().unwrap();
        let Frame::Preamble(pre) = first else {
            panic!("no preamble first: {first:?}")
        };
        // Both facts (the later one replaces nothing: other key) and the target.
        assert_eq!(pre.facts.len(), 2, "{:?}", pre.facts);
        assert!(matches!(
            pre.notes.as_slice(),
            [Note::Target { pid: 1, .. }]
        ));
        let (ids, _, end) = kernel_ids(&mut r);
        assert!(end);
        assert_eq!(*ids.last().unwrap(), 9_999);
        // The window's chunk begins at or before 7 s, after the first chunks.
        assert!(
            ids[0] <= 7_000 && ids[0] >= 2_000,
            "starts at record {}",
            ids[0]
        );
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn a_crash_loses_at_most_the_last_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.zst");
        chunked(&p);
        let len = std::fs::metadata(&p).unwrap().len();
        let cut = dir.path().join("cut.zst");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&cut, &bytes[..(len as usize - 200)]).unwrap();
        let mut r = Reader::open(&cut).unwrap();
        let (ids, _, end) = kernel_ids(&mut r);
        assert!(!end);
        // Chunks hold 2 s of records: at least the first 8 s are there.
        assert!(ids.len() >= 8_000, "{} records survived", ids.len());
        assert_eq!(ids, (0..ids.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn round_trips_frames_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.zst");
        let mut w = Writer::create(&p, &header()).unwrap();
        w.fact(&Fact::Cgroup {
            id: 3,
            path: Some("/a".into()),
        })
        .unwrap();
        w.kernel(&[1, 2, 3]).unwrap();
        w.finish(&Trailer {
            end_ns: 9,
            ..Default::default()
        })
        .unwrap();
        let mut r = Reader::open(&p).unwrap();
        assert_eq!(r.header, header());
        assert!(matches!(
            r.next_frame().unwrap(),
            Some(Frame::Fact(Fact::Cgroup { id: 3, .. }))
        ));
        assert!(matches!(r.next_frame().unwrap(), Some(Frame::Kernel(k)) if k == vec![1, 2, 3]));
        assert!(matches!(r.next_frame().unwrap(), Some(Frame::End(t)) if t.end_ns == 9));
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn bad_files_get_clear_errors_and_no_panic() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"this is not a recording").unwrap();
        assert!(matches!(
            Reader::open(&junk),
            Err(RecordingError::NotARecording(..))
        ));
        assert!(matches!(
            Reader::open(&dir.path().join("missing")),
            Err(RecordingError::Open(..))
        ));
        // A newer version.
        let newer = dir.path().join("newer");
        let mut h = header();
        h.version = 99;
        Writer::create(&newer, &h)
            .unwrap()
            .finish(&Trailer::default())
            .unwrap();
        let err = Reader::open(&newer).err().unwrap();
        assert!(err.to_string().contains("upgrade zkstall"), "{err}");
        // Truncated: every prefix either fails cleanly or reads fewer frames.
        let full = dir.path().join("full");
        let mut w = Writer::create(&full, &header()).unwrap();
        for i in 0..200u8 {
            w.kernel(&[i; 40]).unwrap();
        }
        w.finish(&Trailer::default()).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 3] {
            let p = dir.path().join(format!("cut{cut}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            if let Ok(mut r) = Reader::open(&p) {
                let mut n = 0;
                loop {
                    match r.next_frame() {
                        Ok(Some(_)) => n += 1,
                        Ok(None) => panic!("a cut recording must not look complete"),
                        Err(e) => {
                            assert!(e.to_string().contains("truncated"), "{e}");
                            break;
                        }
                    }
                }
                assert!(n < 201);
            }
        }
        // Garbage inside a valid zstd stream.
        let garbage = dir.path().join("garbage");
        let mut w = Writer::create(&garbage, &header()).unwrap();
        w.frame(b'Q', b"??").unwrap();
        w.finish(&Trailer::default()).unwrap();
        let mut r = Reader::open(&garbage).unwrap();
        assert!(matches!(r.next_frame(), Err(RecordingError::Corrupt(..))));
    }
}
