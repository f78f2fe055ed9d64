//! The one interface the pipeline asks names through, and its two implementations:
//! [`Live`] reads /proc, /sys and the kernel's stack map (and can log every answer as a
//! [`Fact`]); [`Replay`] answers from the facts stored in a recording. Because the
//! pipeline asks the same questions in the same order either way, `report` on a
//! recording gives the answers the live run gave.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Cgroups, DevId, Devices, FileInfo, Files, Symbols, Threads, bounded_insert};
use crate::targets::ProcRoot;

/// Where kernel stack ids are turned into addresses (the live STACKS map, or a fake).
pub trait StackSource {
    fn frames(&mut self, id: u32) -> Option<Vec<u64>>;
}

impl StackSource for aya::maps::StackTraceMap<aya::maps::MapData> {
    fn frames(&mut self, id: u32) -> Option<Vec<u64>> {
        self.get(&id, 0)
            .ok()
            .map(|st| st.frames().iter().map(|f| f.ip).collect())
    }
}

pub trait Enricher {
    fn file_by_fd(&mut self, pid: u32, fd: i32) -> Option<FileInfo>;
    fn file_by_addr(&mut self, pid: u32, addr: u64) -> Option<FileInfo>;
    fn device_name(&mut self, dev: DevId, pid: u32) -> Option<String>;
    fn device_model(&mut self, dev: DevId) -> Option<String>;
    fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String>;
    /// A name seen in a kernel record (the same on replay: it comes from the record).
    fn observe_thread(&mut self, tid: u32, comm: &str);
    fn forget_thread(&mut self, tid: u32);
    fn forget_pid(&mut self, pid: u32);
    fn cgroup_path(&mut self, id: u64) -> Option<String>;
    /// Symbolized kernel stack.
    fn stack(&mut self, id: u32) -> Vec<String>;
    /// Facts answered since the last call (live, when recording).
    fn take_facts(&mut self) -> Vec<Fact>;
    /// Reads the names of all current threads of `pid` (live only).
    fn seed_threads(&mut self, _pid: u32) {}
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
    Stack {
        id: u32,
        frames: Vec<String>,
    },
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

/// Answers from the running system.
pub struct Live {
    files: Files,
    devices: Devices,
    threads: Threads,
    cgroups: Cgroups,
    symbols: Symbols,
    stacks: Option<Box<dyn StackSource>>,
    stack_cache: HashMap<u32, Vec<String>>,
    /// Some while recording: every answer is logged.
    log: Option<Vec<Fact>>,
}

impl Live {
    pub fn new(proc: ProcRoot, sys: &str) -> Self {
        Live {
            files: Files::new(proc.clone()),
            devices: Devices::new(sys, proc.clone()),
            threads: Threads::new(proc.clone()),
            cgroups: Cgroups::new(std::path::Path::new(sys).join("fs/cgroup")),
            symbols: Symbols::new(proc.0.join("kallsyms")),
            stacks: None,
            stack_cache: HashMap::new(),
            log: None,
        }
    }

    pub fn with_stacks(mut self, stacks: Box<dyn StackSource>) -> Self {
        self.stacks = Some(stacks);
        self
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

    fn note(&mut self, f: impl FnOnce() -> Fact) {
        if let Some(log) = &mut self.log {
            log.push(f());
        }
    }
}

impl Enricher for Live {
    fn file_by_fd(&mut self, pid: u32, fd: i32) -> Option<FileInfo> {
        let v = self.files.by_fd(pid, fd);
        self.note(|| Fact::Fd {
            pid,
            fd,
            file: v.as_ref().map(StoredFile::from),
        });
        v
    }
    fn file_by_addr(&mut self, pid: u32, addr: u64) -> Option<FileInfo> {
        let v = self.files.by_addr(pid, addr);
        self.note(|| Fact::Addr {
            pid,
            addr,
            file: v.as_ref().map(StoredFile::from),
        });
        v
    }
    fn device_name(&mut self, dev: DevId, pid: u32) -> Option<String> {
        let v = self.devices.name(dev, pid);
        self.note(|| Fact::DeviceName {
            dev: dev.to_string(),
            pid,
            name: v.clone(),
        });
        v
    }
    fn device_model(&mut self, dev: DevId) -> Option<String> {
        let v = self.devices.model(dev);
        self.note(|| Fact::DeviceModel {
            dev: dev.to_string(),
            model: v.clone(),
        });
        v
    }
    fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String> {
        let v = self.threads.name(pid, tid);
        self.note(|| Fact::Thread {
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
    fn forget_pid(&mut self, _pid: u32) {
        // Keep what the process's fds pointed to: its last records may still be on their
        // way (the cache is bounded, and /proc is always asked first).
    }
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        let v = self.cgroups.path(id);
        self.note(|| Fact::Cgroup {
            id,
            path: v.clone(),
        });
        v
    }
    fn stack(&mut self, id: u32) -> Vec<String> {
        let v = match self.stack_cache.get(&id) {
            Some(s) => s.clone(),
            None => {
                let frames = self
                    .stacks
                    .as_mut()
                    .and_then(|s| s.frames(id))
                    .unwrap_or_default();
                let syms: Vec<String> = frames
                    .into_iter()
                    .map(|a| self.symbols.resolve(a))
                    .collect();
                bounded_insert(&mut self.stack_cache, STACK_CACHE, id, syms.clone());
                syms
            }
        };
        self.note(|| Fact::Stack {
            id,
            frames: v.clone(),
        });
        v
    }
    fn take_facts(&mut self) -> Vec<Fact> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }
    fn seed_threads(&mut self, pid: u32) {
        self.threads.seed(pid);
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
    stacks: HashMap<u32, Vec<String>>,
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
            Fact::Stack { id, frames } => {
                bounded_insert(&mut self.stacks, REPLAY_FACTS, id, frames)
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
    fn file_by_fd(&mut self, pid: u32, fd: i32) -> Option<FileInfo> {
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
    fn stack(&mut self, id: u32) -> Vec<String> {
        self.stacks.get(&id).cloned().unwrap_or_default()
    }
    fn take_facts(&mut self) -> Vec<Fact> {
        Vec::new()
    }
    fn learn(&mut self, fact: Fact) {
        self.take(fact);
    }
}
