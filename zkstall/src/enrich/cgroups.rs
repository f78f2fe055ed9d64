//! cgroup id -> path. The kernel side records `bpf_get_current_cgroup_id()`, which on
//! cgroup v2 is the inode number of the cgroup's directory: walking /sys/fs/cgroup maps
//! it back to a path (`/system.slice/zookeeper.service`), even after the process is gone.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// More cgroups than any host has; a walk stops there.
const MAX_CGROUPS: usize = 100_000;
/// A miss triggers a re-walk at most this often.
const REWALK_EVERY: Duration = Duration::from_secs(5);

pub struct Cgroups {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    walked: Option<Instant>,
}

impl Cgroups {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cgroups {
            root: root.into(),
            by_id: HashMap::new(),
            walked: None,
        }
    }

    /// The path of cgroup `id` (relative to the cgroup2 mount, starting with `/`).
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        if self.walked.is_none_or(|t| t.elapsed() >= REWALK_EVERY) {
            self.walk();
        }
        self.by_id.get(&id).cloned()
    }

    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        self.by_id.clear();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            if self.by_id.len() >= MAX_CGROUPS {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = rel_path(&self.root, &dir);
            self.by_id.insert(meta.ino(), rel);
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
        let mut c = Cgroups::new(dir.path());
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
    }
}
