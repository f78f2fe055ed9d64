//! Fuzzing, as property tests (proptest) run with the unit tests, a bounded number of
//! cases each: the kernel-record decoder and the whole pipeline on arbitrary and mutated
//! records, and the recording reader on arbitrary and mutated files. Nothing may panic,
//! loop forever or grow without bound. Cases that once failed are kept as plain tests at
//! the end.

use std::mem::size_of;

use proptest::prelude::*;
use zkstall_common::*;

use crate::{
    clock::WallClock,
    decode::decode,
    enrich::{Fact, Replay},
    pipeline::Pipeline,
    recording::{Frame, Header, Reader, Trailer, Writer},
    sinks::{CallRecord, EventRecord, Sink, Summary},
};

/// The wire size of each record kind.
fn size_of_kind(kind: u32) -> usize {
    match kind {
        1 => size_of::<SyscallEnterEvent>(),
        2 => size_of::<SyscallExitEvent>(),
        3 => size_of::<IoEvent>(),
        4 => size_of::<BlockedEvent>(),
        5 => size_of::<ThreadEvent>(),
        6 => size_of::<DirtyEvent>(),
        7 => size_of::<WritebackEvent>(),
        8 => size_of::<ThrottleEvent>(),
        9 => size_of::<JournalEvent>(),
        10 => size_of::<JournalStatsEvent>(),
        11 => size_of::<ReclaimEvent>(),
        _ => size_of::<EventHeader>(),
    }
}

/// A record of kind `kind` with a consistent header (so it gets past the size check)
/// and `body` as the rest: most fields random.
fn record(kind: u32, ts: u64, tid: u32, body: &[u8]) -> Vec<u8> {
    let n = size_of_kind(kind);
    let mut v = vec![0u8; n];
    for (i, b) in v.iter_mut().enumerate().skip(24) {
        *b = body.get(i % body.len().max(1)).copied().unwrap_or(0);
    }
    v[0..4].copy_from_slice(&kind.to_le_bytes());
    v[4..8].copy_from_slice(&(n as u32).to_le_bytes());
    v[8..16].copy_from_slice(&ts.to_le_bytes());
    v[16..20].copy_from_slice(&10u32.to_le_bytes());
    v[20..24].copy_from_slice(&tid.to_le_bytes());
    v
}

struct Null;
impl Sink for Null {
    fn call(&mut self, r: &CallRecord) -> std::io::Result<()> {
        // Whatever comes out must serialize.
        serde_json::to_vec(r)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
    fn event(&mut self, r: &EventRecord) -> std::io::Result<()> {
        serde_json::to_vec(r)
            .map(|_| ())
            .map_err(std::io::Error::other)
    }
    fn summary(&mut self, _s: &Summary) -> std::io::Result<()> {
        Ok(())
    }
}

fn header() -> Header {
    Header {
        format: crate::recording::FORMAT.into(),
        version: crate::recording::VERSION,
        host: "h".into(),
        kernel: "k".into(),
        boot_id: "b".into(),
        wall_offset_ns: 1_700_000_000_000_000_000,
        started_ns: 0,
        threshold_ns: 0,
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

/// Reads every frame of `path`, with a bound, and returns how many.
fn read_all(path: &std::path::Path) -> usize {
    let Ok(mut r) = Reader::open(path) else {
        return 0;
    };
    let mut n = 0;
    while n < 1_000_000 {
        match r.next_frame() {
            Ok(Some(_)) => n += 1,
            Ok(None) | Err(_) => break,
        }
    }
    n
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as explicit regression tests below, not in files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cfg(512))]

    #[test]
    fn the_decoder_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn the_decoder_takes_any_body_of_every_kind(
        kind in 0u32..14,
        ts in any::<u64>(),
        body in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let _ = decode(&record(kind, ts, 11, &body));
    }
}

/// Mostly zeros and small numbers: fields then hold valid syscalls, states and flags
/// often enough to get deep into the pipeline.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 3 => 0u8..4, 1 => any::<u8>()]
}

proptest! {
    #![proptest_config(cfg(256))]

    /// Streams of well-formed records with random contents, timestamps going back and
    /// forth, threads colliding: the pipeline counts, reports and never panics.
    #[test]
    fn the_pipeline_takes_any_stream_of_records(
        recs in proptest::collection::vec(
            (1u32..12, 0u64..5_000_000_000, 10u32..14, proptest::collection::vec(byte(), 1..48)),
            1..400,
        ),
        threshold in 0u64..200_000_000,
    ) {
        let mut p = Pipeline::new(Box::new(Replay::default()), WallClock { offset_ns: 0 }, threshold)
            .with_events(true);
        for (kind, ts, tid, body) in &recs {
            p.handle(&record(*kind, *ts, *tid, body), &mut Null).unwrap();
        }
        p.finish(crate::clock::MonoNs(6_000_000_000), &mut Null).unwrap();
        let s = p.summary(&Trailer { end_ns: 6_000_000_000, ..Default::default() }, 0, vec![]);
        prop_assert_eq!(s.events, recs.len() as u64);
    }

    /// A valid recording, then cut, flipped or spliced anywhere: the reader returns
    /// frames or an error, and stops.
    #[test]
    fn the_reader_takes_any_damage_to_a_recording(
        frames in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..200)), 1..300),
        damage in proptest::collection::vec((0usize..100_000, any::<u8>(), 0u8..3), 0..6),
        cut in proptest::option::of(0usize..100_000),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.zst");
        let mut w = Writer::create(&p, &header()).unwrap();
        for (i, (tag, payload)) in frames.iter().enumerate() {
            match tag {
                0 => {
                    let mut rec = payload.clone();
                    rec.resize(rec.len().max(16), 0);
                    rec[8..16].copy_from_slice(&(i as u64 * 20_000_000).to_le_bytes());
                    w.kernel(&rec).unwrap()
                }
                1 => w.fact(&Fact::Cgroup { id: i as u64, path: Some(format!("/{}", payload.len())) }).unwrap(),
                _ => w.note(&crate::pipeline::Note::Lost { from_ns: 0, to_ns: i as u64, ringbuf_full: 1, shed: 0 }).unwrap(),
            }
        }
        w.finish(&Trailer::default()).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let whole = read_all(&p);
        prop_assert_eq!(whole, frames.len() + 1);
        for (at, b, how) in damage {
            if bytes.is_empty() { break; }
            let at = at % bytes.len();
            match how {
                0 => bytes[at] ^= b | 1,
                1 => bytes.insert(at, b),
                _ => { bytes.remove(at); }
            }
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        std::fs::write(&p, &bytes).unwrap();
        let _ = read_all(&p);
        // A window read of the damaged file too.
        if let Ok(mut r) = Reader::open_at(&p, 1_000_000_000) {
            let mut n = 0;
            while n < 1_000_000 {
                match r.next_frame() {
                    Ok(Some(Frame::End(_))) | Ok(None) | Err(_) => break,
                    Ok(Some(_)) => n += 1,
                }
            }
        }
    }

    #[test]
    fn the_reader_takes_any_file(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        zstd_wrapped in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.zst");
        let bytes = if zstd_wrapped { zstd::encode_all(bytes.as_slice(), 1).unwrap() } else { bytes };
        std::fs::write(&p, &bytes).unwrap();
        let _ = read_all(&p);
    }
}

fn hdr(kind: EventKind, size: usize, ts: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        size: size as u32,
        ts_ns: ts,
        tgid: 10,
        tid: 11,
    }
}

/// Found by the pipeline fuzzer: throttle records with wild pauses summed past i64::MAX
/// in the evidence of the call they fell in.
#[test]
fn wild_throttle_pauses_do_not_overflow_the_evidence() {
    let mut p = Pipeline::new(Box::new(Replay::default()), WallClock { offset_ns: 0 }, 0);
    let t = |ts| ThrottleEvent {
        hdr: hdr(EventKind::Throttle, size_of::<ThrottleEvent>(), ts),
        pause_ms: i64::MAX / 2 + 7,
        ..Default::default()
    };
    let enter = SyscallEnterEvent {
        hdr: hdr(
            EventKind::SyscallEnter,
            size_of::<SyscallEnterEvent>(),
            1_000,
        ),
        syscall: Syscall::Fdatasync as u32,
        ..Default::default()
    };
    let exit = SyscallExitEvent {
        hdr: hdr(
            EventKind::SyscallExit,
            size_of::<SyscallExitEvent>(),
            9_000_000,
        ),
        syscall: Syscall::Fdatasync as u32,
        start_ns: 1_000,
        ..Default::default()
    };
    p.handle(&crate::decode::record_bytes(&enter), &mut Null)
        .unwrap();
    for ts in [2_000, 3_000, 4_000] {
        p.handle(&crate::decode::record_bytes(&t(ts)), &mut Null)
            .unwrap();
    }
    p.handle(&crate::decode::record_bytes(&exit), &mut Null)
        .unwrap();
}

/// Found by the pipeline fuzzer: an exit whose kernel accounting claims more time than
/// the call (short waits near u64::MAX) overflowed the stage sums.
#[test]
fn accounting_longer_than_the_call_does_not_overflow_the_stages() {
    let mut p = Pipeline::new(Box::new(Replay::default()), WallClock { offset_ns: 0 }, 0);
    let exit = SyscallExitEvent {
        hdr: hdr(
            EventKind::SyscallExit,
            size_of::<SyscallExitEvent>(),
            111_231_806,
        ),
        syscall: Syscall::Fsync as u32,
        flags: CALL_ACCOUNTED,
        start_ns: 1_000,
        on_cpu_ns: u64::MAX - 5,
        short_ns: [u64::MAX / 2, u64::MAX / 2, u64::MAX / 3],
        ..Default::default()
    };
    p.handle(&crate::decode::record_bytes(&exit), &mut Null)
        .unwrap();
}
