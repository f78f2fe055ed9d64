//! The subcommands.
pub mod agent;
pub mod check;
pub mod demo;
pub mod export;
pub mod merge;
pub mod report;
pub mod session;
pub mod trace;
pub mod workload;

/// Root, or the capabilities that loading tracing programs needs.
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
        Err("not root, and neither CAP_BPF + CAP_PERFMON nor CAP_SYS_ADMIN: run as root (sudo zkstall ...) or grant them (setcap cap_bpf,cap_perfmon+ep zkstall)".into())
    }
}
