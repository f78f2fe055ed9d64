//! Finding (or mounting) tracefs and reading tracepoint `format` files. This is the one
//! place that knows tracepoint layouts differ between kernels: zkstall reads them here at
//! start-up instead of hard-coding any.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); run as root, or mount it: `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    MountFailed(String),
    #[error(
        "cannot read {0}: {1}; tracefs is root's only: run zkstall as root, or grant it CAP_DAC_READ_SEARCH (sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep \"$(command -v zkstall)\"), or open tracefs to a group (mount -o remount,gid=GROUP,mode=750 /sys/kernel/tracing)"
    )]
    Unreadable(PathBuf, String),
    #[error("tracepoint {0} not found in {1}: this kernel does not have it")]
    Missing(String, PathBuf),
    #[error(
        "tracepoint {0} appears only once kernel module {1} is loaded, and it is not (`modprobe {1}`, or mount a filesystem that uses it; then restart zkstall)"
    )]
    ModuleNotLoaded(String, String),
    #[error("cannot parse {0}: {1}")]
    Parse(PathBuf, String),
}

/// Where tracefs is, and whether zkstall had to mount it.
#[derive(Clone, Debug)]
pub struct Tracefs {
    pub root: PathBuf,
    pub mounted_by_us: bool,
    /// Root of the system whose kernel modules explain a missing tracepoint category
    /// (`/`; None for a fake tracefs): distribution kernels build ext4 and jbd2 as modules,
    /// whose tracepoints exist only once they are loaded.
    pub system: Option<PathBuf>,
}

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

impl Tracefs {
    /// Finds a mounted tracefs, mounting one at /sys/kernel/tracing when there is none.
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        for c in CANDIDATES {
            let p = Path::new(c);
            if p.join("events").is_dir() {
                return Ok(Tracefs {
                    root: p.to_path_buf(),
                    mounted_by_us: false,
                    system: Some(PathBuf::from("/")),
                });
            }
            if let Err(e) = std::fs::read_dir(p)
                && e.kind() == std::io::ErrorKind::PermissionDenied
            {
                return Err(TracefsError::Unreadable(p.to_path_buf(), e.to_string()));
            }
        }
        let target = Path::new(CANDIDATES[0]);
        mount_tracefs(target).map_err(TracefsError::MountFailed)?;
        if target.join("events").is_dir() {
            Ok(Tracefs {
                root: target.to_path_buf(),
                mounted_by_us: true,
                system: Some(PathBuf::from("/")),
            })
        } else {
            Err(TracefsError::MountFailed(
                "mounted, but it has no events/ directory".into(),
            ))
        }
    }

    /// A tracefs rooted at `root` (tests use a fake one).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Tracefs {
            root: root.into(),
            mounted_by_us: false,
            system: None,
        }
    }

    /// True when `module` is a loadable module of the running kernel that is not loaded
    /// (listed in its modules.dep, absent from /sys/module).
    fn module_not_loaded(&self, module: &str) -> bool {
        let Some(sys) = &self.system else {
            return false;
        };
        if sys.join("sys/module").join(module).exists() {
            return false;
        }
        let Ok(release) = std::fs::read_to_string(sys.join("proc/sys/kernel/osrelease")) else {
            return false;
        };
        let dep = sys
            .join("lib/modules")
            .join(release.trim())
            .join("modules.dep");
        let Ok(dep) = std::fs::read_to_string(dep) else {
            return false;
        };
        dep.lines().filter_map(|l| l.split(':').next()).any(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.split('.').next() == Some(module) && file.contains(".ko")
        })
    }

    pub fn format_path(&self, category: &str, name: &str) -> PathBuf {
        self.root
            .join("events")
            .join(category)
            .join(name)
            .join("format")
    }

    /// True when the tracepoint exists on this kernel.
    pub fn has(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).is_dir()
    }

    /// Reads and parses a tracepoint's `format` file.
    pub fn format(&self, category: &str, name: &str) -> Result<Format, TracefsError> {
        let path = self.format_path(category, name);
        if !self.has(category, name) {
            // A whole event category missing: its module may just not be loaded yet.
            if !self.root.join("events").join(category).is_dir() && self.module_not_loaded(category)
            {
                return Err(TracefsError::ModuleNotLoaded(
                    format!("{category}:{name}"),
                    category.to_string(),
                ));
            }
            return Err(TracefsError::Missing(
                format!("{category}:{name}"),
                self.root.clone(),
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TracefsError::Unreadable(path.clone(), e.to_string()))?;
        Format::parse(&text).map_err(|e| TracefsError::Parse(path, e))
    }
}

fn mount_tracefs(target: &Path) -> Result<(), String> {
    use std::ffi::CString;
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (src, tgt, fstype) = (c("nodev")?, c(&target.to_string_lossy())?, c("tracefs")?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; `data`
    // may be NULL for tracefs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// The parsed `format` file of one tracepoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub fields: Vec<Field>,
    /// The `print fmt:` line (its symbol tables name enum values: writeback reasons).
    pub print_fmt: String,
}

impl Format {
    /// Parses lines like `\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(p) = line.strip_prefix("print fmt:") {
                print_fmt = p.trim().to_string();
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in rest.split(';').map(str::trim) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse::<u32>().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse::<u32>().ok();
                } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                return Err(format!("malformed field line: {line:?}"));
            };
            // The name is the declaration's last word, without any array suffix:
            // `char rwbs[10]` -> rwbs, `__data_loc char[] cmd` -> cmd.
            let last = decl.split_whitespace().last().unwrap_or(decl);
            let name = last.split('[').next().unwrap_or(last).to_string();
            fields.push(Field { name, offset, size });
        }
        if fields.is_empty() {
            return Err("no fields".into());
        }
        Ok(Format { fields, print_fmt })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The value `__print_symbolic(REC->{field}, ...)` prints as `symbol`: enum values
    /// (writeback reasons, say) differ between kernels, and the format says which is which.
    pub fn symbol_value(&self, field: &str, symbol: &str) -> Option<i64> {
        let start = self
            .print_fmt
            .find(&format!("__print_symbolic(REC->{field},"))?;
        let table = &self.print_fmt[start..];
        let quoted = format!("\"{symbol}\"");
        let at = table.find(&quoted)?;
        let open = table[..at].rfind('{')?;
        table[open + 1..at]
            .trim()
            .trim_end_matches(',')
            .trim()
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_come_from_the_print_fmt_symbol_table() {
        let text = "name: writeback_queue\nID: 997\nformat:\n\tfield:int reason;\toffset:68;\tsize:4;\tsigned:1;\n\nprint fmt: \"reason=%s\", __print_symbolic(REC->reason, { 0, \"background\" }, { 1, \"vmscan\" }, { 5, \"fs_free_space\" }, { 6, \"forker_thread\" })\n";
        let f = Format::parse(text).unwrap();
        assert_eq!(f.symbol_value("reason", "fs_free_space"), Some(5));
        assert_eq!(f.symbol_value("reason", "background"), Some(0));
        assert_eq!(f.symbol_value("reason", "nonesuch"), None);
        assert_eq!(f.symbol_value("other", "fs_free_space"), None);
    }

    const FSYNC: &str = "name: sys_enter_fsync\nID: 1071\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;\n\nprint fmt: \"fd: 0x%08lx\", ((unsigned long)(REC->fd))\n";

    #[test]
    fn parses_a_syscall_format() {
        let f = Format::parse(FSYNC).unwrap();
        assert_eq!(
            f.field("fd"),
            Some(&Field {
                name: "fd".into(),
                offset: 16,
                size: 8
            })
        );
        assert_eq!(f.field("__syscall_nr").unwrap().offset, 8);
        assert_eq!(f.field("common_pid").unwrap().size, 4);
    }

    #[test]
    fn parses_arrays_and_data_loc() {
        let text = "\tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;\n\tfield:__data_loc char[] cmd;\toffset:60;\tsize:4;\tsigned:0;\n";
        let f = Format::parse(text).unwrap();
        assert_eq!(f.field("rwbs").unwrap().offset, 34);
        assert_eq!(f.field("cmd").unwrap().size, 4);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Format::parse("nothing here").is_err());
        assert!(Format::parse("\tfield:int x;\toffset:zz;\tsize:4;").is_err());
    }

    #[test]
    fn tracepoints_of_an_unloaded_module_say_so() {
        // As on Debian 12's kernel before the first ext4 mount: jbd2 is a module.
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys-root");
        std::fs::create_dir_all(dir.path().join("events/sched")).unwrap();
        std::fs::create_dir_all(sys.join("sys/module/loop")).unwrap();
        std::fs::create_dir_all(sys.join("proc/sys/kernel")).unwrap();
        std::fs::write(sys.join("proc/sys/kernel/osrelease"), "6.1.0-47-amd64\n").unwrap();
        let mods = sys.join("lib/modules/6.1.0-47-amd64");
        std::fs::create_dir_all(&mods).unwrap();
        std::fs::write(
            mods.join("modules.dep"),
            "kernel/fs/jbd2/jbd2.ko: kernel/lib/crc16.ko\nkernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/drivers/block/loop.ko:\n",
        )
        .unwrap();
        let mut t = Tracefs::at(dir.path());
        t.system = Some(sys.clone());
        let e = t.format("jbd2", "jbd2_start_commit").unwrap_err();
        assert!(matches!(e, TracefsError::ModuleNotLoaded(..)), "{e}");
        assert!(e.to_string().contains("modprobe jbd2"), "{e}");
        // Not a module of this kernel (or loaded, yet without the event): plainly missing.
        assert!(matches!(
            t.format("xfs", "xfs_log_force"),
            Err(TracefsError::Missing(..))
        ));
        assert!(matches!(
            t.format("loop", "nothing"),
            Err(TracefsError::Missing(..))
        ));
        std::fs::create_dir_all(sys.join("sys/module/jbd2")).unwrap();
        assert!(matches!(
            t.format("jbd2", "jbd2_start_commit"),
            Err(TracefsError::Missing(..))
        ));
    }

    #[test]
    fn missing_tracepoint_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("events")).unwrap();
        let t = Tracefs::at(dir.path());
        assert!(!t.has("syscalls", "sys_enter_fsync"));
        assert!(matches!(
            t.format("syscalls", "sys_enter_fsync"),
            Err(TracefsError::Missing(..))
        ));
    }
}
