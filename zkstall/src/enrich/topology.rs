//! Which block devices serve a file. A file's `st_dev` names its filesystem's device: a
//! partition (`sdb1`), a device-mapper or md device (`dm-0`, `md0`), a loop device, or a
//! whole disk. The block layer's requests name the *disk* whose queue they sit in. This
//! module walks sysfs from the one to the others:
//!
//! - partition -> its disk, and the partition's sector range on it;
//! - dm / md -> each device in `slaves/`, recursively;
//! - loop -> the device holding its backing file (and on, for nested loops).
//!
//! The two kinds of device numbers have different types ([`FileDev`], [`DiskDev`]) so that
//! comparing a file's device with a request's disk does not compile.

use std::{
    collections::HashSet,
    fmt,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::DevId;

/// The device number of a filesystem, as `stat(2)` reports it for its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileDev(pub DevId);

/// The device number of a disk: a device with a request queue, as block tracepoints and
/// `struct request` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DiskDev(pub DevId);

impl fmt::Display for FileDev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for DiskDev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a layer is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LayerKind {
    /// A disk with its own hardware (or virtual hardware) queue.
    Disk,
    /// A loop device over a file (whose own device is the next layer down).
    Loop { backing_file: String },
    /// device-mapper (LVM, dm-crypt, multipath): requests go to its slaves.
    DeviceMapper,
    /// Software RAID: requests go to its members.
    Md,
}

/// A partition's place on its disk, in 512-byte sectors as requests count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartRange {
    /// The partition's own device number.
    pub dev: DevId,
    pub start: u64,
    pub sectors: u64,
}

impl PartRange {
    pub fn contains(&self, sector: u64) -> bool {
        sector >= self.start && sector < self.start.saturating_add(self.sectors)
    }
}

/// One device between a file and the hardware.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Layer {
    /// The disk whose request queue is examined.
    pub disk: DiskDev,
    /// Its name (`sdb`, `loop3`, `dm-0`).
    pub name: String,
    /// When the layer above sits on a partition of this disk: which one.
    pub part: Option<PartRange>,
    /// The partition's name (`sdb1`), when there is one.
    pub part_name: Option<String>,
    #[serde(flatten)]
    pub kind: LayerKind,
    /// 0 for the layer holding the file's filesystem, 1 for the one below, ...
    pub depth: u32,
}

/// The devices serving a filesystem, top (the one holding it) first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct DiskPath {
    pub layers: Vec<Layer>,
}

impl DiskPath {
    /// The disk whose queue holds the file's own I/O.
    pub fn top(&self) -> Option<&Layer> {
        self.layers.first()
    }

    pub fn disks(&self) -> impl Iterator<Item = DiskDev> + '_ {
        self.layers.iter().map(|l| l.disk)
    }
}

/// Walks a sysfs tree (normally /sys).
pub struct Topology {
    sys: PathBuf,
}

/// Deeper stacks than this are a cycle or a mistake.
const MAX_DEPTH: u32 = 8;

impl Topology {
    pub fn new(sys: impl Into<PathBuf>) -> Self {
        Topology { sys: sys.into() }
    }

    /// The devices serving filesystem device `dev`. Empty for filesystems without a block
    /// device (tmpfs, NFS, overlay's anonymous devices).
    pub fn resolve(&self, dev: FileDev) -> DiskPath {
        let mut out = DiskPath::default();
        let mut seen = HashSet::new();
        self.walk(dev.0, 0, &mut out, &mut seen);
        out
    }

    /// The kernel's name of block device `dev` (`sdb1`, `loop0p1`, `dm-0`).
    pub fn name_of(&self, dev: DevId) -> Option<String> {
        Some(self.dir_of(dev)?.file_name()?.to_str()?.to_string())
    }

    /// The sysfs directory of block device `dev` (`/sys/devices/.../block/sdb/sdb1`).
    fn dir_of(&self, dev: DevId) -> Option<PathBuf> {
        let link = self.sys.join("dev/block").join(dev.to_string());
        let target = std::fs::read_link(&link).ok()?;
        // The link is relative to /sys/dev/block.
        let abs = if target.is_absolute() {
            target
        } else {
            self.sys.join("dev/block").join(target)
        };
        Some(normalize(&abs))
    }

    fn walk(&self, dev: DevId, depth: u32, out: &mut DiskPath, seen: &mut HashSet<DevId>) {
        if depth > MAX_DEPTH || !seen.insert(dev) {
            return;
        }
        let Some(dir) = self.dir_of(dev) else {
            return;
        };
        // A partition: its directory has a `partition` file and sits in its disk's.
        let (disk_dir, part, part_name) = if dir.join("partition").exists() {
            let Some(parent) = dir.parent() else { return };
            let start = read_u64(&dir.join("start"));
            let sectors = read_u64(&dir.join("size"));
            let range = match (start, sectors) {
                (Some(start), Some(sectors)) => Some(PartRange {
                    dev,
                    start,
                    sectors,
                }),
                _ => None,
            };
            (parent.to_path_buf(), range, file_name(&dir))
        } else {
            (dir, None, None)
        };
        let Some(disk) = read_dev(&disk_dir.join("dev")) else {
            return;
        };
        let name = file_name(&disk_dir).unwrap_or_else(|| disk.to_string());
        let slaves: Vec<DevId> = std::fs::read_dir(disk_dir.join("slaves"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| read_dev(&e.path().join("dev")))
                    .collect()
            })
            .unwrap_or_default();
        let backing = read_str(&disk_dir.join("loop/backing_file"));
        let kind = if let Some(f) = &backing {
            LayerKind::Loop {
                backing_file: f.clone(),
            }
        } else if disk_dir.join("dm").is_dir() {
            LayerKind::DeviceMapper
        } else if disk_dir.join("md").is_dir() {
            LayerKind::Md
        } else {
            LayerKind::Disk
        };
        out.layers.push(Layer {
            disk: DiskDev(disk),
            name,
            part,
            part_name,
            kind,
            depth,
        });
        for s in slaves {
            self.walk(s, depth + 1, out, seen);
        }
        if let Some(f) = backing {
            // The backing file's filesystem device, and on down. A deleted backing file
            // ("(deleted)") can no longer be stat'ed: the path ends here.
            if let Ok(meta) = std::fs::metadata(Path::new(&f)) {
                self.walk(DevId::from_dev_t(meta.dev()), depth + 1, out, seen);
            }
        }
    }

    /// Device numbers of `disk` and of all its partitions: what DISKS must hold so that
    /// both a bio (which names the partition) and a request (which names the disk) match.
    pub fn disk_and_partitions(&self, disk: DiskDev) -> Vec<DevId> {
        let mut out = vec![disk.0];
        let Some(dir) = self.dir_of(disk.0) else {
            return out;
        };
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.join("partition").exists()
                    && let Some(d) = read_dev(&p.join("dev"))
                {
                    out.push(d);
                }
            }
        }
        out
    }

    /// The partitions of `disk` with their ranges (for telling other partitions' I/O apart).
    pub fn partitions(&self, disk: DiskDev) -> Vec<(String, PartRange)> {
        let mut out = Vec::new();
        let Some(dir) = self.dir_of(disk.0) else {
            return out;
        };
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if !p.join("partition").exists() {
                    continue;
                }
                if let (Some(dev), Some(start), Some(sectors), Some(name)) = (
                    read_dev(&p.join("dev")),
                    read_u64(&p.join("start")),
                    read_u64(&p.join("size")),
                    file_name(&p),
                ) {
                    out.push((
                        name,
                        PartRange {
                            dev,
                            start,
                            sectors,
                        },
                    ));
                }
            }
        }
        out.sort_by_key(|(_, r)| r.start);
        out
    }
}

/// Resolves `..` and `.` without touching the filesystem (sysfs links are relative).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn read_str(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_str(p)?.parse().ok()
}

fn read_dev(p: &Path) -> Option<DevId> {
    DevId::parse(&read_str(p)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs: `devices/<path>` directories with `dev` files, linked from
    /// `dev/block/M:m` the way the kernel links them (relative links).
    struct Fake(tempfile::TempDir);

    impl Fake {
        fn new() -> Fake {
            let d = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(d.path().join("dev/block")).unwrap();
            Fake(d)
        }
        fn root(&self) -> &Path {
            self.0.path()
        }
        fn dev(&self, rel: &str, majmin: &str) -> PathBuf {
            let dir = self.root().join("devices").join(rel);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("dev"), format!("{majmin}\n")).unwrap();
            symlink(
                Path::new("../../devices").join(rel),
                self.root().join("dev/block").join(majmin),
            )
            .unwrap();
            dir
        }
        fn part(&self, rel: &str, majmin: &str, start: u64, size: u64) -> PathBuf {
            let dir = self.dev(rel, majmin);
            std::fs::write(dir.join("partition"), "1\n").unwrap();
            std::fs::write(dir.join("start"), format!("{start}\n")).unwrap();
            std::fs::write(dir.join("size"), format!("{size}\n")).unwrap();
            dir
        }
        fn slave(&self, holder: &Path, name: &str, target_rel: &str) {
            std::fs::create_dir_all(holder.join("slaves")).unwrap();
            symlink(
                self.root().join("devices").join(target_rel),
                holder.join("slaves").join(name),
            )
            .unwrap();
        }
    }

    fn id(s: &str) -> DevId {
        DevId::parse(s).unwrap()
    }

    #[test]
    fn a_partition_resolves_to_its_disk_with_its_sector_range() {
        let f = Fake::new();
        f.dev("pci0/sdb", "8:16");
        f.part("pci0/sdb/sdb1", "8:17", 2048, 1_000_000);
        f.part("pci0/sdb/sdb2", "8:18", 1_002_048, 500_000);
        let t = Topology::new(f.root());
        let p = t.resolve(FileDev(id("8:17")));
        assert_eq!(p.layers.len(), 1);
        let top = p.top().unwrap();
        assert_eq!(top.disk, DiskDev(id("8:16")));
        assert_eq!(top.name, "sdb");
        assert_eq!(top.part_name.as_deref(), Some("sdb1"));
        let r = top.part.unwrap();
        assert!(r.contains(2048) && r.contains(1_002_047) && !r.contains(1_002_048));
        let mut all = t.disk_and_partitions(DiskDev(id("8:16")));
        all.sort();
        assert_eq!(all, vec![id("8:16"), id("8:17"), id("8:18")]);
        assert_eq!(t.partitions(DiskDev(id("8:16"))).len(), 2);
    }

    #[test]
    fn device_mapper_and_md_resolve_through_their_slaves_recursively() {
        let f = Fake::new();
        f.dev("pci0/sda", "8:0");
        f.part("pci0/sda/sda2", "8:2", 4096, 2_000_000);
        f.dev("pci0/sdc", "8:32");
        f.dev("pci0/sdd", "8:48");
        // md0 (RAID1 of sdc and sdd), and an LVM volume dm-0 on sda2 and md0.
        let md = f.dev("virtual/block/md0", "9:0");
        std::fs::create_dir_all(md.join("md")).unwrap();
        f.slave(&md, "sdc", "pci0/sdc");
        f.slave(&md, "sdd", "pci0/sdd");
        let dm = f.dev("virtual/block/dm-0", "254:0");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        f.slave(&dm, "sda2", "pci0/sda/sda2");
        f.slave(&dm, "md0", "virtual/block/md0");
        let p = Topology::new(f.root()).resolve(FileDev(id("254:0")));
        let names: Vec<(&str, u32)> = p
            .layers
            .iter()
            .map(|l| (l.name.as_str(), l.depth))
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names[0], ("dm-0", 0));
        assert_eq!(p.layers[0].kind, LayerKind::DeviceMapper);
        let sda = p.layers.iter().find(|l| l.name == "sda").unwrap();
        assert_eq!((sda.depth, sda.part.unwrap().start), (1, 4096));
        let md0 = p.layers.iter().find(|l| l.name == "md0").unwrap();
        assert_eq!((md0.depth, &md0.kind), (1, &LayerKind::Md));
        for n in ["sdc", "sdd"] {
            assert_eq!(p.layers.iter().find(|l| l.name == n).unwrap().depth, 2);
        }
    }

    #[test]
    fn a_loop_device_continues_to_the_device_of_its_backing_file() {
        let f = Fake::new();
        // The backing file lives on the real filesystem of this test; its st_dev is
        // whatever it is, and the fake sysfs gives that device a disk entry.
        let img = f.root().join("disk.img");
        std::fs::write(&img, b"x").unwrap();
        let real = DevId::from_dev_t(std::fs::metadata(&img).unwrap().dev());
        f.dev("virtual/block/vda", &real.to_string());
        let lp = f.dev("virtual/block/loop3", "7:3");
        std::fs::create_dir_all(lp.join("loop")).unwrap();
        std::fs::write(lp.join("loop/backing_file"), format!("{}\n", img.display())).unwrap();
        f.part("virtual/block/loop3/loop3p1", "259:0", 2048, 4096);
        let p = Topology::new(f.root()).resolve(FileDev(id("259:0")));
        assert_eq!(p.layers.len(), 2, "{p:?}");
        assert_eq!(p.layers[0].name, "loop3");
        assert_eq!(p.layers[0].part_name.as_deref(), Some("loop3p1"));
        assert!(matches!(p.layers[0].kind, LayerKind::Loop { .. }));
        assert_eq!((p.layers[1].name.as_str(), p.layers[1].depth), ("vda", 1));
    }

    #[test]
    fn devices_without_sysfs_entries_have_no_disks() {
        let f = Fake::new();
        assert!(
            Topology::new(f.root())
                .resolve(FileDev(id("0:52")))
                .layers
                .is_empty()
        );
    }
}
