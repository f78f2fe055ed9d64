//! `zkstall report FILE`: the live pipeline, fed from a recording. No root, no BPF; the
//! same decode, model, attribution and sinks, so it prints what the live run printed.

use anyhow::Context as _;

use super::trace::sink_for;
use crate::{
    cli::ReportArgs,
    clock::{MonoNs, WallClock},
    enrich::Replay,
    pipeline::Pipeline,
    recording::{Frame, Reader, Trailer},
};

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let mut sink = sink_for(args.format);
    let mut r = Reader::open(&args.file)?;
    let h = r.header.clone();
    let threshold = args
        .threshold
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(h.threshold_ns);
    if threshold < h.threshold_ns {
        tracing::warn!(
            "the recording was made with --threshold {} ms: slower write-family calls only were recorded",
            h.threshold_ns as f64 / 1e6
        );
    }
    tracing::info!(
        "recording of {} ({}, kernel {}): pids {:?}",
        h.host,
        args.file.display(),
        h.kernel,
        h.targets.iter().map(|t| t.pid).collect::<Vec<_>>()
    );
    let mut replay = Replay::default();
    replay.seed_threads(h.threads.iter().cloned());
    let wall = WallClock {
        offset_ns: h.wall_offset_ns as i128,
    };
    let mut pipeline = Pipeline::new(Box::new(replay), wall, threshold)
        .with_events(args.events)
        .with_req_bits(h.req_bits);

    let mut last_ts = h.started_ns;
    let trailer = loop {
        match r.next_frame() {
            Ok(Some(Frame::Fact(f))) => pipeline.learn(f),
            Ok(Some(Frame::Note(n))) => {
                last_ts = last_ts.max(n.ts_ns());
                pipeline.note(&n, sink.as_mut()).context("writing output")?;
            }
            Ok(Some(Frame::Kernel(k))) => {
                // Bytes 8..16 of every record are its timestamp (EventHeader::ts_ns).
                if let Some(ts) = k
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                {
                    last_ts = last_ts.max(ts);
                }
                pipeline
                    .handle(&k, sink.as_mut())
                    .context("writing output")?;
            }
            Ok(Some(Frame::End(t))) => break t,
            Ok(None) => {
                tracing::warn!(
                    "{} has no trailer: the trace did not stop cleanly; reporting what it holds",
                    args.file.display()
                );
                break Trailer {
                    end_ns: last_ts,
                    pids: h.targets.iter().map(|t| t.pid).collect(),
                    ..Default::default()
                };
            }
            Err(e) => {
                tracing::warn!("{e}; reporting what comes before");
                break Trailer {
                    end_ns: last_ts,
                    pids: h.targets.iter().map(|t| t.pid).collect(),
                    ..Default::default()
                };
            }
        }
    };
    pipeline
        .finish(MonoNs(trailer.end_ns), sink.as_mut())
        .context("writing output")?;
    let summary = pipeline.summary(&trailer, h.started_ns, h.disabled.clone());
    sink.summary(&summary).context("writing output")?;
    Ok(())
}
