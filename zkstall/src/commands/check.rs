//! `zkstall check`: can tracing work on this host? Each line names the fix when it cannot.

use std::io::Write;

use crate::probes::{Probes, btf::Btf, layout, tracefs::Tracefs};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
}

struct Report<W: Write> {
    w: W,
    failures: usize,
}

impl<W: Write> Report<W> {
    fn line(&mut self, st: Status, what: &str, detail: &str) {
        let tag = match st {
            Status::Ok => " ok ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        if st == Status::Fail {
            self.failures += 1;
        }
        let _ = writeln!(self.w, "[{tag}] {what:<12} {detail}");
    }
}

/// Kernel major.minor from a release string like `6.18.44-fc-v669`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The oldest kernel zkstall runs on: every record reaches userspace through a BPF ring
/// buffer (BPF_MAP_TYPE_RINGBUF), which Linux 5.8 introduced.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Whether a kernel release (`uname -r`) is supported, and the line `check` prints for it.
fn kernel_support(release: &str) -> (Status, String) {
    match kernel_version(release) {
        Some(v) if v >= MIN_KERNEL => (
            Status::Ok,
            format!("{release} (the BPF ring buffer needs >= 5.8)"),
        ),
        Some(_) => (
            Status::Fail,
            format!(
                "{release} is unsupported: zkstall needs Linux >= 5.8, where the BPF ring buffer (BPF_MAP_TYPE_RINGBUF) that carries its records appeared; upgrade the kernel"
            ),
        ),
        None => (Status::Warn, format!("cannot parse release {release:?}")),
    }
}

fn uname_release() -> String {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: uname NUL-terminates `release`.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Runs every check, prints one line each to `w`, and returns true when tracing can work.
pub fn run(w: impl Write) -> bool {
    let mut r = Report { w, failures: 0 };

    let release = uname_release();
    let (st, detail) = kernel_support(&release);
    r.line(st, "kernel", &detail);

    let btf = match Btf::from_sys_fs() {
        Ok(b) => {
            r.line(
                Status::Ok,
                "BTF",
                "/sys/kernel/btf/vmlinux (struct offsets for the block and scheduler programs)",
            );
            Some(b)
        }
        Err(e) => {
            r.line(Status::Warn, "BTF", &format!("{e}: without BTF (CONFIG_DEBUG_INFO_BTF=y) block requests are not traced and off-CPU intervals lack their syscall"));
            None
        }
    };

    let privileged = match super::privileges() {
        Ok(how) => {
            r.line(Status::Ok, "privileges", &how);
            true
        }
        Err(why) => {
            r.line(Status::Fail, "privileges", &why);
            false
        }
    };
    // Root holds them all; otherwise each capability is named with what it is for.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let caps = super::effective_caps();
        let mut missing = false;
        // tracefs opened to this user (a gid= / mode= mount) needs no capability.
        let tracefs_readable = [
            "/sys/kernel/tracing/events",
            "/sys/kernel/debug/tracing/events",
        ]
        .iter()
        .any(|p| std::fs::read_dir(p).is_ok());
        for (name, bit, needed, why) in super::CAPABILITIES {
            let held =
                caps & (1u64 << bit) != 0 || (*name == "CAP_DAC_READ_SEARCH" && tracefs_readable);
            let st = match (held, needed) {
                (true, _) => Status::Ok,
                (false, true) => Status::Fail,
                (false, false) => Status::Warn,
            };
            missing |= !held && *name != "CAP_SYS_RESOURCE";
            r.line(
                st,
                "capability",
                &format!("{name} {}: {why}", if held { "held" } else { "missing" }),
            );
        }
        if missing {
            r.line(Status::Warn, "fix", &super::setcap_fix());
        }
    }

    let tracefs = match Tracefs::find_or_mount() {
        Ok(t) => {
            let how = if t.mounted_by_us {
                " (was not mounted: zkstall mounted it)"
            } else {
                ""
            };
            r.line(Status::Ok, "tracefs", &format!("{}{how}", t.root.display()));
            Some(t)
        }
        Err(e) => {
            r.line(Status::Fail, "tracefs", &e.to_string());
            None
        }
    };

    let Some(tracefs) = tracefs else {
        return finish(r);
    };
    let layout = match layout::build(&tracefs, btf.as_ref()) {
        Ok(l) => l,
        Err(e) => {
            r.line(Status::Fail, "tracepoints", &e.to_string());
            return finish(r);
        }
    };
    // The syscall signals are many and alike: one line for each family.
    for (family, write) in [("fsync family", false), ("write family", true)] {
        let names: Vec<&str> = layout
            .enabled
            .iter()
            .filter(|s| s.syscall.is_some_and(|sc| sc.is_write() == write))
            .map(|s| s.name)
            .collect();
        r.line(
            Status::Ok,
            "signal",
            &format!(
                "{family}: {} (syscalls:sys_enter_*/sys_exit_*)",
                names.join(", ")
            ),
        );
    }
    for sig in layout.enabled.iter().filter(|s| s.syscall.is_none()) {
        let hooks: Vec<String> = sig
            .hooks
            .iter()
            .map(|h| {
                let btf = if h.kind == crate::probes::HookKind::BtfTracePoint {
                    " (tp_btf)"
                } else {
                    ""
                };
                format!("{}:{}{btf}", h.category, h.name)
            })
            .collect();
        r.line(
            Status::Ok,
            "signal",
            &format!("{}: {} [{}]", sig.name, sig.purpose, hooks.join(", ")),
        );
    }
    for d in &layout.disabled {
        r.line(
            Status::Warn,
            "signal",
            &format!("{} is off: {}", d.signal, d.reason),
        );
    }
    let essential = ["fsync", "fdatasync"];
    if !essential
        .iter()
        .all(|e| layout.enabled.iter().any(|s| s.name == *e))
    {
        r.line(
            Status::Fail,
            "tracepoints",
            "fsync and fdatasync tracepoints are both required (CONFIG_FTRACE_SYSCALLS)",
        );
    }

    if privileged {
        match Probes::load(layout) {
            Ok(p) => {
                r.line(
                    Status::Ok,
                    "programs",
                    &format!(
                        "{} programs verified by the kernel; ring buffer of {} MiB created",
                        p.program_count(),
                        zkstall_common::EVENTS_BYTES >> 20
                    ),
                );
                match p.heartbeat_off() {
                    None => r.line(
                        Status::Ok,
                        "signal",
                        &format!(
                            "heartbeat: a {} Hz timer on every CPU (perf cpu-clock), so a whole-host pause (a VM stopped by its hypervisor) is told from a device stall",
                            zkstall_common::HEARTBEAT_HZ
                        ),
                    ),
                    Some(why) => r.line(
                        Status::Warn,
                        "signal",
                        &format!("heartbeat: off ({why}): a paused host would look like a device stall"),
                    ),
                }
                match p.jvm_off() {
                    None => r.line(
                        Status::Ok,
                        "signal",
                        "jvm: HotSpot's USDT probes (whole Java thread names, safepoints, GCs), attached per traced JVM by uprobes with attach cookies (Linux >= 5.15)",
                    ),
                    Some(why) => r.line(
                        Status::Warn,
                        "signal",
                        &format!(
                            "jvm: off ({why}): thread names stay the kernel's (15 characters) and JVM pauses are inferred from thread states"
                        ),
                    ),
                }
            }
            Err(e) => r.line(Status::Fail, "programs", &e.to_string()),
        }
    } else {
        r.line(
            Status::Fail,
            "programs",
            "not loaded: no privileges (see above)",
        );
    }
    finish(r)
}

fn finish<W: Write>(mut r: Report<W>) -> bool {
    if r.failures == 0 {
        let _ = writeln!(r.w, "zkstall can trace on this host.");
        true
    } else {
        let _ = writeln!(
            r.w,
            "zkstall cannot trace on this host: {} problem(s) above.",
            r.failures
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.8.0"), Some((5, 8)));
        assert!(kernel_version("4.19.1").unwrap() < (5, 8));
        assert_eq!(kernel_version("weird"), None);
    }

    #[test]
    fn kernels_below_5_8_are_unsupported_naming_the_ring_buffer() {
        // Debian 10 and Ubuntu 18.04's kernels.
        for old in ["4.19.0-27-amd64", "5.4.0-150-generic", "5.7.19"] {
            let (st, line) = kernel_support(old);
            assert!(st == Status::Fail, "{old}");
            assert!(line.contains("unsupported"), "{line}");
            assert!(line.contains("BPF ring buffer"), "{line}");
            assert!(line.contains(">= 5.8"), "{line}");
        }
        // Debian 11 and 12, and the development machine's.
        for ok in [
            "5.8.0",
            "5.10.0-35-amd64",
            "6.1.0-47-amd64",
            "6.18.44-fc-v669",
        ] {
            assert!(kernel_support(ok).0 == Status::Ok, "{ok}");
        }
        assert!(kernel_support("").0 == Status::Warn);
    }
}
