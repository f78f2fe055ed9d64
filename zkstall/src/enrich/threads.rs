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

/// The tid of the jbd2 thread of an ext4 (or ext3) filesystem on block device `fs_name`
/// (`jbd2/sdb1-8`, its comm cut to 15 bytes): the kernel names it after the device and the
/// journal's inode. None for a filesystem without one (XFS, an external journal), or when
/// two threads' cut names fit.
pub fn journal_thread(proc: &ProcRoot, fs_name: &str) -> Option<u32> {
    journal_threads(proc, &[fs_name]).pop().flatten()
}

/// [`journal_thread`] of each of `fs_names`, in their order, from one walk of /proc (each
/// process's `comm` read once, whatever the number of filesystems).
pub fn journal_threads(proc: &ProcRoot, fs_names: &[&str]) -> Vec<Option<u32>> {
    let wants: Vec<String> = fs_names.iter().map(|n| format!("jbd2/{n}-")).collect();
    // Per name: None (none yet), Some(Some(pid)), or Some(None) (two alike).
    let mut found: Vec<Option<Option<u32>>> = vec![None; wants.len()];
    if wants.is_empty() {
        return Vec::new();
    }
    let Ok(rd) = std::fs::read_dir(&proc.0) else {
        return vec![None; wants.len()];
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim_end();
        if !comm.starts_with("jbd2/") {
            continue;
        }
        // A kernel thread: no user memory, so no command line. Read once, if a name fits.
        let mut kthread = None;
        for (want, slot) in wants.iter().zip(found.iter_mut()) {
            // Whole, or cut: "jbd2/nvme0n1p12-" is the first 15 bytes of "jbd2/nvme0n1p12-8".
            let matches = if want.len() < 15 {
                comm.starts_with(want.as_str())
            } else {
                comm.len() == 15 && want.starts_with(comm)
            };
            if !matches {
                continue;
            }
            if !*kthread.get_or_insert_with(|| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.is_empty())
            }) {
                continue;
            }
            *slot = match slot {
                // Two cut names alike (`nvme0n1p12`, `nvme0n1p123`): not known which.
                Some(_) => Some(None),
                None => Some(Some(pid)),
            };
        }
    }
    found.into_iter().map(Option::flatten).collect()
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    #[test]
    fn finds_a_filesystem_s_journal_thread_by_its_name_cut_or_whole() {
        let dir = tempfile::tempdir().unwrap();
        let proc = |pid: u32, comm: &str, cmdline: &str| {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(d.join("cmdline"), cmdline).unwrap();
        };
        proc(1, "systemd", "/sbin/init\0");
        proc(310, "jbd2/loop0p1-8", "");
        proc(311, "jbd2/loop0p10-8", "");
        proc(312, "jbd2/nvme0n1p12", "");
        proc(313, "jbd2/nvme1n1p12", "");
        proc(314, "jbd2/nvme1n1p12", "");
        // A user process named like one is not it.
        proc(400, "jbd2/sdb1-8", "fake\0");
        let root = ProcRoot(dir.path().to_path_buf());
        assert_eq!(journal_thread(&root, "loop0p1"), Some(310));
        assert_eq!(journal_thread(&root, "loop0p10"), Some(311));
        assert_eq!(journal_thread(&root, "nvme0n1p12"), Some(312));
        assert_eq!(journal_thread(&root, "nvme1n1p12"), None, "which of two?");
        assert_eq!(journal_thread(&root, "sdb1"), None);
        assert_eq!(journal_thread(&root, "dm-0"), None);
        assert_eq!(
            journal_threads(&root, &["loop0p10", "sdb1", "loop0p1", "nvme1n1p12"]),
            vec![Some(311), None, Some(310), None],
            "several filesystems from one walk"
        );
    }
}
