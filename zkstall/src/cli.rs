//! Command-line interface (clap derive; doc comments are the help text).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "zkstall",
    version,
    about = "Explains storage stalls of JVM services (ZooKeeper first) from the kernel's point of view",
    long_about = "zkstall traces fsync-family syscalls of ZooKeeper (or any process) with eBPF \
tracepoints and explains each slow call: a verdict (host_freeze, device_stall, \
cpu_starvation, jvm_pause, memory_reclaim, low_space, dirty_throttle, io_throttled, device_contention, \
journal_wait, own_io, fs_blocked, unknown), the chain of waits behind it and its time by \
stage, the processes competing for each disk under the file, and what the process's \
threads were doing meanwhile. Recordings (trace --output) are read back by report with \
the same answers.\n\n\
Needs Linux >= 5.8 with tracefs and BTF (/sys/kernel/btf/vmlinux), and root (or CAP_BPF + \
CAP_PERFMON + CAP_DAC_READ_SEARCH; `zkstall check` lists every capability used and the \
one setcap line that grants them).",
    after_help = "Examples:\n  \
sudo zkstall check                      # can zkstall trace on this host?\n  \
sudo zkstall trace                      # every ZooKeeper JVM, calls >= 100 ms, until Ctrl-C\n  \
sudo zkstall trace --pid 4242 --threshold 0 --duration 30s --format json\n  \
sudo zkstall trace --output zk1.zst          # and keep a recording\n  \
zkstall report zk1.zst                       # later, anywhere: the same answers\n  \
sudo zkstall agent                      # always on: flight recorder, incidents, metrics\n  \
sudo zkstall demo                       # trace a built-in fsync workload"
)]
pub struct Cli {
    /// More diagnostics on stderr: -v zkstall's own, -vv all of them, -vvv also the
    /// loader's (aya) and every library's.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Print times in the host's local time zone (as ZooKeeper's log4j does), not UTC.
    /// JSON keeps `start_unix_ms`/`unix_ms` either way.
    #[arg(long, global = true)]
    pub localtime: bool,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Folds synonyms into the options they stand for (`-j` is `--format json`).
    pub fn normalize(&mut self) {
        let json = |f: &mut Format, j: bool| {
            if j {
                *f = Format::Json;
            }
        };
        match &mut self.command {
            Command::Trace(a) => json(&mut a.format, a.json),
            Command::Report(a) => json(&mut a.format, a.json),
            Command::Merge(a) => json(&mut a.format, a.json),
            Command::Demo(a) => json(&mut a.format, a.json),
            _ => {}
        }
    }

    /// The tracing filter for `-v` levels (ZKSTALL_LOG overrides it).
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "warn,zkstall=info",
            1 => "warn,zkstall=debug",
            2 => "info,zkstall=trace",
            _ => "trace",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that tracing can work here: kernel, BTF, tracefs, privileges, ring buffer,
    /// every tracepoint used. Exits non-zero naming what is missing and how to fix it.
    Check,
    /// Trace fsync-family calls of ZooKeeper JVMs (or --pid) and explain the slow ones.
    #[command(after_help = "Examples:\n  \
zkstall trace                                  # all ZooKeeper JVMs, until Ctrl-C\n  \
zkstall trace --pid 4242 --pid 4343            # these processes (all their threads)\n  \
zkstall trace --threshold 0 --duration 10s     # every call, for 10 seconds\n  \
zkstall trace --format json | jq .duration_ms  # JSON lines for other tools\n  \
zkstall trace --pid 4242 --events --format json # also block I/O, thread states, writeback...\n\n\
With --pid, tracing ends when every traced process has exited. Without it, zkstall finds \
ZooKeeper servers by their main class (QuorumPeerMain, ZooKeeperServerMain) and keeps \
looking for new ones (a restarted server is picked up).")]
    Trace(TraceArgs),
    /// Read a recording (made by `trace --output`) and print what the live run printed:
    /// the same analysis code, no root or BPF needed.
    #[command(after_help = "Examples:\n  \
zkstall report zk1.zst                      # the slow calls, explained\n  \
zkstall report zk1.zst --threshold 500ms    # only the worst\n  \
zkstall report zk1.zst --format json --events")]
    Report(ReportArgs),
    /// Run always on: trace every ZooKeeper JVM (found whenever it starts), keep a
    /// bounded flight recorder of the last minutes, write an incident recording when a
    /// call crosses the threshold (or on SIGUSR1, or POST /trigger), and serve Prometheus
    /// metrics.
    #[command(after_help = "Examples:\n  \
zkstall agent                                   # defaults, or /etc/zkstall/agent.toml if present\n  \
zkstall agent --config /etc/zkstall/agent.toml  # settings from a file (flags override it)\n  \
zkstall agent --threshold 1s --window 5m --incident-dir /srv/zkstall\n  \
curl -s 127.0.0.1:9477/metrics                  # Prometheus metrics\n  \
curl -s -XPOST 127.0.0.1:9477/trigger           # write an incident now (prints its path)\n  \
kill -USR1 $(pidof zkstall)                     # the same\n  \
zkstall report /var/lib/zkstall/incidents/zkstall-incident-...zst\n\n\
Every setting is a flag and a key of the config file (TOML, the flag's name with \
underscores: threshold = \"500ms\", max_memory = \"64MiB\", incident_dir = \"...\"). \
Incident files are 0600, named zkstall-incident-<host>-<UTC time>-<why>.zst; the oldest \
are removed past --max-incidents or --max-incident-bytes. The agent's memory (RSS) stays \
under --max-memory: its history and flight recorder are sized from it, and the recorder \
sheds its oldest chunks (counted, and said in incidents) when a flood would exceed it.")]
    Agent(AgentArgs),
    /// Write recordings as a timeline: a Perfetto trace (ui.perfetto.dev,
    /// trace_processor), Chrome trace-event JSON, or JSON lines of every record.
    #[command(after_help = "Examples:\n  \
zkstall export zk1.zst -o zk1.pftrace           # open in ui.perfetto.dev\n  \
zkstall export zk1.zst zk2.zst zk3.zst -o ensemble.pftrace  # hosts aligned on wall clock\n  \
zkstall export zk1.zst -o zk1.json              # chrome://tracing\n  \
zkstall export zk1.zst --jsonl | jq 'select(.type == \"io\")'\n\n\
The timeline has a process track per traced JVM (per recording: host and pid), a thread \
track per thread with a slice per call (args: path, device, verdict, headline) and a \
verdict marker on the slow ones; each thread's off-CPU intervals (state, syscall, waker, \
stack) with arrows from the waker; per disk: requests in flight, MB/s (all and by whom), a \
slice per request; journal commits and writeback. Recordings are placed on wall-clock \
time; process and thread ids of the second and later recordings are offset by n << 22 to \
keep them apart (the real ones are in the names and labels).")]
    Export(ExportArgs),
    /// Put recordings of several hosts (or processes) on one wall clock and find the
    /// stalls that began together: a cause below the hosts (shared storage, the
    /// hypervisor) is then likely. Per-host table of stalls and verdicts.
    #[command(after_help = "Examples:\n  \
zkstall merge zk1.zst zk2.zst zk3.zst                 # one ensemble's recordings\n  \
zkstall merge --window 1s --format json zk*.zst | jq 'select(.type == \"correlated_stall\")'\n\n\
Each recording carries its host's mapping from the monotonic clock to wall-clock time and \
the host's clock discipline at trace time (adjtimex: offset, max error, NTP sync): the \
window widens by the clocks' combined uncertainty, and a clock that was not synchronized \
is named. Recordings of one boot of one host share one clock and align exactly.")]
    Merge(MergeArgs),
    /// Run a built-in workload (a thread named SyncThread:1 doing fsync and fdatasync) and
    /// trace it, comparing zkstall's durations with the workload's own.
    Demo(DemoArgs),
    /// The demo's workload (used by the demo and the tests).
    #[command(hide = true)]
    Workload(WorkloadArgs),
    /// The bench's floor: a program that looks up a map and returns, on every hook trace
    /// and agent use, until SIGINT or SIGTERM (`cargo xtask bench` compares with it).
    #[command(hide = true)]
    Floor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One readable line per call.
    Text,
    /// One JSON object per line (see the README for the fields).
    Json,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Process to trace (repeatable). Default: every ZooKeeper JVM on the host.
    #[arg(short, long = "pid", value_name = "PID", value_parser = parse_pid, allow_hyphen_values = true)]
    pub pids: Vec<u32>,
    /// Stop after this long (`30s`, `5m`). Default: until Ctrl-C or SIGTERM.
    #[arg(short, long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Report calls at or above this duration (`100ms`, `1s`; a bare number is
    /// milliseconds, as in bcc's tools: `5` is 5ms; `0` reports every call).
    #[arg(short, long, default_value = "100ms", value_parser = parse_threshold, allow_hyphen_values = true)]
    pub threshold: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The same as `--format json`.
    #[arg(short = 'j', long = "json", conflicts_with = "format")]
    pub json: bool,
    /// Also stream what happens around the calls: block I/O (io), off-CPU intervals of
    /// the target's threads (blocked), thread changes (thread), page dirtying (dirty),
    /// flusher writeback (writeback), dirty throttling (throttle), journal commits
    /// (journal). Verbose: meant for debugging and timelines.
    #[arg(short, long)]
    pub events: bool,
    /// Off-CPU intervals of the target's threads from this long are kept (for the
    /// verdicts' thread timelines, and printed with --events).
    #[arg(long, default_value = "1ms", value_parser = parse_duration, allow_hyphen_values = true)]
    pub blocked_min: Duration,
    /// Which requests on the watched disks are traced one by one: `all`, or `around-calls`
    /// (those a traced call overlapped, the traced processes' own, those slower than
    /// 10 ms and any unusual one; the rest are summed per disk each second). With
    /// `around-calls` a request is not followed while no traced call is in flight: one a
    /// call then overlaps is seen at its completion, without its submitter unless its
    /// pages' file names who dirtied them; verdicts say so rather than guess (a running
    /// call's disk is unknown while such requests are in flight). Before a call, summed
    /// requests count as others' I/O without their submitter.
    #[arg(long, value_enum, default_value = "all")]
    pub requests: crate::commands::session::Requests,
    /// Also write a recording to FILE (compressed), for `zkstall report` anywhere later.
    /// An existing FILE is refused unless --force.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite the --output file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Also trace the requests of this disk one by one (repeatable): a name (`sdb`,
    /// `loop3`), `MAJ:MIN`, or a path on the filesystem it holds. The disks behind the
    /// traced processes' files are always traced; other disks are only counted.
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<String>,
    /// Only print calls (and --events records) on this device: its name (`sdb1`), the
    /// disk behind it (`sdb`), or `MAJ:MIN` (repeatable). Everything is still traced.
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// Only trace processes in this cgroup or below (repeatable): a path as
    /// /proc/PID/cgroup shows it (`/system.slice/zookeeper.service`) or its directory
    /// under /sys/fs/cgroup, v1 or v2.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Do not run `jcmd PID Thread.print` to name a JVM's threads that started before
    /// tracing (it runs once per JVM, only where the kernel's names are cut at 15
    /// characters or all `java` as on JDK 8, and costs the JVM one safepoint; threads
    /// started later are named by HotSpot's own probes either way).
    #[arg(long)]
    pub no_jcmd: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A recording written by `zkstall trace --output`.
    pub file: PathBuf,
    /// Report calls at or above this duration (a bare number is milliseconds). Default:
    /// the threshold the recording was made with (write-family calls below it were never
    /// recorded).
    #[arg(short, long, value_parser = parse_threshold, allow_hyphen_values = true)]
    pub threshold: Option<Duration>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The same as `--format json`.
    #[arg(short = 'j', long = "json", conflicts_with = "format")]
    pub json: bool,
    /// Also print the recorded block I/O, off-CPU intervals, writeback... (as trace --events).
    #[arg(short, long)]
    pub events: bool,
    /// Only what happened from this time: wall clock (`2026-12-03T23:05:14Z`,
    /// `2026-12-03 23:05:14.250`, `23:05:14` on the recording's first day, all UTC), or
    /// relative to the start of the recording (`+30s`, `2m`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only what happened until this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only calls of this process (repeatable).
    #[arg(short, long = "pid", value_name = "PID", value_parser = parse_pid, allow_hyphen_values = true)]
    pub pids: Vec<u32>,
    /// Only calls of this thread (repeatable).
    #[arg(long = "tid", value_name = "TID")]
    pub tids: Vec<u32>,
    /// Only calls with this verdict (repeatable).
    #[arg(long = "verdict", value_name = "VERDICT", value_parser = parse_verdict)]
    pub verdicts: Vec<String>,
    /// Only calls on this device (its name, `sdb1`, the disk behind it, `sdb`, or
    /// `MAJ:MIN`; repeatable).
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<String>,
    /// Print only the aggregate over the recording: latency of every watched call by
    /// device and syscall (percentiles, log2 histograms), stalls by verdict, top
    /// contenders. (Text output ends with a short form of it anyway.)
    #[arg(long)]
    pub summary: bool,
}

/// A verdict's name, as zkstall prints them.
pub fn parse_verdict(s: &str) -> Result<String, String> {
    let names: Vec<&str> = crate::attribution::Verdict::ALL
        .iter()
        .map(|v| v.name())
        .collect();
    if names.contains(&s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a verdict; one of: {}",
            names.join(", ")
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Perfetto's native protobuf trace.
    Perfetto,
    /// Chrome trace-event JSON.
    Chrome,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Recordings (from `trace --output`, or the agent's incidents).
    #[arg(required = true, value_name = "RECORDING")]
    pub files: Vec<PathBuf>,
    /// Where to write: `.json` means Chrome trace-event JSON, anything else a Perfetto
    /// trace (`.pftrace`). With --jsonl, default stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The timeline's format, whatever the file is named.
    #[arg(long = "as", value_enum, value_name = "FORMAT")]
    pub format: Option<ExportFormat>,
    /// Instead of a timeline: every record (calls and --events records) as JSON lines,
    /// each with `ts_ns` (CLOCK_MONOTONIC) and `unix_ms`.
    #[arg(long)]
    pub jsonl: bool,
    /// Calls from this long are exported (a bare number is milliseconds) [default: 0,
    /// every call the recording holds].
    #[arg(short, long, value_parser = parse_threshold, allow_hyphen_values = true)]
    pub threshold: Option<Duration>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Two or more recordings.
    #[arg(required = true, num_args = 2.., value_name = "RECORDING")]
    pub files: Vec<PathBuf>,
    /// Stalls of different recordings beginning within this long of each other are one
    /// correlated stall (widened by the clocks' uncertainty).
    #[arg(short, long, default_value = "250ms", value_parser = parse_duration, allow_hyphen_values = true)]
    pub window: Duration,
    /// A stall is a call at least this long (a bare number is milliseconds) [default:
    /// each recording's own threshold].
    #[arg(short, long, value_parser = parse_threshold, allow_hyphen_values = true)]
    pub threshold: Option<Duration>,
    /// Output format: text, or JSON lines (recording, correlated_stall, host_stalls).
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The same as `--format json`.
    #[arg(short = 'j', long = "json", conflicts_with = "format")]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct AgentArgs {
    /// Settings file (TOML). Default: /etc/zkstall/agent.toml when it exists.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A watched call this long is a stall: explained, counted, and an incident (a bare
    /// number is milliseconds) [default: 500ms].
    #[arg(short, long, value_parser = parse_threshold, allow_hyphen_values = true)]
    pub threshold: Option<Duration>,
    /// History kept before a trigger, written into its incident [default: 2m].
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub window: Option<Duration>,
    /// Recording goes on this long after the last trigger [default: 30s].
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub post: Option<Duration>,
    /// Where incident files go [default: /var/lib/zkstall/incidents].
    #[arg(long, value_name = "DIR")]
    pub incident_dir: Option<PathBuf>,
    /// Incident files kept at most (the oldest go first) [default: 50].
    #[arg(long, value_name = "N")]
    pub max_incidents: Option<usize>,
    /// Bytes of incident files kept at most (`1GiB` = 2^30, `500MB` = 500 x 10^6, as sizes are
    /// printed) [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_incident_bytes: Option<u64>,
    /// Address of the HTTP server for /metrics and POST /trigger [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The agent's whole resident memory stays under this (`64MiB`) [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Trace these processes (repeatable) instead of finding ZooKeeper JVMs.
    #[arg(short, long = "pid", value_name = "PID", value_parser = parse_pid, allow_hyphen_values = true)]
    pub pids: Vec<u32>,
    /// Also trace the requests of this disk one by one (repeatable), as with trace.
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<String>,
    /// Off-CPU intervals from this long are kept [default: 1ms].
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub blocked_min: Option<Duration>,
    /// Which requests on the watched disks are traced one by one, as with trace
    /// [default: around-calls]: a busy neighbour on ZooKeeper's disk then costs a sum per
    /// second instead of a record per request (config key `requests`).
    #[arg(long, value_enum)]
    pub requests: Option<crate::commands::session::Requests>,
    /// Do not name threads that started before tracing with `jcmd PID Thread.print`, as
    /// with trace (config key `jcmd = false`).
    #[arg(long)]
    pub no_jcmd: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many calls the workload makes (fsync, fdatasync, sync_file_range and msync in
    /// turn).
    #[arg(long, default_value_t = 20)]
    pub calls: u32,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// The same as `--format json`.
    #[arg(short = 'j', long = "json", conflicts_with = "format")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Directory for the workload's file.
    #[arg(long)]
    pub dir: PathBuf,
    /// Number of calls.
    #[arg(long, default_value_t = 20)]
    pub calls: u32,
    /// The syscalls to cycle through, comma-separated (fsync, fdatasync, sync_file_range,
    /// syncfs, msync, sync).
    #[arg(long, default_value = "fsync,fdatasync")]
    pub syscalls: String,
    /// Pause between calls.
    #[arg(long, default_value = "20ms", value_parser = parse_duration, allow_hyphen_values = true)]
    pub interval: Duration,
    /// Bytes written before each call.
    #[arg(long, default_value_t = 4096)]
    pub write_bytes: usize,
    /// Name of the thread making the calls.
    #[arg(long, default_value = "SyncThread:1")]
    pub thread_name: String,
    /// Start at once instead of waiting for a line on stdin.
    #[arg(long)]
    pub no_wait: bool,
}

/// Parses a threshold: a duration with a unit as [`parse_duration`], or a bare number of
/// milliseconds (`5`, `2.5`), as bcc's tools take `min_ms`.
pub fn parse_threshold(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{t:?}: a threshold cannot be negative (0 reports every call)"
        ));
    }
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return match t.parse::<f64>() {
            Ok(ms) if ms.is_finite() && ms <= 1e12 => Ok(Duration::from_secs_f64(ms / 1e3)),
            _ => Err(format!(
                "{t:?} is not a number of milliseconds (examples: 5, 2.5, 250ms, 1s)"
            )),
        };
    }
    parse_duration(t)
}

/// Parses `250ms`, `5s`, `2m`, `1h 30m`; a bare `0` means zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!("{s:?}: a duration cannot be negative"));
    }
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        return match s.parse::<u64>() {
            Ok(0) => Ok(Duration::ZERO),
            _ => Err(format!("{s:?} needs a unit, e.g. {s}ms or {s}s")),
        };
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (examples: 250ms, 5s, 2m)"))
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `500MB`, `2G` (powers of 1024 either way) or a byte
/// count.
/// A process id: a positive number.
pub fn parse_pid(s: &str) -> Result<u32, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n > 0 && n <= u32::MAX as i64 => Ok(n as u32),
        Ok(_) => Err(format!(
            "{s:?}: a pid is a positive number (`pgrep -f QuorumPeerMain` lists ZooKeeper JVMs)"
        )),
        Err(_) => Err(format!(
            "{s:?} is not a pid (`pgrep -f QuorumPeerMain` lists ZooKeeper JVMs)"
        )),
    }
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{s:?}: a size cannot be negative (examples: 64MiB, 1GiB)"
        ));
    }
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 64MiB, 1GiB, 500MB)"))?;
    // As zkstall prints sizes (and dd reads them): KB/MB/GB are powers of 1000, KiB/MiB/
    // GiB and the bare K/M/G powers of 1024.
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (examples: 64MiB, 1GiB, 500MB)"
            ));
        }
    };
    if n < 0.0 || !n.is_finite() {
        return Err(format!("{s:?} must be a positive size"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        // As sizes are printed: MB is 10^6 bytes, MiB 2^20.
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert!(
            parse_size("-64MiB")
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert_eq!(parse_pid("4242"), Ok(4242));
        assert!(parse_pid("-1").unwrap_err().contains("positive"));
        assert!(parse_pid("0").unwrap_err().contains("positive"));
        assert!(parse_pid("zk").unwrap_err().contains("not a pid"));
        assert!(parse_size("lots").is_err());
        assert!(
            parse_size("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn a_bare_threshold_is_milliseconds_as_in_bcc() {
        assert_eq!(parse_threshold("5"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_threshold("2.5"), Ok(Duration::from_micros(2500)));
        assert_eq!(parse_threshold("0"), Ok(Duration::ZERO));
        assert_eq!(parse_threshold("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_threshold("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_threshold("1.2.3").is_err());
        assert!(parse_threshold("soon").is_err());
    }

    #[test]
    fn negative_values_get_a_clear_message() {
        assert!(
            parse_threshold("-5")
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert!(
            parse_duration("-5s")
                .unwrap_err()
                .contains("cannot be negative")
        );
        for args in [
            &["zkstall", "trace", "--threshold", "-5"][..],
            &["zkstall", "trace", "-t", "-5ms"],
            &["zkstall", "trace", "--duration", "-30s"],
            &["zkstall", "report", "r.zst", "--threshold", "-1"],
            &["zkstall", "merge", "a", "b", "--window", "-1s"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains("cannot be negative"), "{args:?}: {err}");
        }
    }

    #[test]
    fn dash_j_is_format_json() {
        for cmd in [
            &["zkstall", "trace", "-j", "--threshold", "5"][..],
            &["zkstall", "report", "r.zst", "--json"],
            &["zkstall", "merge", "a", "b", "-j"],
        ] {
            let mut cli = Cli::try_parse_from(cmd).unwrap();
            cli.normalize();
            let f = match &cli.command {
                Command::Trace(t) => {
                    assert_eq!(t.threshold, Duration::from_millis(5));
                    t.format
                }
                Command::Report(r) => r.format,
                Command::Merge(m) => m.format,
                _ => unreachable!(),
            };
            assert_eq!(f, Format::Json, "{cmd:?}");
        }
        // Saying both ways at once is refused rather than guessed.
        assert!(Cli::try_parse_from(["zkstall", "trace", "-j", "--format", "text"]).is_err());
    }

    #[test]
    fn verbosity_keeps_the_loader_quiet_until_vvv() {
        let level = |v: &[&str]| {
            let mut args = vec!["zkstall", "check"];
            args.extend_from_slice(v);
            Cli::try_parse_from(args).unwrap().log_filter()
        };
        assert_eq!(level(&[]), "warn,zkstall=info");
        assert_eq!(level(&["-v"]), "warn,zkstall=debug");
        assert!(level(&["-vv"]).starts_with("info,"));
        assert_eq!(level(&["-vvv"]), "trace");
    }

    #[test]
    fn long_help_names_every_verdict() {
        let help = Cli::command().render_long_help().to_string();
        for v in crate::attribution::Verdict::ALL {
            assert!(help.contains(v.name()), "--help does not name {}", v.name());
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trace_defaults() {
        let cli = Cli::try_parse_from(["zkstall", "trace", "--pid", "7", "-p", "8"]).unwrap();
        let Command::Trace(t) = cli.command else {
            panic!("not trace")
        };
        assert_eq!(t.pids, vec![7, 8]);
        assert_eq!(t.threshold, Duration::from_millis(100));
        assert_eq!(t.format, Format::Text);
        assert_eq!(t.duration, None);
    }
}
