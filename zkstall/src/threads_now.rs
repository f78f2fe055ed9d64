//! What /proc says about a thread right now: the syscall it is inside, its state, where it
//! waits. Used at attach (calls already running) and while tracing (calls crossing the
//! threshold), as root.

use zkstall_common::Syscall;

use crate::targets::ProcRoot;

/// A thread inside a syscall, per /proc/<pid>/task/<tid>/syscall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InSyscall {
    pub nr: i64,
    /// The first argument (the fd of the fsync and write families).
    pub arg0: u64,
}

/// Parses /proc/<tid>/syscall: `NR arg1 .. arg6 sp pc`, `-1 sp pc` (not in a syscall) or
/// `running`.
pub fn parse_syscall(text: &str) -> Option<InSyscall> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let arg0 = it
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    Some(InSyscall { nr, arg0 })
}

/// The watched syscall with x86_64 number `nr`.
pub fn watched_syscall(nr: i64) -> Option<Syscall> {
    let name = usize::try_from(nr)
        .ok()
        .and_then(syscalls::Sysno::new)?
        .name();
    Syscall::ALL.iter().copied().find(|s| s.name() == name)
}

/// The state letter of /proc/<tid>/stat (after the parenthesised comm, which may contain
/// spaces and parentheses).
pub fn parse_stat_state(text: &str) -> Option<char> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// /proc/<tid>/stack lines (`[<0>] jbd2_log_wait_commit+0xc2/0x150`) as frames
/// (`jbd2_log_wait_commit+0xc2`).
pub fn parse_stack(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f = l.split_once("] ").map_or(l, |(_, f)| f).trim();
            let f = f.split('/').next().unwrap_or(f);
            (!f.is_empty()).then(|| f.to_string())
        })
        .collect()
}

/// A thread's view now.
#[derive(Clone, Debug, Default)]
pub struct ThreadNow {
    pub syscall: Option<InSyscall>,
    pub state: Option<char>,
    pub wchan: Option<String>,
    pub stack: Vec<String>,
    pub comm: String,
}

pub fn read(proc: &ProcRoot, pid: u32, tid: u32) -> ThreadNow {
    let rd = |n: &str| read_file(proc, pid, tid, n);
    ThreadNow {
        syscall: rd("syscall").as_deref().and_then(parse_syscall),
        state: state(proc, pid, tid),
        wchan: rd("wchan")
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty() && w != "0"),
        stack: rd("stack").as_deref().map(parse_stack).unwrap_or_default(),
        comm: comm(proc, pid, tid),
    }
}

fn read_file(proc: &ProcRoot, pid: u32, tid: u32, name: &str) -> Option<String> {
    let path = proc
        .pid_dir(pid)
        .join("task")
        .join(tid.to_string())
        .join(name);
    std::fs::read_to_string(path).ok()
}

/// A thread's name now (empty when it is gone).
pub fn comm(proc: &ProcRoot, pid: u32, tid: u32) -> String {
    read_file(proc, pid, tid, "comm")
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default()
}

/// A thread's state letter now (`R`, `S`, `D`, ...).
pub fn state(proc: &ProcRoot, pid: u32, tid: u32) -> Option<char> {
    read_file(proc, pid, tid, "stat")
        .as_deref()
        .and_then(parse_stat_state)
}

/// The thread ids of process `pid`.
pub fn tids(proc: &ProcRoot, pid: u32) -> Vec<u32> {
    std::fs::read_dir(proc.pid_dir(pid).join("task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The device numbers (st_dev) of the regular files process `pid` has open, with a path
/// for each.
pub fn open_file_devs(proc: &ProcRoot, pid: u32) -> Vec<(u64, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = proc.pid_dir(pid).join("fd");
    let mut out: Vec<(u64, String)> = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let (Ok(meta), Ok(target)) = (std::fs::metadata(&p), std::fs::read_link(&p)) else {
            continue;
        };
        if meta.is_file() && !out.iter().any(|(d, _)| *d == meta.dev()) {
            out.push((meta.dev(), target.to_string_lossy().into_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_proc_shows_for_a_thread_in_fdatasync() {
        let s = parse_syscall("75 0x24 0x7f 0x0 0x0 0x0 0x0 0x7ffd3000 0x7f12\n").unwrap();
        assert_eq!(s, InSyscall { nr: 75, arg0: 0x24 });
        assert_eq!(watched_syscall(s.nr), Some(Syscall::Fdatasync));
        assert_eq!(watched_syscall(1), Some(Syscall::Write));
        assert_eq!(watched_syscall(202), None, "futex is not watched");
        assert!(parse_syscall("-1 0x7ffd 0x7f12\n").is_none());
        assert!(parse_syscall("running\n").is_none());
        assert_eq!(
            parse_stat_state("42 (Sync Thread (1)) D 1 42 42 0"),
            Some('D')
        );
        assert_eq!(
            parse_stack("[<0>] jbd2_log_wait_commit+0xc2/0x150\n[<0>] ext4_sync_file+0x1/0x2\n"),
            vec!["jbd2_log_wait_commit+0xc2", "ext4_sync_file+0x1"]
        );
    }
}
