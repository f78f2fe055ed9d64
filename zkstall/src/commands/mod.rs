//! The subcommands.
pub mod agent;
pub mod check;
pub mod demo;
pub mod export;
pub mod floor;
pub mod merge;
pub mod report;
pub mod session;
pub mod trace;
pub mod workload;

/// Root, or the capabilities that loading tracing programs needs.
/// The capabilities zkstall uses: (name, number, needed to trace at all, what for).
pub const CAPABILITIES: &[(&str, u32, bool, &str)] = &[
    ("CAP_BPF", 39, true, "create maps and load programs"),
    (
        "CAP_PERFMON",
        38,
        true,
        "attach to tracepoints and uprobes, read kernel memory from the programs",
    ),
    (
        "CAP_DAC_READ_SEARCH",
        2,
        true,
        "read tracefs's format files (tracefs is root's only, mode 700)",
    ),
    (
        "CAP_SYS_PTRACE",
        19,
        false,
        "read another user's /proc/PID files (open files, maps, stacks of a ZooKeeper run as its own user)",
    ),
    (
        "CAP_SYSLOG",
        34,
        false,
        "kernel addresses in /proc/kallsyms, to name the frames of kernel stacks",
    ),
    (
        "CAP_SETUID",
        7,
        false,
        "run jcmd as the JVM's own user to name threads that started before tracing",
    ),
    ("CAP_SETGID", 6, false, "the same (jcmd's group)"),
    (
        "CAP_SYS_ADMIN",
        21,
        false,
        "mount tracefs when it is not mounted",
    ),
    (
        "CAP_SYS_RESOURCE",
        24,
        false,
        "raise RLIMIT_MEMLOCK for BPF maps (kernels before 5.11 only)",
    ),
];

/// The effective capability set of this process.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The one command that grants every capability zkstall uses to its binary.
pub fn setcap_fix() -> String {
    let names: Vec<String> = CAPABILITIES
        .iter()
        .filter(|(n, ..)| *n != "CAP_SYS_RESOURCE")
        .map(|(n, ..)| n.to_lowercase())
        .collect();
    format!(
        "run as root (sudo zkstall ...), or grant its capabilities: sudo setcap {}+ep \"$(command -v zkstall)\"",
        names.join(",")
    )
}

pub fn privileges() -> Result<String, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok("root".into());
    }
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_BPF) && has(CAP_PERFMON) {
        Ok("CAP_BPF + CAP_PERFMON".into())
    } else if has(CAP_SYS_ADMIN) {
        Ok("CAP_SYS_ADMIN".into())
    } else {
        Err(format!(
            "not root, and neither CAP_BPF + CAP_PERFMON nor CAP_SYS_ADMIN: {}",
            setcap_fix()
        ))
    }
}
