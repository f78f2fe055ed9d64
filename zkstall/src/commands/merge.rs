//! `zkstall merge REC REC...`: recordings of several hosts (or processes) on one wall
//! clock. Stalls that began within `--window` of the longest among them, on different
//! recordings, are a correlated stall: a cause below the hosts (shared storage, the hypervisor) is likely.
//! Each recording is replayed exactly as `report` does, so its stalls and verdicts are the
//! live run's; each host's clock uncertainty (adjtimex, recorded at trace time) widens the
//! window, and an unsynchronized clock is said plainly.

use std::{
    collections::BTreeMap,
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use super::report::{ReplayOptions, replay};
use crate::{
    cli::{Format, MergeArgs},
    clock::ClockSync,
    sinks::{CallRecord, EventRecord, Sink, Summary},
};

/// Collects a replay's final call records (not the "still running" ones).
#[derive(Default)]
struct Calls(Vec<CallRecord>);

impl Sink for Calls {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        if !r.in_progress {
            self.0.push(r.clone());
        }
        Ok(())
    }
    fn event(&mut self, _r: &EventRecord) -> io::Result<()> {
        Ok(())
    }
    fn summary(&mut self, _s: &Summary) -> io::Result<()> {
        Ok(())
    }
}

/// One recording, as merge shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RecordingInfo {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub recording: String,
    pub host: String,
    pub boot_id: String,
    pub pids: Vec<u32>,
    pub start_unix_ms: i64,
    pub end_unix_ms: i64,
    /// adjtimex at trace time; null for recordings made before it was recorded.
    pub clock: Option<ClockSync>,
    /// The recording ended without its trailer (what it holds is still used).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The traced ZooKeeper servers' ensembles, by pid (from their zoo.cfg).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ensembles: Vec<(u32, crate::targets::Ensemble)>,
}

/// What a correlated stall did to one ZooKeeper ensemble.
#[derive(Clone, Debug, Serialize)]
pub struct QuorumPicture {
    /// Its members, `N=address` (empty for standalone servers).
    pub ensemble: Vec<String>,
    pub size: usize,
    /// The ids (myid) of its members that stalled, and how many a quorum needs.
    pub stalled: Vec<u32>,
    pub quorum: usize,
    /// All of them stalled at once for this long.
    pub overlap_ms: f64,
    /// Too few members were left to commit writes while they were all stalled.
    pub lost_quorum: bool,
}

/// A stall of one recording, placed on the wall clock.
#[derive(Clone, Debug, Serialize)]
pub struct StallRef {
    pub recording: String,
    pub host: String,
    pub pid: u32,
    pub tid: u32,
    pub thread: String,
    pub syscall: &'static str,
    pub device: Option<String>,
    pub start_unix_ms: i64,
    /// The same, to the nanosecond (Unix ns).
    pub start_unix_ns: i128,
    pub duration_ms: f64,
    pub verdict: Option<&'static str>,
    pub headline: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unfinished: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorrelatedStall {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub recordings: Vec<String>,
    pub hosts: Vec<String>,
    pub start_unix_ms: i64,
    /// Between the first stall start of each recording involved.
    pub start_spread_ms: f64,
    /// How far the recordings' clocks may disagree (the two largest uncertainties of
    /// synchronized hosts; 0 between recordings of one boot of one host: one clock).
    pub clock_uncertainty_ms: f64,
    /// The window the stalls fell within: --window plus that uncertainty.
    pub window_ms: f64,
    /// Recordings whose host clock was not synchronized: their placement is only as
    /// good as that clock.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsynchronized: Vec<String>,
    /// Recordings stalled, out of all merged, and how long all of them were stalled
    /// together.
    pub members_stalled: usize,
    pub members: usize,
    pub overlap_ms: f64,
    /// Per ZooKeeper ensemble involved (known from the servers' zoo.cfg): which members
    /// stalled, and whether it kept a quorum.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quorum: Vec<QuorumPicture>,
    pub stalls: Vec<StallRef>,
}

#[derive(Clone, Debug, Serialize)]
pub struct HostStalls {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub recording: String,
    pub host: String,
    pub pids: Vec<u32>,
    pub stalls: usize,
    pub worst_ms: f64,
    pub by_verdict: BTreeMap<&'static str, u32>,
    /// Its stalls that were part of a correlated stall.
    pub correlated: usize,
}

/// The whole result, computed without printing (tests use it).
#[derive(Debug)]
pub struct Merged {
    pub recordings: Vec<RecordingInfo>,
    pub correlated: Vec<CorrelatedStall>,
    pub hosts: Vec<HostStalls>,
}

fn label(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Recording labels, made unique when two files share a name (`a/zk.zst`, `b/zk.zst`).
fn labels(files: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = files.iter().map(|f| label(f)).collect();
    names
        .iter()
        .map(|n| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                // Fall back to the path as given.
                String::new()
            } else {
                n.clone()
            }
        })
        .zip(files)
        .map(|(n, f)| {
            if n.is_empty() {
                f.display().to_string()
            } else {
                n
            }
        })
        .collect()
}

pub fn run(args: &MergeArgs) -> anyhow::Result<()> {
    if args.files.len() < 2 {
        anyhow::bail!("merge needs at least two recordings (for one, use `zkstall report`)");
    }
    let m = merge(&args.files, args.window, args.threshold)?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => {
            for r in &m.recordings {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            }
            for c in &m.correlated {
                serde_json::to_writer(&mut out, c)?;
                writeln!(out)?;
            }
            for h in &m.hosts {
                serde_json::to_writer(&mut out, h)?;
                writeln!(out)?;
            }
        }
        Format::Text => text(&m, args.window, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// Replays every recording and finds the stalls that began together.
pub fn merge(
    files: &[PathBuf],
    window: Duration,
    threshold: Option<Duration>,
) -> anyhow::Result<Merged> {
    let names = labels(files);
    let mut recordings = Vec::new();
    let mut stalls: Vec<(usize, StallRef, i128)> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let mut calls = Calls::default();
        let r = replay(
            f,
            &ReplayOptions {
                threshold,
                events: false,
                quiet: false,
                from_ns: None,
            },
            &mut calls,
        )?;
        let h = &r.header;
        let off = h.wall_offset_ns as i128;
        let end_mono = h.started_ns as f64 + r.summary.duration_s * 1e9;
        recordings.push(RecordingInfo {
            kind: "recording",
            recording: names[i].clone(),
            host: h.host.clone(),
            boot_id: h.boot_id.clone(),
            pids: h.targets.iter().map(|t| t.pid).collect(),
            start_unix_ms: ((h.started_ns as i128 + off) / 1_000_000) as i64,
            end_unix_ms: ((end_mono as i128 + off) / 1_000_000) as i64,
            clock: h.clock,
            truncated: r.truncated,
            ensembles: h
                .targets
                .iter()
                .filter_map(|t| Some((t.pid, t.ensemble.clone()?)))
                .collect(),
        });
        for c in calls.0 {
            // What the caller saw: from a preemption right before the entry, if any.
            let start = c.start_ns as i128 - (c.before_ms.unwrap_or(0.0) * 1e6) as i128 + off;
            let dur_ns = (c.visible_ms.unwrap_or(c.duration_ms) * 1e6) as i128;
            stalls.push((
                i,
                StallRef {
                    recording: names[i].clone(),
                    host: h.host.clone(),
                    pid: c.pid,
                    tid: c.tid,
                    thread: c.thread.clone(),
                    syscall: c.syscall,
                    device: c.device.clone().or_else(|| c.disk.clone()),
                    start_unix_ms: (start / 1_000_000) as i64,
                    start_unix_ns: start,
                    duration_ms: c.visible_ms.unwrap_or(c.duration_ms),
                    verdict: c.why.as_ref().map(|w| w.verdict.name()),
                    headline: c.why.as_ref().map(|w| w.headline.clone()),
                    unfinished: c.unfinished,
                },
                start + dur_ns,
            ));
        }
    }
    Ok(correlate(recordings, stalls, window))
}

/// How far the clocks of the recordings `which` may disagree: 0 within one boot of one
/// host; else the sum of the two largest uncertainties of synchronized clocks.
fn uncertainty(recs: &[RecordingInfo], which: &[usize]) -> (f64, Vec<String>) {
    let mut boots: Vec<&str> = which.iter().map(|&i| recs[i].boot_id.as_str()).collect();
    boots.sort();
    boots.dedup();
    if boots.len() <= 1 {
        return (0.0, Vec::new());
    }
    let mut unsync = Vec::new();
    let mut u: Vec<f64> = Vec::new();
    for &i in which {
        match recs[i].clock.and_then(|c| c.uncertainty_ms()) {
            Some(ms) => u.push(ms),
            None => unsync.push(recs[i].recording.clone()),
        }
    }
    u.sort_by(|a, b| b.total_cmp(a));
    (u.iter().take(2).sum(), unsync)
}

/// For each ZooKeeper ensemble with a member among the stalled servers of cluster `c`:
/// which members stalled, for how long all at once, and whether a quorum was left.
fn quorum_pictures(
    recordings: &[RecordingInfo],
    stalls: &[(usize, StallRef, i128)],
    c: &[usize],
) -> Vec<QuorumPicture> {
    // (ensemble key) -> (ensemble, member id -> its longest stall (start, end)).
    type Longest = BTreeMap<u32, (i128, i128)>;
    let mut by: BTreeMap<String, (crate::targets::Ensemble, Longest)> = BTreeMap::new();
    for &k in c {
        let (r, s, end) = &stalls[k];
        let Some((_, e)) = recordings[*r].ensembles.iter().find(|(p, _)| *p == s.pid) else {
            continue;
        };
        let Some(id) = e.myid.filter(|_| !e.servers.is_empty()) else {
            continue;
        };
        let entry = by
            .entry(e.key())
            .or_insert_with(|| (e.clone(), BTreeMap::new()));
        let span = entry.1.entry(id).or_insert((s.start_unix_ns, *end));
        if end - s.start_unix_ns > span.1 - span.0 {
            *span = (s.start_unix_ns, *end);
        }
    }
    by.into_values()
        .map(|(e, members)| {
            let size = e.servers.len();
            let quorum = size / 2 + 1;
            let overlap = members.values().map(|s| s.1).min().unwrap_or(0)
                - members.values().map(|s| s.0).max().unwrap_or(0);
            let overlap_ms = overlap.max(0) as f64 / 1e6;
            QuorumPicture {
                ensemble: e
                    .servers
                    .iter()
                    .map(|(n, a)| format!("{n}={}", a.split(';').next().unwrap_or(a)))
                    .collect(),
                size,
                stalled: members.keys().copied().collect(),
                quorum,
                overlap_ms,
                lost_quorum: size - members.len() < quorum && overlap_ms > 0.0,
            }
        })
        .collect()
}

pub fn correlate(
    recordings: Vec<RecordingInfo>,
    mut stalls: Vec<(usize, StallRef, i128)>,
    window: Duration,
) -> Merged {
    stalls.sort_by_key(|(_, s, _)| s.start_unix_ns);
    let all: Vec<usize> = (0..recordings.len()).collect();
    let (u_all, _) = uncertainty(&recordings, &all);
    let window_ns = window.as_nanos() as i128 + (u_all * 1e6) as i128;
    let clusters = clusters(&stalls, window_ns);
    let mut correlated = Vec::new();
    let mut in_correlated = vec![0usize; recordings.len()];
    for c in clusters {
        let mut recs: Vec<usize> = c.iter().map(|&k| stalls[k].0).collect();
        recs.sort();
        recs.dedup();
        if recs.len() < 2 {
            continue;
        }
        for &k in &c {
            in_correlated[stalls[k].0] += 1;
        }
        // The tightest alignment: the narrowest span of start times holding a stall of
        // every recording involved (a small stall of one host just before the common
        // stop would otherwise stretch the spread).
        let (lo, hi) = tightest(
            &c.iter()
                .map(|&k| (stalls[k].0, stalls[k].1.start_unix_ns))
                .collect::<Vec<_>>(),
            recs.len(),
        );
        let spread = hi - lo;
        // All stalled at once: from the latest start to the earliest end of each
        // recording's longest stall in the cluster.
        let longest: Vec<(i128, i128)> = recs
            .iter()
            .filter_map(|&r| {
                c.iter()
                    .map(|&k| &stalls[k])
                    .filter(|(i, _, _)| *i == r)
                    .max_by(|a, b| a.1.duration_ms.total_cmp(&b.1.duration_ms))
                    .map(|(_, s, end)| (s.start_unix_ns, *end))
            })
            .collect();
        let overlap =
            longest.iter().map(|l| l.1).min().unwrap() - longest.iter().map(|l| l.0).max().unwrap();
        let quorum = quorum_pictures(&recordings, &stalls, &c);
        let (u, unsync) = uncertainty(&recordings, &recs);
        let hosts = {
            let mut h: Vec<String> = recs.iter().map(|&r| recordings[r].host.clone()).collect();
            h.dedup();
            h
        };
        correlated.push(CorrelatedStall {
            kind: "correlated_stall",
            recordings: recs
                .iter()
                .map(|&r| recordings[r].recording.clone())
                .collect(),
            hosts,
            start_unix_ms: (lo / 1_000_000) as i64,
            start_spread_ms: spread as f64 / 1e6,
            clock_uncertainty_ms: u,
            window_ms: window.as_secs_f64() * 1e3 + u,
            unsynchronized: unsync,
            members_stalled: recs.len(),
            members: recordings.len(),
            overlap_ms: (overlap.max(0)) as f64 / 1e6,
            quorum,
            stalls: c.iter().map(|&k| stalls[k].1.clone()).collect(),
        });
    }
    let hosts = recordings
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mine: Vec<&StallRef> = stalls
                .iter()
                .filter(|(j, _, _)| *j == i)
                .map(|(_, s, _)| s)
                .collect();
            let mut by_verdict = BTreeMap::new();
            for s in &mine {
                *by_verdict
                    .entry(s.verdict.unwrap_or("unknown"))
                    .or_insert(0) += 1;
            }
            HostStalls {
                kind: "host_stalls",
                recording: r.recording.clone(),
                host: r.host.clone(),
                pids: r.pids.clone(),
                stalls: mine.len(),
                worst_ms: mine.iter().map(|s| s.duration_ms).fold(0.0, f64::max),
                by_verdict,
                correlated: in_correlated[i],
            }
        })
        .collect();
    Merged {
        recordings,
        correlated,
        hosts,
    }
}

/// Stalls (sorted by start) grouped by time, in order of their first start. Each cluster
/// grows around its longest stall: it takes every stall not yet taken that began within
/// the window of it, longest seeds first. (Clusters anchored at the first stall in time
/// let a small stall 240 ms before a common stop push one host's long stall out of its
/// cluster.)
fn clusters(stalls: &[(usize, StallRef, i128)], window_ns: i128) -> Vec<Vec<usize>> {
    let starts: Vec<i128> = stalls.iter().map(|(_, s, _)| s.start_unix_ns).collect();
    let mut by_length: Vec<usize> = (0..stalls.len()).collect();
    by_length.sort_by(|&a, &b| {
        stalls[b]
            .1
            .duration_ms
            .total_cmp(&stalls[a].1.duration_ms)
            .then(starts[a].cmp(&starts[b]))
    });
    let mut taken = vec![false; stalls.len()];
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for seed in by_length {
        if taken[seed] {
            continue;
        }
        let from = starts.partition_point(|&t| t < starts[seed] - window_ns);
        let c: Vec<usize> = (from..stalls.len())
            .take_while(|&k| starts[k] <= starts[seed] + window_ns)
            .filter(|&k| !taken[k])
            .collect();
        for &k in &c {
            taken[k] = true;
        }
        clusters.push(c);
    }
    clusters.sort_by_key(|c| starts[c[0]]);
    clusters
}

/// The narrowest [lo, hi] of start times (sorted by time) that holds a stall of each of
/// `n` distinct recordings (a sliding window).
fn tightest(starts: &[(usize, i128)], n: usize) -> (i128, i128) {
    let mut best = (starts[0].1, starts[starts.len() - 1].1);
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    let mut left = 0;
    for right in 0..starts.len() {
        *count.entry(starts[right].0).or_default() += 1;
        while count.len() == n {
            let (lo, hi) = (starts[left].1, starts[right].1);
            if hi - lo < best.1 - best.0 {
                best = (lo, hi);
            }
            let e = count.get_mut(&starts[left].0).unwrap();
            *e -= 1;
            if *e == 0 {
                count.remove(&starts[left].0);
            }
            left += 1;
        }
    }
    best
}

fn utc(ms: i64) -> String {
    crate::sinks::text::wall(ms)
}

fn clock_text(c: &Option<ClockSync>) -> String {
    match c {
        None => "clock discipline not recorded (older zkstall)".into(),
        Some(c) if !c.synchronized => format!(
            "clock NOT synchronized (no NTP discipline: adjtimex status {:#x}, max error {} ms): its times may be off by any amount",
            c.status,
            c.maxerror_us / 1000
        ),
        Some(c) => format!(
            "clock synchronized (offset {} us, max error {:.1} ms)",
            c.offset_us,
            c.maxerror_us as f64 / 1e3
        ),
    }
}

fn text(m: &Merged, window: Duration, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "recordings:")?;
    for r in &m.recordings {
        writeln!(
            out,
            "  {}: host {}, pid(s) {:?}, {} to {}; {}{}",
            r.recording,
            r.host,
            r.pids,
            utc(r.start_unix_ms),
            utc(r.end_unix_ms),
            clock_text(&r.clock),
            if r.truncated { " (no trailer)" } else { "" }
        )?;
    }
    let mut boots: Vec<&str> = m.recordings.iter().map(|r| r.boot_id.as_str()).collect();
    boots.sort();
    boots.dedup();
    if boots.len() == 1 {
        writeln!(
            out,
            "  all recordings come from one boot of one host: one clock, aligned exactly"
        )?;
    }
    writeln!(out)?;
    if m.correlated.is_empty() {
        writeln!(
            out,
            "no correlated stalls: no two recordings had stalls beginning within {} ms of each other",
            window.as_millis()
        )?;
    }
    for c in &m.correlated {
        writeln!(
            out,
            "correlated stall at {}: {} of {} recordings ({}) stalled, starts {:.1} ms apart (window {:.0} ms{})",
            utc(c.start_unix_ms),
            c.members_stalled,
            c.members,
            c.recordings.join(", "),
            c.start_spread_ms,
            c.window_ms,
            if c.clock_uncertainty_ms > 0.0 {
                format!(
                    ", widened by {:.1} ms of clock uncertainty",
                    c.clock_uncertainty_ms
                )
            } else {
                String::new()
            }
        )?;
        if !c.unsynchronized.is_empty() {
            writeln!(
                out,
                "  the clock of {} was not synchronized: that the starts line up is only as good as those clocks",
                c.unsynchronized.join(", ")
            )?;
        }
        let distinct_hosts = c.hosts.len() > 1;
        writeln!(
            out,
            "  {}",
            if distinct_hosts {
                "stalls beginning together on several hosts point below the hosts: shared storage (SAN, NFS, a cloud volume), the hypervisor, or the network; each host's own evidence follows"
            } else {
                "stalls beginning together in several processes of one host point below them: the disk, the filesystem or the host; each one's evidence follows"
            }
        )?;
        for s in &c.stalls {
            writeln!(
                out,
                "  {} ({}, pid {} {}): {} {:.0} ms on {} at {}: {}{}",
                s.recording,
                s.host,
                s.pid,
                s.thread,
                s.syscall,
                s.duration_ms,
                s.device.as_deref().unwrap_or("?"),
                utc(s.start_unix_ms),
                s.verdict.unwrap_or("unknown"),
                s.headline
                    .as_deref()
                    .map(|h| format!(": {h}"))
                    .unwrap_or_default()
            )?;
        }
        let verdicts: std::collections::BTreeSet<&str> = c
            .stalls
            .iter()
            .map(|s| s.verdict.unwrap_or("unknown"))
            .collect();
        if verdicts.len() == 1 && verdicts.contains("device_stall") {
            writeln!(
                out,
                "  on every one, its own device stopped completing requests (device_stall)"
            )?;
        }
        for q in &c.quorum {
            let ids: Vec<String> = q.stalled.iter().map(|i| format!("server.{i}")).collect();
            writeln!(
                out,
                "  quorum: ensemble of {} ({}): {} stalled together for {:.0} ms; a quorum needs {}: {}",
                q.size,
                q.ensemble.join(", "),
                ids.join(" and "),
                q.overlap_ms,
                q.quorum,
                if q.lost_quorum {
                    format!(
                        "with {} of {} left it could not commit writes for that long (the members still up elect, or wait, while the stalled ones time out)",
                        q.size - q.stalled.len(),
                        q.size
                    )
                } else {
                    format!(
                        "{} of {} stayed up, so it kept its quorum (the stalled ones fall behind and may drop out)",
                        q.size - q.stalled.len(),
                        q.size
                    )
                }
            )?;
        }
        if c.quorum.is_empty() {
            writeln!(
                out,
                "  quorum: {} of {} traced servers stalled together for {:.0} ms; none of their zoo.cfg names an ensemble (standalone servers, or not readable when traced)",
                c.members_stalled, c.members, c.overlap_ms,
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<28} {:<16} {:<14} {:>6} {:>10} {:>10}  verdicts",
        "recording", "host", "pids", "stalls", "worst ms", "correlated"
    )?;
    for h in &m.hosts {
        let verdicts: Vec<String> = h
            .by_verdict
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        writeln!(
            out,
            "{:<28} {:<16} {:<14} {:>6} {:>10.0} {:>10}  {}",
            h.recording,
            h.host,
            format!("{:?}", h.pids),
            h.stalls,
            h.worst_ms,
            h.correlated,
            verdicts.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, boot: &str, clock: Option<ClockSync>) -> RecordingInfo {
        RecordingInfo {
            kind: "recording",
            recording: name.into(),
            host: name.into(),
            boot_id: boot.into(),
            pids: vec![1],
            start_unix_ms: 0,
            end_unix_ms: 10_000,
            clock,
            truncated: false,
            ensembles: Vec::new(),
        }
    }

    fn member(name: &str, myid: u32) -> RecordingInfo {
        let mut r = rec(name, name, synced(1_000));
        r.ensembles = vec![(
            1,
            crate::targets::Ensemble {
                config: "/etc/zookeeper/conf/zoo.cfg".into(),
                servers: (1..=5).map(|n| (n, format!("zk{n}:2888:3888"))).collect(),
                myid: Some(myid),
            },
        )];
        r
    }

    #[test]
    fn the_quorum_picture_counts_the_members_of_each_ensemble_that_stalled() {
        // The motivating report: a five-member ensemble, three members stalling together
        // (a shared SAN): it loses its quorum while they are stalled.
        let recs = vec![member("a", 1), member("b", 2), member("c", 4)];
        let m = correlate(
            recs,
            vec![
                stall(0, "a", 1_000, 30_000.0),
                stall(1, "b", 1_001, 50_000.0),
                stall(2, "c", 1_002, 20_000.0),
            ],
            Duration::from_millis(250),
        );
        let q = &m.correlated[0].quorum;
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!((q[0].size, q[0].quorum), (5, 3));
        assert_eq!(q[0].stalled, vec![1, 2, 4]);
        assert!(q[0].lost_quorum);
        assert!(
            (q[0].overlap_ms - 20_000.0).abs() < 1e-6,
            "{}",
            q[0].overlap_ms
        );
        let mut out = Vec::new();
        text(&m, Duration::from_millis(250), &mut out).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(
            t.contains("quorum: ensemble of 5") && t.contains("could not commit writes"),
            "{t}"
        );
        // Two of five stalled: the ensemble kept its quorum.
        let recs = vec![member("a", 1), member("b", 2)];
        let m = correlate(
            recs,
            vec![stall(0, "a", 1_000, 3_000.0), stall(1, "b", 1_001, 3_000.0)],
            Duration::from_millis(250),
        );
        let q = &m.correlated[0].quorum[0];
        assert!(!q.lost_quorum, "{q:?}");
        // Standalone servers (no ensemble): said as such, no quorum claimed.
        let recs = vec![rec("a", "b1", None), rec("b", "b1", None)];
        let m = correlate(
            recs,
            vec![stall(0, "a", 1_000, 3_000.0), stall(1, "b", 1_001, 3_000.0)],
            Duration::from_millis(250),
        );
        assert!(m.correlated[0].quorum.is_empty());
        let mut out = Vec::new();
        text(&m, Duration::from_millis(250), &mut out).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.contains("none of their zoo.cfg names an ensemble"), "{t}");
    }

    fn stall(i: usize, name: &str, start_ms: i128, dur_ms: f64) -> (usize, StallRef, i128) {
        let start = start_ms * 1_000_000;
        (
            i,
            StallRef {
                recording: name.into(),
                host: name.into(),
                pid: 1,
                tid: 2,
                thread: "SyncThread:0".into(),
                syscall: "fdatasync",
                device: Some("sdb".into()),
                start_unix_ms: start_ms as i64,
                start_unix_ns: start,
                duration_ms: dur_ms,
                verdict: Some("device_stall"),
                headline: None,
                unfinished: false,
            },
            start + (dur_ms * 1e6) as i128,
        )
    }

    fn synced(maxerror_us: i64) -> Option<ClockSync> {
        Some(ClockSync {
            maxerror_us,
            synchronized: true,
            ..Default::default()
        })
    }

    #[test]
    fn a_small_stall_just_before_does_not_stretch_the_spread() {
        let recs = vec![rec("a", "b1", None), rec("b", "b1", None)];
        let stalls = vec![
            stall(0, "a", 863, 15.0),
            stall(0, "a", 1_000, 3_000.0),
            stall(1, "b", 1_001, 3_000.0),
        ];
        let m = correlate(recs, stalls, Duration::from_millis(250));
        assert_eq!(m.correlated.len(), 1);
        let c = &m.correlated[0];
        assert!(
            (c.start_spread_ms - 1.0).abs() < 1e-6,
            "{}",
            c.start_spread_ms
        );
        assert_eq!(c.start_unix_ms, 1_000);
        assert!((c.overlap_ms - 2_999.0).abs() < 1e-6, "{}", c.overlap_ms);
    }

    #[test]
    fn stalls_beginning_together_on_two_hosts_correlate() {
        let recs = vec![
            rec("a", "b1", synced(5_000)),
            rec("b", "b2", synced(10_000)),
        ];
        let stalls = vec![
            stall(0, "a", 1_000, 3_000.0),
            stall(1, "b", 1_040, 2_900.0),
            // Far apart: not correlated.
            stall(0, "a", 6_000, 200.0),
            stall(1, "b", 9_000, 200.0),
        ];
        let m = correlate(recs, stalls, Duration::from_millis(250));
        assert_eq!(m.correlated.len(), 1);
        let c = &m.correlated[0];
        assert_eq!(c.recordings, vec!["a", "b"]);
        assert!((c.start_spread_ms - 40.0).abs() < 1e-6);
        assert!((c.clock_uncertainty_ms - 15.0).abs() < 1e-6);
        assert!((c.overlap_ms - 2_900.0).abs() < 1e-6, "{}", c.overlap_ms);
        assert_eq!(m.hosts[0].stalls, 2);
        assert_eq!(m.hosts[0].correlated, 1);
    }

    #[test]
    fn the_window_widens_by_the_clocks_uncertainty_and_unsynchronized_clocks_are_named() {
        // 300 ms apart: outside a 250 ms window, inside it widened by 60 ms of error.
        let recs = vec![
            rec("a", "b1", synced(30_000)),
            rec("b", "b2", synced(30_000)),
        ];
        let m = correlate(
            recs,
            vec![stall(0, "a", 1_000, 500.0), stall(1, "b", 1_300, 500.0)],
            Duration::from_millis(250),
        );
        assert_eq!(m.correlated.len(), 1);
        let unsync = Some(ClockSync::default());
        let recs = vec![rec("a", "b1", unsync), rec("b", "b2", synced(1_000))];
        let m = correlate(
            recs,
            vec![stall(0, "a", 1_000, 500.0), stall(1, "b", 1_100, 500.0)],
            Duration::from_millis(250),
        );
        assert_eq!(m.correlated[0].unsynchronized, vec!["a"]);
        let mut out = Vec::new();
        text(&m, Duration::from_millis(250), &mut out).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.contains("NOT synchronized"), "{t}");
        assert!(t.contains("was not synchronized"), "{t}");
    }

    #[test]
    fn a_small_stall_a_window_before_does_not_split_a_common_stop() {
        // b's small stall 241 ms before its long one; a's long one starts 20 ms after b's:
        // more than a window after the small one.
        let recs = vec![rec("a", "b1", None), rec("b", "b1", None)];
        let stalls = vec![
            stall(1, "b", 844, 16.0),
            stall(0, "a", 902, 24.0),
            stall(1, "b", 1_085, 3_045.0),
            stall(0, "a", 1_105, 3_026.0),
        ];
        let m = correlate(recs, stalls, Duration::from_millis(250));
        let long: Vec<&CorrelatedStall> = m
            .correlated
            .iter()
            .filter(|c| c.stalls.iter().any(|s| s.duration_ms > 1_000.0))
            .collect();
        assert_eq!(long.len(), 1, "{:#?}", m.correlated.len());
        let c = long[0];
        for r in ["a", "b"] {
            assert!(
                c.stalls
                    .iter()
                    .any(|s| s.recording == r && s.duration_ms > 3_000.0),
                "{r}"
            );
        }
        assert!(
            (c.start_spread_ms - 20.0).abs() < 1e-6,
            "{}",
            c.start_spread_ms
        );
        assert!((c.overlap_ms - 3_025.0).abs() < 1e-6, "{}", c.overlap_ms);
    }

    #[test]
    fn one_host_stalling_alone_is_not_correlated() {
        let recs = vec![rec("a", "b1", None), rec("b", "b1", None)];
        let m = correlate(
            recs,
            vec![stall(0, "a", 1_000, 500.0), stall(0, "a", 1_010, 500.0)],
            Duration::from_millis(250),
        );
        assert!(m.correlated.is_empty());
    }
}
