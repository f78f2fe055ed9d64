//! `zkstall trace`: find the targets, load the probes, seed what is already running, attach,
//! and stream every record through the pipeline until Ctrl-C, SIGTERM, --duration, or (with
//! --pid) the exit of every target; then close what is still open (off-CPU intervals,
//! requests in flight, calls still running) from the kernel's maps, and report everything
//! that was lost.
//!
//! Everything the pipeline consumes (kernel records, notes of what userspace saw, facts)
//! also goes to the recording, in the order it was consumed: `report` replays it exactly.

use std::{
    collections::{BTreeSet, HashSet},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use zkstall_common::{
    BLOCKED_OPEN, BLOCKED_SEEDED, BlockedEvent, CALL_AFTER, CALL_START_BOUND, Counter, EventKind,
    Inflight, IoEvent, RQ_OPEN, THREAD_AFTER, THREAD_OFF, THREAD_PENDING, ThreadState,
};

use crate::{
    cli::{Format, TraceArgs},
    clock::{MonoNs, WallClock},
    decode::record_bytes,
    enrich::{DevId, FileDev, Live, Topology},
    pipeline::{Note, Pipeline},
    probes::{KernelCounters, Probes, btf::Btf, layout, tracefs::Tracefs},
    reader::{self, Reader},
    recording::{self, DeviceInfo, Header, OtherDisk, TargetInfo, Trailer, Writer},
    sinks::{DisabledSignal, JsonSink, Sink, Summary, TextSink},
    targets::{self, ProcRoot, Target},
    threads_now,
};

/// How often calls crossing the threshold and losses are looked for.
const TICK: Duration = Duration::from_millis(100);
/// How often exited targets are noticed, and (without --pid) new ZooKeepers found.
const TARGET_EVERY: u32 = 5;
const REDISCOVER_EVERY: u32 = 20;
/// With --threshold 0 every call is reported when it ends; a call still running is
/// reported as it crosses this.
const CROSSING_AT_ZERO: Duration = Duration::from_secs(1);

/// What to trace and how to report it.
pub struct TraceOptions {
    pub pids: Vec<u32>,
    pub duration: Option<Duration>,
    pub threshold: Duration,
    pub events: bool,
    pub blocked_min: Duration,
    pub output: Option<std::path::PathBuf>,
    /// Disks to watch besides those behind the targets' files.
    pub disks: Vec<String>,
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
            disks: a.disks.clone(),
        }
    }
}

/// The device a `--disk` argument names: `sdb`, `7:3`, or a path on it.
pub fn resolve_disk_arg(arg: &str) -> anyhow::Result<DevId> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    if let Some(d) = DevId::parse(arg) {
        return Ok(d);
    }
    let name = arg.strip_prefix("/dev/").unwrap_or(arg);
    if !name.contains('/')
        && let Ok(s) = std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        && let Some(d) = DevId::parse(&s)
    {
        return Ok(d);
    }
    let meta = std::fs::metadata(arg).with_context(|| {
        format!("--disk {arg}: not a block device name (see /sys/class/block), MAJ:MIN, or an existing path")
    })?;
    Ok(if meta.file_type().is_block_device() {
        DevId::from_dev_t(meta.rdev())
    } else {
        DevId::from_dev_t(meta.dev())
    })
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

/// The pipeline plus the recording: everything consumed goes through here, so the
/// recording holds exactly what the live run saw, in order.
struct Feed<'s> {
    pipeline: Pipeline,
    writer: Option<Writer>,
    sink: &'s mut dyn Sink,
    topology: Topology,
    /// Records the reader shed, in all.
    shed_total: u64,
    /// Helper kernel threads added to the targets.
    helpers: BTreeSet<u32>,
}

impl Feed<'_> {
    fn facts(&mut self) -> anyhow::Result<()> {
        if let Some(w) = &mut self.writer {
            for f in self.pipeline.take_facts() {
                w.fact(&f).context("writing the recording")?;
            }
        }
        Ok(())
    }

    fn kernel(&mut self, rec: &[u8], probes: &mut Probes) -> anyhow::Result<()> {
        self.pipeline
            .handle(rec, self.sink)
            .context("writing output")?;
        self.facts()?;
        if let Some(w) = &mut self.writer {
            w.kernel(rec).context("writing the recording")?;
        }
        self.watch_wanted(probes)
    }

    fn note(&mut self, n: Note, probes: &mut Probes) -> anyhow::Result<()> {
        self.record(&n)?;
        self.watch_wanted(probes)
    }

    /// Hands a note to the pipeline and the recording (after the facts it asked for).
    fn record(&mut self, n: &Note) -> anyhow::Result<()> {
        self.pipeline.note(n, self.sink).context("writing output")?;
        self.facts()?;
        if let Some(w) = &mut self.writer {
            w.note(n).context("writing the recording")?;
        }
        Ok(())
    }

    /// Watches the disks the pipeline found traced files on (and their partitions), and
    /// traces the kernel threads it found traced calls waiting on.
    fn watch_wanted(&mut self, probes: &mut Probes) -> anyhow::Result<()> {
        for (tid, why) in self.pipeline.take_wanted_helpers() {
            if let Err(e) = probes.add_target(tid) {
                tracing::warn!("cannot trace {why} (tid {tid}): {e}");
                continue;
            }
            self.helpers.insert(tid);
            let comm = std::fs::read_to_string(format!("/proc/{tid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            tracing::debug!("tracing {comm} ({tid}), the {why}");
            let n = Note::Helper {
                ts_ns: MonoNs::now().0,
                pid: tid,
                comm,
                why,
            };
            self.record(&n)?;
        }
        for (disk, name, why) in self.pipeline.take_wanted_disks() {
            for dev in self.topology.disk_and_partitions(disk) {
                if let Err(e) = probes.watch_dev(dev.to_kernel()) {
                    tracing::warn!("cannot watch {name} ({dev}): {e}");
                }
            }
            tracing::debug!("watching {name} ({disk}) for {why}");
            let (backing_bdi, backing_ino) = loop_backing(&self.topology, disk);
            let n = Note::Watch {
                ts_ns: MonoNs::now().0,
                disk: disk.to_string(),
                name,
                why,
                backing_bdi,
                backing_ino,
            };
            self.record(&n)?;
        }
        Ok(())
    }
}

/// For a loop device: the bdi (its disk's `MAJ:MIN`) and inode of its backing file.
fn loop_backing(topo: &Topology, disk: crate::enrich::DiskDev) -> (Option<String>, Option<u64>) {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(f) = std::fs::read_to_string(format!("/sys/dev/block/{disk}/loop/backing_file")) else {
        return (None, None);
    };
    let Ok(meta) = std::fs::metadata(f.trim()) else {
        return (None, None);
    };
    let fs = topo.resolve(FileDev(DevId::from_dev_t(meta.dev())));
    match fs.top() {
        Some(l) => (Some(l.disk.to_string()), Some(meta.ino())),
        None => (None, None),
    }
}

/// Starts tracing process `t`: its disks are watched, calls it is already inside are
/// seeded so their exits are timed, and noted.
fn add_target(
    t: &Target,
    proc: &ProcRoot,
    probes: &mut Probes,
    feed: &mut Feed,
) -> anyhow::Result<()> {
    probes.add_target(t.pid)?;
    let now = MonoNs::now();
    feed.note(
        Note::Target {
            ts_ns: now.0,
            pid: t.pid,
            comm: t.comm.clone(),
            reason: t.reason.clone(),
        },
        probes,
    )?;
    for (dev, path) in threads_now::open_file_devs(proc, t.pid) {
        feed.pipeline
            .want_disks_of(FileDev(DevId::from_dev_t(dev)), &path);
    }
    feed.watch_wanted(probes)?;
    for tid in threads_now::tids(proc, t.pid) {
        let th = threads_now::read(proc, t.pid, tid);
        let Some(sc) = th.syscall.as_ref() else {
            continue;
        };
        let Some(syscall) = threads_now::watched_syscall(sc.nr) else {
            continue;
        };
        // Seed the kernel so the exit is timed (from now: a bound) and the sleep it is in
        // is sent when it ends.
        let now = MonoNs::now();
        probes.seed_call(
            tid,
            Inflight {
                start_ns: now.0,
                arg: sc.arg0,
                on_ns: 0,
                short_ns: [0; 3],
                syscall: syscall as u32,
                tgid: t.pid,
                flags: CALL_START_BOUND,
                _pad: 0,
            },
        )?;
        if let Some(state @ ('D' | 'S')) = th.state {
            let mut st = zero_thread();
            st.tgid = t.pid;
            st.flags = THREAD_OFF;
            st.off.off_ns = now.0;
            st.off.state = if state == 'D' { 0x2 } else { 0x1 };
            st.off.syscall = sc.nr;
            st.off.flags = BLOCKED_SEEDED;
            probes.seed_thread(tid, st)?;
        }
        // It may have left the call while this was being done.
        let again = threads_now::read(proc, t.pid, tid);
        if again.syscall.as_ref().map(|s| s.nr) != Some(sc.nr) {
            probes.unseed_call(tid);
            continue;
        }
        feed.note(
            Note::Stuck {
                ts_ns: now.0,
                pid: t.pid,
                tid,
                thread: th.comm.clone(),
                syscall: syscall.name().into(),
                arg: sc.arg0,
                state: th.state.map(String::from).unwrap_or_default(),
                wchan: th.wchan.clone(),
                stack: th.stack.clone(),
            },
            probes,
        )?;
    }
    Ok(())
}

fn zero_thread() -> ThreadState {
    ThreadState {
        off: BlockedEvent::default(),
        on_since_ns: 0,
        on_ns: 0,
        short_ns: [0; 3],
        tgid: 0,
        flags: 0,
        after_cpu_ns: 0,
        pending: Default::default(),
    }
}

/// Calls in progress for longer than `crossing`: noted once each, with where they wait.
fn crossing_scan(
    probes: &mut Probes,
    feed: &mut Feed,
    live: &BTreeSet<u32>,
    proc: &ProcRoot,
    crossing: Duration,
    reported: &mut HashSet<(u32, u64)>,
    at_end: bool,
) -> anyhow::Result<()> {
    let now = MonoNs::now();
    let calls = probes.inflight().unwrap_or_default();
    let threads: std::collections::HashMap<u32, ThreadState> = if at_end {
        Default::default()
    } else {
        probes.threads().unwrap_or_default().into_iter().collect()
    };
    for (tid, c) in calls {
        if !live.contains(&c.tgid) || c.start_ns > now.0 {
            continue;
        }
        let long = now.since(MonoNs(c.start_ns)) >= crossing.as_nanos() as u64;
        if !at_end && (!long || !reported.insert((tid, c.start_ns))) {
            continue;
        }
        let Some(sc) = zkstall_common::Syscall::ALL
            .get(c.syscall as usize)
            .copied()
        else {
            continue;
        };
        let th = threads_now::read(proc, c.tgid, tid);
        let off = threads.get(&tid).filter(|s| s.flags & THREAD_OFF != 0);
        feed.note(
            Note::Running {
                ts_ns: now.0,
                pid: c.tgid,
                tid,
                syscall: sc.name().into(),
                arg: c.arg,
                start_ns: c.start_ns,
                start_bound: c.flags & CALL_START_BOUND != 0,
                at_end,
                state: th.state.map(String::from),
                off_ns: off.map(|s| s.off.off_ns),
                wake_ns: off.map(|s| s.off.wake_ns).filter(|w| *w != 0),
                wchan: th.wchan,
                stack: th.stack,
            },
            probes,
        )?;
    }
    if reported.len() > 65536 {
        reported.clear();
    }
    Ok(())
}

/// What is still open at the end, from the kernel's maps, as the records the kernel would
/// have sent: requests in flight, off-CPU intervals in progress, exits still pending; then
/// the calls still running.
fn close_open(
    probes: &mut Probes,
    feed: &mut Feed,
    live_pids: &BTreeSet<u32>,
    proc: &ProcRoot,
) -> anyhow::Result<MonoNs> {
    let now = MonoNs::now();
    let mut requests = probes.requests().unwrap_or_default();
    requests.sort_by_key(|(_, r)| r.queued_ns);
    for (_, r) in requests {
        let mut rq = r;
        rq.flags |= RQ_OPEN;
        let ev = IoEvent {
            hdr: zkstall_common::EventHeader {
                kind: EventKind::Io as u32,
                size: size_of::<IoEvent>() as u32,
                ts_ns: now.0,
                tgid: r.tgid,
                tid: r.tid,
            },
            rq,
            nr_bytes: 0,
            status: 0,
        };
        feed.kernel(&record_bytes(&ev), probes)?;
    }
    let mut threads = probes.threads().unwrap_or_default();
    threads.sort_by_key(|(_, s)| s.off.off_ns);
    for (tid, st) in &threads {
        if !live_pids.contains(&st.tgid) {
            continue;
        }
        if st.flags & THREAD_OFF != 0 {
            let mut b = st.off;
            b.hdr = zkstall_common::EventHeader {
                kind: EventKind::Blocked as u32,
                size: size_of::<BlockedEvent>() as u32,
                ts_ns: now.0,
                tgid: st.tgid,
                tid: *tid,
            };
            b.flags |= BLOCKED_OPEN;
            feed.kernel(&record_bytes(&b), probes)?;
        }
        if st.flags & THREAD_PENDING != 0 {
            let mut x = st.pending;
            if st.flags & THREAD_AFTER != 0 {
                // Still off CPU on its way back: what the caller waits for so far.
                x.flags |= CALL_AFTER;
                x.after_ns = now.since(MonoNs(x.hdr.ts_ns));
            }
            feed.kernel(&record_bytes(&x), probes)?;
        }
    }
    let mut none = HashSet::new();
    crossing_scan(
        probes,
        feed,
        live_pids,
        proc,
        Duration::ZERO,
        &mut none,
        true,
    )?;
    Ok(now)
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
    let btf = match Btf::from_sys_fs() {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!("no usable BTF ({e}): block requests are not traced");
            None
        }
    };
    let mut layout = layout::build(&tracefs, btf.as_ref())?;
    drop(btf);
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
    let req_bits = layout.req_bits;

    let mut probes = Probes::load(layout)?;
    let wall = WallClock::sample();
    let mut enrich = Live::new(proc.clone(), "/sys").preload();
    if opts.output.is_some() {
        enrich = enrich.recording();
    }
    let pipeline = Pipeline::new(Box::new(enrich), wall, opts.threshold.as_nanos() as u64)
        .with_events(opts.events)
        .with_req_bits(req_bits);

    // Reader first, then targets (seeded), then attach: nothing is missed between.
    let ring = probes.take_events()?;
    let (tx, mut rx) = mpsc::channel(reader::CHANNEL_RECORDS);
    let reader = Reader::spawn(ring, tx).context("starting the ring-buffer reader")?;

    let started = MonoNs::now();
    let writer = match &opts.output {
        Some(path) => {
            let header = header(&initial, &proc, wall, started, opts, &disabled, req_bits);
            Some(Writer::create(path, &header)?)
        }
        None => None,
    };
    let mut feed = Feed {
        pipeline,
        writer,
        sink,
        topology: Topology::new("/sys"),
        shed_total: 0,
        helpers: BTreeSet::new(),
    };
    let mut live: BTreeSet<u32> = BTreeSet::new();
    let mut all_pids: BTreeSet<u32> = BTreeSet::new();
    for d in &opts.disks {
        let dev = resolve_disk_arg(d)?;
        feed.pipeline
            .want_disks_of(FileDev(dev), &format!("--disk {d}"));
    }
    feed.watch_wanted(&mut probes)?;
    for t in &initial {
        add_target(t, &proc, &mut probes, &mut feed)?;
        live.insert(t.pid);
        all_pids.insert(t.pid);
    }
    probes.attach()?;
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
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    let mut stopping = false;
    let crossing = if opts.threshold.is_zero() {
        CROSSING_AT_ZERO
    } else {
        opts.threshold
    };
    let mut crossed: HashSet<(u32, u64)> = HashSet::new();
    let mut last_check = MonoNs::now();
    let mut last_counters = probes.counters()?;

    loop {
        tokio::select! {
            rec = rx.recv() => match rec {
                Some(rec) => feed.kernel(&rec, &mut probes)?,
                None => break, // the reader drained the ring and ended
            },
            _ = sigint.recv(), if !stopping => { stopping = true; reader.stop(); }
            _ = sigterm.recv(), if !stopping => { stopping = true; reader.stop(); }
            _ = sleep_until(deadline), if !stopping => { stopping = true; reader.stop(); }
            _ = tick.tick(), if !stopping => {
                ticks += 1;
                let now = MonoNs::now();
                losses(&probes, &reader, &mut feed, &mut last_counters, last_check, now)?;
                last_check = now;
                crossing_scan(&mut probes, &mut feed, &live, &proc, crossing, &mut crossed, false)?;
                if ticks.is_multiple_of(TARGET_EVERY) {
                    for pid in &live {
                        feed.pipeline.refresh_files(*pid);
                    }
                    for tid in feed.helpers.clone() {
                        if !proc.is_alive(tid) {
                            feed.helpers.remove(&tid);
                            probes.remove_target(tid)?;
                        }
                    }
                    for pid in live.clone() {
                        if !proc.is_alive(pid) {
                            tracing::info!("process {pid} exited");
                            live.remove(&pid);
                            probes.remove_target(pid)?;
                            feed.note(Note::TargetExit { ts_ns: MonoNs::now().0, pid }, &mut probes)?;
                        }
                    }
                }
                if !explicit && ticks.is_multiple_of(REDISCOVER_EVERY) {
                    for t in targets::discover_zookeeper(&proc).unwrap_or_default() {
                        if !live.contains(&t.pid) {
                            tracing::info!("found ZooKeeper {} ({}); tracing it", t.pid, t.reason);
                            add_target(&t, &proc, &mut probes, &mut feed)?;
                            live.insert(t.pid);
                            all_pids.insert(t.pid);
                        }
                    }
                }
                if explicit && live.is_empty() {
                    tracing::info!("every traced process has exited");
                    stopping = true;
                    reader.stop();
                }
            }
        }
    }
    reader.join().context("reading the ring buffer")?;

    let now = MonoNs::now();
    let mut last = last_counters;
    losses_final(&probes, &mut feed, &mut last, last_check, now)?;
    let end = close_open(&mut probes, &mut feed, &live, &proc)?;
    feed.pipeline
        .finish(end, feed.sink)
        .context("writing output")?;
    let k = probes.counters()?;
    let trailer = trailer(&k, &probes, end, &all_pids, &mut feed);
    let summary = feed.pipeline.summary(&trailer, started.0, disabled);
    feed.sink.summary(&summary).context("writing output")?;
    if let Some(mut w) = feed.writer.take() {
        for f in feed.pipeline.take_facts() {
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
    if summary.dropped > 0 || summary.shed_by_reader > 0 {
        tracing::warn!(
            "{} kernel record(s) were dropped (ring buffer full) and {} shed by the reader: verdicts over those windows say they are incomplete",
            summary.dropped,
            summary.shed_by_reader
        );
    }
    Ok(summary)
}

/// Notes a loss window when the kernel dropped records or the reader shed some.
fn losses(
    probes: &Probes,
    reader: &Reader,
    feed: &mut Feed,
    last: &mut KernelCounters,
    from: MonoNs,
    to: MonoNs,
) -> anyhow::Result<()> {
    let k = probes.counters()?;
    let full = k
        .get(Counter::RingbufFull)
        .saturating_sub(last.get(Counter::RingbufFull));
    let shed = reader.shed.take();
    *last = k;
    if full == 0 && shed.is_none() {
        return Ok(());
    }
    let (n_shed, a, b) = shed.unwrap_or((0, from.0, to.0));
    let (lo, hi) = if full > 0 {
        (from.0.min(a), to.0.max(b))
    } else {
        (a, b)
    };
    feed.shed_total += n_shed;
    let n = Note::Lost {
        from_ns: lo,
        to_ns: hi,
        ringbuf_full: full,
        shed: n_shed,
    };
    feed.record(&n)
}

fn losses_final(
    probes: &Probes,
    feed: &mut Feed,
    last: &mut KernelCounters,
    from: MonoNs,
    to: MonoNs,
) -> anyhow::Result<()> {
    let k = probes.counters()?;
    let full = k
        .get(Counter::RingbufFull)
        .saturating_sub(last.get(Counter::RingbufFull));
    *last = k;
    if full == 0 {
        return Ok(());
    }
    let n = Note::Lost {
        from_ns: from.0,
        to_ns: to.0,
        ringbuf_full: full,
        shed: 0,
    };
    feed.record(&n)
}

fn trailer(
    k: &KernelCounters,
    probes: &Probes,
    end: MonoNs,
    pids: &BTreeSet<u32>,
    feed: &mut Feed,
) -> Trailer {
    // The blkcg a request was charged to, by its cgroup id in the io (blkio) hierarchy.
    let mounts = crate::enrich::cgroups::Mounts::detect();
    let mut blkcgs =
        crate::enrich::cgroups::Cgroups::new(mounts.blkio_root().map(|p| p.to_path_buf()));
    let mut other: Vec<OtherDisk> = probes
        .other_io()
        .unwrap_or_default()
        .into_iter()
        .map(|(key, v)| {
            let disk = DevId::from_kernel(key.disk);
            let cgroup = blkcgs.path(key.blk_cgroup);
            OtherDisk {
                disk: disk.to_string(),
                name: std::fs::read_link(format!("/sys/dev/block/{disk}"))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                cgroup,
                requests: v.requests,
                bytes: v.bytes,
            }
        })
        .collect();
    other.sort_by_key(|d| std::cmp::Reverse(d.bytes));
    other.truncate(20);
    Trailer {
        end_ns: end.0,
        pids: pids.iter().copied().collect(),
        dropped: k.dropped(),
        untimed: k.get(Counter::InflightFull),
        exit_without_enter: k.get(Counter::ExitWithoutEnter),
        read_errors: k.get(Counter::ReadError),
        io_unmatched: k.get(Counter::IoUnmatched),
        map_full: k.get(Counter::MapFull),
        stack_errors: k.get(Counter::StackError),
        io_watched: k.get(Counter::IoWatched),
        io_merged: k.get(Counter::IoMerged),
        io_stale: k.get(Counter::IoStale),
        io_partial: k.get(Counter::IoPartial),
        io_flush: k.get(Counter::IoFlush),
        io_flush_seq_end: k.get(Counter::IoFlushSeqEnd),
        io_other_disks: k.get(Counter::IoOther),
        other_disks: other,
        shed_by_reader: feed.shed_total,
    }
}

/// What a recording says about where it was made.
fn header(
    targets: &[Target],
    proc: &ProcRoot,
    wall: WallClock,
    started: MonoNs,
    opts: &TraceOptions,
    disabled: &[DisabledSignal],
    req_bits: crate::probes::ReqBits,
) -> Header {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut threads = Vec::new();
    for t in targets {
        for tid in threads_now::tids(proc, t.pid) {
            if let Ok(name) = std::fs::read_to_string(
                proc.pid_dir(t.pid)
                    .join("task")
                    .join(tid.to_string())
                    .join("comm"),
            ) {
                threads.push((tid, name.trim_end().to_string()));
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
        req_bits,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
