//! `zkstall agent`: always on. A [`Session`] without --pid (it waits for ZooKeeper and
//! finds restarted ones), whose every frame also goes to a [`FlightRecorder`]; a sink that
//! counts every call into Prometheus metrics and turns each stall into an incident (with a
//! one-line log of its verdict); SIGUSR1 and `POST /trigger` write one on demand; SIGTERM
//! and SIGINT stop it within a second, finishing the incident being written. The agent's
//! resident memory is kept under `--max-memory`.

pub mod config;
pub mod http;

use std::{cell::RefCell, collections::HashMap, io, path::PathBuf, rc::Rc};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

pub use config::AgentConfig;

use super::session::{KernelTotals, Session, TICK, TraceOptions};
use crate::{
    cli::AgentArgs,
    clock::MonoNs,
    enrich::{DevId, Fact},
    pipeline::Note,
    recording::FrameOut,
    sinks::{
        CallRecord, EventRecord, Observation, Sink, Summary,
        incidents::{Finished, FlightRecorder, RecorderConfig, Trigger},
        metrics::{DiskLabels, InfoLabels, Metrics},
    },
};

/// Stalls the sink saw since the loop last looked: what to trigger and what to log.
#[derive(Default)]
struct Pending {
    stalls: Vec<(Trigger, String)>,
}

/// Counts every call and request, and queues each stall for an incident.
struct AgentSink {
    metrics: Metrics,
    pending: Rc<RefCell<Pending>>,
    names: HashMap<DevId, String>,
    /// Each disk's request-duration histogram, so a request costs no label lookup.
    request_hists: HashMap<DevId, prometheus_client::metrics::histogram::Histogram>,
}

impl AgentSink {
    /// A device's name (`loop1`, `sdb1`) from /sys, cached.
    fn dev_name(&mut self, dev: DevId) -> String {
        if let Some(n) = self.names.get(&dev) {
            return n.clone();
        }
        let n = std::fs::read_link(format!("/sys/dev/block/{dev}"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dev.to_string());
        if self.names.len() < 1024 {
            self.names.insert(dev, n.clone());
        }
        n
    }
}

/// The one line an incident's verdict is logged with.
fn stall_line(r: &CallRecord) -> String {
    let dur = r.visible_ms.unwrap_or(r.duration_ms);
    let (state, so_far) = if r.revised {
        ("stall in progress, verdict revised", " so far")
    } else if r.in_progress {
        ("stall in progress", " so far")
    } else if r.unfinished {
        ("stall still running at the end", " so far")
    } else {
        ("stall", "")
    };
    let (verdict, headline) = match &r.why {
        Some(w) => (w.verdict.name(), w.headline.as_str()),
        None => ("unknown", ""),
    };
    format!(
        "{state}: {} {dur:.0} ms{so_far} by {} (pid {} tid {}) on {}: {verdict}: {headline}",
        r.syscall,
        r.thread,
        r.pid,
        r.tid,
        r.device.as_deref().unwrap_or("?"),
    )
}

impl Sink for AgentSink {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        if !r.in_progress {
            let v = r.why.as_ref().map_or("unknown", |w| w.verdict.name());
            self.metrics.stall(v);
        }
        self.pending.borrow_mut().stalls.push((
            Trigger::Stall {
                pid: r.pid,
                tid: r.tid,
                start_ns: r.start_ns,
                ongoing: r.in_progress,
            },
            stall_line(r),
        ));
        Ok(())
    }
    fn event(&mut self, _r: &EventRecord) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        tracing::info!(
            "agent stopped: {} records, {} calls, {} stalls, {} dropped, {} shed by the reader, {} history entries shed",
            s.events,
            s.calls,
            s.reported,
            s.dropped,
            s.shed_by_reader,
            s.history_shed
        );
        Ok(())
    }
    fn observe(&mut self, o: &Observation<'_>) {
        match *o {
            Observation::Call {
                syscall,
                write_family,
                thread,
                dev,
                duration_ns,
                ..
            } => {
                let device = dev.map_or_else(|| "none".to_string(), |d| self.dev_name(d));
                let seconds = duration_ns as f64 / 1e9;
                if write_family {
                    self.metrics.observe_slow_write(syscall, &device, thread);
                } else {
                    self.metrics.observe_call(syscall, &device, thread, seconds);
                }
            }
            Observation::Io {
                disk, service_ns, ..
            } => {
                if let Some(ns) = service_ns {
                    self.request_hist(disk).observe(ns as f64 / 1e9);
                }
            }
            Observation::IoSummary { disk, hist } => {
                // Each summed request at its bucket's middle: it lands in the same bucket
                // (the kernel's bounds are the histogram's); only the sum is approximate.
                let h = self.request_hist(disk).clone();
                for (k, n) in hist.iter().enumerate() {
                    let v = crate::history::summed_value_ns(k) as f64 / 1e9;
                    for _ in 0..*n {
                        h.observe(v);
                    }
                }
            }
        }
    }
}

impl AgentSink {
    /// The request duration histogram of a watched disk.
    fn request_hist(
        &mut self,
        disk: crate::enrich::DiskDev,
    ) -> &prometheus_client::metrics::histogram::Histogram {
        if !self.request_hists.contains_key(&disk.0) {
            let name = self.dev_name(disk.0);
            let h = self
                .metrics
                .disk_request_duration
                .get_or_create(&DiskLabels { disk: name })
                .clone();
            // Bounded like the names: watched disks are few.
            if self.request_hists.len() >= 1024 {
                self.request_hists.clear();
            }
            self.request_hists.insert(disk.0, h);
        }
        &self.request_hists[&disk.0]
    }
}

/// The session's tap into the flight recorder (shared with the loop, which triggers it).
struct Tap(Rc<RefCell<FlightRecorder>>);

impl FrameOut for Tap {
    fn kernel(&mut self, rec: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().kernel(rec)
    }
    fn note(&mut self, n: &Note) -> io::Result<()> {
        self.0.borrow_mut().note(n)
    }
    fn fact(&mut self, f: &Fact) -> io::Result<()> {
        self.0.borrow_mut().fact(f)
    }
}

/// The agent's own resident memory (bytes) and CPU time (seconds), from /proc/self.
fn own_usage() -> (u64, f64) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    // SAFETY: as above.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * page;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat; 12 and 13 after the comm.
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / hz)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

pub async fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(args)?;
    run_with(cfg).await
}

/// Memory is checked this often (ticks), and the recorder's budget adjusted.
const MEMORY_EVERY: u32 = 5;

/// glibc's allocator, tuned for a bounded resident size: buffers from 64 KiB (the flight
/// recorder's chunks) are mapped and unmapped on their own instead of fragmenting the heap
/// (glibc would otherwise raise this threshold as they are freed), and free memory at the
/// heap's top goes back to the system from 1 MiB on.
fn bound_the_allocator() {
    // SAFETY: mallopt only changes the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

pub async fn run_with(cfg: AgentConfig) -> anyhow::Result<()> {
    // Before anything is created or bound: without privileges nothing else matters.
    if let Err(why) = super::privileges() {
        anyhow::bail!("cannot run the agent: {why}");
    }
    bound_the_allocator();
    let budgets = cfg.budgets();
    let recorder_budget = budgets.recorder_bytes;
    let metrics = Metrics::new();
    metrics
        .info
        .get_or_create(&InfoLabels {
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        })
        .set(1);
    metrics.memory_limit_bytes.set(cfg.max_memory as i64);

    // The HTTP server first: a port in use is an error before anything is loaded.
    let listener = tokio::net::TcpListener::bind(cfg.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for /metrics: is another agent running? (--metrics-addr picks another address)",
                cfg.metrics_addr
            )
        })?;
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<http::Control>(16);
    let app = http::router(metrics.clone(), ctl_tx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the HTTP server stopped: {e}");
        }
    });
    std::fs::create_dir_all(&cfg.incident_dir).with_context(|| {
        format!(
            "creating the incident directory {} (--incident-dir picks another)",
            cfg.incident_dir.display()
        )
    })?;

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let recorder = Rc::new(RefCell::new(FlightRecorder::new(RecorderConfig {
        window_ns: cfg.window.as_nanos() as u64,
        post_ns: cfg.post.as_nanos() as u64,
        max_incident_ns: (cfg.post.as_nanos() as u64)
            .saturating_mul(10)
            .max(600_000_000_000),
        budget_bytes: recorder_budget,
        dir: cfg.incident_dir.clone(),
        max_incidents: cfg.max_incidents,
        max_incident_bytes: cfg.max_incident_bytes,
    })));
    let pending = Rc::new(RefCell::new(Pending::default()));
    let mut sink = AgentSink {
        metrics: metrics.clone(),
        pending: pending.clone(),
        names: HashMap::new(),
        request_hists: HashMap::new(),
    };
    let mut tap = Tap(recorder.clone());
    let opts = TraceOptions {
        pids: cfg.pids.clone(),
        duration: None,
        threshold: cfg.threshold,
        events: false,
        blocked_min: cfg.blocked_min,
        output: None,
        force: false,
        disks: cfg.disks.clone(),
        cgroups: Vec::new(),
        history: budgets.history,
        channel_records: budgets.channel_records,
        jcmd: cfg.jcmd,
        requests: cfg.requests,
    };
    tracing::info!(
        "agent: threshold {}, window {}, post {}, incidents in {} (at most {} files, {} MiB), metrics on http://{}/metrics, memory under {} MiB{}",
        humantime::format_duration(cfg.threshold),
        humantime::format_duration(cfg.window),
        humantime::format_duration(cfg.post),
        cfg.incident_dir.display(),
        cfg.max_incidents,
        cfg.max_incident_bytes >> 20,
        cfg.metrics_addr,
        cfg.max_memory >> 20,
        cfg.source
            .as_ref()
            .map(|p| format!(" (settings from {})", p.display()))
            .unwrap_or_default()
    );
    let mut s = Session::start(&opts, &mut sink, Some(&mut tap), |_| {}).await?;
    // Loading parsed BTF and the kernel's symbols: what was freed goes back to the system
    // before the memory bound is measured against.
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let mut totals = KernelTotals::read(s.probes());
    let mut last = Reported::default();
    let mut over_memory_logged = false;
    loop {
        let stopping = s.stopping();
        tokio::select! {
            batch = s.next() => match batch {
                Some(batch) => {
                    s.records(&batch)?;
                    handle_stalls(&s, &recorder, &pending, &metrics, &host);
                }
                None => break,
            },
            _ = sigint.recv(), if !stopping => s.stop(),
            _ = sigterm.recv(), if !stopping => s.stop(),
            _ = sigusr1.recv(), if !stopping => {
                match start_incident(&s, &recorder, Trigger::Signal, &host, &metrics) {
                    Ok(p) => tracing::info!("SIGUSR1: incident {}", p.display()),
                    Err(e) => tracing::warn!("SIGUSR1: cannot write an incident: {e}"),
                }
            }
            Some(ctl) = ctl_rx.recv(), if !stopping => match ctl {
                http::Control::Trigger(reply) => {
                    let r = start_incident(&s, &recorder, Trigger::Http, &host, &metrics);
                    match &r {
                        Ok(p) => tracing::info!("POST /trigger: incident {}", p.display()),
                        Err(e) => tracing::warn!("POST /trigger: cannot write an incident: {e}"),
                    }
                    let _ = reply.send(r.map(|p| p.display().to_string()).map_err(|e| e.to_string()));
                }
            },
            _ = tick.tick(), if !stopping => {
                ticks += 1;
                s.tick()?;
                handle_stalls(&s, &recorder, &pending, &metrics, &host);
                if ticks.is_multiple_of(10) {
                    totals = KernelTotals::read(s.probes());
                }
                let finished = recorder
                    .borrow_mut()
                    .tick(MonoNs::now(), totals.clone(), || s.open_now());
                if let Some(f) = finished {
                    incident_done(&f, &metrics);
                }
                if ticks.is_multiple_of(100) {
                    let (ios, blocked, other) = s.pipeline().history_len();
                    let r = recorder.borrow();
                    tracing::debug!(
                        "memory {} MiB: recorder {} KiB of {} KiB ({:.1} s), history {ios} requests {blocked} intervals {other} other, {} batches of records queued",
                        own_usage().0 >> 20,
                        r.stored_bytes() >> 10,
                        r.budget() >> 10,
                        r.window_covered_ns() as f64 / 1e9,
                        s.queued()
                    );
                }
                if ticks.is_multiple_of(MEMORY_EVERY) {
                    refresh_metrics(&s, &recorder, &metrics, &mut last);
                    over_memory_logged = keep_under_memory(
                        &cfg,
                        recorder_budget,
                        &mut s,
                        &recorder,
                        &metrics,
                        over_memory_logged,
                    );
                }
            }
        }
    }
    // Stopping: the incident being written is finished first (with what is open now).
    let (recs, notes) = s.open_now();
    let finished = recorder.borrow_mut().finish(MonoNs::now(), &recs, &notes);
    if let Some(f) = finished {
        incident_done(&f, &metrics);
    }
    s.finish().await?;
    Ok(())
}

/// Starts (or extends) an incident now.
fn start_incident(
    s: &Session,
    recorder: &Rc<RefCell<FlightRecorder>>,
    t: Trigger,
    host: &str,
    metrics: &Metrics,
) -> io::Result<PathBuf> {
    let now = MonoNs::now();
    let mut r = recorder.borrow_mut();
    let new = r.incident_path().is_none();
    let header = s.header_now(now);
    match r.trigger(t, now, header, host) {
        Ok(p) => {
            if new {
                metrics.incident_in_progress.set(1);
            }
            Ok(p)
        }
        Err(e) => {
            metrics.incident_errors.inc();
            Err(e)
        }
    }
}

fn incident_done(f: &Finished, metrics: &Metrics) {
    metrics.incidents.inc();
    metrics.incident_in_progress.set(0);
    tracing::info!(
        "incident written: {} ({} KiB, {} records, {} trigger(s)); read it with `zkstall report {}`",
        f.path.display(),
        f.bytes >> 10,
        f.frames,
        f.triggers,
        f.path.display()
    );
}

/// Each stall the sink queued: an incident (started or extended) and its line in the log.
fn handle_stalls(
    s: &Session,
    recorder: &Rc<RefCell<FlightRecorder>>,
    pending: &Rc<RefCell<Pending>>,
    metrics: &Metrics,
    host: &str,
) {
    let stalls = std::mem::take(&mut pending.borrow_mut().stalls);
    for (t, line) in stalls {
        match start_incident(s, recorder, t, host, metrics) {
            Ok(p) => tracing::warn!("{line} [incident {}]", p.display()),
            Err(e) => tracing::warn!("{line} [no incident: {e}]"),
        }
    }
}

/// What the counters said last time (Prometheus counters only go up by deltas).
#[derive(Default)]
struct Reported {
    records: u64,
    dropped: u64,
    reader_shed: u64,
    history_shed: u64,
    recorder_shed: u64,
    cpu: f64,
}

fn refresh_metrics(
    s: &Session,
    recorder: &Rc<RefCell<FlightRecorder>>,
    m: &Metrics,
    last: &mut Reported,
) {
    let p = s.pipeline();
    let records = p.stats.events;
    m.records.inc_by(records.saturating_sub(last.records));
    last.records = records;
    let dropped = s.probes().counters().map(|k| k.dropped()).unwrap_or(0);
    m.records_dropped
        .inc_by(dropped.saturating_sub(last.dropped));
    last.dropped = dropped;
    let reader = s.shed_total();
    m.shed("reader", reader.saturating_sub(last.reader_shed));
    last.reader_shed = reader;
    let history = p.history_shed();
    m.shed("history", history.saturating_sub(last.history_shed));
    last.history_shed = history;
    let r = recorder.borrow();
    m.shed("recorder", r.shed.frames.saturating_sub(last.recorder_shed));
    last.recorder_shed = r.shed.frames;
    m.recorder_bytes.set(r.stored_bytes() as i64);
    m.recorder_window_seconds
        .set(r.window_covered_ns() as f64 / 1e9);
    m.incident_errors
        .inc_by(r.errors.saturating_sub(m.incident_errors.get()));
    drop(r);
    m.targets.set(s.targets().count() as i64);
    // Requests in flight now, per watched disk (issued to the device, not completed).
    let mut inflight: HashMap<u32, i64> = HashMap::new();
    for (_, rq) in s.probes().requests().unwrap_or_default() {
        if rq.issue_ns != 0 {
            *inflight.entry(rq.disk).or_default() += 1;
        }
    }
    for (disk, name) in p.watched() {
        let n = inflight.get(&disk.0.to_kernel()).copied().unwrap_or(0);
        m.disk_inflight
            .get_or_create(&DiskLabels { disk: name.clone() })
            .set(n);
    }
    let (rss, cpu) = own_usage();
    m.resident_bytes.set(rss as i64);
    if cpu > last.cpu {
        m.cpu_seconds.inc_by(cpu - last.cpu);
        last.cpu = cpu;
    }
}

/// Over 90% of --max-memory, the flight recorder gives up its oldest chunks (counted as
/// shed, and said in incidents) until the agent is back under it.
fn keep_under_memory(
    cfg: &AgentConfig,
    configured: usize,
    s: &mut Session,
    recorder: &Rc<RefCell<FlightRecorder>>,
    m: &Metrics,
    logged: bool,
) -> bool {
    let (mut rss, _) = own_usage();
    let soft = cfg.max_memory * 9 / 10;
    let hard = cfg.max_memory * 95 / 100;
    if rss > cfg.max_memory * 3 / 4 {
        // Small frees stay in glibc's arenas; give them back before judging.
        // SAFETY: malloc_trim has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
        rss = own_usage().0;
    }
    if rss > hard {
        // The recorder alone cannot bring it down: attribution's history gives a fifth of
        // its requests up too (shed, counted; verdicts over them say incomplete).
        let mut l = s.pipeline().history_limits();
        l.ios_per_disk = (l.ios_per_disk * 4 / 5).max(1024);
        l.blocked = (l.blocked * 4 / 5).max(500);
        s.pipeline_mut().shrink_history(l);
        tracing::debug!(
            "memory near the bound: history down to {} requests per disk",
            l.ios_per_disk
        );
    }
    let mut r = recorder.borrow_mut();
    if rss <= soft {
        // Well under again: the recorder may grow back towards its share.
        if rss < soft * 8 / 10 && r.budget() < configured {
            let grown = (r.budget() + r.budget() / 10).min(configured);
            r.set_budget(grown);
        }
        return false;
    }
    let excess = (rss - soft) as usize;
    let budget = r.budget().saturating_sub(excess);
    r.shrink_budget(budget);
    // Freed chunks go back to the system (glibc keeps small frees in its arenas).
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    m.recorder_bytes.set(r.stored_bytes() as i64);
    if !logged {
        tracing::warn!(
            "the agent's memory ({} MiB) is near --max-memory ({} MiB): the flight recorder keeps {} MiB now (its window is shorter; incidents say so)",
            rss >> 20,
            cfg.max_memory >> 20,
            r.budget() >> 20
        );
    }
    true
}

// A stall is noticed by the tick's scan of running calls: incidents must start within
// 250 ms of the crossing.
const _: () = assert!(TICK.as_millis() <= 250);
