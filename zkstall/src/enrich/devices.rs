//! Device number -> name. Block devices are named by sysfs (`/sys/dev/block/M:m` links to
//! the device's directory); filesystems without a block device (tmpfs, overlay, btrfs
//! subvolumes' anonymous devices) are named from the mount table.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::targets::ProcRoot;

use super::{DevId, bounded_insert};

const CACHE_ENTRIES: usize = 1024;

pub struct Devices {
    sys: PathBuf,
    proc: ProcRoot,
    names: HashMap<DevId, Option<String>>,
    models: HashMap<DevId, Option<String>>,
}

impl Devices {
    pub fn new(sys: impl Into<PathBuf>, proc: ProcRoot) -> Self {
        Devices {
            sys: sys.into(),
            proc,
            names: HashMap::new(),
            models: HashMap::new(),
        }
    }

    /// What sysfs says the device is: the disk's model, or a loop device's backing file.
    pub fn model(&mut self, dev: DevId) -> Option<String> {
        if let Some(m) = self.models.get(&dev) {
            return m.clone();
        }
        let base = self.sys.join("dev/block").join(dev.to_string());
        let read = |p: PathBuf| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let model = read(base.join("device/model"))
            .or_else(|| read(base.join("../device/model"))) // a partition: its disk's model
            .or_else(|| read(base.join("loop/backing_file")).map(|f| format!("loop on {f}")));
        bounded_insert(&mut self.models, CACHE_ENTRIES, dev, model.clone());
        model
    }

    /// The name of `dev` (`vda`, `loop0`, `sda1`, or `tmpfs` for a device-less fs), using
    /// the mount table of `pid` when sysfs does not know it.
    pub fn name(&mut self, dev: DevId, pid: u32) -> Option<String> {
        if let Some(n) = self.names.get(&dev) {
            return n.clone();
        }
        let name = block_name(&self.sys, dev).or_else(|| mount_name(&self.proc, pid, dev));
        bounded_insert(&mut self.names, CACHE_ENTRIES, dev, name.clone());
        name
    }
}

fn block_name(sys: &Path, dev: DevId) -> Option<String> {
    let link = std::fs::read_link(sys.join("dev/block").join(dev.to_string())).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn mount_name(proc: &ProcRoot, pid: u32, dev: DevId) -> Option<String> {
    let p = procfs::process::Process::new_with_root(proc.pid_dir(pid)).ok()?;
    let mounts = p.mountinfo().ok()?;
    let want = dev.to_string();
    let m = mounts.into_iter().find(|m| m.majmin == want)?;
    match m.mount_source.as_deref() {
        Some(src) if src.starts_with("/dev/") => Path::new(src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        _ => Some(m.fs_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_block_devices_from_sysfs_links() {
        let dir = tempfile::tempdir().unwrap();
        let blk = dir.path().join("dev/block");
        std::fs::create_dir_all(&blk).unwrap();
        std::os::unix::fs::symlink("../../devices/virtual/block/loop3", blk.join("7:3")).unwrap();
        let mut d = Devices::new(dir.path(), ProcRoot(dir.path().join("noproc")));
        assert_eq!(
            d.name(DevId { major: 7, minor: 3 }, 1).as_deref(),
            Some("loop3")
        );
        assert_eq!(d.name(DevId { major: 8, minor: 0 }, 1), None);
    }

    #[test]
    fn models_come_from_sysfs_and_loop_devices_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("devices/sda");
        std::fs::create_dir_all(disk.join("device")).unwrap();
        std::fs::create_dir_all(disk.join("sda1")).unwrap();
        std::fs::write(disk.join("device/model"), "Samsung SSD 870  \n").unwrap();
        let lp = dir.path().join("devices/loop0/loop");
        std::fs::create_dir_all(&lp).unwrap();
        std::fs::write(lp.join("backing_file"), "/var/tmp/img\n").unwrap();
        let blk = dir.path().join("dev/block");
        std::fs::create_dir_all(&blk).unwrap();
        std::os::unix::fs::symlink(&disk, blk.join("8:0")).unwrap();
        std::os::unix::fs::symlink(disk.join("sda1"), blk.join("8:1")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("devices/loop0"), blk.join("7:0")).unwrap();
        let mut d = Devices::new(dir.path(), ProcRoot(dir.path().join("noproc")));
        assert_eq!(
            d.model(DevId { major: 8, minor: 0 }).as_deref(),
            Some("Samsung SSD 870")
        );
        assert_eq!(
            d.model(DevId { major: 8, minor: 1 }).as_deref(),
            Some("Samsung SSD 870")
        );
        assert_eq!(
            d.model(DevId { major: 7, minor: 0 }).as_deref(),
            Some("loop on /var/tmp/img")
        );
        assert_eq!(d.model(DevId { major: 9, minor: 9 }), None);
    }

    #[test]
    fn names_deviceless_filesystems_from_the_mount_table() {
        // The real mount table of this process: /proc itself has an anonymous device.
        let meta = std::fs::metadata("/proc/self").unwrap();
        let dev = DevId::from_dev_t(std::os::unix::fs::MetadataExt::dev(&meta));
        let mut d = Devices::new("/nonexistent-sys", ProcRoot::default());
        assert_eq!(d.name(dev, std::process::id()).as_deref(), Some("proc"));
    }
}
