//! `zkstall export REC...`: recordings as a timeline (Perfetto, Chrome JSON) or as JSON
//! lines. Each recording goes through the same replay as `report` (so verdicts are the
//! live run's), into a [`TimelineSink`] or a JSON sink.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::report::{ReplayOptions, replay};
use crate::{
    cli::{ExportArgs, ExportFormat},
    sinks::{
        JsonSink, chrome, perfetto,
        timeline::{Source, TimelineSink},
    },
};

/// Creates `path` for writing; an existing file only with `force`.
pub fn create_output(path: &Path, force: bool) -> anyhow::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists: choose another --output, or add --force to overwrite it",
                path.display()
            )
        } else {
            anyhow::anyhow!("cannot create {}: {e}", path.display())
        }
    })
}

fn label(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let opts = ReplayOptions {
        threshold: Some(args.threshold.unwrap_or(Duration::ZERO)),
        events: true,
        // Every call the recording holds is wanted; no need to say some were never recorded.
        quiet: args.threshold.is_none(),
        from_ns: None,
    };
    if args.jsonl {
        let out: Box<dyn Write> = match &args.output {
            Some(p) if p.as_os_str() != "-" => {
                Box::new(BufWriter::new(create_output(p, args.force)?))
            }
            _ => Box::new(io::stdout().lock()),
        };
        let mut sink = JsonSink::new(out);
        for f in &args.files {
            replay(f, &opts, &mut sink)?;
        }
        return Ok(());
    }
    let Some(output) = &args.output else {
        bail!("export needs -o FILE (.pftrace for Perfetto, .json for Chrome), or --jsonl");
    };
    let format = args.format.unwrap_or_else(|| format_of(output));
    // Read everything first: a bad recording fails before the output exists.
    let mut sink = TimelineSink::new();
    for f in &args.files {
        let h = crate::recording::Reader::open(f)?.header;
        sink.begin(Source {
            host: h.host.clone(),
            label: label(f),
            wall: crate::clock::WallClock {
                offset_ns: h.wall_offset_ns as i128,
            },
            targets: h.targets.iter().map(|t| (t.pid, t.comm.clone())).collect(),
            slow_ns: h.threshold_ns,
            devices: h
                .devices
                .iter()
                .map(|d| (d.dev.clone(), d.name.clone()))
                .collect(),
        });
        let r = replay(f, &opts, &mut sink)?;
        tracing::info!(
            "{}: {} calls, {} records",
            f.display(),
            r.summary.calls,
            r.summary.events
        );
    }
    let t = sink.finish();
    if t.lanes_full > 0 {
        tracing::warn!(
            "{} slices not drawn: more than 64 overlapped on one track",
            t.lanes_full
        );
    }
    let mut w = BufWriter::new(create_output(output, args.force)?);
    match format {
        ExportFormat::Perfetto => perfetto::write(&t, &mut w),
        ExportFormat::Chrome => chrome::write(&t, &mut w),
    }
    .with_context(|| format!("writing {}", output.display()))?;
    tracing::info!(
        "wrote {} ({} tracks, {} slices, {} markers, {} counter samples)",
        output.display(),
        t.tracks.len(),
        t.slices.len(),
        t.instants.len(),
        t.samples.len()
    );
    Ok(())
}

fn format_of(p: &Path) -> ExportFormat {
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("json") => ExportFormat::Chrome,
        _ => ExportFormat::Perfetto,
    }
}
