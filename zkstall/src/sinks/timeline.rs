//! A timeline of one or more recordings, for `zkstall export`: tracks (processes, threads,
//! disks, journals, counters) and what happened on them, in Unix nanoseconds so that the
//! recordings of several hosts line up. [`TimelineSink`] builds it from the records the
//! pipeline sends any sink (calls with their verdicts, and the `--events` records);
//! `perfetto` and `chrome` write it out.
//!
//! Slices that may overlap on one track (requests in flight together, commits) are spread
//! over lanes: child tracks named `<track> #2`, `#3`... so every track nests properly.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::{
    CallRecord, EventRecord, Sink, Summary,
    events::{BlockedRecord, IoRecord, Who},
};
use crate::clock::WallClock;

/// Counter buckets for rates (throughput, dirtying): 100 ms.
const BUCKET_NS: u64 = 100_000_000;
/// Lanes per slice group at most; slices beyond are counted, not drawn.
const MAX_LANES: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Str(s.to_string())
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Str(s)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Arg {
        Arg::F64(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Arg {
        Arg::Int(v as i64)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Arg {
        Arg::Int(v as i64)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Arg {
        Arg::Bool(v)
    }
}

pub type Args = Vec<(&'static str, Arg)>;

#[derive(Clone, Debug, PartialEq)]
pub enum TrackKind {
    /// A traced (or other) process: `pid` is unique in the timeline (see [`Timeline`]).
    Process {
        pid: i32,
        real_pid: u32,
        labels: Vec<String>,
    },
    Thread {
        pid: i32,
        tid: i32,
        real_tid: u32,
    },
    /// A group of tracks (one recording's devices).
    Group,
    /// Slices.
    Slices,
    Counter {
        unit: Unit,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// MB/s (10^6 bytes).
    MegabytesPerSecond,
    /// Pages (folios) per second.
    PerSecond,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub uuid: u64,
    pub parent: Option<u64>,
    pub name: String,
    pub kind: TrackKind,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub track: u64,
    pub start: u64,
    pub dur: u64,
    pub name: String,
    pub cat: &'static str,
    pub args: Args,
    /// A flow arrow ends here (from the instant that started it).
    pub flow_in: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Instant {
    pub track: u64,
    pub ts: u64,
    pub name: String,
    pub cat: &'static str,
    pub args: Args,
    /// A flow arrow starts here.
    pub flow_out: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub track: u64,
    pub ts: u64,
    pub value: f64,
}

/// Everything to draw. Process and thread ids are the recordings' own for the first
/// recording, and offset by `index << 22` (above Linux's largest pid) for the others, so
/// two recordings of one host (even of one process) stay apart; the real ones are in the
/// names and labels.
#[derive(Debug, Default)]
pub struct Timeline {
    pub tracks: Vec<Track>,
    pub slices: Vec<Slice>,
    pub instants: Vec<Instant>,
    pub samples: Vec<Sample>,
    /// Slices not drawn because more than MAX_LANES overlapped.
    pub lanes_full: u64,
}

impl Timeline {
    pub fn track(&self, uuid: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.uuid == uuid)
    }
}

/// One recording fed to the sink.
#[derive(Clone, Debug)]
pub struct Source {
    pub host: String,
    /// The file it came from (its name, for labels).
    pub label: String,
    pub wall: WallClock,
    /// Traced processes and their names.
    pub targets: Vec<(u32, String)>,
    /// Calls from this long get a verdict marker (the recording's --threshold).
    pub slow_ns: u64,
    /// Device names by `MAJ:MIN`, for records that carry only the number.
    pub devices: HashMap<String, String>,
}

/// A slice waiting for its lane.
struct Pending {
    group: usize,
    slice: Slice,
}

struct Group {
    base: u64,
    name: String,
    parent: Option<u64>,
}

/// Builds a [`Timeline`]: pass each recording's records after [`TimelineSink::begin`].
#[derive(Default)]
pub struct TimelineSink {
    t: Timeline,
    next_uuid: u64,
    next_flow: u64,
    rec: usize,
    src: Option<Source>,
    processes: HashMap<(usize, u32), u64>,
    threads: HashMap<(usize, u32), u64>,
    thread_names: HashMap<u64, String>,
    /// (thread track) -> its off-CPU track.
    off_cpu: HashMap<u64, u64>,
    devices: HashMap<usize, u64>,
    groups: Vec<Group>,
    group_by_name: HashMap<(usize, String), usize>,
    pending: Vec<Pending>,
    counters: HashMap<(usize, String), u64>,
    /// Rates: counter track -> bucket -> amount.
    rates: HashMap<u64, BTreeMap<u64, f64>>,
    /// In flight: counter track -> (ts, +1/-1).
    steps: HashMap<u64, Vec<(u64, i32)>>,
}

impl TimelineSink {
    pub fn new() -> Self {
        TimelineSink {
            next_uuid: 1,
            next_flow: 1,
            ..Default::default()
        }
    }

    /// The records that follow come from this recording.
    pub fn begin(&mut self, src: Source) {
        if self.src.is_some() {
            self.rec += 1;
        }
        self.src = Some(src);
    }

    fn uuid(&mut self) -> u64 {
        let u = self.next_uuid;
        self.next_uuid += 1;
        u
    }

    fn offset(&self) -> i64 {
        (self.rec as i64) << 22
    }

    fn host(&self) -> String {
        self.src.as_ref().map_or(String::new(), |s| s.host.clone())
    }

    /// Unix ns of a monotonic instant of the current recording.
    fn unix(&self, mono_ns: u64) -> u64 {
        let off = self.src.as_ref().map_or(0, |s| s.wall.offset_ns);
        (mono_ns as i128 + off).max(0) as u64
    }

    /// A device's name: the record's, else the recording's table, else `MAJ:MIN`.
    fn dev_name(&self, dev: &str, device: &Option<String>) -> String {
        device
            .clone()
            .or_else(|| self.src.as_ref().and_then(|s| s.devices.get(dev).cloned()))
            .unwrap_or_else(|| dev.to_string())
    }

    fn process(&mut self, pid: u32, comm: &str) -> u64 {
        if let Some(&u) = self.processes.get(&(self.rec, pid)) {
            return u;
        }
        let uuid = self.uuid();
        let src = self.src.clone();
        let traced = src.as_ref().and_then(|s| {
            s.targets
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, c)| c.clone())
        });
        let host = self.host();
        let name = match &traced {
            Some(c) => format!("{c} {pid} on {host}"),
            None => format!("{comm} {pid} on {host}"),
        };
        let mut labels = vec![format!("host={host}"), format!("pid={pid}")];
        if let Some(s) = &src {
            labels.push(format!("recording={}", s.label));
        }
        if traced.is_some() {
            labels.push("traced".into());
        }
        self.t.tracks.push(Track {
            uuid,
            parent: None,
            name,
            kind: TrackKind::Process {
                pid: (pid as i64 + self.offset()) as i32,
                real_pid: pid,
                labels,
            },
        });
        self.processes.insert((self.rec, pid), uuid);
        uuid
    }

    fn thread(&mut self, pid: u32, tid: u32, name: &str) -> u64 {
        if let Some(&u) = self.threads.get(&(self.rec, tid)) {
            if !name.is_empty() {
                self.thread_names.insert(u, name.to_string());
            }
            return u;
        }
        let parent = self.process(pid, name);
        let uuid = self.uuid();
        self.t.tracks.push(Track {
            uuid,
            parent: Some(parent),
            name: name.to_string(),
            kind: TrackKind::Thread {
                pid: (pid as i64 + self.offset()) as i32,
                tid: (tid as i64 + self.offset()) as i32,
                real_tid: tid,
            },
        });
        self.threads.insert((self.rec, tid), uuid);
        if !name.is_empty() {
            self.thread_names.insert(uuid, name.to_string());
        }
        uuid
    }

    fn who(&mut self, w: &Who) -> u64 {
        self.thread(w.pid, w.tid, &w.comm)
    }

    /// The recording's devices group (disks, journals, writeback).
    fn devices(&mut self) -> u64 {
        if let Some(&u) = self.devices.get(&self.rec) {
            return u;
        }
        let uuid = self.uuid();
        let host = self.host();
        self.t.tracks.push(Track {
            uuid,
            parent: None,
            name: format!("devices on {host}"),
            kind: TrackKind::Group,
        });
        self.devices.insert(self.rec, uuid);
        uuid
    }

    /// A group of slice lanes named `name` under `parent`.
    fn group(&mut self, name: String, parent: Option<u64>) -> usize {
        if let Some(&g) = self.group_by_name.get(&(self.rec, name.clone())) {
            return g;
        }
        let base = self.uuid();
        self.t.tracks.push(Track {
            uuid: base,
            parent,
            name: name.clone(),
            kind: TrackKind::Slices,
        });
        self.groups.push(Group {
            base,
            name: name.clone(),
            parent,
        });
        self.group_by_name
            .insert((self.rec, name), self.groups.len() - 1);
        self.groups.len() - 1
    }

    fn counter(&mut self, name: String, parent: u64, unit: Unit) -> u64 {
        if let Some(&u) = self.counters.get(&(self.rec, name.clone())) {
            return u;
        }
        let uuid = self.uuid();
        self.t.tracks.push(Track {
            uuid,
            parent: Some(parent),
            name: name.clone(),
            kind: TrackKind::Counter { unit },
        });
        self.counters.insert((self.rec, name), uuid);
        uuid
    }

    fn rate(&mut self, track: u64, ts: u64, amount: f64) {
        *self
            .rates
            .entry(track)
            .or_default()
            .entry(ts / BUCKET_NS)
            .or_default() += amount;
    }

    fn slice(&mut self, group: usize, slice: Slice) {
        self.pending.push(Pending { group, slice });
    }

    /// The off-CPU track of a thread (a child of its track).
    fn off_cpu_track(&mut self, thread: u64) -> usize {
        let name = format!(
            "{} off-CPU",
            self.thread_names.get(&thread).cloned().unwrap_or_default()
        );
        let key = format!("\u{0}off-cpu {thread}");
        if let Some(&g) = self.group_by_name.get(&(self.rec, key.clone())) {
            return g;
        }
        let g = self.group(key.clone(), Some(thread));
        // The group's key is internal; its track shows the thread's name.
        let base = self.groups[g].base;
        if let Some(t) = self.t.tracks.iter_mut().find(|t| t.uuid == base) {
            t.name = name.clone();
        }
        self.groups[g].name = name;
        self.off_cpu.insert(thread, base);
        g
    }

    fn on_call(&mut self, r: &CallRecord) {
        let th = self.thread(r.pid, r.tid, &r.thread);
        let start = self.unix(r.start_ns);
        let dur = ((r.duration_ms * 1e6) as u64).max(1);
        let mut args: Args = vec![
            ("path", r.path.clone().unwrap_or_default().into()),
            ("device", r.device.clone().unwrap_or_default().into()),
            ("dev", r.dev.clone().unwrap_or_default().into()),
            ("duration_ms", r.duration_ms.into()),
        ];
        if let Some(d) = &r.disk {
            args.push(("disk", d.clone().into()));
        }
        if let Some(fd) = r.fd {
            args.push(("fd", Arg::Int(fd as i64)));
        }
        if let Some(ret) = r.ret {
            args.push(("ret", Arg::Int(ret)));
        }
        if r.unfinished {
            args.push(("unfinished", true.into()));
        }
        if r.start_bound {
            args.push(("start_bound", true.into()));
        }
        if let Some(a) = r.after_ms {
            args.push(("after_ms", a.into()));
        }
        if let Some(b) = r.before_ms {
            args.push(("before_ms", b.into()));
        }
        if let Some(why) = &r.why {
            args.push(("verdict", why.verdict.name().into()));
            if let Some(via) = why.via {
                args.push(("via", via.into()));
            }
            args.push(("headline", why.headline.clone().into()));
        }
        let at = start + dur;
        let slow_ns = self.src.as_ref().map_or(0, |s| s.slow_ns);
        let seen_ms = r.visible_ms.unwrap_or(r.duration_ms);
        if let Some(why) = r.why.as_ref().filter(|_| seen_ms * 1e6 >= slow_ns as f64) {
            let mut iargs: Args = vec![("headline", why.headline.clone().into())];
            if let Some(via) = why.via {
                iargs.push(("via", via.into()));
            }
            iargs.push(("duration_ms", r.duration_ms.into()));
            let what = if r.in_progress {
                "still running"
            } else {
                "verdict"
            };
            self.t.instants.push(Instant {
                track: th,
                ts: at,
                name: format!("{what}: {} ({})", why.verdict.name(), r.syscall),
                cat: "verdict",
                args: iargs,
                flow_out: None,
            });
        }
        if r.in_progress {
            // Reported again, whole, when it ends (or when tracing ends).
            return;
        }
        let g = self.thread_group(th);
        self.slice(
            g,
            Slice {
                track: th,
                start,
                dur,
                name: r.syscall.to_string(),
                cat: "syscall",
                args,
                flow_in: None,
            },
        );
    }

    /// The lane group whose base is a thread's own track.
    fn thread_group(&mut self, th: u64) -> usize {
        let key = format!("\u{0}thread {th}");
        if let Some(&g) = self.group_by_name.get(&(self.rec, key.clone())) {
            return g;
        }
        let name = self.thread_names.get(&th).cloned().unwrap_or_default();
        self.groups.push(Group {
            base: th,
            name,
            parent: Some(th),
        });
        self.group_by_name
            .insert((self.rec, key), self.groups.len() - 1);
        self.groups.len() - 1
    }

    fn on_blocked(&mut self, r: &BlockedRecord) {
        let th = self.thread(r.pid, r.tid, &r.thread);
        let g = self.off_cpu_track(th);
        let track = self.groups[g].base;
        let start = self.unix(r.start_ns);
        let dur = ((r.duration_ms * 1e6) as u64).max(1);
        let runq = ((r.runq_ms * 1e6) as u64).min(dur);
        let woken = r.state != "R" && runq < dur;
        let mut args: Args = vec![
            ("state", r.state.clone().into()),
            ("duration_ms", r.duration_ms.into()),
            ("runq_ms", r.runq_ms.into()),
        ];
        if let Some(s) = &r.syscall {
            args.push(("syscall", s.clone().into()));
        }
        if let Some(w) = &r.waker {
            args.push(("waker", format!("{} ({}/{})", w.comm, w.pid, w.tid).into()));
        } else if let Some(c) = r.waker_context {
            args.push(("waker", c.into()));
        }
        if !r.stack.is_empty() {
            args.push(("stack", r.stack.join("\n").into()));
        }
        if r.after_call {
            args.push(("after_call", true.into()));
        }
        let name = match r.state.as_str() {
            "R" => "R (preempted)".to_string(),
            "D" => format!("D {}", r.syscall.as_deref().unwrap_or(""))
                .trim()
                .to_string(),
            s => format!("{s} {}", r.syscall.as_deref().unwrap_or(""))
                .trim()
                .to_string(),
        };
        let sleep = if woken { dur - runq } else { dur };
        self.slice(
            g,
            Slice {
                track,
                start,
                dur: sleep.max(1),
                name,
                cat: "off_cpu",
                args,
                flow_in: None,
            },
        );
        if !woken || runq == 0 {
            return;
        }
        // Woken: an arrow from the waker to the wait in the run queue that followed.
        let wake_at = start + sleep;
        let mut flow = None;
        if let Some(w) = &r.waker {
            let wt = self.who(w);
            let id = self.next_flow;
            self.next_flow += 1;
            flow = Some(id);
            let wname = self.thread_names.get(&th).cloned().unwrap_or_default();
            self.t.instants.push(Instant {
                track: wt,
                ts: wake_at,
                name: format!("wakes {wname}"),
                cat: "wakeup",
                args: vec![("woken", format!("{} ({}/{})", wname, r.pid, r.tid).into())],
                flow_out: Some(id),
            });
        }
        let by = match (&r.waker, r.waker_context) {
            (Some(w), _) => format!("runnable (woken by {})", w.comm),
            (None, Some(c)) => format!("runnable (woken by {c})"),
            _ => "runnable".to_string(),
        };
        self.slice(
            g,
            Slice {
                track,
                start: wake_at,
                dur: runq,
                name: by,
                cat: "runq",
                args: vec![("runq_ms", r.runq_ms.into())],
                flow_in: flow,
            },
        );
    }

    fn on_io(&mut self, r: &IoRecord) {
        let disk = self.dev_name(&r.dev, &r.device);
        let dev = self.devices();
        let g = self.group(format!("{disk} requests"), Some(dev));
        let start_mono = r.queued_ns.or(r.issue_ns).unwrap_or(r.complete_ns);
        let start = self.unix(start_mono);
        let end = self.unix(r.complete_ns).max(start + 1);
        let mut args: Args = vec![
            ("rwbs", r.rwbs.clone().into()),
            ("bytes", r.bytes.into()),
            ("charged_to", r.charged_to.clone().into()),
        ];
        if let Some(s) = r.sector {
            args.push(("sector", s.into()));
        }
        // A submitter first seen at completion is not named (never `(0/0)`).
        if r.pid != 0 || !r.comm.is_empty() {
            args.push((
                "submitter",
                format!("{} ({}/{})", r.comm, r.pid, r.tid).into(),
            ));
        }
        if let Some(q) = r.queue_ms {
            args.push(("queue_ms", q.into()));
        }
        if let Some(s) = r.service_ms {
            args.push(("service_ms", s.into()));
        }
        if let Some(p) = &r.part_name {
            args.push(("partition", p.clone().into()));
        }
        if r.error != 0 {
            args.push(("error", Arg::Int(r.error as i64)));
        }
        if r.in_flight_at_end {
            args.push(("in_flight_at_end", true.into()));
        }
        let track = self.groups[g].base;
        self.slice(
            g,
            Slice {
                track,
                start,
                dur: end - start,
                name: format!(
                    "{} {}",
                    r.rwbs,
                    crate::attribution::render::size(r.bytes as u64)
                ),
                cat: "io",
                args,
                flow_in: None,
            },
        );
        if r.partial {
            return;
        }
        let inflight = self.counter(format!("{disk} in flight"), dev, Unit::Count);
        let issued = self.unix(r.issue_ns.unwrap_or(start_mono));
        let steps = self.steps.entry(inflight).or_default();
        steps.push((issued, 1));
        steps.push((end, -1));
        let tput = self.counter(format!("{disk} MB/s"), dev, Unit::MegabytesPerSecond);
        self.rate(tput, end, r.bytes as f64);
        let by = self.counter(
            format!("{disk} MB/s by {}", r.charged_to),
            dev,
            Unit::MegabytesPerSecond,
        );
        self.rate(by, end, r.bytes as f64);
    }

    fn on_event(&mut self, e: &EventRecord) {
        match e {
            EventRecord::Io(r) => self.on_io(r),
            EventRecord::Blocked(r) => self.on_blocked(r),
            EventRecord::Thread(r) => {
                self.thread(r.pid, r.tid, &r.thread);
            }
            EventRecord::Dirty(r) => {
                let p = self.process(r.pid, &r.comm);
                let c = self.counter(
                    format!("pages dirtied/s by {} ({})", r.comm, r.pid),
                    p,
                    Unit::PerSecond,
                );
                let ts = self.unix(r.ts_ns);
                self.rate(c, ts, r.folios as f64);
            }
            EventRecord::Writeback(r) => {
                let device = self.dev_name(&r.dev, &r.device);
                let dev = self.devices();
                let g = self.group(format!("{device} writeback"), Some(dev));
                let end = self.unix(r.ts_ns);
                let start = r.start_ns.map_or(end, |s| self.unix(s)).min(end);
                let mut args: Args = vec![
                    ("ino", r.ino.into()),
                    ("pages", r.pages.into()),
                    (
                        "flusher",
                        format!("{} ({}/{})", r.comm, r.pid, r.tid).into(),
                    ),
                ];
                let mut name = format!("writeback inode {}", r.ino);
                if let Some(d) = &r.dirtier {
                    args.push((
                        "dirtier",
                        format!("{} ({}/{})", d.comm, d.pid, d.tid).into(),
                    ));
                    name.push_str(&format!(" for {}", d.comm));
                }
                let track = self.groups[g].base;
                self.slice(
                    g,
                    Slice {
                        track,
                        start,
                        dur: (end - start).max(1),
                        name,
                        cat: "writeback",
                        args,
                        flow_in: None,
                    },
                );
            }
            EventRecord::Throttle(r) => {
                let th = self.thread(r.pid, r.tid, &r.comm);
                let ts = self.unix(r.ts_ns);
                self.t.instants.push(Instant {
                    track: th,
                    ts,
                    name: format!("dirty throttle: pause {} ms", r.pause_ms),
                    cat: "throttle",
                    args: vec![
                        ("pause_ms", Arg::Int(r.pause_ms)),
                        ("paused_ms", r.paused_ms.into()),
                        ("dirty_pages", r.dirty_pages.into()),
                        ("limit_pages", r.limit_pages.into()),
                    ],
                    flow_out: None,
                });
            }
            EventRecord::IoSummary(r) => {
                // Summed requests have no slices: a rate on the device.
                let device = self.dev_name(&r.dev, &r.device);
                let dev = self.devices();
                let c = self.counter(
                    format!("{device} requests/s not overlapping calls (summed)"),
                    dev,
                    Unit::PerSecond,
                );
                let ts = self.unix(r.end_ns);
                self.rate(c, ts, r.requests as f64);
            }
            EventRecord::Journal(r) => {
                let device = self.dev_name(&r.dev, &r.device);
                let dev = self.devices();
                let g = self.group(format!("{device} journal ({})", r.comm), Some(dev));
                let start = self.unix(r.start_ns);
                let dur = ((r.duration_ms * 1e6) as u64).max(1);
                let mut args: Args = vec![
                    ("transaction", r.transaction.into()),
                    ("duration_ms", r.duration_ms.into()),
                ];
                for (k, v) in [
                    ("locking_ms", r.locking_ms),
                    ("flushing_ms", r.flushing_ms),
                    ("logging_ms", r.logging_ms),
                ] {
                    if let Some(v) = v {
                        args.push((k, v.into()));
                    }
                }
                if let Some(b) = r.blocks {
                    args.push(("blocks", b.into()));
                }
                let track = self.groups[g].base;
                self.slice(
                    g,
                    Slice {
                        track,
                        start,
                        dur,
                        name: format!("commit {}", r.transaction),
                        cat: "journal",
                        args,
                        flow_in: None,
                    },
                );
            }
        }
    }

    /// Spreads slices over lanes, turns rates and steps into samples.
    pub fn finish(mut self) -> Timeline {
        // Thread names as last seen.
        for t in &mut self.t.tracks {
            if matches!(t.kind, TrackKind::Thread { .. })
                && let Some(n) = self.thread_names.get(&t.uuid)
            {
                t.name = n.clone();
            }
        }
        let mut by_group: Vec<Vec<Slice>> = vec![Vec::new(); self.groups.len()];
        for p in self.pending.drain(..) {
            by_group[p.group].push(p.slice);
        }
        for (gi, mut slices) in by_group.into_iter().enumerate() {
            slices.sort_by_key(|s| (s.start, std::cmp::Reverse(s.dur)));
            // lanes[k] = (track uuid, busy until)
            let mut lanes: Vec<(u64, u64)> = vec![(self.groups[gi].base, 0)];
            for mut s in slices {
                let end = s.start + s.dur;
                let lane = match lanes.iter().position(|&(_, busy)| busy <= s.start) {
                    Some(l) => l,
                    None if lanes.len() < MAX_LANES => {
                        let uuid = self.next_uuid;
                        self.next_uuid += 1;
                        let g = &self.groups[gi];
                        self.t.tracks.push(Track {
                            uuid,
                            parent: g.parent.filter(|&p| p != g.base).or(Some(g.base)),
                            name: format!("{} #{}", g.name, lanes.len() + 1),
                            kind: TrackKind::Slices,
                        });
                        lanes.push((uuid, 0));
                        lanes.len() - 1
                    }
                    None => {
                        self.t.lanes_full += 1;
                        continue;
                    }
                };
                lanes[lane].1 = end;
                s.track = lanes[lane].0;
                self.t.slices.push(s);
            }
        }
        for (track, buckets) in self.rates {
            let mut last: Option<u64> = None;
            for (b, amount) in buckets {
                if let Some(l) = last
                    && l + 1 < b
                {
                    self.t.samples.push(Sample {
                        track,
                        ts: (l + 1) * BUCKET_NS,
                        value: 0.0,
                    });
                }
                self.t.samples.push(Sample {
                    track,
                    ts: b * BUCKET_NS,
                    value: amount / 1e6 / (BUCKET_NS as f64 / 1e9),
                });
                last = Some(b);
            }
            if let Some(l) = last {
                self.t.samples.push(Sample {
                    track,
                    ts: (l + 1) * BUCKET_NS,
                    value: 0.0,
                });
            }
        }
        for (track, mut steps) in self.steps {
            steps.sort_by_key(|&(ts, d)| (ts, d));
            let mut n: i64 = 0;
            let mut i = 0;
            while i < steps.len() {
                let ts = steps[i].0;
                while i < steps.len() && steps[i].0 == ts {
                    n += steps[i].1 as i64;
                    i += 1;
                }
                self.t.samples.push(Sample {
                    track,
                    ts,
                    value: n.max(0) as f64,
                });
            }
        }
        self.t.samples.sort_by_key(|s| (s.ts, s.track));
        self.t.instants.sort_by_key(|i| i.ts);
        self.t
    }
}

impl Sink for TimelineSink {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        self.on_call(r);
        Ok(())
    }
    fn event(&mut self, r: &EventRecord) -> io::Result<()> {
        self.on_event(r);
        Ok(())
    }
    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sinks::{
        events::{BlockedRecord, IoRecord, Who},
        json::tests::record,
    };

    pub(crate) fn source(host: &str) -> Source {
        Source {
            host: host.into(),
            label: format!("{host}.zst"),
            wall: WallClock {
                offset_ns: 1_700_000_000_000_000_000,
            },
            targets: vec![(10, "java".into())],
            slow_ns: 100_000_000,
            devices: HashMap::new(),
        }
    }

    pub(crate) fn blocked(start_ns: u64, ms: f64, runq_ms: f64) -> BlockedRecord {
        BlockedRecord {
            kind: "blocked",
            pid: 10,
            tid: 11,
            thread: "SyncThread:1".into(),
            state: "D".into(),
            start_ns,
            start_unix_ms: 0,
            duration_ms: ms,
            runq_ms,
            syscall: Some("fdatasync".into()),
            waker: Some(Who {
                pid: 300,
                tid: 300,
                comm: "jbd2/loop0-8".into(),
                cgroup: None,
            }),
            waker_context: Some("task"),
            stack: vec!["jbd2_log_wait_commit".into()],
            after_call: false,
            since_before_tracing: false,
            still_off_at_end: false,
        }
    }

    pub(crate) fn io(queued: u64, issue: u64, complete: u64) -> IoRecord {
        IoRecord {
            kind: "io",
            dev: "7:0".into(),
            device: Some("loop0".into()),
            model: None,
            part: None,
            part_name: None,
            sector: Some(8),
            bytes: 4096,
            rwbs: "WS".into(),
            op: "write",
            sync: true,
            flush: false,
            fua: false,
            pid: 400,
            tid: 400,
            comm: "dd".into(),
            cgroup: None,
            charged_to: "dd (400)".into(),
            queued_ns: Some(queued),
            issue_ns: Some(issue),
            complete_ns: complete,
            queue_ms: Some((issue - queued) as f64 / 1e6),
            service_ms: Some((complete - issue) as f64 / 1e6),
            error: 0,
            requeues: 0,
            ino: None,
            dirtier: None,
            partial: false,
            in_flight_at_end: false,
            unmatched: false,
            late: false,
        }
    }

    #[test]
    fn calls_blocked_and_requests_land_on_their_tracks() {
        let mut s = TimelineSink::new();
        s.begin(source("zk1"));
        let mut c = record();
        c.start_ns = 1_000_000;
        c.duration_ms = 50.0;
        s.call(&c).unwrap();
        s.event(&EventRecord::Blocked(blocked(2_000_000, 40.0, 1.0)))
            .unwrap();
        // Two requests overlapping: two lanes.
        s.event(&EventRecord::Io(io(1_000_000, 2_000_000, 30_000_000)))
            .unwrap();
        s.event(&EventRecord::Io(io(1_500_000, 2_500_000, 20_000_000)))
            .unwrap();
        let t = s.finish();
        let th = t
            .tracks
            .iter()
            .find(|t| matches!(t.kind, TrackKind::Thread { real_tid: 11, .. }))
            .unwrap();
        assert_eq!(th.name, "SyncThread:1");
        let call = t.slices.iter().find(|s| s.cat == "syscall").unwrap();
        assert_eq!(call.track, th.uuid);
        assert_eq!(call.dur, 50_000_000);
        assert_eq!(call.start, 1_700_000_000_001_000_000);
        // Off-CPU slice and run-queue slice, one arrow from jbd2.
        let runq = t.slices.iter().find(|s| s.cat == "runq").unwrap();
        let flow = runq.flow_in.unwrap();
        let wake = t
            .instants
            .iter()
            .find(|i| i.flow_out == Some(flow))
            .unwrap();
        assert_eq!(wake.ts, runq.start);
        assert_eq!(t.track(wake.track).unwrap().name, "jbd2/loop0-8");
        let io: Vec<&Slice> = t.slices.iter().filter(|s| s.cat == "io").collect();
        assert_eq!(io.len(), 2);
        assert_ne!(
            io[0].track, io[1].track,
            "overlapping requests share a lane"
        );
        let inflight = t
            .tracks
            .iter()
            .find(|t| t.name == "loop0 in flight")
            .unwrap();
        let max = t
            .samples
            .iter()
            .filter(|s| s.track == inflight.uuid)
            .map(|s| s.value)
            .fold(0.0, f64::max);
        assert_eq!(max, 2.0);
    }

    #[test]
    fn two_recordings_of_one_process_stay_apart() {
        let mut s = TimelineSink::new();
        s.begin(source("zk1"));
        s.call(&record()).unwrap();
        s.begin(source("zk1"));
        s.call(&record()).unwrap();
        let t = s.finish();
        let pids: Vec<i32> = t
            .tracks
            .iter()
            .filter_map(|t| match t.kind {
                TrackKind::Process { pid, .. } => Some(pid),
                _ => None,
            })
            .collect();
        assert_eq!(pids, vec![10, 10 + (1 << 22)]);
    }
}
