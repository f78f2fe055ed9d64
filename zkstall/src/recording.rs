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

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::Path,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{enrich::Fact, pipeline::Note, probes::ReqBits, sinks::DisabledSignal};

pub const FORMAT: &str = "zkstall-recording";
/// 2: requests keyed by pointer with their submitter and disk, per-thread accounting,
/// notes. Version 1 recordings are refused with a message naming the release to use.
pub const VERSION: u32 = 2;
/// Larger frames are corruption, not data (kernel records are ~100 bytes).
const MAX_FRAME: u32 = 16 << 20;

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
    pub map_full: u64,
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
}

/// Anything that takes the frames of a recording as they are consumed: the recording's
/// [`Writer`], the agent's flight recorder.
pub trait FrameOut {
    fn kernel(&mut self, rec: &[u8]) -> io::Result<()>;
    fn note(&mut self, n: &Note) -> io::Result<()>;
    fn fact(&mut self, f: &Fact) -> io::Result<()>;
}

pub struct Writer {
    z: zstd::Encoder<'static, BufWriter<File>>,
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

impl Writer {
    pub fn create(path: &Path, header: &Header) -> Result<Writer, RecordingError> {
        let f =
            File::create(path).map_err(|e| RecordingError::Open(path.display().to_string(), e))?;
        let mut z = zstd::Encoder::new(BufWriter::new(f), 3)?;
        serde_json::to_writer(&mut z, header).map_err(io::Error::other)?;
        z.write_all(b"\n")?;
        Ok(Writer { z })
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        self.z.write_all(&[tag])?;
        self.z.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.z.write_all(payload)
    }

    pub fn kernel(&mut self, rec: &[u8]) -> io::Result<()> {
        self.frame(b'K', rec)
    }

    pub fn note(&mut self, n: &Note) -> io::Result<()> {
        let v = serde_json::to_vec(n).map_err(io::Error::other)?;
        self.frame(b'N', &v)
    }

    pub fn fact(&mut self, f: &Fact) -> io::Result<()> {
        let v = serde_json::to_vec(f).map_err(io::Error::other)?;
        self.frame(b'F', &v)
    }

    pub fn finish(mut self, t: &Trailer) -> io::Result<()> {
        let v = serde_json::to_vec(t).map_err(io::Error::other)?;
        self.frame(b'E', &v)?;
        self.z.finish()?.flush()
    }
}

/// One frame read back.
#[derive(Debug)]
pub enum Frame {
    Kernel(Vec<u8>),
    Note(Note),
    Fact(Fact),
    End(Trailer),
}

pub struct Reader {
    name: String,
    z: BufReader<zstd::Decoder<'static, BufReader<File>>>,
    pub header: Header,
    pub frames: u64,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, RecordingError> {
        let name = path.display().to_string();
        let f = File::open(path).map_err(|e| RecordingError::Open(name.clone(), e))?;
        let z = zstd::Decoder::new(f)
            .map_err(|e| RecordingError::NotARecording(name.clone(), e.to_string()))?;
        let mut z = BufReader::new(z);
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
        if probe.version < VERSION {
            return Err(RecordingError::TooOld(name, probe.version));
        }
        let header: Header = serde_json::from_slice(&line)
            .map_err(|e| RecordingError::Corrupt(name.clone(), format!("header: {e}")))?;
        Ok(Reader {
            name,
            z,
            header,
            frames: 0,
        })
    }

    /// The next frame; Ok(None) at a clean end. A recording cut short (the tracer was
    /// killed) ends with an error saying so, after every complete frame was returned.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RecordingError> {
        let mut tag = [0u8; 1];
        match self.z.read(&mut tag) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(self.corrupt(e.to_string())),
        }
        let mut len = [0u8; 4];
        self.z
            .read_exact(&mut len)
            .map_err(|e| self.corrupt(format!("frame {}: {e}", self.frames)))?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(self.corrupt(format!("frame {} claims {len} bytes", self.frames)));
        }
        let mut payload = vec![0u8; len as usize];
        self.z
            .read_exact(&mut payload)
            .map_err(|e| self.corrupt(format!("frame {}: {e}", self.frames)))?;
        self.frames += 1;
        let frame = match tag[0] {
            b'K' => Frame::Kernel(payload),
            b'N' => Frame::Note(
                serde_json::from_slice(&payload).map_err(|e| self.corrupt(format!("note: {e}")))?,
            ),
            b'F' => Frame::Fact(
                serde_json::from_slice(&payload).map_err(|e| self.corrupt(format!("fact: {e}")))?,
            ),
            b'E' => Frame::End(
                serde_json::from_slice(&payload)
                    .map_err(|e| self.corrupt(format!("trailer: {e}")))?,
            ),
            t => return Err(self.corrupt(format!("unknown frame tag {t:#x}"))),
        };
        Ok(Some(frame))
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
            }],
            threads: vec![(2, "SyncThread:1".into())],
            devices: vec![],
            mounts: vec![],
            disabled: vec![],
            req_bits: ReqBits::default(),
        }
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
