//! cgroup ids -> paths, and which cgroups a process is in.
//!
//! `bpf_get_current_cgroup_id()` returns the id of the task's cgroup in the unified (v2)
//! hierarchy: the inode number of its directory under the cgroup2 mount. The block layer
//! charges I/O to a blkcg, whose id belongs to the hierarchy the io controller is mounted
//! in: the cgroup2 mount, or on hybrid hosts a v1 `blkio` mount. Both mounts are found in
//! mountinfo (a hybrid host has cgroup2 at /sys/fs/cgroup/unified, not /sys/fs/cgroup).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// More cgroups than any host has; a walk stops there.
const MAX_CGROUPS: usize = 100_000;
/// A miss triggers a re-walk at most this often...
const REWALK_EVERY: Duration = Duration::from_secs(5);
/// ...but an id first missed after the last walk (a cgroup made since: a backup job's
/// new scope) triggers one at once, at most this often.
const REWALK_NEW: Duration = Duration::from_millis(100);
/// Ids missed, remembered (when first missed) at most.
const MAX_MISSES: usize = 4096;

/// Where the cgroup hierarchies zkstall cares about are mounted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The cgroup2 (unified) mount.
    pub unified: Option<PathBuf>,
    /// v1 mounts of the blkio and memory controllers (hybrid and legacy hosts).
    pub blkio_v1: Option<PathBuf>,
    pub memory_v1: Option<PathBuf>,
}

impl Mounts {
    /// Parses a mountinfo file (`/proc/self/mountinfo`).
    pub fn from_mountinfo(text: &str) -> Mounts {
        let mut m = Mounts::default();
        for line in text.lines() {
            // id parent maj:min root mount_point options [optional...] - fstype source super
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(unescape);
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let _source = r.next();
            let super_opts = r.next().unwrap_or("");
            let Some(mp) = mount_point else { continue };
            match fstype {
                "cgroup2" if m.unified.is_none() => m.unified = Some(PathBuf::from(mp)),
                "cgroup" => {
                    let opts: Vec<&str> = super_opts.split(',').collect();
                    if opts.contains(&"blkio") && m.blkio_v1.is_none() {
                        m.blkio_v1 = Some(PathBuf::from(&mp));
                    }
                    if opts.contains(&"memory") && m.memory_v1.is_none() {
                        m.memory_v1 = Some(PathBuf::from(&mp));
                    }
                }
                _ => {}
            }
        }
        m
    }

    pub fn detect() -> Mounts {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| Mounts::from_mountinfo(&t))
            .unwrap_or_default()
    }

    /// The hierarchy the block layer's cgroup ids belong to.
    pub fn blkio_root(&self) -> Option<&Path> {
        self.blkio_v1.as_deref().or(self.unified.as_deref())
    }
}

/// mountinfo escapes spaces and a few other characters as octal `\040`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups a process is in, as /proc/<pid>/cgroup lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct ProcCgroups {
    /// Its path in the unified hierarchy (`/system.slice/zookeeper.service`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unified: Option<String>,
    /// Its v1 blkio and memory cgroups, where those controllers are on v1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl ProcCgroups {
    pub fn parse(text: &str) -> ProcCgroups {
        let mut out = ProcCgroups::default();
        for line in text.lines() {
            let mut f = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                out.unified = Some(path.to_string());
            }
            for c in ctrls.split(',') {
                match c {
                    "blkio" => out.blkio = Some(path.to_string()),
                    "memory" => out.memory = Some(path.to_string()),
                    _ => {}
                }
            }
        }
        out
    }

    pub fn read(proc_pid_dir: &Path) -> ProcCgroups {
        std::fs::read_to_string(proc_pid_dir.join("cgroup"))
            .map(|t| ProcCgroups::parse(&t))
            .unwrap_or_default()
    }

    /// The most specific name: the unified path, else the v1 blkio one.
    pub fn label(&self) -> Option<String> {
        self.unified.clone().or_else(|| self.blkio.clone())
    }
}

/// An I/O limit on one disk: the most restrictive of a cgroup's and its ancestors'
/// (blk-throttle: v1 `blkio.throttle.*_device`, v2 `io.max`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct IoLimit {
    /// The cgroup the limit was found on (the process's, or an ancestor).
    pub cgroup: String,
    /// The process's own cgroup in that hierarchy.
    pub own_cgroup: String,
    pub disk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rbps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wbps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub riops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wiops: Option<u64>,
    /// Found in a v1 blkio hierarchy (else v2 io.max).
    pub v1: bool,
}

/// A memory limit: the most restrictive of a cgroup's and its ancestors'.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct MemLimit {
    pub cgroup: String,
    pub own_cgroup: String,
    /// Bytes: v1 memory.limit_in_bytes or v2 memory.max.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Bytes: v2 memory.high (reclaim starts there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<u64>,
    /// The process's cgroup's usage when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    pub v1: bool,
}

/// Reads `MAJ:MIN value` lines (v1 throttle files) for `disk`.
fn v1_value(path: &Path, disk: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (d, v) = l.split_once(' ')?;
        (d == disk).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Parses v2 io.max for `disk`: `MAJ:MIN rbps=max wbps=1048576 riops=max wiops=max`.
pub fn io_max(text: &str, disk: &str) -> [Option<u64>; 4] {
    let mut out = [None; 4];
    for l in text.lines() {
        let mut it = l.split_whitespace();
        if it.next() != Some(disk) {
            continue;
        }
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse::<u64>().ok();
            match k {
                "rbps" => out[0] = v,
                "wbps" => out[1] = v,
                "riops" => out[2] = v,
                "wiops" => out[3] = v,
                _ => {}
            }
        }
    }
    out
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The I/O limit applying to a process's cgroup `path` (relative to `root`) on `disk`.
pub fn io_limit(root: &Path, path: &str, disk: &str, v1: bool) -> Option<IoLimit> {
    let mut lim = IoLimit {
        own_cgroup: path.to_string(),
        disk: disk.to_string(),
        v1,
        ..Default::default()
    };
    let mut cur = std::path::PathBuf::from(path.trim_start_matches('/'));
    loop {
        let dir = root.join(&cur);
        let vals = if v1 {
            let f = |n: &str| v1_value(&dir.join(n), disk);
            [
                f("blkio.throttle.read_bps_device"),
                f("blkio.throttle.write_bps_device"),
                f("blkio.throttle.read_iops_device"),
                f("blkio.throttle.write_iops_device"),
            ]
        } else {
            std::fs::read_to_string(dir.join("io.max"))
                .map(|t| io_max(&t, disk))
                .unwrap_or([None; 4])
        };
        if vals.iter().any(Option::is_some) {
            let before = (lim.rbps, lim.wbps, lim.riops, lim.wiops);
            lim.rbps = min_opt(lim.rbps, vals[0]);
            lim.wbps = min_opt(lim.wbps, vals[1]);
            lim.riops = min_opt(lim.riops, vals[2]);
            lim.wiops = min_opt(lim.wiops, vals[3]);
            if before != (lim.rbps, lim.wbps, lim.riops, lim.wiops) {
                lim.cgroup = format!("/{}", cur.display());
            }
        }
        if !cur.pop() {
            break;
        }
    }
    [lim.rbps, lim.wbps, lim.riops, lim.wiops]
        .iter()
        .any(Option::is_some)
        .then_some(lim)
}

/// The memory limit applying to a process's cgroup `path` (relative to `root`).
pub fn mem_limit(root: &Path, path: &str, v1: bool) -> Option<MemLimit> {
    let read = |p: std::path::PathBuf| -> Option<u64> {
        let t = std::fs::read_to_string(p).ok()?;
        let t = t.trim();
        if t == "max" {
            return None;
        }
        // v1 "unlimited" is a page-rounded LONG_MAX.
        t.parse::<u64>().ok().filter(|v| *v < (1 << 62))
    };
    let own = root.join(path.trim_start_matches('/'));
    let mut lim = MemLimit {
        own_cgroup: path.to_string(),
        usage: read(own.join(if v1 {
            "memory.usage_in_bytes"
        } else {
            "memory.current"
        })),
        v1,
        ..Default::default()
    };
    let mut cur = std::path::PathBuf::from(path.trim_start_matches('/'));
    loop {
        let dir = root.join(&cur);
        let (max, high) = if v1 {
            (read(dir.join("memory.limit_in_bytes")), None)
        } else {
            (read(dir.join("memory.max")), read(dir.join("memory.high")))
        };
        let before = (lim.max, lim.high);
        lim.max = min_opt(lim.max, max);
        lim.high = min_opt(lim.high, high);
        if before != (lim.max, lim.high) {
            lim.cgroup = format!("/{}", cur.display());
        }
        if !cur.pop() {
            break;
        }
    }
    (lim.max.is_some() || lim.high.is_some()).then_some(lim)
}

/// id -> path in one hierarchy, by walking its mount.
pub struct Cgroups {
    root: Option<PathBuf>,
    by_id: HashMap<u64, String>,
    walked: Option<Instant>,
    /// id -> when it was first asked for and not found.
    misses: HashMap<u64, Instant>,
}

impl Cgroups {
    pub fn new(root: Option<PathBuf>) -> Self {
        Cgroups {
            root,
            by_id: HashMap::new(),
            walked: None,
            misses: HashMap::new(),
        }
    }

    /// The path of cgroup `id` (relative to the mount, starting with `/`).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        let now = Instant::now();
        if self.misses.len() >= MAX_MISSES {
            self.misses.clear();
        }
        let first_missed = *self.misses.entry(id).or_insert(now);
        let due = match self.walked {
            None => true,
            Some(t) => {
                let age = now.duration_since(t);
                age >= REWALK_EVERY || (t < first_missed && age >= REWALK_NEW)
            }
        };
        if due {
            self.walk();
        }
        let found = self.by_id.get(&id).cloned();
        if found.is_some() {
            self.misses.remove(&id);
        }
        found
    }

    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        self.by_id.clear();
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if self.by_id.len() >= MAX_CGROUPS {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                continue;
            };
            self.by_id.insert(meta.ino(), rel_path(&root, &dir));
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }
}

fn rel_path(root: &Path, dir: &Path) -> String {
    match dir.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => "/".into(),
        Ok(r) => format!("/{}", r.display()),
        Err(_) => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_directory_inodes_to_paths() {
        let dir = tempfile::tempdir().unwrap();
        let svc = dir.path().join("system.slice/zookeeper.service");
        std::fs::create_dir_all(&svc).unwrap();
        let id = std::fs::metadata(&svc).unwrap().ino();
        let root_id = std::fs::metadata(dir.path()).unwrap().ino();
        let mut c = Cgroups::new(Some(dir.path().to_path_buf()));
        assert_eq!(
            c.path(id).as_deref(),
            Some("/system.slice/zookeeper.service")
        );
        assert_eq!(c.path(root_id).as_deref(), Some("/"));
        assert_eq!(c.path(0), None);
        assert_eq!(
            c.path(u64::MAX),
            None,
            "unknown ids miss without a re-walk storm"
        );
        assert_eq!(Cgroups::new(None).path(id), None);
    }

    #[test]
    fn a_cgroup_made_after_the_last_walk_is_found_at_its_first_miss() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cgroups::new(Some(dir.path().to_path_buf()));
        let root_id = std::fs::metadata(dir.path()).unwrap().ino();
        assert_eq!(c.path(root_id).as_deref(), Some("/"));
        // A backup job's scope, made right after: its first request finds it (once the
        // walk is REWALK_NEW old), not 5 s later.
        let job = dir.path().join("backup.scope");
        std::fs::create_dir_all(&job).unwrap();
        let id = std::fs::metadata(&job).unwrap().ino();
        std::thread::sleep(REWALK_NEW);
        assert_eq!(c.path(id).as_deref(), Some("/backup.scope"));
        // An id in no walk is missed again without a walk each time.
        let walked = c.walked;
        std::thread::sleep(REWALK_NEW);
        assert_eq!(c.path(u64::MAX - 1), None);
        assert_ne!(c.walked, walked, "a new miss walks once");
        let walked = c.walked;
        std::thread::sleep(REWALK_NEW);
        assert_eq!(c.path(u64::MAX - 1), None);
        assert_eq!(c.walked, walked, "the same miss does not walk again");
    }

    #[test]
    fn finds_the_unified_mount_and_v1_controllers_on_a_hybrid_host() {
        // This machine's layout: cgroup2 at /sys/fs/cgroup/unified, io and memory on v1.
        let mi = "\
25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 25 0:28 / /sys/fs/cgroup/blkio rw,nosuid - cgroup cgroup rw,blkio
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";
        let m = Mounts::from_mountinfo(mi);
        assert_eq!(
            m.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            m.blkio_v1.as_deref(),
            Some(Path::new("/sys/fs/cgroup/blkio"))
        );
        assert_eq!(
            m.memory_v1.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(m.blkio_root(), Some(Path::new("/sys/fs/cgroup/blkio")));
        // A pure v2 host.
        let v2 = Mounts::from_mountinfo(
            "25 1 0:23 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(v2.blkio_root(), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(v2.memory_v1, None);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn io_and_memory_limits_are_the_most_restrictive_up_the_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        let zk = dir.path().join("svc/zk");
        std::fs::create_dir_all(&zk).unwrap();
        // v1 blkio: a write limit on the service, a tighter iops one on zk.
        std::fs::write(
            dir.path().join("svc/blkio.throttle.write_bps_device"),
            "7:3 1048576\n8:0 5\n",
        )
        .unwrap();
        std::fs::write(zk.join("blkio.throttle.write_iops_device"), "7:3 20\n").unwrap();
        let l = io_limit(dir.path(), "/svc/zk", "7:3", true).unwrap();
        assert_eq!((l.wbps, l.wiops, l.rbps), (Some(1_048_576), Some(20), None));
        assert_eq!(l.own_cgroup, "/svc/zk");
        assert!(io_limit(dir.path(), "/svc/zk", "9:9", true).is_none());
        // v2 io.max.
        std::fs::write(
            zk.join("io.max"),
            "7:3 rbps=max wbps=2097152 riops=max wiops=max\n",
        )
        .unwrap();
        let l = io_limit(dir.path(), "/svc/zk", "7:3", false).unwrap();
        assert_eq!((l.wbps, l.cgroup.as_str()), (Some(2_097_152), "/svc/zk"));
        // Memory: v1 unlimited is a huge number; the service's limit applies.
        std::fs::write(zk.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(dir.path().join("svc/memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(zk.join("memory.usage_in_bytes"), "60000000\n").unwrap();
        let m = mem_limit(dir.path(), "/svc/zk", true).unwrap();
        assert_eq!(
            (m.max, m.usage, m.cgroup.as_str()),
            (Some(64 << 20), Some(60_000_000), "/svc")
        );
        std::fs::write(zk.join("memory.max"), "max\n").unwrap();
        std::fs::write(zk.join("memory.high"), "33554432\n").unwrap();
        let m = mem_limit(dir.path(), "/svc/zk", false).unwrap();
        assert_eq!((m.max, m.high), (None, Some(32 << 20)));
    }

    #[test]
    fn reads_a_processs_memberships_in_both_layouts() {
        let c = ProcCgroups::parse(
            "12:memory:/zk\n11:blkio:/zk\n3:cpu,cpuacct:/\n0::/system.slice/zk.service\n",
        );
        assert_eq!(c.unified.as_deref(), Some("/system.slice/zk.service"));
        assert_eq!(c.blkio.as_deref(), Some("/zk"));
        assert_eq!(c.memory.as_deref(), Some("/zk"));
        assert_eq!(c.label().as_deref(), Some("/system.slice/zk.service"));
        let v1 = ProcCgroups::parse("4:blkio:/backup\n");
        assert_eq!(v1.label().as_deref(), Some("/backup"));
    }
}
