//! `zkstall trace`: find the targets, load and attach the probes, stream every record
//! through the pipeline until Ctrl-C, SIGTERM, --duration, or (with --pid) the exit of
//! every target; then report calls still running and everything that was lost.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    cli::{Format, TraceArgs},
    clock::{MonoNs, WallClock},
    enrich::Live,
    pipeline::Pipeline,
    probes::{Probes, layout, tracefs::Tracefs},
    reader,
    recording::{self, DeviceInfo, Header, TargetInfo, Trailer, Writer},
    sinks::{DisabledSignal, JsonSink, Sink, Summary, TextSink},
    targets::{self, ProcRoot, Target},
};

/// How often exited targets are noticed (and, without --pid, new ZooKeepers found).
const TARGET_POLL: Duration = Duration::from_millis(500);
const REDISCOVER_EVERY: u32 = 4;

/// What to trace and how to report it.
pub struct TraceOptions {
    pub pids: Vec<u32>,
    pub duration: Option<Duration>,
    pub threshold: Duration,
    pub events: bool,
    pub blocked_min: Duration,
    pub output: Option<std::path::PathBuf>,
}

impl From<&TraceArgs> for TraceOptions {
    fn from(a: &TraceArgs) -> Self {
        TraceOptions {
            pids: a.pids.clone(),
            duration: a.duration,
            threshold: a.threshold,
            events: a.events,
            blocked_min: a.blocked_min,
            output: a.output.clone(),
        }
    }
}

/// Is /sys/kernel/btf/vmlinux there (tp_btf programs need it)?
pub fn btf_available() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}

pub fn sink_for(format: Format) -> Box<dyn Sink> {
    let out = std::io::stdout();
    match format {
        Format::Text => Box::new(TextSink::new(out)),
        Format::Json => Box::new(JsonSink::new(out)),
    }
}

pub async fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let mut sink = sink_for(args.format);
    trace(&TraceOptions::from(args), sink.as_mut(), |_| {}).await?;
    Ok(())
}

/// Traces until the end condition; `on_attached` runs once the probes are live.
pub async fn trace(
    opts: &TraceOptions,
    sink: &mut dyn Sink,
    on_attached: impl FnOnce(&[Target]),
) -> anyhow::Result<Summary> {
    let proc = ProcRoot::default();
    let explicit = !opts.pids.is_empty();
    let initial = if explicit {
        targets::explicit(&proc, &opts.pids)?
    } else {
        targets::require_zookeeper(&proc)?
    };

    if let Err(why) = super::privileges() {
        bail!("cannot trace: {why}");
    }
    let tracefs = Tracefs::find_or_mount()?;
    if tracefs.mounted_by_us {
        tracing::info!(
            "tracefs was not mounted; mounted it at {}",
            tracefs.root.display()
        );
    }
    let mut layout = layout::build(&tracefs, btf_available())?;
    // Slow writes are what matters; a JVM makes too many fast ones to ship them all.
    layout.config.write_min_ns = opts.threshold.as_nanos() as u64;
    // Off-CPU intervals of the target's threads feed the verdicts (and --events).
    layout.config.blocked_min_ns = opts.blocked_min.as_nanos() as u64;
    for d in &layout.disabled {
        tracing::warn!("signal {} is off on this kernel: {}", d.signal, d.reason);
    }
    let disabled: Vec<DisabledSignal> = layout
        .disabled
        .iter()
        .map(|d| DisabledSignal {
            signal: d.signal.into(),
            reason: d.reason.clone(),
        })
        .collect();

    let mut probes = Probes::load(layout)?;
    let wall = WallClock::sample();
    let stacks = probes.take_stacks()?;
    let mut enrich = Live::new(proc.clone(), "/sys")
        .with_stacks(Box::new(stacks))
        .preload();
    if opts.output.is_some() {
        enrich = enrich.recording();
    }
    let mut pipeline = Pipeline::new(Box::new(enrich), wall, opts.threshold.as_nanos() as u64)
        .with_events(opts.events);

    // Reader first, then targets and thread names, then attach: nothing is missed between.
    let ring = probes.take_events()?;
    let (tx, mut rx) = mpsc::channel(reader::CHANNEL_RECORDS);
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(reader::run(ring, tx, stop_rx));

    let mut live: BTreeSet<u32> = BTreeSet::new();
    let mut all_pids: BTreeSet<u32> = BTreeSet::new();
    for t in &initial {
        probes.add_target(t.pid)?;
        pipeline.seed_threads(t.pid);
        live.insert(t.pid);
        all_pids.insert(t.pid);
    }
    probes.attach()?;
    let started = MonoNs::now();
    let mut writer = match &opts.output {
        Some(path) => {
            let header = header(&initial, &proc, wall, started, opts, &disabled);
            Some(Writer::create(path, &header)?)
        }
        None => None,
    };
    let desc: Vec<String> = initial
        .iter()
        .map(|t| format!("{} ({}, {})", t.pid, t.comm, t.reason))
        .collect();
    let which = if opts.threshold.is_zero() {
        "every call".to_string()
    } else {
        format!("calls >= {}", humantime::format_duration(opts.threshold))
    };
    tracing::info!(
        "tracing {} process(es): {}; reporting {which}; Ctrl-C to stop",
        initial.len(),
        desc.join(", "),
    );
    on_attached(&initial);

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut poll = tokio::time::interval(TARGET_POLL);
    let mut polls = 0u32;
    let mut stopping = false;

    loop {
        tokio::select! {
            rec = rx.recv() => match rec {
                Some(rec) => {
                    pipeline.handle(&rec, sink).context("writing output")?;
                    if let Some(w) = &mut writer {
                        for f in pipeline.take_facts() {
                            w.fact(&f).context("writing the recording")?;
                        }
                        w.kernel(&rec).context("writing the recording")?;
                    }
                }
                None => break, // the reader drained the ring and ended
            },
            _ = sigint.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = sigterm.recv(), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = sleep_until(deadline), if !stopping => { stopping = true; let _ = stop_tx.send(true); }
            _ = poll.tick(), if !stopping => {
                polls += 1;
                for pid in live.clone() {
                    if !proc.is_alive(pid) {
                        tracing::info!("process {pid} exited");
                        live.remove(&pid);
                        probes.remove_target(pid)?;
                        pipeline.forget_pid(pid, sink).context("writing output")?;
                    }
                }
                if !explicit && polls.is_multiple_of(REDISCOVER_EVERY) {
                    for t in targets::discover_zookeeper(&proc).unwrap_or_default() {
                        if live.insert(t.pid) {
                            tracing::info!("found ZooKeeper {} ({}); tracing it", t.pid, t.reason);
                            probes.add_target(t.pid)?;
                            pipeline.seed_threads(t.pid);
                            all_pids.insert(t.pid);
                        }
                    }
                }
                if explicit && live.is_empty() {
                    tracing::info!("every traced process has exited");
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
            }
        }
    }
    reader
        .await
        .context("the ring-buffer reader panicked")?
        .context("reading the ring buffer")?;

    let now = MonoNs::now();
    pipeline.finish(now, sink).context("writing output")?;
    let k = probes.counters()?;
    let trailer = Trailer {
        end_ns: now.0,
        pids: all_pids.into_iter().collect(),
        dropped: k.dropped(),
        untimed: k.inflight_full,
        exit_without_enter: k.exit_without_enter,
        read_errors: k.read_error,
        io_unmatched: k.io_unmatched,
        map_full: k.map_full,
        stack_errors: k.stack_error,
    };
    let summary = pipeline.summary(&trailer, started.0, disabled);
    sink.summary(&summary).context("writing output")?;
    if let Some(mut w) = writer {
        for f in pipeline.take_facts() {
            w.fact(&f).context("writing the recording")?;
        }
        w.finish(&trailer).context("writing the recording")?;
        if let Some(p) = &opts.output {
            tracing::info!(
                "recording written to {} (read it with `zkstall report {}`)",
                p.display(),
                p.display()
            );
        }
    }
    if summary.dropped > 0 {
        tracing::warn!(
            "{} kernel record(s) were dropped because the ring buffer was full",
            summary.dropped
        );
    }
    Ok(summary)
}

/// What a recording says about where it was made.
fn header(
    targets: &[Target],
    proc: &ProcRoot,
    wall: WallClock,
    started: MonoNs,
    opts: &TraceOptions,
    disabled: &[DisabledSignal],
) -> Header {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut threads = Vec::new();
    for t in targets {
        if let Ok(dir) = std::fs::read_dir(proc.pid_dir(t.pid).join("task")) {
            for e in dir.flatten() {
                if let (Some(tid), Ok(name)) = (
                    e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()),
                    std::fs::read_to_string(e.path().join("comm")),
                ) {
                    threads.push((tid, name.trim_end().to_string()));
                }
            }
        }
    }
    let devices = std::fs::read_dir("/sys/dev/block")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = std::fs::read_link(e.path())
                        .ok()?
                        .file_name()?
                        .to_string_lossy()
                        .into_owned();
                    Some(DeviceInfo {
                        dev: e.file_name().to_string_lossy().into_owned(),
                        name,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mounts = targets
        .first()
        .and_then(|t| std::fs::read_to_string(proc.pid_dir(t.pid).join("mountinfo")).ok())
        .map(|m| m.lines().map(str::to_string).collect())
        .unwrap_or_default();
    Header {
        format: recording::FORMAT.into(),
        version: recording::VERSION,
        host: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        wall_offset_ns: wall.offset_ns as i64,
        started_ns: started.0,
        threshold_ns: opts.threshold.as_nanos() as u64,
        blocked_min_ns: opts.blocked_min.as_nanos() as u64,
        targets: targets
            .iter()
            .map(|t| TargetInfo {
                pid: t.pid,
                comm: t.comm.clone(),
                reason: t.reason.clone(),
            })
            .collect(),
        threads,
        devices,
        mounts,
        disabled: disabled.to_vec(),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
