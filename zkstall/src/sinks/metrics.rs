//! The agent's Prometheus metrics, through Prometheus' own Rust client
//! (`prometheus-client`, OpenMetrics text). Every metric the shipped alert rules and
//! dashboard use is registered here (a test checks it); names carry their unit.
//!
//! Label sets are bounded: a call's `thread` label is the kernel's thread name, and past
//! [`MAX_SERIES`] distinct (device, thread) pairs new ones are counted as `other`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Distinct (device, thread) label pairs of the call histogram at most.
pub const MAX_SERIES: usize = 128;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub device: String,
    pub thread: String,
    pub syscall: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskLabels {
    pub disk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Where records were shed: `reader` (the pipeline fell behind the ring buffer),
    /// `history` (attribution's bounded history), `recorder` (the flight recorder's
    /// budget).
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
    pub kernel: String,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    // 250 µs .. ~65 s: from a healthy fdatasync to the 30-50 s stalls of the field reports.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 19))
}

fn request_histogram() -> Histogram {
    // 20 µs .. ~42 s.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 22))
}

/// Everything the agent exports. Cheap to clone (the metrics are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub fsync_duration: HistFamily<CallLabels>,
    pub slow_writes: Family<CallLabels, Counter>,
    pub stalls: Family<VerdictLabels, Counter>,
    pub disk_inflight: Family<DiskLabels, Gauge>,
    pub disk_request_duration: HistFamily<DiskLabels>,
    pub records: Counter,
    pub records_dropped: Counter,
    pub records_shed: Family<StageLabels, Counter>,
    pub targets: Gauge,
    pub incidents: Counter,
    pub incident_errors: Counter,
    pub incident_in_progress: Gauge,
    pub recorder_bytes: Gauge,
    pub recorder_window_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub resident_bytes: Gauge,
    pub memory_limit_bytes: Gauge,
    pub cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub info: Family<InfoLabels, Gauge>,
    series: Arc<Mutex<HashSet<CallLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        let fsync_duration: HistFamily<CallLabels> =
            Family::new_with_constructor(call_histogram as fn() -> Histogram);
        r.register(
            "zkstall_fsync_duration_seconds",
            "Duration of the traced processes' fsync-family calls (fsync, fdatasync, sync_file_range, msync, ...), entry to exit, measured in the kernel",
            fsync_duration.clone(),
        );
        // The write family is traced only past the threshold: a count, not a latency
        // distribution (a histogram of it would have every bucket below the threshold empty).
        let slow_writes = Family::<CallLabels, Counter>::default();
        r.register(
            "zkstall_slow_writes",
            "The traced processes' write-family calls to files on disk (write, pwrite64, writev, ...) that took at least the threshold in the kernel (the only ones traced)",
            slow_writes.clone(),
        );
        let stalls = Family::<VerdictLabels, Counter>::default();
        r.register(
            "zkstall_stalls",
            "Calls at or above the threshold, by the verdict that explains them",
            stalls.clone(),
        );
        let disk_inflight = Family::<DiskLabels, Gauge>::default();
        r.register(
            "zkstall_disk_inflight_requests",
            "Requests issued to the device and not completed, on the disks behind the traced files",
            disk_inflight.clone(),
        );
        let disk_request_duration: HistFamily<DiskLabels> =
            Family::new_with_constructor(request_histogram as fn() -> Histogram);
        r.register(
            "zkstall_disk_request_duration_seconds",
            "Device service time (issue to completion) of requests on the disks behind the traced files",
            disk_request_duration.clone(),
        );
        let records = Counter::default();
        r.register(
            "zkstall_records",
            "Records received from the kernel",
            records.clone(),
        );
        let records_dropped = Counter::default();
        r.register(
            "zkstall_records_dropped",
            "Records the kernel could not deliver (ring buffer full)",
            records_dropped.clone(),
        );
        let records_shed = Family::<StageLabels, Counter>::default();
        r.register(
            "zkstall_records_shed",
            "Records or history entries given up to stay within bounds, by stage",
            records_shed.clone(),
        );
        let targets = Gauge::default();
        r.register(
            "zkstall_targets",
            "Processes traced now (ZooKeeper JVMs found, or --pid)",
            targets.clone(),
        );
        let incidents = Counter::default();
        r.register(
            "zkstall_incidents",
            "Incident recordings written",
            incidents.clone(),
        );
        let incident_errors = Counter::default();
        r.register(
            "zkstall_incident_errors",
            "Incident recordings that could not be written (disk full, permissions)",
            incident_errors.clone(),
        );
        let incident_in_progress = Gauge::default();
        r.register(
            "zkstall_incident_in_progress",
            "1 while an incident recording is being written",
            incident_in_progress.clone(),
        );
        let recorder_bytes = Gauge::default();
        r.register(
            "zkstall_flight_recorder_bytes",
            "Compressed bytes the flight recorder holds",
            recorder_bytes.clone(),
        );
        let recorder_window_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "zkstall_flight_recorder_window_seconds",
            "How far back the flight recorder reaches now (shorter than --window when its budget is full)",
            recorder_window_seconds.clone(),
        );
        let resident_bytes = Gauge::default();
        r.register(
            "zkstall_agent_resident_memory_bytes",
            "The agent's resident memory",
            resident_bytes.clone(),
        );
        let memory_limit_bytes = Gauge::default();
        r.register(
            "zkstall_agent_memory_limit_bytes",
            "The agent's memory bound (--max-memory)",
            memory_limit_bytes.clone(),
        );
        let cpu_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "zkstall_agent_cpu_seconds",
            "CPU time the agent used (user + system)",
            cpu_seconds.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        r.register(
            "zkstall_build_info",
            "1, labelled with zkstall's version and the kernel it runs on",
            info.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            fsync_duration,
            slow_writes,
            stalls,
            disk_inflight,
            disk_request_duration,
            records,
            records_dropped,
            records_shed,
            targets,
            incidents,
            incident_errors,
            incident_in_progress,
            recorder_bytes,
            recorder_window_seconds,
            resident_bytes,
            memory_limit_bytes,
            cpu_seconds,
            info,
            series: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// The same in Prometheus' older text format (0.0.4), for clients that do not ask for
    /// OpenMetrics (curl, promtool): counters' HELP and TYPE name their `_total` samples,
    /// and there is no `# EOF`.
    pub fn encode_prometheus_text(&self) -> String {
        let om = self.encode();
        let counters: HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len());
        for l in om.lines() {
            if l == "# EOF" || l.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
                let rest = l.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{p}{name}_total {tail}"))
            });
            match renamed {
                Some(r) => out.push_str(&r),
                None => out.push_str(l),
            }
            out.push('\n');
        }
        out
    }

    /// One watched fsync-family call's duration.
    pub fn observe_call(&self, syscall: &str, device: &str, thread: &str, seconds: f64) {
        let l = self.call_labels(syscall, device, thread);
        self.fsync_duration.get_or_create(&l).observe(seconds);
    }

    /// One write-family call slower than the threshold.
    pub fn observe_slow_write(&self, syscall: &str, device: &str, thread: &str) {
        let l = self.call_labels(syscall, device, thread);
        self.slow_writes.get_or_create(&l).inc();
    }

    /// A call's labels; past [`MAX_SERIES`] distinct ones, a new thread is `other`.
    fn call_labels(&self, syscall: &str, device: &str, thread: &str) -> CallLabels {
        let mut l = CallLabels {
            device: device.to_string(),
            thread: thread.to_string(),
            syscall: syscall.to_string(),
        };
        if let Ok(mut seen) = self.series.lock()
            && !seen.contains(&l)
        {
            if seen.len() >= MAX_SERIES {
                l.thread = "other".into();
            } else {
                seen.insert(l.clone());
            }
        }
        l
    }

    pub fn stall(&self, verdict: &str) {
        self.stalls
            .get_or_create(&VerdictLabels {
                verdict: verdict.to_string(),
            })
            .inc();
    }

    pub fn shed(&self, stage: &str, n: u64) {
        if n > 0 {
            self.records_shed
                .get_or_create(&StageLabels {
                    stage: stage.to_string(),
                })
                .inc_by(n);
        }
    }

    /// The names of every sample line this registry can produce (histograms as
    /// `_bucket`, `_sum`, `_count`; counters as `_total`).
    pub fn sample_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .encode()
            .lines()
            .filter(|l| l.starts_with("# TYPE "))
            .flat_map(|l| {
                let mut it = l["# TYPE ".len()..].split_whitespace();
                let name = it.next().unwrap_or("").to_string();
                let kind = it.next().unwrap_or("");
                match kind {
                    "counter" => vec![format!("{name}_total")],
                    "histogram" => vec![
                        format!("{name}_bucket"),
                        format!("{name}_sum"),
                        format!("{name}_count"),
                    ],
                    _ => vec![name],
                }
            })
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_open_metrics_with_units_in_names() {
        let m = Metrics::new();
        m.observe_call("fdatasync", "loop1", "SyncThread:0", 0.004);
        m.observe_slow_write("write", "loop1", "SyncThread:0");
        m.stall("device_stall");
        m.records.inc_by(10);
        let text = m.encode();
        assert!(
            text.contains("zkstall_slow_writes_total{device=\"loop1\",thread=\"SyncThread:0\",syscall=\"write\"} 1"),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("zkstall_fsync_duration") && l.contains("\"write\"")),
            "a slow write is no sample of the fsync family's latency: {text}"
        );
        assert!(
            text.contains("# TYPE zkstall_fsync_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("zkstall_fsync_duration_seconds_count{device=\"loop1\",thread=\"SyncThread:0\",syscall=\"fdatasync\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("zkstall_stalls_total{verdict=\"device_stall\"} 1"),
            "{text}"
        );
        assert!(text.contains("zkstall_records_total 10"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        let old = m.encode_prometheus_text();
        assert!(
            old.contains("# TYPE zkstall_records_total counter"),
            "{old}"
        );
        assert!(
            old.contains("# HELP zkstall_records_total Records"),
            "{old}"
        );
        assert!(!old.contains("# EOF"));
        let names = m.sample_names();
        assert!(
            names.contains(&"zkstall_stalls_total".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"zkstall_agent_resident_memory_bytes".to_string()));
    }

    /// Every `zkstall_*` metric the shipped alert rules and Grafana dashboard use.
    fn names_in(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        while let Some(off) = text[i..].find("zkstall_") {
            let start = i + off;
            let mut end = start;
            while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
                end += 1;
            }
            // Not part of a longer identifier (a file name, a uid).
            let before_ok =
                start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'-');
            if before_ok && !text[start..end].ends_with('_') {
                out.push(text[start..end].to_string());
            }
            i = end.max(start + 1);
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn every_metric_the_alert_rules_and_dashboard_name_is_exported() {
        let m = Metrics::new();
        // Families with labels appear once observed.
        m.observe_call("fdatasync", "sda", "SyncThread:0", 0.01);
        m.stall("device_stall");
        m.shed("reader", 1);
        m.disk_inflight
            .get_or_create(&DiskLabels { disk: "sda".into() })
            .set(1);
        m.disk_request_duration
            .get_or_create(&DiskLabels { disk: "sda".into() })
            .observe(0.001);
        m.info
            .get_or_create(&InfoLabels {
                version: "x".into(),
                kernel: "y".into(),
            })
            .set(1);
        let exported = m.sample_names();
        let rules = include_str!("../../../dist/prometheus/zkstall-rules.yml");
        let dashboard = include_str!("../../../dist/grafana/zkstall-dashboard.json");
        let used: Vec<String> = names_in(rules)
            .into_iter()
            .chain(names_in(dashboard))
            .collect();
        assert!(used.len() >= 10, "{used:?}");
        for n in &used {
            assert!(
                exported.contains(n),
                "{n} is used by the rules or dashboard but not exported; exported: {exported:?}"
            );
        }
    }

    #[test]
    fn thread_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_SERIES + 50) {
            m.observe_call("fsync", "sda", &format!("worker-{i}"), 0.001);
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("zkstall_fsync_duration_seconds_count"))
            .count();
        assert_eq!(series, MAX_SERIES + 1);
        assert!(text.contains("thread=\"other\""));
    }
}
