//! tid -> thread name. JDK 9+ names each thread's kernel comm after the Java thread
//! (`SyncThread:1`, cut to 15 bytes); the kernel records carry the comm at the time of the
//! event, and /proc fills in when they do not.

use std::collections::HashMap;

use crate::targets::ProcRoot;

use super::bounded_insert;

const CACHE_ENTRIES: usize = 65536;

pub struct Threads {
    proc: ProcRoot,
    names: HashMap<u32, String>,
}

impl Threads {
    pub fn new(proc: ProcRoot) -> Self {
        Threads {
            proc,
            names: HashMap::new(),
        }
    }

    /// Reads the names of all current threads of `pid` (done before attaching, so
    /// threads that exit early still have a name).
    pub fn seed(&mut self, pid: u32) {
        let Ok(dir) = std::fs::read_dir(self.proc.pid_dir(pid).join("task")) else {
            return;
        };
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) {
                bounded_insert(
                    &mut self.names,
                    CACHE_ENTRIES,
                    tid,
                    name.trim_end().to_string(),
                );
            }
        }
    }

    /// Records the name seen in a kernel record (the freshest source).
    pub fn observe(&mut self, tid: u32, comm: &str) {
        if !comm.is_empty() && self.names.get(&tid).is_none_or(|n| n != comm) {
            bounded_insert(&mut self.names, CACHE_ENTRIES, tid, comm.to_string());
        }
    }

    /// The name of thread `tid` of process `pid`.
    pub fn name(&mut self, pid: u32, tid: u32) -> Option<String> {
        if let Some(n) = self.names.get(&tid) {
            return Some(n.clone());
        }
        let path = self
            .proc
            .pid_dir(pid)
            .join("task")
            .join(tid.to_string())
            .join("comm");
        let name = std::fs::read_to_string(path).ok()?.trim_end().to_string();
        bounded_insert(&mut self.names, CACHE_ENTRIES, tid, name.clone());
        Some(name)
    }

    /// Forgets a process's threads (it exited).
    pub fn forget(&mut self, tids: impl IntoIterator<Item = u32>) {
        for t in tids {
            self.names.remove(&t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_from_proc_and_prefers_kernel_names() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("10/task/11");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("comm"), "SyncThread:1\n").unwrap();
        let mut th = Threads::new(ProcRoot(dir.path().to_path_buf()));
        th.seed(10);
        assert_eq!(th.name(10, 11).as_deref(), Some("SyncThread:1"));
        th.observe(11, "renamed");
        assert_eq!(th.name(10, 11).as_deref(), Some("renamed"));
        assert_eq!(th.name(10, 12), None);
    }
}
