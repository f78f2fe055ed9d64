//! `zkstall demo`: starts the built-in workload as a child process, traces it with every
//! call reported, and compares zkstall's numbers with the workload's own.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::trace::{TraceOptions, sink_for, trace};
use crate::{cli::DemoArgs, sinks::Tee};

pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    // /var/tmp rather than /tmp: /tmp is often a tmpfs, where fsync is a no-op.
    let dir = tempfile::Builder::new()
        .prefix("zkstall-demo-")
        .tempdir_in("/var/tmp")
        .or_else(|_| tempfile::tempdir())
        .context("creating a scratch directory")?;
    let exe = std::env::current_exe().context("locating the zkstall binary")?;
    let mut child = Command::new(exe)
        .args([
            "workload",
            "--calls",
            &args.calls.to_string(),
            "--interval",
            "50ms",
        ])
        .args([
            "--syscalls",
            "fsync,fdatasync,sync_file_range,msync",
            "--dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the workload")?;
    let stdout = child.stdout.take().context("workload stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .next()
        .context("the workload exited before it was ready")??;
    let ready: serde_json::Value = serde_json::from_str(&ready).context("workload ready line")?;
    let pid = ready["pid"].as_u64().context("workload pid")? as u32;
    tracing::info!("workload pid {pid} writes {}", ready["path"]);

    let mut stdin = child.stdin.take().context("workload stdin")?;
    let opts = TraceOptions {
        pids: vec![pid],
        duration: Some(Duration::from_secs(120)),
        threshold: Duration::ZERO,
        events: false,
        blocked_min: Duration::from_millis(1),
        output: None,
        force: false,
        disks: Vec::new(),
        cgroups: Vec::new(),
        history: crate::history::HistoryLimits::DEFAULT,
        channel_records: crate::reader::CHANNEL_RECORDS,
        jcmd: false,
        requests: super::session::Requests::All,
    };
    let mut out = sink_for(args.format);
    let mut tee = Tee {
        inner: out.as_mut(),
        calls: Vec::new(),
    };
    let result = trace(&opts, &mut tee, move |_| {
        let _ = stdin.write_all(b"go\n");
    })
    .await;
    // The workload's own fsync-family calls are what it times; its writes (to its log
    // file and its stdout) are reported too, but not compared.
    let seen: Vec<_> = tee
        .calls
        .into_iter()
        .filter(|c| c.kind == "fsync")
        .collect();
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let summary = result?;
    if !status.success() {
        bail!("the workload failed: {status}");
    }
    let own: Vec<serde_json::Value> = lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect();
    // Pair zkstall's calls with the workload's own by start time: the kernel's entry lies
    // inside the interval the workload timed around the call.
    let mut worst_ms = 0.0f64;
    let mut matched = 0;
    for o in &own {
        let (Some(t0), Some(t1), Some(d)) = (
            o["start_ns"].as_u64(),
            o["end_ns"].as_u64(),
            o["duration_ns"].as_f64(),
        ) else {
            continue;
        };
        if let Some(c) = seen.iter().find(|c| c.start_ns >= t0 && c.start_ns <= t1) {
            matched += 1;
            worst_ms = worst_ms.max((d / 1e6 - c.duration_ms).abs());
        }
    }
    tracing::info!(
        "the workload timed {} calls itself; zkstall reported {} fsync-family calls, matched {matched} of them, largest difference {worst_ms:.3} ms; {} record(s) dropped",
        own.len(),
        seen.len(),
        summary.dropped
    );
    if matched != own.len() || seen.len() != own.len() {
        bail!("zkstall's calls do not match the workload's: see above");
    }
    Ok(())
}
