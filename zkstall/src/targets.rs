//! Which processes to trace: the pids given with `--pid`, or every ZooKeeper JVM on the
//! host. Everything takes the /proc root as a parameter so tests can use a fake one.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Main classes that identify a ZooKeeper server JVM on its command line.
pub const ZOOKEEPER_MAIN_CLASSES: [&str; 2] = [
    "org.apache.zookeeper.server.quorum.QuorumPeerMain",
    "org.apache.zookeeper.server.ZooKeeperServerMain",
];

#[derive(Debug, Error)]
pub enum TargetError {
    #[error(
        "no process with pid {0}: check the pid (`pgrep -f QuorumPeerMain` lists ZooKeeper JVMs)"
    )]
    NoSuchPid(u32),
    #[error(
        "pid {0} is a thread of process {1}, not a process: pass --pid {1} (zkstall traces every thread of a process)"
    )]
    IsThread(u32, u32),
    #[error(
        "no ZooKeeper process found: no command line in {0}/*/cmdline contains QuorumPeerMain or ZooKeeperServerMain; start ZooKeeper, or pass --pid PID to trace another process"
    )]
    NoZooKeeper(String),
    #[error("cannot read {0}: {1}; is /proc mounted?")]
    Proc(String, String),
}

/// A process to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    /// The process's short name (`java` for a JVM).
    pub comm: String,
    /// Why it is a target: "--pid" or the ZooKeeper main class found.
    pub reason: String,
}

/// The /proc to read (the real one, or a fake one in tests).
#[derive(Clone, Debug)]
pub struct ProcRoot(pub PathBuf);

impl Default for ProcRoot {
    fn default() -> Self {
        ProcRoot(PathBuf::from("/proc"))
    }
}

impl ProcRoot {
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        self.0.join(pid.to_string())
    }

    fn read_comm(&self, pid: u32) -> String {
        std::fs::read_to_string(self.pid_dir(pid).join("comm"))
            .map(|s| s.trim_end_matches('\n').to_string())
            .unwrap_or_default()
    }

    /// The tgid of `pid` (== pid for a process, another pid for a thread).
    fn tgid(&self, pid: u32) -> Option<u32> {
        let status = std::fs::read_to_string(self.pid_dir(pid).join("status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// True while `pid` exists and is not a zombie.
    pub fn is_alive(&self, pid: u32) -> bool {
        match std::fs::read_to_string(self.pid_dir(pid).join("stat")) {
            // The state follows the last ')' (the comm may itself contain ')').
            Ok(stat) => match stat.rfind(')') {
                Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
                None => true,
            },
            Err(_) => false,
        }
    }
}

/// Checks every `--pid`: it must exist and be a process (not one of its threads).
pub fn explicit(root: &ProcRoot, pids: &[u32]) -> Result<Vec<Target>, TargetError> {
    let mut out = Vec::new();
    for &pid in pids {
        if !root.pid_dir(pid).join("stat").exists() || !root.is_alive(pid) {
            return Err(TargetError::NoSuchPid(pid));
        }
        if let Some(tgid) = root.tgid(pid)
            && tgid != pid
        {
            return Err(TargetError::IsThread(pid, tgid));
        }
        if !out.iter().any(|t: &Target| t.pid == pid) {
            out.push(Target {
                pid,
                comm: root.read_comm(pid),
                reason: "--pid".into(),
            });
        }
    }
    Ok(out)
}

/// Every ZooKeeper server JVM under `root`, by pid.
pub fn discover_zookeeper(root: &ProcRoot) -> Result<Vec<Target>, TargetError> {
    let procs = procfs::process::all_processes_with_root(&root.0)
        .map_err(|e| TargetError::Proc(root.0.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Ok(cmdline) = p.cmdline() else { continue };
        if let Some(class) = zookeeper_main_class(&cmdline) {
            let pid = p.pid as u32;
            if !root.is_alive(pid) {
                continue;
            }
            out.push(Target {
                pid,
                comm: root.read_comm(pid),
                reason: class.to_string(),
            });
        }
    }
    out.sort_by_key(|t| t.pid);
    Ok(out)
}

/// A `--cgroup` argument as /proc/PID/cgroup writes paths: `/sys/fs/cgroup/unified/zk`,
/// `/sys/fs/cgroup/memory/zk` and `/sys/fs/cgroup/zk` (the hierarchy's mount) are all `/zk`.
pub fn cgroup_arg(arg: &str) -> String {
    let Some(rest) = arg.strip_prefix("/sys/fs/cgroup") else {
        return format!("/{}", arg.trim_matches('/'));
    };
    let rest = rest.trim_matches('/');
    let mut parts = rest.splitn(2, '/');
    let first = parts.next().unwrap_or("");
    // A v1 controller's or the v2 (unified, systemd) hierarchy's mount directory.
    let hierarchy = std::path::Path::new("/sys/fs/cgroup").join(first);
    let is_mount = !first.is_empty()
        && (["unified", "systemd"].contains(&first)
            || first.split(',').all(|c| {
                [
                    "blkio",
                    "io",
                    "memory",
                    "cpu",
                    "cpuacct",
                    "cpuset",
                    "pids",
                    "devices",
                    "freezer",
                    "net_cls",
                    "net_prio",
                    "perf_event",
                    "hugetlb",
                    "rdma",
                    "misc",
                ]
                .contains(&c)
            })
            || std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
                m.lines()
                    .any(|l| l.split(' ').nth(4) == Some(&*hierarchy.to_string_lossy()))
            }));
    if is_mount {
        format!("/{}", parts.next().unwrap_or(""))
    } else {
        format!("/{rest}")
    }
}

/// Whether `pid` is in one of `cgroups` (paths as [`cgroup_arg`] makes them) or below, in
/// any hierarchy. No filter lets everything through.
pub fn in_cgroups(root: &ProcRoot, pid: u32, cgroups: &[String]) -> bool {
    if cgroups.is_empty() {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(root.pid_dir(pid).join("cgroup")) else {
        return false;
    };
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|path| {
            cgroups.iter().any(|c| {
                c == "/"
                    || path == c
                    || path
                        .strip_prefix(c.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
        })
}

/// Like [`discover_zookeeper`], but "none found" is an error naming the fix.
pub fn require_zookeeper(root: &ProcRoot) -> Result<Vec<Target>, TargetError> {
    let found = discover_zookeeper(root)?;
    if found.is_empty() {
        return Err(TargetError::NoZooKeeper(root.0.display().to_string()));
    }
    Ok(found)
}

/// The ZooKeeper main class on a JVM command line, if any. Only whole arguments count, so
/// a `grep QuorumPeerMain` or a log path mentioning it is not a ZooKeeper server.
pub fn zookeeper_main_class(cmdline: &[String]) -> Option<&'static str> {
    let is_java = cmdline
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("java"))
        })
        .unwrap_or(false);
    if !is_java {
        return None;
    }
    ZOOKEEPER_MAIN_CLASSES
        .into_iter()
        .find(|c| cmdline.iter().any(|a| a == c))
}

/// A ZooKeeper server's place in its ensemble, from the zoo.cfg its command line names:
/// the `server.N` lines (and a `dynamicConfigFile`'s) and its `myid`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ensemble {
    /// The configuration file read (as the process sees it).
    pub config: String,
    /// Each `server.N=...` line: (N, what follows `=`), sorted by N. Empty: a standalone
    /// server.
    pub servers: Vec<(u32, String)>,
    /// This server's id (`<dataDir>/myid`), when it has one.
    pub myid: Option<u32>,
}

impl Ensemble {
    /// What identifies the ensemble across hosts: its members' ids and addresses.
    pub fn key(&self) -> String {
        self.servers
            .iter()
            .map(|(n, a)| format!("{n}={}", a.split(';').next().unwrap_or(a)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Reads the ensemble of ZooKeeper process `pid` (None: not a ZooKeeper main class, or its
/// configuration cannot be read). Paths are read through /proc/PID/root, so a server in a
/// container is read as it sees its files.
pub fn zk_ensemble(root: &ProcRoot, pid: u32) -> Option<Ensemble> {
    let dir = root.pid_dir(pid);
    let raw = std::fs::read(dir.join("cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let class = zookeeper_main_class(&args)?;
    let at = args.iter().position(|a| a == class)?;
    // QuorumPeerMain <config>; ZooKeeperServerMain <config> or <port> <datadir>.
    let cfg = args.get(at + 1)?;
    if cfg.parse::<u16>().is_ok() {
        return Some(Ensemble::default());
    }
    let resolve = |p: &str| -> PathBuf {
        let abs = if Path::new(p).is_absolute() {
            PathBuf::from(p)
        } else {
            std::fs::read_link(dir.join("cwd"))
                .unwrap_or_default()
                .join(p)
        };
        dir.join("root").join(abs.strip_prefix("/").unwrap_or(&abs))
    };
    let text = std::fs::read_to_string(resolve(cfg)).ok()?;
    let mut e = Ensemble {
        config: cfg.clone(),
        ..Default::default()
    };
    let mut data_dir = None;
    let parse = |text: &str, e: &mut Ensemble, data_dir: &mut Option<String>| {
        for line in text.lines() {
            let line = line.trim();
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if let Some(n) = k
                .strip_prefix("server.")
                .and_then(|n| n.parse::<u32>().ok())
            {
                e.servers.push((n, v.to_string()));
            } else if k == "dataDir" {
                *data_dir = Some(v.to_string());
            }
        }
    };
    parse(&text, &mut e, &mut data_dir);
    let dynamic = text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("dynamicConfigFile")
            .and_then(|r| r.trim().strip_prefix('='))
            .map(|v| v.trim().to_string())
    });
    if let Some(d) = dynamic
        && let Ok(t) = std::fs::read_to_string(resolve(&d))
    {
        parse(&t, &mut e, &mut data_dir);
    }
    e.servers.sort();
    e.servers.dedup_by_key(|s| s.0);
    e.myid = data_dir
        .and_then(|d| std::fs::read_to_string(resolve(&format!("{d}/myid"))).ok())
        .and_then(|m| m.trim().parse().ok());
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_zookeepers_ensemble_and_myid_come_from_its_zoo_cfg() {
        let dir = std::env::temp_dir().join(format!("zkstall-ens-{}", std::process::id()));
        let proc = dir.join("proc");
        let pd = proc.join("4242");
        let rootfs = pd.join("root");
        fs::create_dir_all(rootfs.join("etc/zk")).unwrap();
        fs::create_dir_all(rootfs.join("var/zk")).unwrap();
        fs::create_dir_all(&pd).unwrap();
        fs::write(
            pd.join("cmdline"),
            b"/usr/bin/java\0-cp\0zk.jar\0org.apache.zookeeper.server.quorum.QuorumPeerMain\0/etc/zk/zoo.cfg\0",
        )
        .unwrap();
        fs::write(
            rootfs.join("etc/zk/zoo.cfg"),
            "tickTime=2000\ndataDir=/var/zk\nserver.2=10.0.0.2:2888:3888\nserver.1=10.0.0.1:2888:3888;2181\nserver.3 = 10.0.0.3:2888:3888\n",
        )
        .unwrap();
        fs::write(rootfs.join("var/zk/myid"), "2\n").unwrap();
        let e = zk_ensemble(&ProcRoot(proc.clone()), 4242).unwrap();
        assert_eq!(e.myid, Some(2));
        assert_eq!(e.servers.len(), 3);
        assert_eq!(
            e.key(),
            "1=10.0.0.1:2888:3888,2=10.0.0.2:2888:3888,3=10.0.0.3:2888:3888"
        );
        // Standalone: no server lines.
        fs::write(
            rootfs.join("etc/zk/zoo.cfg"),
            "dataDir=/var/zk\nclientPort=2181\n",
        )
        .unwrap();
        let e = zk_ensemble(&ProcRoot(proc), 4242).unwrap();
        assert!(e.servers.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let add = |pid: u32, tgid: u32, comm: &str, cmdline: &[&str], state: char| {
            let p = dir.path().join(pid.to_string());
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            let mut c = cmdline.join("\0");
            c.push('\0');
            fs::write(p.join("cmdline"), c).unwrap();
            fs::write(
                p.join("stat"),
                format!("{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"),
            )
            .unwrap();
            fs::write(
                p.join("status"),
                format!("Name:\t{comm}\nTgid:\t{tgid}\nPid:\t{pid}\n"),
            )
            .unwrap();
        };
        add(
            100,
            100,
            "java",
            &[
                "/usr/bin/java",
                "-cp",
                "zk.jar",
                ZOOKEEPER_MAIN_CLASSES[0],
                "zoo.cfg",
            ],
            'S',
        );
        add(101, 100, "SyncThread:1", &["/usr/bin/java"], 'S');
        add(
            200,
            200,
            "java",
            &["java", "-Xmx1g", ZOOKEEPER_MAIN_CLASSES[1], "2181", "/data"],
            'S',
        );
        add(300, 300, "grep", &["grep", ZOOKEEPER_MAIN_CLASSES[0]], 'R');
        add(400, 400, "java", &["java", "-jar", "kafka.jar"], 'S');
        add(500, 500, "java", &["java", ZOOKEEPER_MAIN_CLASSES[0]], 'Z');
        dir
    }

    #[test]
    fn discovers_both_zookeeper_main_classes_and_nothing_else() {
        let dir = fake_proc();
        let root = ProcRoot(dir.path().to_path_buf());
        let found = discover_zookeeper(&root).unwrap();
        let pids: Vec<u32> = found.iter().map(|t| t.pid).collect();
        assert_eq!(pids, vec![100, 200], "500 is a zombie, 300 grep, 400 kafka");
        assert_eq!(found[0].reason, ZOOKEEPER_MAIN_CLASSES[0]);
    }

    #[test]
    fn cgroup_arguments_are_paths_as_proc_shows_them() {
        assert_eq!(cgroup_arg("/sys/fs/cgroup/unified/zk"), "/zk");
        assert_eq!(cgroup_arg("/sys/fs/cgroup/memory/zk/a/"), "/zk/a");
        assert_eq!(cgroup_arg("/sys/fs/cgroup/cpu,cpuacct/zk"), "/zk");
        assert_eq!(
            cgroup_arg("/system.slice/zk.service"),
            "/system.slice/zk.service"
        );
        assert_eq!(cgroup_arg("zk"), "/zk");
    }

    #[test]
    fn processes_are_kept_by_cgroup_in_any_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        let root = ProcRoot(dir.path().to_path_buf());
        let pid_dir = dir.path().join("42");
        std::fs::create_dir_all(&pid_dir).unwrap();
        std::fs::write(
            pid_dir.join("cgroup"),
            "12:memory:/zk/a\n0::/system.slice/zookeeper.service\n",
        )
        .unwrap();
        let yes = |c: &[&str]| {
            in_cgroups(
                &root,
                42,
                &c.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            )
        };
        assert!(yes(&[]));
        assert!(yes(&["/zk"]));
        assert!(yes(&["/zk/a"]));
        assert!(yes(&["/system.slice"]));
        assert!(!yes(&["/z"]), "a prefix of a name is not a parent");
        assert!(!yes(&["/other"]));
        assert!(
            !in_cgroups(&root, 43, &["/zk".to_string()]),
            "no such process"
        );
    }

    #[test]
    fn no_zookeeper_is_an_error_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = require_zookeeper(&ProcRoot(dir.path().to_path_buf())).unwrap_err();
        assert!(err.to_string().contains("--pid"), "{err}");
    }

    #[test]
    fn explicit_pids_are_checked() {
        let dir = fake_proc();
        let root = ProcRoot(dir.path().to_path_buf());
        assert_eq!(explicit(&root, &[400, 400]).unwrap().len(), 1);
        assert!(matches!(
            explicit(&root, &[999]),
            Err(TargetError::NoSuchPid(999))
        ));
        assert!(matches!(
            explicit(&root, &[500]),
            Err(TargetError::NoSuchPid(500))
        ));
        assert!(matches!(
            explicit(&root, &[101]),
            Err(TargetError::IsThread(101, 100))
        ));
    }

    #[test]
    fn liveness_reads_the_state_after_the_comm() {
        let dir = fake_proc();
        let root = ProcRoot(dir.path().to_path_buf());
        assert!(root.is_alive(100));
        assert!(!root.is_alive(500));
        assert!(!root.is_alive(12345));
    }
}
