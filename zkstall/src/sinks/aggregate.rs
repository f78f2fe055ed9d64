//! `report` for people who read recordings: filters (time window, pid, tid, verdict,
//! device) in front of the usual sink, and an aggregate over the whole recording (the
//! footer, or `--summary` alone): latency of every watched call by device and syscall
//! (percentiles and log2 histograms as bcc's biolatency/fsdist print them), stalls by
//! verdict, and the top contenders on the watched disks.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{CallRecord, EventRecord, Observation, Sink, Summary};
use crate::clock::WallClock;

/// What to keep. Times are CLOCK_MONOTONIC ns of the recording.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub pids: Vec<u32>,
    pub tids: Vec<u32>,
    pub verdicts: Vec<String>,
    /// Names (`loop1`, `sdb1`) or `MAJ:MIN`: a call matches on its file's device or the
    /// disk behind it; a request on its disk or partition.
    pub devices: Vec<String>,
}

impl Filter {
    fn in_time(&self, start: u64, end: u64) -> bool {
        self.since_ns.is_none_or(|s| end >= s) && self.until_ns.is_none_or(|u| start <= u)
    }

    fn task(&self, pid: u32, tid: u32) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.tids.is_empty() || self.tids.contains(&tid))
    }

    fn device(&self, names: &[Option<&str>]) -> bool {
        self.devices.is_empty()
            || names
                .iter()
                .flatten()
                .any(|n| self.devices.iter().any(|d| d == n))
    }

    pub fn call(&self, r: &CallRecord) -> bool {
        let end = r.start_ns + (r.visible_ms.unwrap_or(r.duration_ms) * 1e6) as u64;
        self.in_time(r.start_ns, end)
            && self.task(r.pid, r.tid)
            && self.device(&[r.device.as_deref(), r.disk.as_deref(), r.dev.as_deref()])
            && (self.verdicts.is_empty()
                || r.why
                    .as_ref()
                    .is_some_and(|w| self.verdicts.iter().any(|v| v == w.verdict.name())))
    }

    /// Events pass the time, task and device filters that apply to them (a verdict
    /// filter is for calls).
    pub fn event(&self, e: &EventRecord) -> bool {
        let ts = e.ts_field().or_else(|| e.start_ns()).unwrap_or(0);
        if !self.in_time(ts, ts) {
            return false;
        }
        match e {
            EventRecord::Io(r) => self.device(&[
                r.device.as_deref(),
                Some(r.dev.as_str()),
                r.part.as_deref(),
                r.part_name.as_deref(),
            ]),
            EventRecord::Blocked(r) => self.task(r.pid, r.tid),
            EventRecord::Thread(r) => self.task(r.pid, r.tid),
            EventRecord::Dirty(r) => self.device(&[r.device.as_deref(), Some(r.dev.as_str())]),
            EventRecord::Writeback(r) => self.device(&[r.device.as_deref(), Some(r.dev.as_str())]),
            EventRecord::Throttle(r) => self.task(r.pid, r.tid),
            EventRecord::Journal(r) => self.device(&[r.device.as_deref(), Some(r.dev.as_str())]),
            EventRecord::IoSummary(r) => self.device(&[r.device.as_deref(), Some(r.dev.as_str())]),
        }
    }

    fn active(&self) -> bool {
        self.since_ns.is_some()
            || self.until_ns.is_some()
            || !self.pids.is_empty()
            || !self.tids.is_empty()
            || !self.verdicts.is_empty()
            || !self.devices.is_empty()
    }
}

/// Passes on the records a [`Filter`] keeps (trace's --device): the run, its summary and
/// its observations are untouched.
pub struct Filtered<'a> {
    pub inner: &'a mut dyn Sink,
    pub filter: Filter,
}

impl Sink for Filtered<'_> {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        if self.filter.call(r) {
            self.inner.call(r)?;
        }
        Ok(())
    }
    fn event(&mut self, e: &EventRecord) -> io::Result<()> {
        if self.filter.event(e) {
            self.inner.event(e)?;
        }
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.inner.summary(s)
    }
    fn observe(&mut self, o: &Observation<'_>) {
        self.inner.observe(o)
    }
    fn clock(&mut self, wall: &WallClock) {
        self.inner.clock(wall)
    }
}

/// How much of the aggregate to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Nothing (JSON output without --summary: records only, as the live run printed).
    None,
    /// A few lines after the records (text).
    Footer,
    /// Only the aggregate, histograms included (--summary).
    Full,
}

#[derive(Debug, Serialize)]
pub struct LatencyRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub device: String,
    pub syscall: &'static str,
    pub calls: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// log2 buckets in microseconds: [low, high, count], as biolatency prints them.
    pub log2_us: Vec<(u64, u64, u64)>,
    /// A write-family syscall: only its calls slower than the threshold were traced, so
    /// this is their latency, not the syscall's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub slow_only: bool,
}

#[derive(Debug, Serialize)]
pub struct StallCounts {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub threshold_ms: f64,
    pub stalls: u64,
    pub by_verdict: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContenderTotal {
    pub who: String,
    pub bytes: u64,
    pub requests: u64,
    /// One of the traced processes.
    pub traced: bool,
}

#[derive(Debug, Serialize)]
pub struct ContenderRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub device: String,
    pub top: Vec<ContenderTotal>,
}

/// Wraps the sink `report` prints with: filters records, and aggregates.
pub struct ReportSink<W: Write> {
    inner: Box<dyn Sink>,
    out: W,
    filter: Filter,
    aggregate: Aggregate,
    json: bool,
    /// Print the --events records (the pipeline makes them anyway, for the aggregate).
    show_events: bool,
    devices: HashMap<String, String>,
    targets: Vec<u32>,
    latency: BTreeMap<(String, &'static str), Histogram<u64>>,
    verdicts: BTreeMap<&'static str, u64>,
    stalls: u64,
    contenders: BTreeMap<String, HashMap<String, ContenderTotal>>,
}

/// Calls up to an hour, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

impl<W: Write> ReportSink<W> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Box<dyn Sink>,
        out: W,
        filter: Filter,
        aggregate: Aggregate,
        json: bool,
        show_events: bool,
        devices: HashMap<String, String>,
        targets: Vec<u32>,
    ) -> Self {
        ReportSink {
            inner,
            out,
            filter,
            aggregate,
            json,
            show_events,
            devices,
            targets,
            latency: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            stalls: 0,
            contenders: BTreeMap::new(),
        }
    }

    fn latency_records(&self) -> Vec<LatencyRecord> {
        self.latency
            .iter()
            .map(|((dev, sc), h)| {
                let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e6;
                let mut buckets: Vec<(u64, u64, u64)> = Vec::new();
                for v in h.iter_recorded() {
                    let us = v.value_iterated_to() / 1000;
                    // biolatency's buckets: 0 -> 1, 2 -> 3, 4 -> 7, 8 -> 15...
                    let (lo, hi) = if us <= 1 {
                        (0, 1)
                    } else {
                        let b = 63 - us.leading_zeros();
                        (1u64 << b, (1u64 << (b + 1)) - 1)
                    };
                    match buckets.last_mut() {
                        Some(last) if last.0 == lo => last.2 += v.count_at_value(),
                        _ => buckets.push((lo, hi, v.count_at_value())),
                    }
                }
                // Fill the empty buckets in between, as biolatency does.
                let mut filled: Vec<(u64, u64, u64)> = Vec::new();
                for b in buckets {
                    while let Some(&(_, hi, _)) = filled.last() {
                        if hi + 1 >= b.0 {
                            break;
                        }
                        let lo = hi + 1;
                        filled.push((lo, lo * 2 - 1, 0));
                    }
                    filled.push(b);
                }
                LatencyRecord {
                    kind: "latency",
                    device: dev.clone(),
                    syscall: sc,
                    calls: h.len(),
                    p50_ms: ms(0.5),
                    p90_ms: ms(0.9),
                    p99_ms: ms(0.99),
                    p999_ms: ms(0.999),
                    max_ms: h.max() as f64 / 1e6,
                    log2_us: filled,
                    slow_only: zkstall_common::Syscall::ALL
                        .iter()
                        .any(|s| s.name() == *sc && s.is_write()),
                }
            })
            .collect()
    }

    fn contender_records(&self, top: usize) -> Vec<ContenderRecord> {
        self.contenders
            .iter()
            .map(|(dev, m)| {
                let mut v: Vec<ContenderTotal> = m.values().cloned().collect();
                v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.who.cmp(&b.who)));
                v.truncate(top);
                ContenderRecord {
                    kind: "contenders",
                    device: dev.clone(),
                    top: v,
                }
            })
            .collect()
    }

    fn write_aggregate(&mut self, s: &Summary) -> io::Result<()> {
        let full = self.aggregate == Aggregate::Full;
        let lat = self.latency_records();
        let counts = StallCounts {
            kind: "stall_counts",
            threshold_ms: s.threshold_ms,
            stalls: self.stalls,
            by_verdict: self.verdicts.clone(),
        };
        let cont = self.contender_records(if full { 10 } else { 3 });
        if self.json {
            for r in &lat {
                serde_json::to_writer(&mut self.out, r)?;
                writeln!(self.out)?;
            }
            serde_json::to_writer(&mut self.out, &counts)?;
            writeln!(self.out)?;
            for r in &cont {
                serde_json::to_writer(&mut self.out, r)?;
                writeln!(self.out)?;
            }
            return self.out.flush();
        }
        let o = &mut self.out;
        if self.filter.active() {
            writeln!(o, "(filtered: only what matches the filters given)")?;
        }
        writeln!(o, "latency of every watched call, by device and syscall:")?;
        if lat.is_empty() {
            writeln!(o, "  no calls")?;
        }
        for r in &lat {
            let syscall = if r.slow_only {
                format!("{} (slow)", r.syscall)
            } else {
                r.syscall.to_string()
            };
            writeln!(
                o,
                "  {:<10} {:<16} {:>7} calls  p50 {:>9.3} ms  p90 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms",
                r.device, syscall, r.calls, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
            )?;
            if full {
                let max = r.log2_us.iter().map(|b| b.2).max().unwrap_or(1).max(1);
                writeln!(o, "{:>20}{:<13}: count    distribution", "usecs", "")?;
                for &(lo, hi, n) in &r.log2_us {
                    let stars = (n * 40).div_ceil(max) as usize;
                    let stars = if n == 0 { 0 } else { stars.max(1) };
                    writeln!(
                        o,
                        "{:>20} -> {:<10}: {:<8} |{:<40}|",
                        lo,
                        hi,
                        n,
                        "*".repeat(stars)
                    )?;
                }
            }
        }
        if lat.iter().any(|r| r.slow_only) {
            writeln!(
                o,
                "  (slow): the write family is traced only when a call takes >= {} ms",
                counts.threshold_ms
            )?;
        }
        let by: Vec<String> = counts
            .by_verdict
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        writeln!(
            o,
            "stalls (calls >= {} ms) by verdict: {}",
            counts.threshold_ms,
            if by.is_empty() {
                "none".to_string()
            } else {
                by.join(", ")
            }
        )?;
        if !cont.is_empty() {
            writeln!(o, "top I/O on the watched disks, whole recording:")?;
        }
        for c in &cont {
            let who: Vec<String> = c
                .top
                .iter()
                .map(|t| {
                    format!(
                        "{}{} {} in {} request(s)",
                        t.who,
                        if t.traced { " [traced]" } else { "" },
                        crate::attribution::render::size(t.bytes),
                        t.requests
                    )
                })
                .collect();
            writeln!(o, "  {}: {}", c.device, who.join("; "))?;
        }
        o.flush()
    }
}

impl<W: Write> Sink for ReportSink<W> {
    fn call(&mut self, r: &CallRecord) -> io::Result<()> {
        if !self.filter.call(r) {
            return Ok(());
        }
        if !r.in_progress {
            self.stalls += 1;
            *self
                .verdicts
                .entry(r.why.as_ref().map_or("unknown", |w| w.verdict.name()))
                .or_default() += 1;
        }
        if self.aggregate == Aggregate::Full {
            return Ok(());
        }
        self.inner.call(r)
    }

    fn event(&mut self, e: &EventRecord) -> io::Result<()> {
        if !self.filter.event(e) {
            return Ok(());
        }
        if let EventRecord::Io(r) = e
            && !r.partial
        {
            let dev = r
                .device
                .clone()
                .or_else(|| self.devices.get(&r.dev).cloned())
                .unwrap_or_else(|| r.dev.clone());
            let c = self
                .contenders
                .entry(dev)
                .or_default()
                .entry(r.charged_to.clone())
                .or_insert_with(|| ContenderTotal {
                    who: r.charged_to.clone(),
                    bytes: 0,
                    requests: 0,
                    traced: self.targets.contains(&r.pid),
                });
            c.bytes += r.bytes as u64;
            c.requests += 1;
        }
        if self.show_events && self.aggregate != Aggregate::Full {
            self.inner.event(e)
        } else {
            Ok(())
        }
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        self.inner.summary(s)?;
        if self.aggregate != Aggregate::None {
            self.write_aggregate(s)?;
        }
        Ok(())
    }

    fn observe(&mut self, o: &Observation<'_>) {
        if let Observation::Call {
            syscall,
            dev,
            disk,
            duration_ns,
            pid,
            tid,
            start_ns,
            ..
        } = *o
        {
            let majmin = dev.map(|d| d.to_string());
            let name = majmin.as_ref().and_then(|m| self.devices.get(m).cloned());
            let f = &self.filter;
            if !f.in_time(start_ns, start_ns + duration_ns)
                || !f.task(pid, tid)
                || !f.device(&[name.as_deref(), majmin.as_deref(), disk])
            {
                return;
            }
            let dev = name.or(majmin).unwrap_or_else(|| "-".into());
            let _ = self
                .latency
                .entry((dev, syscall))
                .or_insert_with(histogram)
                .record(duration_ns.max(1));
        }
        self.inner.observe(o)
    }

    fn clock(&mut self, wall: &WallClock) {
        self.inner.clock(wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{
        JsonSink,
        json::tests::record,
        timeline::tests::{blocked, io},
    };

    struct Count(std::rc::Rc<std::cell::RefCell<(u32, u32)>>);
    impl Sink for Count {
        fn call(&mut self, _r: &CallRecord) -> io::Result<()> {
            self.0.borrow_mut().0 += 1;
            Ok(())
        }
        fn event(&mut self, _r: &EventRecord) -> io::Result<()> {
            self.0.borrow_mut().1 += 1;
            Ok(())
        }
        fn summary(&mut self, _s: &Summary) -> io::Result<()> {
            Ok(())
        }
    }

    fn obs(sink: &mut dyn Sink, ms: u64, tid: u32) {
        obs_call(sink, "fdatasync", false, ms, tid)
    }

    fn obs_call(sink: &mut dyn Sink, syscall: &'static str, write_family: bool, ms: u64, tid: u32) {
        sink.observe(&Observation::Call {
            syscall,
            write_family,
            thread: "SyncThread:1",
            dev: Some(crate::enrich::DevId {
                major: 259,
                minor: 1,
            }),
            disk: Some("loop0"),
            duration_ns: ms * 1_000_000,
            pid: 10,
            tid,
            start_ns: 0,
        });
    }

    #[test]
    fn filters_pass_only_what_matches() {
        let n = std::rc::Rc::new(std::cell::RefCell::new((0, 0)));
        let f = Filter {
            tids: vec![11],
            devices: vec!["loop0".into()],
            since_ns: Some(100),
            ..Default::default()
        };
        let mut s = ReportSink::new(
            Box::new(Count(n.clone())),
            Vec::new(),
            f,
            Aggregate::None,
            false,
            true,
            HashMap::new(),
            vec![],
        );
        s.call(&record()).unwrap(); // tid 11, loop0, start 123
        let mut other = record();
        other.tid = 12;
        s.call(&other).unwrap();
        let mut early = record();
        early.start_ns = 0;
        early.duration_ms = 0.00001;
        s.call(&early).unwrap();
        s.event(&EventRecord::Io(io(200, 300, 400))).unwrap();
        s.event(&EventRecord::Blocked(blocked(200, 1.0, 0.1)))
            .unwrap();
        let mut b = blocked(200, 1.0, 0.1);
        b.tid = 99;
        s.event(&EventRecord::Blocked(b)).unwrap();
        assert_eq!(*n.borrow(), (1, 2));
    }

    #[test]
    fn the_summary_has_percentiles_log2_buckets_verdicts_and_contenders() {
        let mut devices = HashMap::new();
        devices.insert("259:1".to_string(), "loop0p1".to_string());
        let mut out = Vec::new();
        {
            // --device names the disk behind the calls' partition: the histogram keeps
            // them, as the listing does.
            let mut s = ReportSink::new(
                Box::new(JsonSink::new(io::sink())),
                &mut out,
                Filter {
                    devices: vec!["loop0".into()],
                    ..Default::default()
                },
                Aggregate::Full,
                false,
                false,
                devices,
                vec![10],
            );
            for ms in [1, 1, 2, 3, 100] {
                obs(&mut s, ms, 11);
            }
            obs_call(&mut s, "write", true, 150, 11);
            s.event(&EventRecord::Io(io(0, 1, 2))).unwrap();
            s.event(&EventRecord::Io(io(0, 1, 2))).unwrap();
            s.call(&record()).unwrap();
            s.summary(&Summary {
                threshold_ms: 100.0,
                ..Default::default()
            })
            .unwrap();
            let lat = s.latency_records();
            assert_eq!(lat.len(), 2);
            assert_eq!((lat[1].syscall, lat[1].slow_only), ("write", true));
            assert!(!lat[0].slow_only);
            assert_eq!(lat[0].device, "loop0p1");
            assert_eq!(lat[0].calls, 5);
            assert!((lat[0].p50_ms - 2.0).abs() < 0.01, "{}", lat[0].p50_ms);
            assert!((lat[0].max_ms - 100.0).abs() < 0.1);
            // 1 ms = 1000 us is in 512..1023, 100 ms in 65536..131071; empty ones between.
            let b = &lat[0].log2_us;
            assert_eq!(b.first().unwrap().0, 512);
            assert_eq!(b.last().unwrap().0, 65536);
            assert!(b.windows(2).all(|w| w[1].0 == w[0].1 + 1));
            assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 5);
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("usecs"), "{text}");
        assert!(text.contains("write (slow)"), "{text}");
        assert!(
            text.contains("the write family is traced only when a call takes >= 100 ms"),
            "{text}"
        );
        assert!(
            text.contains("loop0: dd (400) 8 KB in 2 request(s)"),
            "{text}"
        );
        assert!(text.contains("by verdict: unknown 1"), "{text}");
    }
}
