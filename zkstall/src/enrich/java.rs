//! Java thread names of threads that started before HotSpot's probes were attached:
//! `jcmd PID Thread.print` maps each thread's `nid` (its OS thread id) to its Java name.
//! It costs the JVM a safepoint and starts a JVM of its own, so it runs once per traced
//! process, only where the kernel's names are cut (15 characters) or missing (JDK 8 names
//! every thread `java`), with the target's own JDK and user.

use std::{
    io::Read as _,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::targets::ProcRoot;

/// Do the kernel's names of `pid`'s threads need Java's: some cut at 15 characters, or
/// all the same (`java`)?
pub fn names_cut(proc: &ProcRoot, pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(proc.pid_dir(pid).join("task")) else {
        return false;
    };
    let comms: Vec<String> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim_end_matches('\n').to_string())
        .collect();
    comms.len() > 1 && (comms.iter().any(|c| c.len() >= 15) || comms.iter().all(|c| c == "java"))
}

/// The `jcmd` of the JDK process `pid` runs (beside its `java`), as its path in this mount
/// namespace.
fn jcmd_of(proc: &ProcRoot, pid: u32) -> Option<PathBuf> {
    let exe = std::fs::read_link(proc.pid_dir(pid).join("exe")).ok()?;
    let jcmd = exe.parent()?.join("jcmd");
    jcmd.exists().then_some(jcmd)
}

/// The uid and gid `pid` runs as (jcmd must be the JVM's own user to attach).
fn ids_of(proc: &ProcRoot, pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(proc.pid_dir(pid).join("status")).ok()?;
    let field = |k: &str| -> Option<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Runs `jcmd PID Thread.print` as the JVM's user (at most `limit`) and returns
/// (tid, Java name) for every thread it lists.
pub fn thread_names(
    proc: &ProcRoot,
    pid: u32,
    limit: Duration,
) -> Result<Vec<(u32, String)>, String> {
    let jcmd = jcmd_of(proc, pid).ok_or("no jcmd beside the JVM's java")?;
    let (uid, gid) = ids_of(proc, pid).ok_or("the process is gone")?;
    let mut child = Command::new(&jcmd)
        .arg(pid.to_string())
        .arg("Thread.print")
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", jcmd.display()))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", limit.as_secs()));
            }
        }
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{status}: {}",
            text.lines().last().unwrap_or("").trim()
        ));
    }
    Ok(parse_thread_print(&text))
}

/// (tid, name) of each thread line of a `Thread.print`: `"name" #12 [4242] daemon prio=5
/// ... nid=4242 ...` (JDK 19+: decimal) or `"name" #12 daemon ... nid=0x1092 ...` (JDK 8-17:
/// hex).
pub fn parse_thread_print(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix('"') else {
            continue;
        };
        let Some(nid_at) = rest.find(" nid=") else {
            continue;
        };
        let Some(end) = rest[..nid_at].rfind("\" ") else {
            continue;
        };
        let name = &rest[..end];
        let nid = rest[nid_at + 5..].split_whitespace().next().unwrap_or("");
        let tid = match nid.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => nid.parse().ok(),
        };
        if let Some(tid) = tid
            && !name.is_empty()
        {
            out.push((tid, name.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_print_of_jdk_17_and_21_gives_ids_and_whole_names() {
        let text = r#"2026-12-05 06:00:00
Full thread dump OpenJDK 64-Bit Server VM (17.0.15+6-Debian-1deb12u1 mixed mode, sharing):

"main" #1 prio=5 os_prio=0 cpu=245.02ms elapsed=12.34s tid=0x00007f2c1c029000 nid=0x3039 waiting on condition  [0x00007f2c21a1e000]
   java.lang.Thread.State: TIMED_WAITING (sleeping)

"NIOServerCxnFactory.SelectorThread-0" #23 daemon prio=5 os_prio=0 cpu=1.2ms elapsed=11.9s tid=0x00007f2c1c4a1000 nid=0x3050 runnable
"VM Thread" os_prio=0 cpu=3.50ms elapsed=12.31s tid=0x00007f2c1c0ea800 nid=0x303e runnable
"a "quoted" name" #30 prio=5 os_prio=0 tid=0x1 nid=12346 waiting
"SyncThread:1" #31 [12347] prio=5 os_prio=0 cpu=1.00ms elapsed=1.00s tid=0x00007f00 nid=12347 runnable
JNI global refs: 15, weak refs: 0
"#;
        let n = parse_thread_print(text);
        assert_eq!(
            n,
            vec![
                (0x3039, "main".to_string()),
                (0x3050, "NIOServerCxnFactory.SelectorThread-0".to_string()),
                (0x303e, "VM Thread".to_string()),
                (12346, "a \"quoted\" name".to_string()),
                (12347, "SyncThread:1".to_string()),
            ]
        );
        assert!(parse_thread_print("garbage\n\"unterminated").is_empty());
    }
}
