//! `zkstall trace`: a [`Session`] printing each slow call as it is explained, until
//! Ctrl-C, SIGTERM, --duration, or (with --pid) the exit of every target.

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::session::{Session, TICK};
pub use super::session::{TraceOptions, resolve_disk_arg};
use crate::{
    cli::{Format, TraceArgs},
    history::HistoryLimits,
    sinks::{JsonSink, Sink, Summary, TextSink},
    targets::Target,
};

impl From<&TraceArgs> for TraceOptions {
    fn from(a: &TraceArgs) -> Self {
        TraceOptions {
            pids: a.pids.clone(),
            duration: a.duration,
            threshold: a.threshold,
            events: a.events,
            blocked_min: a.blocked_min,
            output: a.output.clone(),
            force: a.force,
            disks: a.disks.clone(),
            cgroups: a
                .cgroups
                .iter()
                .map(|c| crate::targets::cgroup_arg(c))
                .collect(),
            history: HistoryLimits::DEFAULT,
            channel_records: crate::reader::CHANNEL_RECORDS,
            jcmd: !a.no_jcmd,
            requests: a.requests,
        }
    }
}

pub fn sink_for(format: Format) -> Box<dyn Sink> {
    let out = std::io::stdout();
    match format {
        Format::Text => Box::new(TextSink::new(out)),
        Format::Json => Box::new(JsonSink::new(out)),
    }
}

pub async fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let mut out = sink_for(args.format);
    if args.devices.is_empty() {
        trace(&TraceOptions::from(args), out.as_mut(), |_| {}).await?;
    } else {
        let mut sink = crate::sinks::aggregate::Filtered {
            inner: out.as_mut(),
            filter: crate::sinks::aggregate::Filter {
                devices: args.devices.clone(),
                ..Default::default()
            },
        };
        trace(&TraceOptions::from(args), &mut sink, |_| {}).await?;
    }
    Ok(())
}

/// Traces until the end condition; `on_attached` runs once the probes are live.
pub async fn trace(
    opts: &TraceOptions,
    sink: &mut dyn Sink,
    on_attached: impl FnOnce(&[Target]),
) -> anyhow::Result<Summary> {
    let mut s = Session::start(opts, sink, None, on_attached).await?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = s.stopping();
        tokio::select! {
            batch = s.next() => match batch {
                Some(batch) => s.records(&batch)?,
                None => break, // the reader drained the ring and ended
            },
            _ = sigint.recv(), if !stopping => s.stop(),
            _ = sigterm.recv(), if !stopping => s.stop(),
            _ = sleep_until(deadline), if !stopping => s.stop(),
            _ = tick.tick(), if !stopping => s.tick()?,
        }
    }
    s.finish().await
}

pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
