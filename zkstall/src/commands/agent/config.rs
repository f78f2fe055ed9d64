//! The agent's settings: defaults, then the config file (TOML), then flags.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::{
    cli::{AgentArgs, parse_duration, parse_size},
    commands::session::Requests,
    history::HistoryLimits,
};

pub const DEFAULT_CONFIG: &str = "/etc/zkstall/agent.toml";

/// Every setting, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub threshold: Duration,
    pub window: Duration,
    pub post: Duration,
    pub incident_dir: PathBuf,
    pub max_incidents: usize,
    pub max_incident_bytes: u64,
    pub metrics_addr: SocketAddr,
    pub max_memory: u64,
    pub pids: Vec<u32>,
    pub disks: Vec<String>,
    pub blocked_min: Duration,
    /// Name threads that started before tracing with one `jcmd Thread.print` per JVM.
    pub jcmd: bool,
    /// Which requests on the watched disks are sent one by one.
    pub requests: Requests,
    /// Where the settings came from (for the start-up log line).
    pub source: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            threshold: Duration::from_millis(500),
            window: Duration::from_secs(120),
            post: Duration::from_secs(30),
            incident_dir: PathBuf::from("/var/lib/zkstall/incidents"),
            max_incidents: 50,
            max_incident_bytes: 1 << 30,
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9477)),
            max_memory: 64 << 20,
            pids: Vec::new(),
            disks: Vec::new(),
            blocked_min: Duration::from_millis(1),
            jcmd: true,
            requests: Requests::AroundCalls,
            source: None,
        }
    }
}

/// The file's keys: each flag's name with underscores. Durations and sizes as strings
/// (`"500ms"`, `"64MiB"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    threshold: Option<String>,
    window: Option<String>,
    post: Option<String>,
    incident_dir: Option<PathBuf>,
    max_incidents: Option<usize>,
    max_incident_bytes: Option<SizeValue>,
    metrics_addr: Option<String>,
    max_memory: Option<SizeValue>,
    pids: Option<Vec<u32>>,
    disks: Option<Vec<String>>,
    blocked_min: Option<String>,
    jcmd: Option<bool>,
    requests: Option<Requests>,
}

/// A size as a string (`"64MiB"`) or a number of bytes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self, key: &str, file: &Path) -> anyhow::Result<u64> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => {
                parse_size(t).map_err(|e| anyhow::anyhow!("{}: {key}: {e}", file.display()))
            }
        }
    }
}

fn duration(v: &Option<String>, key: &str, file: &Path) -> anyhow::Result<Option<Duration>> {
    v.as_deref()
        .map(|s| parse_duration(s).map_err(|e| anyhow::anyhow!("{}: {key}: {e}", file.display())))
        .transpose()
}

impl AgentConfig {
    /// Defaults, the config file (`--config`, else /etc/zkstall/agent.toml if present),
    /// then the flags.
    pub fn load(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
        let mut c = AgentConfig::default();
        let path = match &args.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        if let Some(p) = &path {
            let text = std::fs::read_to_string(p).with_context(|| {
                format!(
                    "reading the agent's config {} (pass --config FILE, or leave it out to use the defaults)",
                    p.display()
                )
            })?;
            c.apply_file(&text, p)?;
            c.source = Some(p.clone());
        }
        c.apply_flags(args);
        c.check()?;
        Ok(c)
    }

    fn apply_file(&mut self, text: &str, file: &Path) -> anyhow::Result<()> {
        let f: FileConfig = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid agent config: {e}", file.display()))?;
        if let Some(v) = duration(&f.threshold, "threshold", file)? {
            self.threshold = v;
        }
        if let Some(v) = duration(&f.window, "window", file)? {
            self.window = v;
        }
        if let Some(v) = duration(&f.post, "post", file)? {
            self.post = v;
        }
        if let Some(v) = duration(&f.blocked_min, "blocked_min", file)? {
            self.blocked_min = v;
        }
        if let Some(v) = f.incident_dir {
            self.incident_dir = v;
        }
        if let Some(v) = f.max_incidents {
            self.max_incidents = v;
        }
        if let Some(v) = &f.max_incident_bytes {
            self.max_incident_bytes = v.bytes("max_incident_bytes", file)?;
        }
        if let Some(v) = &f.max_memory {
            self.max_memory = v.bytes("max_memory", file)?;
        }
        if let Some(v) = f.metrics_addr {
            self.metrics_addr = v.parse().map_err(|e| {
                anyhow::anyhow!(
                    "{}: metrics_addr {v:?}: {e} (e.g. \"127.0.0.1:9477\")",
                    file.display()
                )
            })?;
        }
        if let Some(v) = f.pids {
            self.pids = v;
        }
        if let Some(v) = f.disks {
            self.disks = v;
        }
        if let Some(v) = f.jcmd {
            self.jcmd = v;
        }
        if let Some(v) = f.requests {
            self.requests = v;
        }
        Ok(())
    }

    fn apply_flags(&mut self, a: &AgentArgs) {
        if let Some(v) = a.threshold {
            self.threshold = v;
        }
        if let Some(v) = a.window {
            self.window = v;
        }
        if let Some(v) = a.post {
            self.post = v;
        }
        if let Some(v) = a.blocked_min {
            self.blocked_min = v;
        }
        if let Some(v) = a.requests {
            self.requests = v;
        }
        if let Some(v) = &a.incident_dir {
            self.incident_dir = v.clone();
        }
        if let Some(v) = a.max_incidents {
            self.max_incidents = v;
        }
        if let Some(v) = a.max_incident_bytes {
            self.max_incident_bytes = v;
        }
        if let Some(v) = a.metrics_addr {
            self.metrics_addr = v;
        }
        if let Some(v) = a.max_memory {
            self.max_memory = v;
        }
        if !a.pids.is_empty() {
            self.pids = a.pids.clone();
        }
        if !a.disks.is_empty() {
            self.disks = a.disks.clone();
        }
        if a.no_jcmd {
            self.jcmd = false;
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.threshold.is_zero() {
            bail!(
                "the agent's threshold must be above 0 (every call would be an incident): e.g. --threshold 500ms"
            );
        }
        if self.max_memory < MIN_MEMORY {
            bail!(
                "--max-memory {} MiB is too small: the agent needs at least {} MiB (its programs, maps' mirrors and a minimal history)",
                self.max_memory >> 20,
                MIN_MEMORY >> 20
            );
        }
        if self.max_incidents == 0 {
            bail!("--max-incidents must be at least 1");
        }
        Ok(())
    }

    /// History caps, the flight recorder's budget and the reader's queue that keep the
    /// whole agent under `max_memory`. Measured here: the agent itself takes ~25 MiB
    /// ([`BASELINE`]: code, the ring buffer's mapping, BTF-derived tables, kernel
    /// symbols). Of the rest, a third for the recorder, half for attribution's history (an
    /// `Io` with its strings is ~300 bytes, an off-CPU interval ~250), a tenth for the
    /// reader's queue (~200 bytes a record), and some slack.
    pub fn budgets(&self) -> Budgets {
        let spare = self.max_memory.saturating_sub(BASELINE) as usize;
        let history = spare / 2;
        Budgets {
            recorder_bytes: spare / 3,
            history: HistoryLimits {
                // A power of two: a queue's buffer grows by doubling, so any other cap
                // would allocate up to twice the memory it is meant to.
                ios_per_disk: pow2_floor(history * 2 / 3 / 300)
                    .clamp(2_048, crate::history::MAX_IOS_PER_DISK),
                blocked: (history / 6 / 250).clamp(1_000, crate::history::MAX_BLOCKED),
                throttles: (history / 24 / 120).clamp(500, crate::history::MAX_THROTTLES),
                commits: (history / 24 / 200).clamp(200, crate::history::MAX_COMMITS),
            },
            channel_records: (spare / 10 / 200).clamp(1024, crate::reader::CHANNEL_RECORDS),
        }
    }
}

fn pow2_floor(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// What [`AgentConfig::budgets`] hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    pub recorder_bytes: usize,
    pub history: HistoryLimits,
    pub channel_records: usize,
}

/// The agent's own resident memory before it records anything (measured on the
/// development machine: 25 MiB, see the README's Cost section).
pub const BASELINE: u64 = 28 << 20;

/// Below this the agent cannot hold its own code and buffers.
pub const MIN_MEMORY: u64 = 40 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let mut c = AgentConfig::default();
        assert_eq!(c.threshold, Duration::from_millis(500));
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9477");
        c.apply_file(
            "threshold = \"1s\"\nwindow = \"5m\"\nmax_memory = \"96MiB\"\nmax_incident_bytes = 1000000\nincident_dir = \"/srv/zk\"\npids = [7]\n",
            Path::new("agent.toml"),
        )
        .unwrap();
        assert_eq!(c.threshold, Duration::from_secs(1));
        assert_eq!(c.window, Duration::from_secs(300));
        assert_eq!(c.max_memory, 96 << 20);
        assert_eq!(c.max_incident_bytes, 1_000_000);
        assert_eq!(c.pids, vec![7]);
        let args = AgentArgs {
            threshold: Some(Duration::from_millis(250)),
            ..Default::default()
        };
        c.apply_flags(&args);
        assert_eq!(c.threshold, Duration::from_millis(250));
        assert_eq!(c.window, Duration::from_secs(300), "the file's, no flag");
        c.check().unwrap();
    }

    #[test]
    fn bad_files_name_the_key() {
        let mut c = AgentConfig::default();
        let e = c
            .apply_file("treshold = \"1s\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("treshold"), "{e}");
        let e = c
            .apply_file("window = \"soon\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("window"), "{e}");
        let e = c
            .apply_file("max_memory = \"lots\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_memory"), "{e}");
        let e = c
            .apply_file("metrics_addr = \"here\"\n", Path::new("a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics_addr"), "{e}");
        c.max_memory = 1 << 20;
        assert!(c.check().unwrap_err().to_string().contains("too small"));
    }

    #[test]
    fn a_missing_config_given_explicitly_is_an_error() {
        let args = AgentArgs {
            config: Some(PathBuf::from("/nonexistent/agent.toml")),
            ..Default::default()
        };
        let e = AgentConfig::load(&args).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/agent.toml"), "{e}");
    }

    #[test]
    fn budgets_scale_with_memory() {
        let c = AgentConfig::default();
        let b = c.budgets();
        assert_eq!(b.recorder_bytes, (36 << 20) / 3);
        assert!(b.history.ios_per_disk == 32_768, "{b:?}");
        // What the budgets add up to stays under the bound.
        let worst = BASELINE as usize
            + b.recorder_bytes
            + b.history.ios_per_disk * 300
            + b.history.blocked * 250
            + b.channel_records * 200;
        assert!(worst < c.max_memory as usize, "{worst} {b:?}");
        let big = AgentConfig {
            max_memory: 1 << 30,
            ..Default::default()
        };
        assert!(big.budgets().history.ios_per_disk > b.history.ios_per_disk);
    }
}
