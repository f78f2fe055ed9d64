//! fd -> path and device, resolved through /proc while the call is in progress (the fd is
//! certainly open then). msync has an address instead of an fd: it resolves through the
//! process's memory maps.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    os::unix::fs::MetadataExt as _,
};

use crate::targets::ProcRoot;

use super::bounded_insert;

const CACHE_ENTRIES: usize = 4096;

/// A block device number, as the kernel's MAJOR:MINOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId {
    pub major: u32,
    pub minor: u32,
}

impl DevId {
    /// Splits a userspace `dev_t` (as in `stat.st_dev`), glibc's encoding.
    pub fn from_dev_t(dev: u64) -> Self {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        DevId {
            major: major as u32,
            minor: minor as u32,
        }
    }
}

impl DevId {
    /// Splits a kernel-internal dev_t (as in tracepoints: major << 20 | minor).
    pub fn from_kernel(dev: u32) -> Self {
        DevId {
            major: dev >> 20,
            minor: dev & 0xfffff,
        }
    }

    /// Parses `MAJ:MIN` (a bdi's name, a mountinfo field).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevId {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl serde::Serialize for DevId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DevId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DevId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not MAJ:MIN: {s}")))
    }
}

impl DevId {
    /// The kernel-internal encoding (major << 20 | minor), as the programs compare it.
    pub fn to_kernel(self) -> u32 {
        (self.major << 20) | (self.minor & 0xfffff)
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What an fd or a mapping refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileInfo {
    /// Absolute path as the process sees it (or `socket:[..]`, `anon_inode:..`).
    pub path: String,
    /// The filesystem's device; None for things that have none.
    pub dev: Option<DevId>,
    pub ino: Option<u64>,
}

/// Resolves and caches files per (pid, fd).
pub struct Files {
    proc: ProcRoot,
    by_fd: HashMap<(u32, i32), FileInfo>,
    /// The kernel's name for the file `by_fd` holds for that fd ([`Files::by_fd_known`]).
    kernel_ids: HashMap<(u32, i32), (u32, u64)>,
    /// File mappings per process, as last read (for msync records processed after the
    /// process unmapped or exited).
    maps: HashMap<u32, Vec<(u64, u64, FileInfo)>>,
    /// Processes seen calling msync: only their mappings are read again by
    /// [`Files::refresh`] (a JVM's maps run to thousands of lines).
    msync_pids: HashSet<u32>,
}

/// Fds looked at per snapshot.
const SNAPSHOT_FDS: usize = 2048;
/// Processes whose mappings are kept.
const MAPS_PIDS: usize = 64;
/// Mappings kept per process.
const MAPS_PER_PID: usize = 4096;

impl Files {
    pub fn new(proc: ProcRoot) -> Self {
        Files {
            proc,
            by_fd: HashMap::new(),
            kernel_ids: HashMap::new(),
            maps: HashMap::new(),
            msync_pids: HashSet::new(),
        }
    }

    /// Reads every open fd and file mapping of `pid` now, so that records processed after
    /// the process closed them or exited (a tracer running behind) still find their files.
    /// Called when a process becomes a target.
    pub fn snapshot(&mut self, pid: u32) {
        self.read_fds(pid);
        self.read_maps(pid);
    }

    /// [`Files::snapshot`] again, every half second: one readlink per fd (a stat only for
    /// an fd whose file changed), and the mappings only of a process that calls msync.
    pub fn refresh(&mut self, pid: u32) {
        self.read_fds(pid);
        if self.msync_pids.contains(&pid) {
            self.read_maps(pid);
        }
    }

    fn read_fds(&mut self, pid: u32) {
        let dir = self.proc.pid_dir(pid);
        let Ok(rd) = std::fs::read_dir(dir.join("fd")) else {
            return;
        };
        // Files and pipes; a server's thousands of client sockets are left out (their
        // writes are not what zkstall explains, and they would crowd the cache).
        for e in rd.flatten().take(SNAPSHOT_FDS) {
            let Some(fd) = e.file_name().to_str().and_then(|f| f.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            // The same name as the last answer: that answer stands (a call's own lookup
            // checks the inode again).
            if target.starts_with("socket:")
                || self
                    .by_fd
                    .get(&(pid, fd))
                    .is_some_and(|c| c.path == target && c.dev.is_some())
            {
                continue;
            }
            let _ = self.by_fd(pid, fd);
        }
    }

    fn read_maps(&mut self, pid: u32) {
        if let Ok(text) = std::fs::read_to_string(self.proc.pid_dir(pid).join("maps")) {
            let v: Vec<(u64, u64, FileInfo)> = text
                .lines()
                .filter_map(parse_maps_range)
                .take(MAPS_PER_PID)
                .collect();
            bounded_insert(&mut self.maps, MAPS_PIDS, pid, v);
        }
    }

    /// The file behind `fd` of process `pid`. Reads /proc now; when the fd is already
    /// closed, falls back to what it pointed to the last time it was resolved.
    ///
    /// The same fd asked again (ZooKeeper's SyncThread syncs its log fd thousands of times
    /// a second) costs one stat, not a readlink too: when the link still leads to the
    /// same (device, inode) as the last answer, that answer is the file. An fd closed and
    /// reused for another file leads elsewhere and is resolved again.
    pub fn by_fd(&mut self, pid: u32, fd: i32) -> Option<FileInfo> {
        if fd < 0 {
            return None;
        }
        let link = self.proc.pid_dir(pid).join("fd").join(fd.to_string());
        if let Some(c) = self.by_fd.get(&(pid, fd))
            && let (Some(dev), Some(ino)) = (c.dev, c.ino)
            && let Ok(meta) = std::fs::metadata(&link)
            && DevId::from_dev_t(meta.dev()) == dev
            && meta.ino() == ino
        {
            return Some(c.clone());
        }
        match std::fs::read_link(&link) {
            Ok(target) => {
                let path = target.to_string_lossy().into_owned();
                // stat follows the link to the open file itself, even if it was renamed.
                let Ok(meta) = std::fs::metadata(&link) else {
                    // Closed between the two reads (the process exiting): the last full
                    // answer for this fd when it named the same file, else the file by its
                    // name; never a device-less answer cached over a full one.
                    if let Some(c) = self
                        .by_fd
                        .get(&(pid, fd))
                        .filter(|c| c.path == path && c.dev.is_some())
                    {
                        return Some(c.clone());
                    }
                    let meta = std::fs::metadata(&path).ok();
                    return Some(FileInfo {
                        dev: meta.as_ref().map(|m| DevId::from_dev_t(m.dev())),
                        ino: meta.as_ref().map(|m| m.ino()),
                        path,
                    });
                };
                let info = FileInfo {
                    path,
                    dev: Some(DevId::from_dev_t(meta.dev())),
                    ino: Some(meta.ino()),
                };
                bounded_insert(&mut self.by_fd, CACHE_ENTRIES, (pid, fd), info.clone());
                Some(info)
            }
            Err(_) => self.by_fd.get(&(pid, fd)).cloned(),
        }
    }

    /// [`Files::by_fd`] for a call whose record names the fd's file as the kernel knows it
    /// (`kernel_id`: its filesystem's kernel dev_t and its inode, read at the call's
    /// entry). When that is the file the last full answer for this fd was checked against,
    /// the answer stands without a stat through /proc: most of what the agent spent on
    /// ZooKeeper's fdatasyncs.
    pub fn by_fd_known(
        &mut self,
        pid: u32,
        fd: i32,
        kernel_id: Option<(u32, u64)>,
    ) -> Option<FileInfo> {
        let key = (pid, fd);
        if let Some(id) = kernel_id
            && self.kernel_ids.get(&key) == Some(&id)
            && let Some(c) = self.by_fd.get(&key)
        {
            return Some(c.clone());
        }
        let v = self.by_fd(pid, fd);
        // Kept only when the answer is that very inode (an fd reused between the entry and
        // this read is not), and on the same filesystem as far as stat tells: a stat's
        // device is not always the superblock's (btrfs subvolumes), so only the inode
        // number is compared, and the kernel's id, not stat's, is what is matched later.
        match (kernel_id, &v) {
            (Some(id), Some(f)) if f.dev.is_some() && f.ino == Some(id.1) => {
                bounded_insert(&mut self.kernel_ids, CACHE_ENTRIES, key, id);
            }
            _ => {
                self.kernel_ids.remove(&key);
            }
        }
        v
    }

    /// The file mapped at `addr` in process `pid` (for msync).
    /// Reads /proc now; when the process is gone (or unmapped it), falls back to its last
    /// snapshot.
    pub fn by_addr(&mut self, pid: u32, addr: u64) -> Option<FileInfo> {
        if self.msync_pids.len() < MAPS_PIDS {
            self.msync_pids.insert(pid);
        }
        if let Ok(maps) = std::fs::read_to_string(self.proc.pid_dir(pid).join("maps"))
            && let Some(f) = maps.lines().find_map(|l| parse_maps_line(l, addr))
        {
            return Some(f);
        }
        self.maps
            .get(&pid)?
            .iter()
            .find(|(lo, hi, _)| (*lo..*hi).contains(&addr))
            .map(|(_, _, f)| f.clone())
    }

    /// Forgets everything about a process (it exited).
    pub fn forget_pid(&mut self, pid: u32) {
        self.by_fd.retain(|(p, _), _| *p != pid);
        self.kernel_ids.retain(|(p, _), _| *p != pid);
        self.maps.remove(&pid);
        self.msync_pids.remove(&pid);
    }
}

/// A maps line's range and file, for a file mapping.
fn parse_maps_range(line: &str) -> Option<(u64, u64, FileInfo)> {
    let (range, _) = line.split_once(' ')?;
    let (lo, hi) = range.split_once('-')?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    parse_maps_line(line, lo).map(|f| (lo, hi, f))
}

/// `7f..-7f.. rw-s 00000000 fe:00 1234   /path` -> the file, if `addr` is inside.
fn parse_maps_line(line: &str, addr: u64) -> Option<FileInfo> {
    let mut it = line.split_whitespace();
    let range = it.next()?;
    let (lo, hi) = range.split_once('-')?;
    let (lo, hi) = (
        u64::from_str_radix(lo, 16).ok()?,
        u64::from_str_radix(hi, 16).ok()?,
    );
    if !(lo..hi).contains(&addr) {
        return None;
    }
    let _perms = it.next()?;
    let _offset = it.next()?;
    let dev = it.next()?;
    let ino: u64 = it.next()?.parse().ok()?;
    let path: Vec<&str> = it.collect();
    if path.is_empty() {
        return None; // anonymous memory: no file to sync
    }
    let (ma, mi) = dev.split_once(':')?;
    let dev = DevId {
        major: u32::from_str_radix(ma, 16).ok()?,
        minor: u32::from_str_radix(mi, 16).ok()?,
    };
    Some(FileInfo {
        path: path.join(" "),
        dev: Some(dev),
        ino: Some(ino),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd as _;

    #[test]
    fn kernel_dev_t_and_bdi_names() {
        assert_eq!(
            DevId::from_kernel((7 << 20) | 3),
            DevId { major: 7, minor: 3 }
        );
        assert_eq!(
            DevId::from_kernel((259 << 20) | 65536),
            DevId {
                major: 259,
                minor: 65536
            }
        );
        assert_eq!(
            DevId::parse("254:0"),
            Some(DevId {
                major: 254,
                minor: 0
            })
        );
        assert_eq!(DevId::parse("noop"), None);
    }

    #[test]
    fn dev_t_split_matches_libc() {
        for dev in [
            0u64,
            0xfe00,
            0x0801,
            0x7_00001,
            (259u64 << 8) | 5,
            0x1234_5678_9abc,
        ] {
            let d = DevId::from_dev_t(dev);
            assert_eq!(d.major, libc::major(dev));
            assert_eq!(d.minor, libc::minor(dev));
        }
    }

    #[test]
    fn resolves_an_open_fd_and_remembers_it_after_close() {
        // A fake /proc: fd links of another process come and go without racing the fds
        // of this test process (tests run in parallel threads and reuse fd numbers).
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("log.1");
        std::fs::write(&target, b"x").unwrap();
        let meta = std::fs::metadata(&target).unwrap();
        let fd_dir = dir.path().join("proc/42/fd");
        std::fs::create_dir_all(&fd_dir).unwrap();
        std::os::unix::fs::symlink(&target, fd_dir.join("5")).unwrap();
        let mut files = Files::new(ProcRoot(dir.path().join("proc")));
        let info = files.by_fd(42, 5).unwrap();
        assert_eq!(info.path, target.to_string_lossy());
        assert_eq!(info.dev, Some(DevId::from_dev_t(meta.dev())));
        assert_eq!(info.ino, Some(meta.ino()));
        std::fs::remove_file(fd_dir.join("5")).unwrap(); // the fd was closed
        assert_eq!(
            files.by_fd(42, 5),
            Some(info),
            "closed fd falls back to the cache"
        );
        files.forget_pid(42);
        assert_eq!(files.by_fd(42, 5), None);
        assert_eq!(files.by_fd(42, -1), None);
    }

    #[test]
    fn the_kernels_name_for_the_file_saves_the_stat_while_it_stays_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (log1, log2) = (dir.path().join("log.1"), dir.path().join("log.2"));
        std::fs::write(&log1, b"x").unwrap();
        std::fs::write(&log2, b"y").unwrap();
        let ino1 = std::fs::metadata(&log1).unwrap().ino();
        let ino2 = std::fs::metadata(&log2).unwrap().ino();
        let fd_dir = dir.path().join("proc/42/fd");
        std::fs::create_dir_all(&fd_dir).unwrap();
        let link = fd_dir.join("5");
        std::os::unix::fs::symlink(&log1, &link).unwrap();
        let mut files = Files::new(ProcRoot(dir.path().join("proc")));
        let id1 = Some((7 << 20, ino1));
        let first = files.by_fd_known(42, 5, id1).unwrap();
        assert_eq!(first.path, log1.to_string_lossy());
        // The fd now leads to log.2, but the record still names log.1's inode: the last
        // answer stands, /proc not read (a link this test swapped behind its back).
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&log2, &link).unwrap();
        assert_eq!(files.by_fd_known(42, 5, id1), Some(first.clone()));
        // A record naming another inode is resolved again.
        let id2 = Some((7 << 20, ino2));
        let second = files.by_fd_known(42, 5, id2).unwrap();
        assert_eq!(second.path, log2.to_string_lossy());
        // A record naming an inode the fd does not lead to (reused between the entry and
        // this read) is answered from /proc and not remembered as that inode.
        assert_eq!(
            files.by_fd_known(42, 5, Some((7 << 20, ino2 + 1000))),
            Some(second.clone())
        );
        assert_eq!(files.kernel_ids.get(&(42, 5)), None);
        // No name from the kernel: as before, a stat each time.
        assert_eq!(files.by_fd_known(42, 5, None), Some(second));
        files.forget_pid(42);
        assert!(files.kernel_ids.is_empty());
    }

    #[test]
    fn a_snapshot_answers_for_a_process_that_is_gone() {
        // The tracer runs behind: by the time it processes a record, the process exited.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("log.1");
        std::fs::write(&target, b"x").unwrap();
        let pid_dir = dir.path().join("proc/43");
        std::fs::create_dir_all(pid_dir.join("fd")).unwrap();
        std::os::unix::fs::symlink(&target, pid_dir.join("fd/7")).unwrap();
        std::fs::write(
            pid_dir.join("maps"),
            "7f0000000000-7f0000001000 rw-s 00000000 fe:01 1234 /data/zk/map.1\n",
        )
        .unwrap();
        let mut files = Files::new(ProcRoot(dir.path().join("proc")));
        files.snapshot(43);
        std::fs::remove_dir_all(&pid_dir).unwrap();
        assert_eq!(files.by_fd(43, 7).unwrap().path, target.to_string_lossy());
        let m = files.by_addr(43, 0x7f00_0000_0800).unwrap();
        assert_eq!(m.path, "/data/zk/map.1");
        assert_eq!(m.ino, Some(1234));
        assert_eq!(files.by_addr(43, 0x7f00_0000_1800), None);
    }

    #[test]
    fn a_refresh_reads_mappings_only_of_a_process_that_calls_msync_and_keeps_known_fds() {
        let dir = tempfile::tempdir().unwrap();
        let (log1, log2) = (dir.path().join("log.1"), dir.path().join("log.2"));
        std::fs::write(&log1, b"x").unwrap();
        std::fs::write(&log2, b"y").unwrap();
        let pid_dir = dir.path().join("proc/44");
        std::fs::create_dir_all(pid_dir.join("fd")).unwrap();
        std::os::unix::fs::symlink(&log1, pid_dir.join("fd/7")).unwrap();
        let map = |path: &str| {
            std::fs::write(
                pid_dir.join("maps"),
                format!("7f0000000000-7f0000001000 rw-s 00000000 fe:01 1234 {path}\n"),
            )
            .unwrap()
        };
        map("/data/zk/map.1");
        let mut files = Files::new(ProcRoot(dir.path().join("proc")));
        files.snapshot(44);
        let first = files.by_fd.get(&(44, 7)).cloned().unwrap();
        // The fd now names another file, and the mapping changed.
        std::fs::remove_file(pid_dir.join("fd/7")).unwrap();
        std::os::unix::fs::symlink(&log2, pid_dir.join("fd/7")).unwrap();
        map("/data/zk/map.2");
        files.refresh(44);
        assert_eq!(files.by_fd[&(44, 7)].path, log2.to_string_lossy());
        assert_ne!(files.by_fd[&(44, 7)].ino, first.ino);
        let mapped = |f: &Files| f.maps[&44][0].2.path.clone();
        assert_eq!(
            mapped(&files),
            "/data/zk/map.1",
            "no msync seen: not read again"
        );
        assert_eq!(
            files.by_addr(44, 0x7f00_0000_0800).unwrap().path,
            "/data/zk/map.2"
        );
        map("/data/zk/map.3");
        files.refresh(44);
        assert_eq!(mapped(&files), "/data/zk/map.3");
    }

    #[test]
    fn resolves_this_process_s_open_fd_through_the_real_proc() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut files = Files::new(ProcRoot::default());
        let info = files
            .by_fd(std::process::id(), f.as_file().as_raw_fd())
            .unwrap();
        assert_eq!(info.path, f.path().to_string_lossy());
    }

    #[test]
    fn resolves_a_mapping_address() {
        let line = "7f3a00000000-7f3a00001000 rw-s 00000000 fe:01 131 /var/lib/zk/data file";
        let info = parse_maps_line(line, 0x7f3a_0000_0800).unwrap();
        assert_eq!(info.path, "/var/lib/zk/data file");
        assert_eq!(
            info.dev,
            Some(DevId {
                major: 254,
                minor: 1
            })
        );
        assert_eq!(info.ino, Some(131));
        assert!(
            parse_maps_line(line, 0x7f3a_0000_1000).is_none(),
            "end is exclusive"
        );
        assert!(
            parse_maps_line("7f00-7f10 rw-p 0 00:00 0", 0x7f01).is_none(),
            "anonymous"
        );
        assert!(parse_maps_line("garbage", 1).is_none());
    }
}
