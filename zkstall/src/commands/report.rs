//! `zkstall report FILE`: the live pipeline, fed from a recording. No root, no BPF; the
//! same decode, model, attribution and sinks, so it prints what the live run printed.

use std::path::Path;

use anyhow::Context as _;

use super::trace::sink_for;
use crate::{
    cli::{Format, ReportArgs},
    clock::{MonoNs, WallClock},
    enrich::Replay,
    pipeline::Pipeline,
    recording::{Frame, Header, Reader, Trailer},
    sinks::{
        Sink, Summary,
        aggregate::{Aggregate, Filter, ReportSink},
    },
};

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let header = Reader::open(&args.file)?.header;
    let filter = Filter {
        since_ns: args
            .since
            .as_deref()
            .map(|w| when(w, &header).with_context(|| format!("--since {w}")))
            .transpose()?,
        until_ns: args
            .until
            .as_deref()
            .map(|w| when(w, &header).with_context(|| format!("--until {w}")))
            .transpose()?,
        pids: args.pids.clone(),
        tids: args.tids.clone(),
        verdicts: args.verdicts.clone(),
        devices: args.devices.clone(),
    };
    let filter_from = filter.since_ns.map(|s| s.saturating_sub(LOOKBACK_NS));
    let json = args.format == Format::Json;
    let aggregate = match (args.summary, json) {
        (true, _) => Aggregate::Full,
        (false, false) => Aggregate::Footer,
        // JSON lines stay exactly what the live run printed.
        (false, true) => Aggregate::None,
    };
    let mut sink = ReportSink::new(
        sink_for(args.format),
        std::io::stdout(),
        filter,
        aggregate,
        json,
        args.events,
        header
            .devices
            .iter()
            .map(|d| (d.dev.clone(), d.name.clone()))
            .collect(),
        header.targets.iter().map(|t| t.pid).collect(),
    );
    replay(
        &args.file,
        &ReplayOptions {
            threshold: args.threshold,
            // The aggregate's contenders come from the requests.
            events: args.events || aggregate != Aggregate::None,
            quiet: false,
            from_ns: filter_from,
        },
        &mut sink,
    )?;
    Ok(())
}

/// A --since/--until value as CLOCK_MONOTONIC ns of the recording.
pub fn when(s: &str, h: &Header) -> anyhow::Result<u64> {
    let local = crate::sinks::text::localtime();
    when_at(s, h.started_ns, h.wall_offset_ns as i128, |secs| {
        if local {
            crate::sinks::text::local_offset_s(secs)
        } else {
            0
        }
    })
}

/// `s` as CLOCK_MONOTONIC ns of a recording that began at `started_ns` (wall = mono +
/// `wall_offset_ns`): `+30s` after its start; a date and time with `Z` or an offset
/// (`+01:00`); or without either, in `zone` (seconds east of UTC at a Unix time: UTC, or the
/// host's with --localtime, as text prints times); a time of day on the recording's first day.
fn when_at(
    s: &str,
    started_ns: u64,
    wall_offset_ns: i128,
    zone: impl Fn(i64) -> i64,
) -> anyhow::Result<u64> {
    const HELP: &str =
        "not a time: use 2026-12-03T23:05:14Z, 2026-12-03T23:05:14+01:00, 23:05:14 or +30s";
    let s = s.trim();
    let rel = s.strip_prefix('+').unwrap_or(s);
    if let Ok(d) = crate::cli::parse_duration(rel) {
        return Ok(started_ns + d.as_nanos() as u64);
    }
    // An explicit zone: Z, or +HH:MM / -HH:MM at the end of a date and time.
    let (body, explicit): (&str, Option<i64>) = if let Some(b) = s.strip_suffix('Z') {
        (b, Some(0))
    } else if s.len() > 16
        && let Some(i) = s.rfind(['+', '-'])
        && i > 10
        && s[i + 1..].len() == 5
        && s.as_bytes()[i + 3] == b':'
    {
        let h: i64 = s[i + 1..i + 3].parse().map_err(|_| anyhow::anyhow!(HELP))?;
        let m: i64 = s[i + 4..].parse().map_err(|_| anyhow::anyhow!(HELP))?;
        let off = (h * 3600 + m * 60) * if &s[i..=i] == "-" { -1 } else { 1 };
        (&s[..i], Some(off))
    } else {
        (s, None)
    };
    let start_unix = started_ns as i128 + wall_offset_ns;
    let naive_ns: i128 = if let Ok(t) = humantime::parse_rfc3339_weak(body) {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128)
    } else if body.len() >= 5 && body.as_bytes()[2] == b':' {
        // A time of day on the day the recording began (in the same zone).
        let off = explicit.unwrap_or_else(|| zone((start_unix / 1_000_000_000) as i64));
        let day_ns = 86_400 * 1_000_000_000i128;
        let local_start = start_unix + off as i128 * 1_000_000_000;
        let day = local_start.div_euclid(day_ns) * day_ns;
        let t = humantime::parse_rfc3339_weak(&format!("1970-01-01 {body}"))
            .map_err(|_| anyhow::anyhow!(HELP))?;
        day + t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128)
    } else {
        anyhow::bail!(HELP);
    };
    let off = explicit.unwrap_or_else(|| zone((naive_ns / 1_000_000_000) as i64));
    let unix_ns = naive_ns - off as i128 * 1_000_000_000;
    Ok((unix_ns - wall_offset_ns).max(0) as u64)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayOptions {
    /// None: the recording's own threshold.
    pub threshold: Option<std::time::Duration>,
    pub events: bool,
    /// No warning when the threshold is below the recording's.
    pub quiet: bool,
    /// Start reading at the chunk holding this instant (CLOCK_MONOTONIC ns): the chunks
    /// before it are skipped unread.
    pub from_ns: Option<u64>,
}

/// How much is read before a --since, for the history the first calls' verdicts need.
pub const LOOKBACK_NS: u64 = 60_000_000_000;

/// What a replay read besides the records it sent.
#[derive(Debug)]
pub struct Replayed {
    pub header: Header,
    pub summary: Summary,
    /// The recording ended without its trailer (a crash, a kill, a full disk).
    pub truncated: bool,
}

/// Runs the live pipeline over a recording into `sink`: what `report`, `export` and
/// `merge` all read recordings with.
pub fn replay(file: &Path, opts: &ReplayOptions, sink: &mut dyn Sink) -> anyhow::Result<Replayed> {
    let mut r = match opts.from_ns {
        Some(from) => Reader::open_at(file, from)?,
        None => Reader::open(file)?,
    };
    if r.chunks_skipped > 0 {
        tracing::debug!(
            "{}: {} chunk(s) before the window skipped",
            file.display(),
            r.chunks_skipped
        );
    }
    let h = r.header.clone();
    let threshold = opts
        .threshold
        .map(|t| t.as_nanos() as u64)
        .unwrap_or(h.threshold_ns);
    if threshold < h.threshold_ns && !opts.quiet {
        tracing::warn!(
            "{} was made with --threshold {} ms: slower write-family calls only were recorded",
            file.display(),
            h.threshold_ns as f64 / 1e6
        );
    }
    tracing::info!(
        "recording of {} ({}, kernel {}): pids {:?}",
        h.host,
        file.display(),
        h.kernel,
        h.targets.iter().map(|t| t.pid).collect::<Vec<_>>()
    );
    let mut replay = Replay::default();
    replay.seed_threads(h.threads.iter().cloned());
    let wall = WallClock {
        offset_ns: h.wall_offset_ns as i128,
    };
    sink.clock(&wall);
    let mut pipeline = Pipeline::new(Box::new(replay), wall, threshold)
        .with_events(opts.events)
        .with_req_bits(h.req_bits);

    let mut last_ts = h.started_ns;
    let mut truncated = false;
    let trailer = loop {
        match r.next_frame() {
            Ok(Some(Frame::Fact(f))) => pipeline.learn(f),
            Ok(Some(Frame::Preamble(p))) => {
                // A window's first chunk: what the live run knew when it began.
                last_ts = last_ts.max(p.ts_ns);
                for f in p.facts {
                    pipeline.learn(f);
                }
                for n in &p.notes {
                    pipeline.note(n, sink).context("writing output")?;
                }
            }
            Ok(Some(Frame::Note(n))) => {
                last_ts = last_ts.max(n.ts_ns());
                pipeline.note(&n, sink).context("writing output")?;
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
                pipeline.handle(&k, sink).context("writing output")?;
                r.recycle(k);
            }
            Ok(Some(Frame::End(t))) => break t,
            Ok(None) => {
                tracing::warn!(
                    "{} has no trailer: the trace did not stop cleanly; reporting what it holds",
                    file.display()
                );
                truncated = true;
                break Trailer {
                    end_ns: last_ts,
                    pids: h.targets.iter().map(|t| t.pid).collect(),
                    ..Default::default()
                };
            }
            Err(e) => {
                tracing::warn!("{e}; reporting what comes before");
                truncated = true;
                break Trailer {
                    end_ns: last_ts,
                    pids: h.targets.iter().map(|t| t.pid).collect(),
                    ..Default::default()
                };
            }
        }
    };
    pipeline
        .finish(MonoNs(trailer.end_ns), sink)
        .context("writing output")?;
    let summary = pipeline.summary(&trailer, h.started_ns, h.disabled.clone());
    sink.summary(&summary).context("writing output")?;
    Ok(Replayed {
        header: h,
        summary,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: crate::recording::FORMAT.into(),
            version: crate::recording::VERSION,
            host: "h".into(),
            kernel: "k".into(),
            boot_id: "b".into(),
            // Started at 2026-12-03T23:00:00Z, monotonic 1000 s.
            wall_offset_ns: 1_796_338_800_000_000_000 - 1_000_000_000_000,
            started_ns: 1_000_000_000_000,
            threshold_ns: 0,
            blocked_min_ns: 0,
            targets: vec![],
            threads: vec![],
            devices: vec![],
            mounts: vec![],
            disabled: vec![],
            req_bits: Default::default(),
            clock: None,
        }
    }

    #[test]
    fn since_and_until_take_wall_clock_times_of_day_and_offsets() {
        let h = header();
        let s = 1_000_000_000_000u64;
        assert_eq!(when("+30s", &h).unwrap(), s + 30_000_000_000);
        assert_eq!(when("2m", &h).unwrap(), s + 120_000_000_000);
        assert_eq!(when("2026-12-03T23:00:05Z", &h).unwrap(), s + 5_000_000_000);
        assert_eq!(
            when("2026-12-03 23:00:05.250", &h).unwrap(),
            s + 5_250_000_000
        );
        assert_eq!(when("23:01:00", &h).unwrap(), s + 60_000_000_000);
        assert!(when("yesterday", &h).is_err());
    }
}
