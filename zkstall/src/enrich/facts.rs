//! The one interface the pipeline asks names through, and its two implementations:
//! [`Live`] reads /proc, /sys and the kernel's stack map (and can log every answer as a
//! [`Fact`]); [`Replay`] answers from the facts stored in a recording. Because the
//! pipeline asks the same questions in the same order either way, `report` on a
//! recording gives the answers the live run gave.

use rustc_hash::FxHashMap as HashMap;
use std::hash::{BuildHasher as _, Hash};

use serde::{Deserialize, Serialize};

use super::{
    Cgroups, DevId, Devices, DiskDev, DiskPath, FileDev, FileInfo, Files, Symbols, Threads,
    Topology, bounded_insert,
    cgroups::{IoLimit, MemLimit, Mounts, ProcCgroups},
};
use crate::targets::ProcRoot;

/// A stable key for a stack's addresses (FNV-1a), naming it in recordings.
pub fn stack_key(frames: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in frames {
        for b in f.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

pub trait Enricher {
    /// `kernel_id`: the file as the call's record names it (its filesystem's kernel dev_t
    /// and its inode), when the kernel read it.
    fn file_by_fd(&mut self, pid: u32, fd: i32, kernel_id: Option<(u32, u64)>) -> Option<FileInfo>;
    fn file_by_addr(&mut self, pid: u32, addr: u64) -> Option<FileInfo>;
    fn device_name(&mut self, dev: DevId, pid: u32) -> Option<String>;
    fn device_model(&mut self, dev: DevId) -> Option<String>;
    /// The devices serving a filesystem (partition -> disk, dm/md slaves, loop backing).
    fn disk_path(&mut self, dev: FileDev) -> DiskPath;
    fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String>;
    /// A name seen in a kernel record (the same on replay: it comes from the record).
    fn observe_thread(&mut self, tid: u32, comm: &str);
    fn forget_thread(&mut self, tid: u32);
    fn forget_pid(&mut self, pid: u32);
    /// The path of a unified-hierarchy (v2) cgroup id.
    fn cgroup_path(&mut self, id: u64) -> Option<String>;
    /// The path of a cgroup id the block layer charged I/O to (the io controller's
    /// hierarchy: v1 blkio on hybrid hosts).
    fn blk_cgroup_path(&mut self, id: u64) -> Option<String>;
    /// The processes (tgids) in the io controller's cgroup at `path` (v1 blkio on hybrid
    /// hosts), at most [`CGROUP_PROCS_MAX`]; empty when unknown.
    fn blk_cgroup_procs(&mut self, path: &str) -> Vec<u32>;
    /// The cgroups a process is in (v2 path, v1 blkio and memory paths).
    fn process_cgroups(&mut self, pid: u32) -> ProcCgroups;
    /// Symbolized kernel stack (innermost first, tracing frames dropped).
    fn stack(&mut self, frames: &[u64]) -> Vec<String>;
    /// Is the process a JVM (it maps libjvm)?
    fn is_jvm(&mut self, pid: u32) -> bool;
    /// The I/O limit on `disk` of the cgroup process `pid` is in (blk-throttle).
    fn io_limit(&mut self, pid: u32, disk: DiskDev) -> Option<IoLimit>;
    /// The memory limit of the cgroup process `pid` is in.
    fn mem_limit(&mut self, pid: u32) -> Option<MemLimit>;
    /// Facts answered since the last call (live, when recording).
    fn take_facts(&mut self) -> Vec<Fact>;
    /// Reads the names of all current threads of `pid` (live only), and its open files.
    fn seed_threads(&mut self, _pid: u32) {}
    /// Reads the open files and mappings of `pid` again (live only; kept for records
    /// processed after the process closed them or exited).
    fn refresh_files(&mut self, _pid: u32) {}
    /// Takes in a fact read from a recording (replay only).
    fn learn(&mut self, _fact: Fact) {}
}

/// One answer, as stored in a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    Fd {
        pid: u32,
        fd: i32,
        file: Option<StoredFile>,
    },
    Addr {
        pid: u32,
        addr: u64,
        file: Option<StoredFile>,
    },
    DeviceName {
        dev: String,
        pid: u32,
        name: Option<String>,
    },
    DeviceModel {
        dev: String,
        model: Option<String>,
    },
    Thread {
        pid: u32,
        tid: u32,
        name: Option<String>,
    },
    Cgroup {
        id: u64,
        path: Option<String>,
    },
    BlkCgroup {
        id: u64,
        path: Option<String>,
    },
    BlkCgroupProcs {
        path: String,
        pids: Vec<u32>,
    },
    ProcCgroups {
        pid: u32,
        cgroups: ProcCgroups,
    },
    DiskPath {
        dev: String,
        path: DiskPath,
    },
    Stack {
        key: u64,
        frames: Vec<String>,
    },
    Jvm {
        pid: u32,
        jvm: bool,
    },
    IoLimit {
        pid: u32,
        disk: String,
        limit: Option<IoLimit>,
    },
    MemLimit {
        pid: u32,
        limit: Option<MemLimit>,
    },
}

impl Fact {
    /// The question this fact answers (a later answer to the same question replaces it).
    pub fn key(&self) -> String {
        match self {
            Fact::Fd { pid, fd, .. } => format!("fd {pid} {fd}"),
            Fact::Addr { pid, addr, .. } => format!("addr {pid} {addr}"),
            Fact::DeviceName { dev, pid, .. } => format!("devname {dev} {pid}"),
            Fact::DeviceModel { dev, .. } => format!("devmodel {dev}"),
            Fact::Thread { pid, tid, .. } => format!("thread {pid} {tid}"),
            Fact::Cgroup { id, .. } => format!("cgroup {id}"),
            Fact::BlkCgroup { id, .. } => format!("blkcg {id}"),
            Fact::BlkCgroupProcs { path, .. } => format!("blkprocs {path}"),
            Fact::ProcCgroups { pid, .. } => format!("proccg {pid}"),
            Fact::DiskPath { dev, .. } => format!("diskpath {dev}"),
            Fact::Stack { key, .. } => format!("stack {key}"),
            Fact::Jvm { pid, .. } => format!("jvm {pid}"),
            Fact::IoLimit { pid, disk, .. } => format!("iolimit {pid} {disk}"),
            Fact::MemLimit { pid, .. } => format!("memlimit {pid}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    pub path: String,
    pub dev: Option<String>,
    pub ino: Option<u64>,
}

impl From<&FileInfo> for StoredFile {
    fn from(f: &FileInfo) -> Self {
        StoredFile {
            path: f.path.clone(),
            dev: f.dev.map(|d| d.to_string()),
            ino: f.ino,
        }
    }
}

impl From<&StoredFile> for FileInfo {
    fn from(f: &StoredFile) -> Self {
        FileInfo {
            path: f.path.clone(),
            dev: f.dev.as_deref().and_then(DevId::parse),
            ino: f.ino,
        }
    }
}

const STACK_CACHE: usize = 4096;
const PATH_CACHE: usize = 1024;
const PROC_CGROUP_CACHE: usize = 4096;
/// Members of a cgroup read at most (only "exactly one" matters to charging).
pub const CGROUP_PROCS_MAX: usize = 16;

/// Answers from the running system.
pub struct Live {
    proc: ProcRoot,
    files: Files,
    devices: Devices,
    topology: Topology,
    threads: Threads,
    cgroups: Cgroups,
    blk_cgroups: Cgroups,
    symbols: Symbols,
    stack_cache: HashMap<u64, Vec<String>>,
    paths: HashMap<FileDev, DiskPath>,
    proc_cgroups: HashMap<u32, ProcCgroups>,
    jvms: HashMap<u32, bool>,
    mounts: Mounts,
    limits: HashMap<(u32, DiskDev), Option<IoLimit>>,
    mem_limits: HashMap<u32, Option<MemLimit>>,
    /// Members of io-controller cgroups, read at most once a second per cgroup.
    blk_procs: HashMap<String, (std::time::Instant, Vec<u32>)>,
    /// Some while recording: every answer is logged, once until it changes.
    log: Option<Vec<Fact>>,
    /// (hash of the question, hash of the answer last logged): answers are asked for per
    /// record, so an unchanged one must cost two hashes, not a Fact built and compared.
    logged: lru::LruCache<u64, u64, rustc_hash::FxBuildHasher>,
}

/// Answers remembered to log each only when it changes (a replay keeps every answer it
/// learned, so repeating an unchanged one adds nothing).
const LOGGED_KEPT: usize = 16384;

impl Live {
    /// Answers from `proc` and `sys` (normally /proc and /sys), with the cgroup mounts of
    /// this host.
    pub fn new(proc: ProcRoot, sys: &str) -> Self {
        Self::with_mounts(proc, sys, Mounts::detect())
    }

    pub fn with_mounts(proc: ProcRoot, sys: &str, mounts: Mounts) -> Self {
        Live {
            files: Files::new(proc.clone()),
            devices: Devices::new(sys, proc.clone()),
            topology: Topology::new(sys),
            threads: Threads::new(proc.clone()),
            cgroups: Cgroups::new(mounts.unified.clone()),
            blk_cgroups: Cgroups::new(mounts.blkio_root().map(|p| p.to_path_buf())),
            symbols: Symbols::new(proc.0.join("kallsyms")),
            proc,
            stack_cache: HashMap::default(),
            paths: HashMap::default(),
            proc_cgroups: HashMap::default(),
            jvms: HashMap::default(),
            mounts,
            limits: HashMap::default(),
            mem_limits: HashMap::default(),
            blk_procs: HashMap::default(),
            log: None,
            logged: lru::LruCache::with_hasher(
                std::num::NonZeroUsize::new(LOGGED_KEPT).expect("nonzero"),
                rustc_hash::FxBuildHasher,
            ),
        }
    }

    /// Loads the kernel symbol table up front, off the hot path.
    pub fn preload(mut self) -> Self {
        self.symbols.load();
        self
    }

    /// Logs every answer (for a recording).
    pub fn recording(mut self) -> Self {
        self.log = Some(Vec::new());
        self
    }

    /// Logs `f()`, the answer `v` to question `q` (a tag and the question's fields), unless
    /// the same answer to the same question was logged last.
    fn note<Q: Hash, V: Hash + ?Sized>(&mut self, q: Q, v: &V, f: impl FnOnce() -> Fact) {
        let Some(log) = &mut self.log else {
            return;
        };
        let qh = rustc_hash::FxBuildHasher.hash_one(&q);
        let vh = rustc_hash::FxBuildHasher.hash_one(v);
        if self.logged.get(&qh) == Some(&vh) {
            return;
        }
        self.logged.put(qh, vh);
        log.push(f());
    }
}

impl Enricher for Live {
    fn file_by_fd(&mut self, pid: u32, fd: i32, kernel_id: Option<(u32, u64)>) -> Option<FileInfo> {
        let v = self.files.by_fd_known(pid, fd, kernel_id);
        self.note((0u8, pid, fd), &v, || Fact::Fd {
            pid,
            fd,
            file: v.as_ref().map(StoredFile::from),
        });
        v
    }
    fn file_by_addr(&mut self, pid: u32, addr: u64) -> Option<FileInfo> {
        let v = self.files.by_addr(pid, addr);
        self.note((1u8, pid, addr), &v, || Fact::Addr {
            pid,
            addr,
            file: v.as_ref().map(StoredFile::from),
        });
        v
    }
    fn device_name(&mut self, dev: DevId, pid: u32) -> Option<String> {
        let v = self.devices.name(dev, pid);
        self.note((2u8, dev, pid), &v, || Fact::DeviceName {
            dev: dev.to_string(),
            pid,
            name: v.clone(),
        });
        v
    }
    fn device_model(&mut self, dev: DevId) -> Option<String> {
        let v = self.devices.model(dev);
        self.note((3u8, dev), &v, || Fact::DeviceModel {
            dev: dev.to_string(),
            model: v.clone(),
        });
        v
    }
    fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String> {
        let v = self.threads.name(pid, tid);
        self.note((4u8, pid, tid), &v, || Fact::Thread {
            pid,
            tid,
            name: v.clone(),
        });
        v
    }
    fn observe_thread(&mut self, tid: u32, comm: &str) {
        self.threads.observe(tid, comm);
    }
    fn forget_thread(&mut self, tid: u32) {
        self.threads.forget([tid]);
    }
    fn forget_pid(&mut self, pid: u32) {
        // Keep what the process's fds pointed to: its last records may still be on their
        // way (the cache is bounded, and /proc is always asked first). Its cgroups may
        // belong to a new process under the same pid later.
        self.proc_cgroups.remove(&pid);
        self.jvms.remove(&pid);
        self.mem_limits.remove(&pid);
        self.limits.retain(|(p, _), _| *p != pid);
    }
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        let v = self.cgroups.path(id);
        self.note((5u8, id), &v, || Fact::Cgroup {
            id,
            path: v.clone(),
        });
        v
    }
    fn blk_cgroup_path(&mut self, id: u64) -> Option<String> {
        let v = self.blk_cgroups.path(id);
        self.note((6u8, id), &v, || Fact::BlkCgroup {
            id,
            path: v.clone(),
        });
        v
    }
    fn blk_cgroup_procs(&mut self, path: &str) -> Vec<u32> {
        let fresh = self
            .blk_procs
            .get(path)
            .filter(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1))
            .map(|(_, v)| v.clone());
        let v = match fresh {
            Some(v) => v,
            None => {
                let v: Vec<u32> = self
                    .mounts
                    .blkio_root()
                    .and_then(|root| {
                        std::fs::read_to_string(
                            root.join(path.trim_start_matches('/')).join("cgroup.procs"),
                        )
                        .ok()
                    })
                    .map(|t| {
                        t.lines()
                            .filter_map(|l| l.trim().parse().ok())
                            .take(CGROUP_PROCS_MAX)
                            .collect()
                    })
                    .unwrap_or_default();
                bounded_insert(
                    &mut self.blk_procs,
                    PROC_CGROUP_CACHE,
                    path.to_string(),
                    (std::time::Instant::now(), v.clone()),
                );
                v
            }
        };
        self.note((7u8, path), &v, || Fact::BlkCgroupProcs {
            path: path.to_string(),
            pids: v.clone(),
        });
        v
    }
    fn process_cgroups(&mut self, pid: u32) -> ProcCgroups {
        let v = match self.proc_cgroups.get(&pid) {
            Some(c) => c.clone(),
            None => {
                let c = ProcCgroups::read(&self.proc.pid_dir(pid));
                // A process that is gone reads as nothing: do not cache that.
                if c != ProcCgroups::default() {
                    bounded_insert(&mut self.proc_cgroups, PROC_CGROUP_CACHE, pid, c.clone());
                }
                c
            }
        };
        self.note((8u8, pid), &v, || Fact::ProcCgroups {
            pid,
            cgroups: v.clone(),
        });
        v
    }
    fn is_jvm(&mut self, pid: u32) -> bool {
        let v = match self.jvms.get(&pid) {
            Some(v) => *v,
            None => {
                let dir = self.proc.pid_dir(pid);
                let v = std::fs::read_to_string(dir.join("maps"))
                    .map(|m| m.contains("/libjvm.so"))
                    .unwrap_or(false);
                if dir.exists() {
                    bounded_insert(&mut self.jvms, PROC_CGROUP_CACHE, pid, v);
                }
                v
            }
        };
        self.note((9u8, pid), &v, || Fact::Jvm { pid, jvm: v });
        v
    }
    fn io_limit(&mut self, pid: u32, disk: DiskDev) -> Option<IoLimit> {
        let v = match self.limits.get(&(pid, disk)) {
            Some(v) => v.clone(),
            None => {
                let pc = ProcCgroups::read(&self.proc.pid_dir(pid));
                let v =
                    match (&self.mounts.blkio_v1, &self.mounts.unified) {
                        (Some(root), _) => pc.blkio.as_deref().and_then(|p| {
                            super::cgroups::io_limit(root, p, &disk.to_string(), true)
                        }),
                        (None, Some(root)) => pc.unified.as_deref().and_then(|p| {
                            super::cgroups::io_limit(root, p, &disk.to_string(), false)
                        }),
                        _ => None,
                    };
                if pc != ProcCgroups::default() {
                    bounded_insert(&mut self.limits, PROC_CGROUP_CACHE, (pid, disk), v.clone());
                }
                v
            }
        };
        self.note((10u8, pid, disk), &v, || Fact::IoLimit {
            pid,
            disk: disk.to_string(),
            limit: v.clone(),
        });
        v
    }
    fn mem_limit(&mut self, pid: u32) -> Option<MemLimit> {
        let v = match self.mem_limits.get(&pid) {
            Some(v) => v.clone(),
            None => {
                let pc = ProcCgroups::read(&self.proc.pid_dir(pid));
                let v = match (&self.mounts.memory_v1, &self.mounts.unified) {
                    (Some(root), _) => pc
                        .memory
                        .as_deref()
                        .and_then(|p| super::cgroups::mem_limit(root, p, true)),
                    (None, Some(root)) => pc
                        .unified
                        .as_deref()
                        .and_then(|p| super::cgroups::mem_limit(root, p, false)),
                    _ => None,
                };
                if pc != ProcCgroups::default() {
                    bounded_insert(&mut self.mem_limits, PROC_CGROUP_CACHE, pid, v.clone());
                }
                v
            }
        };
        self.note((11u8, pid), &v, || Fact::MemLimit {
            pid,
            limit: v.clone(),
        });
        v
    }
    fn disk_path(&mut self, dev: FileDev) -> DiskPath {
        let v = match self.paths.get(&dev) {
            Some(p) => p.clone(),
            None => {
                let p = self.topology.resolve(dev);
                bounded_insert(&mut self.paths, PATH_CACHE, dev, p.clone());
                p
            }
        };
        self.note((12u8, dev), &v, || Fact::DiskPath {
            dev: dev.to_string(),
            path: v.clone(),
        });
        v
    }
    fn stack(&mut self, frames: &[u64]) -> Vec<String> {
        if frames.is_empty() {
            return Vec::new();
        }
        let key = stack_key(frames);
        let v = match self.stack_cache.get(&key) {
            Some(s) => s.clone(),
            None => {
                let syms = self.symbols.stack(frames);
                bounded_insert(&mut self.stack_cache, STACK_CACHE, key, syms.clone());
                syms
            }
        };
        self.note((13u8, key), &v, || Fact::Stack {
            key,
            frames: v.clone(),
        });
        v
    }
    fn take_facts(&mut self) -> Vec<Fact> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }
    fn seed_threads(&mut self, pid: u32) {
        self.threads.seed(pid);
        self.files.snapshot(pid);
    }
    fn refresh_files(&mut self, pid: u32) {
        self.files.refresh(pid);
    }
}

/// Answers from a recording's facts (the latest fact for each question wins, which is
/// the answer the live run had when it processed the same record).
#[derive(Default)]
pub struct Replay {
    fds: HashMap<(u32, i32), Option<FileInfo>>,
    addrs: HashMap<(u32, u64), Option<FileInfo>>,
    device_names: HashMap<(String, u32), Option<String>>,
    models: HashMap<String, Option<String>>,
    threads: HashMap<u32, String>,
    thread_answers: HashMap<(u32, u32), Option<String>>,
    cgroups: HashMap<u64, Option<String>>,
    blk_cgroups: HashMap<u64, Option<String>>,
    blk_procs: HashMap<String, Vec<u32>>,
    proc_cgroups: HashMap<u32, ProcCgroups>,
    paths: HashMap<String, DiskPath>,
    stacks: HashMap<u64, Vec<String>>,
    jvms: HashMap<u32, bool>,
    limits: HashMap<(u32, String), Option<IoLimit>>,
    mem_limits: HashMap<u32, Option<MemLimit>>,
}

/// Facts kept per kind at most; a recording cannot make `report` grow without bound.
const REPLAY_FACTS: usize = 1 << 20;

impl Replay {
    fn take(&mut self, f: Fact) {
        match f {
            Fact::Fd { pid, fd, file } => bounded_insert(
                &mut self.fds,
                REPLAY_FACTS,
                (pid, fd),
                file.as_ref().map(FileInfo::from),
            ),
            Fact::Addr { pid, addr, file } => bounded_insert(
                &mut self.addrs,
                REPLAY_FACTS,
                (pid, addr),
                file.as_ref().map(FileInfo::from),
            ),
            Fact::DeviceName { dev, pid, name } => {
                bounded_insert(&mut self.device_names, REPLAY_FACTS, (dev, pid), name)
            }
            Fact::DeviceModel { dev, model } => {
                bounded_insert(&mut self.models, REPLAY_FACTS, dev, model)
            }
            Fact::Thread { pid, tid, name } => {
                bounded_insert(&mut self.thread_answers, REPLAY_FACTS, (pid, tid), name)
            }
            Fact::Cgroup { id, path } => bounded_insert(&mut self.cgroups, REPLAY_FACTS, id, path),
            Fact::BlkCgroup { id, path } => {
                bounded_insert(&mut self.blk_cgroups, REPLAY_FACTS, id, path)
            }
            Fact::BlkCgroupProcs { path, pids } => {
                bounded_insert(&mut self.blk_procs, REPLAY_FACTS, path, pids)
            }
            Fact::ProcCgroups { pid, cgroups } => {
                bounded_insert(&mut self.proc_cgroups, REPLAY_FACTS, pid, cgroups)
            }
            Fact::DiskPath { dev, path } => {
                bounded_insert(&mut self.paths, REPLAY_FACTS, dev, path)
            }
            Fact::Stack { key, frames } => {
                bounded_insert(&mut self.stacks, REPLAY_FACTS, key, frames)
            }
            Fact::Jvm { pid, jvm } => bounded_insert(&mut self.jvms, REPLAY_FACTS, pid, jvm),
            Fact::IoLimit { pid, disk, limit } => {
                bounded_insert(&mut self.limits, REPLAY_FACTS, (pid, disk), limit)
            }
            Fact::MemLimit { pid, limit } => {
                bounded_insert(&mut self.mem_limits, REPLAY_FACTS, pid, limit)
            }
        }
    }

    /// Thread names known when the recording started (its header).
    pub fn seed_threads(&mut self, names: impl IntoIterator<Item = (u32, String)>) {
        for (tid, name) in names {
            bounded_insert(&mut self.threads, REPLAY_FACTS, tid, name);
        }
    }
}

impl Enricher for Replay {
    fn file_by_fd(&mut self, pid: u32, fd: i32, _: Option<(u32, u64)>) -> Option<FileInfo> {
        self.fds.get(&(pid, fd)).cloned().flatten()
    }
    fn file_by_addr(&mut self, pid: u32, addr: u64) -> Option<FileInfo> {
        self.addrs.get(&(pid, addr)).cloned().flatten()
    }
    fn device_name(&mut self, dev: DevId, pid: u32) -> Option<String> {
        self.device_names
            .get(&(dev.to_string(), pid))
            .cloned()
            .flatten()
    }
    fn device_model(&mut self, dev: DevId) -> Option<String> {
        self.models.get(&dev.to_string()).cloned().flatten()
    }
    fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String> {
        match self.thread_answers.get(&(pid, tid)) {
            Some(v) => v.clone(),
            None => self.threads.get(&tid).cloned(),
        }
    }
    fn observe_thread(&mut self, tid: u32, comm: &str) {
        if !comm.is_empty() {
            bounded_insert(&mut self.threads, REPLAY_FACTS, tid, comm.to_string());
        }
    }
    fn forget_thread(&mut self, tid: u32) {
        self.threads.remove(&tid);
    }
    fn forget_pid(&mut self, _pid: u32) {}
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.get(&id).cloned().flatten()
    }
    fn blk_cgroup_path(&mut self, id: u64) -> Option<String> {
        self.blk_cgroups.get(&id).cloned().flatten()
    }
    fn process_cgroups(&mut self, pid: u32) -> ProcCgroups {
        self.proc_cgroups.get(&pid).cloned().unwrap_or_default()
    }
    fn blk_cgroup_procs(&mut self, path: &str) -> Vec<u32> {
        self.blk_procs.get(path).cloned().unwrap_or_default()
    }
    fn disk_path(&mut self, dev: FileDev) -> DiskPath {
        self.paths
            .get(&dev.to_string())
            .cloned()
            .unwrap_or_default()
    }
    fn is_jvm(&mut self, pid: u32) -> bool {
        self.jvms.get(&pid).copied().unwrap_or(false)
    }
    fn io_limit(&mut self, pid: u32, disk: DiskDev) -> Option<IoLimit> {
        self.limits.get(&(pid, disk.to_string())).cloned().flatten()
    }
    fn mem_limit(&mut self, pid: u32) -> Option<MemLimit> {
        self.mem_limits.get(&pid).cloned().flatten()
    }
    fn stack(&mut self, frames: &[u64]) -> Vec<String> {
        if frames.is_empty() {
            return Vec::new();
        }
        self.stacks
            .get(&stack_key(frames))
            .cloned()
            .unwrap_or_default()
    }
    fn take_facts(&mut self) -> Vec<Fact> {
        Vec::new()
    }
    fn learn(&mut self, fact: Fact) {
        self.take(fact);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_logs_an_answer_once_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = Live::with_mounts(
            ProcRoot(dir.path().to_path_buf()),
            "/nonexistent",
            Mounts::default(),
        )
        .recording();
        for _ in 0..3 {
            assert_eq!(live.thread_name(7, 8), None);
        }
        // The same question about another thread is another question.
        assert_eq!(live.thread_name(7, 9), None);
        let facts = live.take_facts();
        assert_eq!(facts.len(), 2, "{facts:?}");
        // The answer changes (the thread appeared): logged again, once.
        std::fs::create_dir_all(dir.path().join("7/task/8")).unwrap();
        std::fs::write(dir.path().join("7/task/8/comm"), "SyncThread:1\n").unwrap();
        for _ in 0..3 {
            assert_eq!(live.thread_name(7, 8).as_deref(), Some("SyncThread:1"));
        }
        assert_eq!(
            live.take_facts(),
            vec![Fact::Thread {
                pid: 7,
                tid: 8,
                name: Some("SyncThread:1".into())
            }]
        );
    }
}
