//! Which signal needs which tracepoint, and the load-time [`Config`] (field offsets) built
//! from the tracefs formats. A tracepoint missing on this kernel disables only the signal
//! that needs it (or, for an optional hook, only that hook); `check` and the run's summary
//! name what is off.

use zkstall_common::{ArgKind, Config, FIELD_COUNT, Field, Syscall};

use super::tracefs::{Format, Tracefs, TracefsError};

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// A classic tracepoint (tracefs category/name).
    TracePoint,
    /// A BTF tracepoint (tp_btf): needs /sys/kernel/btf/vmlinux.
    BtfTracePoint,
}

/// One tracepoint a program attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub category: &'static str,
    pub name: String,
    /// The eBPF program attached there.
    pub program: &'static str,
    pub kind: HookKind,
    /// Without a required hook the signal is off; without an optional one it is degraded.
    pub required: bool,
}

impl Hook {
    fn tp(category: &'static str, name: &str, program: &'static str) -> Self {
        Hook {
            category,
            name: name.into(),
            program,
            kind: HookKind::TracePoint,
            required: true,
        }
    }
    fn optional(mut self) -> Self {
        self.required = false;
        self
    }
}

/// A signal zkstall observes, and the tracepoints it needs.
#[derive(Clone, Debug)]
pub struct Signal {
    /// Short name used in `check` and the summary ("fdatasync", "block", "sched").
    pub name: &'static str,
    /// What it is for, in a few words.
    pub purpose: &'static str,
    pub hooks: Vec<Hook>,
    /// For syscall signals: which syscall.
    pub syscall: Option<Syscall>,
}

/// Every signal of this build.
pub fn signals() -> Vec<Signal> {
    let mut out: Vec<Signal> = Syscall::ALL
        .iter()
        .map(|&sc| {
            let (enter, exit) = sc.programs();
            Signal {
                name: sc.name(),
                purpose: if sc.is_write() {
                    "write-family timing"
                } else {
                    "fsync-family timing"
                },
                syscall: Some(sc),
                hooks: vec![
                    Hook::tp("syscalls", &format!("sys_enter_{}", sc.name()), enter),
                    Hook::tp("syscalls", &format!("sys_exit_{}", sc.name()), exit),
                ],
            }
        })
        .collect();
    let sig = |name, purpose, hooks| Signal {
        name,
        purpose,
        hooks,
        syscall: None,
    };
    out.push(sig(
        "block",
        "block requests: who, size, queue and device time",
        vec![
            Hook::tp("block", "block_rq_insert", "block_rq_insert").optional(),
            Hook::tp("block", "block_rq_issue", "block_rq_issue"),
            Hook::tp("block", "block_rq_complete", "block_rq_complete"),
            Hook::tp("block", "block_rq_requeue", "block_rq_requeue").optional(),
        ],
    ));
    out.push(sig(
        "sched",
        "off-CPU intervals of the target's threads, wakers, D-state stacks",
        vec![
            Hook::tp("sched", "sched_switch", "sched_switch"),
            Hook::tp("sched", "sched_waking", "sched_waking").optional(),
            Hook {
                category: "sched",
                name: "sched_switch".into(),
                program: "sched_switch_syscall",
                kind: HookKind::BtfTracePoint,
                required: false,
            },
        ],
    ));
    out.push(sig(
        "threads",
        "thread creation, exit and renaming",
        vec![
            Hook::tp("task", "task_newtask", "task_newtask").optional(),
            Hook::tp("sched", "sched_process_exit", "sched_process_exit").optional(),
            Hook::tp("task", "task_rename", "task_rename").optional(),
        ],
    ));
    out.push(sig(
        "dirty",
        "who dirties pages of which inode",
        vec![Hook::tp(
            "writeback",
            "writeback_dirty_folio",
            "writeback_dirty_folio",
        )],
    ));
    out.push(sig(
        "writeback",
        "flusher writeback of inodes (charges flusher I/O to dirtiers)",
        vec![
            Hook::tp(
                "writeback",
                "writeback_single_inode_start",
                "writeback_single_inode_start",
            ),
            Hook::tp(
                "writeback",
                "writeback_single_inode",
                "writeback_single_inode",
            ),
        ],
    ));
    out.push(sig(
        "throttle",
        "balance_dirty_pages pauses of any task",
        vec![Hook::tp(
            "writeback",
            "balance_dirty_pages",
            "balance_dirty_pages",
        )],
    ));
    out.push(sig(
        "journal",
        "jbd2 commits and their phases",
        vec![
            Hook::tp("jbd2", "jbd2_start_commit", "jbd2_start_commit"),
            Hook::tp("jbd2", "jbd2_commit_locking", "jbd2_commit_locking").optional(),
            Hook::tp("jbd2", "jbd2_commit_flushing", "jbd2_commit_flushing").optional(),
            Hook::tp("jbd2", "jbd2_commit_logging", "jbd2_commit_logging").optional(),
            Hook::tp("jbd2", "jbd2_end_commit", "jbd2_end_commit"),
            Hook::tp("jbd2", "jbd2_run_stats", "jbd2_run_stats").optional(),
        ],
    ));
    out
}

/// Why a signal (or one optional hook of it) is off on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disabled {
    pub signal: &'static str,
    pub reason: String,
}

/// The result of reading the formats: the config for the programs, the signals that can
/// run (with only their usable hooks), and what cannot (with the reason).
#[derive(Clone, Debug)]
pub struct Layout {
    pub config: Config,
    pub enabled: Vec<Signal>,
    pub disabled: Vec<Disabled>,
}

impl Layout {
    pub fn has(&self, signal: &str) -> bool {
        self.enabled.iter().any(|s| s.name == signal)
    }
}

/// Reads every needed format file and builds the [`Config`]. Fails only when tracefs itself
/// cannot be read; a missing or odd tracepoint disables its signal or hook.
pub fn build(tracefs: &Tracefs, btf_available: bool) -> Result<Layout, TracefsError> {
    let mut config = Config::default();
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    let mut ret_offset: Option<u32> = None;
    for mut sig in signals() {
        if let Some(sc) = sig.syscall {
            match syscall_offsets(tracefs, sc) {
                Ok((arg_off, ret_off)) => {
                    // Every sys_exit_* shares one `ret` offset in the config.
                    if let Some(r) = ret_offset.filter(|r| *r != ret_off) {
                        disabled.push(Disabled {
                            signal: sig.name,
                            reason: format!(
                                "sys_exit_{}: ret at offset {ret_off}, others at {r}",
                                sig.name
                            ),
                        });
                        continue;
                    }
                    ret_offset = Some(ret_off);
                    config.arg_offset[sc as usize] = arg_off;
                    enabled.push(sig);
                }
                Err(e @ TracefsError::Unreadable(..)) => return Err(e),
                Err(e) => disabled.push(Disabled {
                    signal: sig.name,
                    reason: e.to_string(),
                }),
            }
            continue;
        }
        // Other signals: each hook's fields must be present with the sizes the programs read.
        let mut usable = Vec::new();
        let mut off_reason = None;
        for hook in sig.hooks.drain(..) {
            let problem = match hook.kind {
                HookKind::BtfTracePoint if !btf_available => Some(
                    "no BTF (/sys/kernel/btf/vmlinux): the syscall a thread blocks in is unknown"
                        .to_string(),
                ),
                HookKind::BtfTracePoint => None,
                HookKind::TracePoint => match hook_fields(tracefs, &hook, &mut config) {
                    Ok(()) => None,
                    Err(e @ TracefsError::Unreadable(..)) => return Err(e),
                    Err(e) => Some(e.to_string()),
                },
            };
            match problem {
                None => usable.push(hook),
                Some(reason) if hook.required => {
                    off_reason = Some(reason);
                    break;
                }
                Some(reason) => disabled.push(Disabled {
                    signal: sig.name,
                    reason: format!(
                        "degraded, {}:{} unusable: {reason}",
                        hook.category, hook.name
                    ),
                }),
            }
        }
        match off_reason {
            Some(reason) => {
                // Clear what this signal's hooks wrote, so its programs read nothing stale.
                for f in Field::ALL {
                    if sig_uses(&sig, f) {
                        config.field[f as usize] = 0;
                    }
                }
                disabled.retain(|d| d.signal != sig.name);
                disabled.push(Disabled {
                    signal: sig.name,
                    reason,
                });
            }
            None => {
                sig.hooks = usable;
                enabled.push(sig);
            }
        }
    }
    config.ret_offset = ret_offset.unwrap_or(0);
    Ok(Layout {
        config,
        enabled,
        disabled,
    })
}

fn sig_uses(sig: &Signal, f: Field) -> bool {
    let (cat, tp, _, _) = f.spec();
    signals()
        .into_iter()
        .find(|s| s.name == sig.name)
        .is_some_and(|s| s.hooks.iter().any(|h| h.category == cat && h.name == tp))
}

/// Fills the offsets of every field the hook's program reads.
fn hook_fields(tracefs: &Tracefs, hook: &Hook, config: &mut Config) -> Result<(), TracefsError> {
    let format = tracefs.format(hook.category, &hook.name)?;
    for f in Field::ALL {
        let (cat, tp, _, _) = f.spec();
        if cat == hook.category && tp == hook.name {
            config.field[f as usize] = field_offset(tracefs, &format, f)?;
        }
    }
    Ok(())
}

/// The offset of `f` in `format`, if its size fits what the program reads.
fn field_offset(tracefs: &Tracefs, format: &Format, f: Field) -> Result<u16, TracefsError> {
    let (cat, tp, name, size) = f.spec();
    let bad = |what: String| TracefsError::Parse(tracefs.format_path(cat, tp), what);
    let fld = format
        .field(name)
        .ok_or_else(|| bad(format!("no field {name}")))?;
    // Scalars must match exactly; character arrays may be longer than what is read.
    let is_array = matches!(name, "rwbs" | "comm" | "newcomm" | "name" | "bdi");
    let fits = if is_array {
        fld.size >= size
    } else {
        fld.size == size
    };
    if !fits || fld.offset == 0 || fld.offset > u16::MAX as u32 {
        return Err(bad(format!(
            "{name} has size {} at offset {}, zkstall reads {size}",
            fld.size, fld.offset
        )));
    }
    Ok(fld.offset as u16)
}

const _: () = assert!(FIELD_COUNT == Field::ALL.len());

/// Offsets of the recorded argument (0 for none) and of `ret` for one syscall.
fn syscall_offsets(tracefs: &Tracefs, sc: Syscall) -> Result<(u32, u32), TracefsError> {
    let enter_name = format!("sys_enter_{}", sc.name());
    let exit_name = format!("sys_exit_{}", sc.name());
    let enter = tracefs.format("syscalls", &enter_name)?;
    let exit = tracefs.format("syscalls", &exit_name)?;
    let bad =
        |tp: &str, what: String| TracefsError::Parse(tracefs.format_path("syscalls", tp), what);
    let (arg_name, kind) = sc.arg();
    let arg_off = match kind {
        ArgKind::None => 0,
        ArgKind::Fd | ArgKind::Addr => {
            let f = enter
                .field(arg_name)
                .ok_or_else(|| bad(&enter_name, format!("no field {arg_name}")))?;
            // The programs read 8 bytes: syscall tracepoints store every argument as a long.
            if f.size != 8 || f.offset == 0 {
                return Err(bad(
                    &enter_name,
                    format!("{arg_name} has size {} at {}", f.size, f.offset),
                ));
            }
            f.offset
        }
    };
    let ret = exit
        .field("ret")
        .ok_or_else(|| bad(&exit_name, "no field ret".into()))?;
    if ret.size != 8 || ret.offset == 0 {
        return Err(bad(
            &exit_name,
            format!("ret has size {} at {}", ret.size, ret.offset),
        ));
    }
    Ok((arg_off, ret.offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_tp(root: &std::path::Path, cat: &str, name: &str, body: &str) {
        let d = root.join("events").join(cat).join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("format"), body).unwrap();
    }

    const COMMON: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n";

    /// A fake tracefs with every syscall tracepoint (args at offset 24, ret at 32) except
    /// syncfs, and block tracepoints with a layout unlike 6.18's.
    fn fake() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sc in Syscall::ALL {
            if sc == Syscall::Syncfs {
                continue; // as on a kernel without it
            }
            let (arg, _) = sc.arg();
            let argline = if arg.is_empty() {
                String::new()
            } else {
                format!("\tfield:unsigned long {arg};\toffset:24;\tsize:8;\tsigned:0;\n")
            };
            write_tp(
                dir.path(),
                "syscalls",
                &format!("sys_enter_{}", sc.name()),
                &format!("{COMMON}{argline}"),
            );
            write_tp(
                dir.path(),
                "syscalls",
                &format!("sys_exit_{}", sc.name()),
                &format!("{COMMON}\tfield:long ret;\toffset:32;\tsize:8;\tsigned:1;\n"),
            );
        }
        let blk = "\tfield:dev_t dev;\toffset:12;\tsize:4;\tsigned:0;\n\tfield:sector_t sector;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned int bytes;\toffset:28;\tsize:4;\tsigned:0;\n\tfield:int error;\toffset:32;\tsize:4;\tsigned:1;\n\tfield:char rwbs[9];\toffset:36;\tsize:9;\tsigned:0;\n";
        for tp in ["block_rq_issue", "block_rq_complete"] {
            write_tp(dir.path(), "block", tp, blk);
        }
        // block_rq_insert with an rwbs too short to read 8 bytes: that optional hook is off.
        write_tp(
            dir.path(),
            "block",
            "block_rq_insert",
            &blk.replace(
                "rwbs[9];\toffset:36;\tsize:9",
                "rwbs[6];\toffset:36;\tsize:6",
            ),
        );
        dir
    }

    #[test]
    fn offsets_come_from_the_format_files_and_missing_ones_disable_one_signal() {
        let dir = fake();
        let l = build(&Tracefs::at(dir.path()), true).unwrap();
        assert_eq!(l.config.arg_offset[Syscall::Fdatasync as usize], 24);
        assert_eq!(l.config.arg_offset[Syscall::Msync as usize], 24);
        assert_eq!(l.config.arg_offset[Syscall::Sync as usize], 0);
        assert_eq!(l.config.ret_offset, 32);
        assert!(l.has("fdatasync") && l.has("write") && !l.has("syncfs"));
        let syncfs = l.disabled.iter().find(|d| d.signal == "syncfs").unwrap();
        assert!(syncfs.reason.contains("not found"), "{}", syncfs.reason);
    }

    #[test]
    fn block_offsets_follow_the_kernel_and_an_unusable_optional_hook_only_degrades() {
        let dir = fake();
        let l = build(&Tracefs::at(dir.path()), true).unwrap();
        assert!(l.has("block"));
        assert_eq!(l.config.field[Field::RqIssueDev as usize], 12);
        assert_eq!(l.config.field[Field::RqCompleteRwbs as usize], 36);
        assert_eq!(l.config.field[Field::RqCompleteError as usize], 32);
        let block = l.enabled.iter().find(|s| s.name == "block").unwrap();
        assert!(
            !block.hooks.iter().any(|h| h.name == "block_rq_insert"),
            "insert is unusable"
        );
        assert!(
            l.disabled
                .iter()
                .any(|d| d.signal == "block" && d.reason.contains("block_rq_insert"))
        );
        // No sched/writeback/jbd2 tracepoints in this fake: those signals are off, cleanly.
        for s in ["sched", "dirty", "writeback", "throttle", "journal"] {
            assert!(!l.has(s), "{s}");
            assert!(
                l.disabled.iter().any(|d| d.signal == s),
                "{s} is reported off"
            );
        }
        assert_eq!(l.config.field[Field::SwitchNextPid as usize], 0);
    }
}
