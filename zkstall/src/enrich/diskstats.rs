//! The block layer's own count of completed requests per disk (/proc/diskstats), to check
//! the probes' count of the disks nobody watches against it.
//!
//! The kernel can skip a BPF program's run without counting it anywhere: on 6.18 a batch
//! of block completions handled in a softirq that interrupted another BPF program (one of
//! zkstall's classic tracepoint programs on a bystander's write()) was seen missing from
//! block_rq_complete's runs, with `recursion_misses` still 0. The block layer counts every
//! request it completes, so the difference is what the probes never saw, and is said.
//!
//! Only request-based (blk-mq) whole disks are compared: partitions' requests are counted
//! at their disk, and bio-based devices (dm, md, brd, zram) count bios that never become
//! requests nor reach block_rq_complete.

use std::{collections::BTreeMap, path::Path};

use super::DevId;

/// Completed requests (reads, writes, discards, flushes) by kernel dev_t, for every
/// request-based whole disk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskStats(pub BTreeMap<u32, u64>);

impl DiskStats {
    /// Reads /proc/diskstats (under `proc`), keeping the disks `sys/block` shows with a
    /// `mq` directory. Empty where either is missing.
    pub fn read(proc: &Path, sys: &Path) -> DiskStats {
        let Ok(text) = std::fs::read_to_string(proc.join("diskstats")) else {
            return DiskStats::default();
        };
        let mut out = BTreeMap::new();
        for (dev, name, completed) in parse(&text) {
            if sys.join("block").join(name).join("mq").is_dir() {
                out.insert((dev.major << 20) | (dev.minor & 0xfffff), completed);
            }
        }
        DiskStats(out)
    }
}

/// (device, name, completed requests) per line of /proc/diskstats. Fields after the name:
/// 1 reads completed, 5 writes completed, 12 discards completed (4.18+), 16 flushes
/// completed (5.5+); a line too short for the later ones counts them as 0.
pub fn parse(text: &str) -> impl Iterator<Item = (DevId, &str, u64)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 14 {
            return None;
        }
        let major = f[0].parse().ok()?;
        let minor = f[1].parse().ok()?;
        let n = |i: usize| -> u64 { f.get(2 + i).and_then(|v| v.parse().ok()).unwrap_or(0) };
        Some((DevId { major, minor }, f[2], n(1) + n(5) + n(12) + n(16)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_requests_are_reads_writes_discards_and_flushes() {
        let text = "   7       1 loop1 10 0 80 1 20 3 160 2 0 3 3 4 0 8 0 5 1\n\
                    254       0 vda 1 2 3 4 5 6 7 8 9 10 11\n\
                    254       1 vda1 1 2 3 4 5 6 7 8 9 10 11 0 0 0 0\n\
                    junk\n";
        let got: Vec<(DevId, &str, u64)> = parse(text).collect();
        assert_eq!(
            got,
            vec![
                (DevId { major: 7, minor: 1 }, "loop1", 10 + 20 + 4 + 5),
                (
                    DevId {
                        major: 254,
                        minor: 0
                    },
                    "vda",
                    1 + 5
                ),
                (
                    DevId {
                        major: 254,
                        minor: 1
                    },
                    "vda1",
                    1 + 5
                ),
            ]
        );
    }

    #[test]
    fn only_request_based_whole_disks_are_kept() {
        let dir = std::env::temp_dir().join(format!("zkstall-diskstats-{}", std::process::id()));
        let (proc, sys) = (dir.join("proc"), dir.join("sys"));
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::create_dir_all(sys.join("block/loop1/mq")).unwrap();
        std::fs::create_dir_all(sys.join("block/dm-0")).unwrap();
        std::fs::write(
            proc.join("diskstats"),
            "7 1 loop1 10 0 0 0 20 0 0 0 0 0 0\n\
             253 0 dm-0 10 0 0 0 20 0 0 0 0 0 0\n\
             7 2 loop1p1 10 0 0 0 20 0 0 0 0 0 0\n",
        )
        .unwrap();
        let s = DiskStats::read(&proc, &sys);
        assert_eq!(s.0, BTreeMap::from([((7 << 20) | 1, 30)]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
