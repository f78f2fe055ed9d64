//! Command-line interface (clap derive; doc comments are the help text).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "zkstall",
    version,
    about = "Explains storage stalls of JVM services (ZooKeeper first) from the kernel's point of view",
    long_about = "zkstall traces fsync-family syscalls of ZooKeeper (or any process) with eBPF \
tracepoints and explains each slow call: a verdict (device_stall, cpu_starvation, \
jvm_pause, memory_reclaim, low_space, dirty_throttle, io_throttled, device_contention, \
journal_wait, own_io, fs_blocked, unknown), the chain of waits behind it and its time by \
stage, the processes competing for each disk under the file, and what the process's \
threads were doing meanwhile. Recordings (trace --output) are read back by report with \
the same answers.\n\n\
Needs Linux >= 5.8 with tracefs and BTF (/sys/kernel/btf/vmlinux), and root (or CAP_BPF + \
CAP_PERFMON).",
    after_help = "Examples:\n  \
sudo zkstall check                      # can zkstall trace on this host?\n  \
sudo zkstall trace                      # every ZooKeeper JVM, calls >= 100 ms, until Ctrl-C\n  \
sudo zkstall trace --pid 4242 --threshold 0 --duration 30s --format json\n  \
sudo zkstall trace --output zk1.zst          # and keep a recording\n  \
zkstall report zk1.zst                       # later, anywhere: the same answers\n  \
sudo zkstall demo                       # trace a built-in fsync workload"
)]
pub struct Cli {
    /// More diagnostics on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
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
    /// Run a built-in workload (a thread named SyncThread:1 doing fsync and fdatasync) and
    /// trace it, comparing zkstall's durations with the workload's own.
    Demo(DemoArgs),
    /// The demo's workload (used by the demo and the tests).
    #[command(hide = true)]
    Workload(WorkloadArgs),
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
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Stop after this long (`30s`, `5m`). Default: until Ctrl-C or SIGTERM.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Report calls at or above this duration (`100ms`, `1s`; `0` reports every call).
    #[arg(short, long, default_value = "100ms", value_parser = parse_duration)]
    pub threshold: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also stream what happens around the calls: block I/O (io), off-CPU intervals of
    /// the target's threads (blocked), thread changes (thread), page dirtying (dirty),
    /// flusher writeback (writeback), dirty throttling (throttle), journal commits
    /// (journal). Verbose: meant for debugging and timelines.
    #[arg(short, long)]
    pub events: bool,
    /// Off-CPU intervals of the target's threads from this long are kept (for the
    /// verdicts' thread timelines, and printed with --events).
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub blocked_min: Duration,
    /// Also write a recording to FILE (compressed), for `zkstall report` anywhere later.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also trace the requests of this disk one by one (repeatable): a name (`sdb`,
    /// `loop3`), `MAJ:MIN`, or a path on the filesystem it holds. The disks behind the
    /// traced processes' files are always traced; other disks are only counted.
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A recording written by `zkstall trace --output`.
    pub file: PathBuf,
    /// Report calls at or above this duration. Default: the threshold the recording was
    /// made with (write-family calls below it were never recorded).
    #[arg(short, long, value_parser = parse_duration)]
    pub threshold: Option<Duration>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also print the recorded block I/O, off-CPU intervals, writeback... (as trace --events).
    #[arg(short, long)]
    pub events: bool,
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
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
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

/// Parses `250ms`, `5s`, `2m`, `1h 30m`; a bare `0` means zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        return match s.parse::<u64>() {
            Ok(0) => Ok(Duration::ZERO),
            _ => Err(format!("{s:?} needs a unit, e.g. {s}ms or {s}s")),
        };
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (examples: 250ms, 5s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

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
