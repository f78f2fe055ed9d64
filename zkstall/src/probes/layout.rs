//! Which signal needs which tracepoint, and the load-time [`Config`] (field offsets) built
//! from the tracefs formats. A tracepoint missing on this kernel disables only the signal
//! that needs it; the others still run, and `check` and the run's summary name what is off.

use zkstall_common::{ArgKind, Config, Syscall};

use super::tracefs::{Tracefs, TracefsError};

/// One tracepoint a program attaches to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub category: &'static str,
    pub name: String,
    /// The eBPF program attached there.
    pub program: &'static str,
}

/// A signal zkstall observes, and the tracepoints it needs.
#[derive(Clone, Debug)]
pub struct Signal {
    /// Short name used in `check` and the summary ("fdatasync").
    pub name: &'static str,
    pub hooks: Vec<Hook>,
    pub syscall: Syscall,
}

/// Every signal of this build.
pub fn signals() -> Vec<Signal> {
    Syscall::ALL
        .iter()
        .map(|&sc| {
            let (enter, exit) = sc.programs();
            Signal {
                name: sc.name(),
                syscall: sc,
                hooks: vec![
                    Hook {
                        category: "syscalls",
                        name: format!("sys_enter_{}", sc.name()),
                        program: enter,
                    },
                    Hook {
                        category: "syscalls",
                        name: format!("sys_exit_{}", sc.name()),
                        program: exit,
                    },
                ],
            }
        })
        .collect()
}

/// Why a signal is off on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disabled {
    pub signal: &'static str,
    pub reason: String,
}

/// The result of reading the formats: the config for the programs, the signals that can
/// run, and those that cannot (with the reason).
#[derive(Clone, Debug)]
pub struct Layout {
    pub config: Config,
    pub enabled: Vec<Signal>,
    pub disabled: Vec<Disabled>,
}

/// Reads every needed format file and builds the [`Config`]. Fails only when tracefs itself
/// cannot be read; a missing or odd tracepoint disables its signal.
pub fn build(tracefs: &Tracefs) -> Result<Layout, TracefsError> {
    let mut config = Config::default();
    let mut enabled = Vec::new();
    let mut disabled = Vec::new();
    let mut ret_offset: Option<u32> = None;
    for sig in signals() {
        match syscall_offsets(tracefs, sig.syscall) {
            Ok((arg_off, ret_off)) => {
                // Every sys_exit_* shares one `ret` offset in the config: a kernel where
                // they differ would need a per-syscall table, so refuse the odd one out.
                if ret_offset.is_some_and(|r| r != ret_off) {
                    disabled.push(Disabled {
                        signal: sig.name,
                        reason: format!(
                            "sys_exit_{}: ret at offset {ret_off}, others at {}",
                            sig.name,
                            ret_offset.unwrap_or(0)
                        ),
                    });
                    continue;
                }
                ret_offset = Some(ret_off);
                config.arg_offset[sig.syscall as usize] = arg_off;
                enabled.push(sig);
            }
            Err(e @ TracefsError::Unreadable(..)) => return Err(e),
            Err(e) => disabled.push(Disabled {
                signal: sig.name,
                reason: e.to_string(),
            }),
        }
    }
    config.ret_offset = ret_offset.unwrap_or(0);
    Ok(Layout {
        config,
        enabled,
        disabled,
    })
}

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

    fn write_tp(root: &std::path::Path, name: &str, body: &str) {
        let d = root.join("events/syscalls").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("format"), body).unwrap();
    }

    const COMMON: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n";

    #[test]
    fn offsets_come_from_the_format_files_and_missing_ones_disable_one_signal() {
        let dir = tempfile::tempdir().unwrap();
        for sc in Syscall::ALL {
            if sc == Syscall::Syncfs {
                continue; // as on a kernel without it
            }
            let (arg, _) = sc.arg();
            let argline = if arg.is_empty() {
                String::new()
            } else {
                // A layout unlike today's, to prove nothing is hard-coded.
                format!("\tfield:unsigned long {arg};\toffset:24;\tsize:8;\tsigned:0;\n")
            };
            write_tp(
                dir.path(),
                &format!("sys_enter_{}", sc.name()),
                &format!("{COMMON}{argline}"),
            );
            write_tp(
                dir.path(),
                &format!("sys_exit_{}", sc.name()),
                &format!("{COMMON}\tfield:long ret;\toffset:32;\tsize:8;\tsigned:1;\n"),
            );
        }
        let l = build(&Tracefs::at(dir.path())).unwrap();
        assert_eq!(l.config.arg_offset[Syscall::Fdatasync as usize], 24);
        assert_eq!(l.config.arg_offset[Syscall::Msync as usize], 24);
        assert_eq!(l.config.arg_offset[Syscall::Sync as usize], 0);
        assert_eq!(l.config.ret_offset, 32);
        assert_eq!(l.enabled.len(), 5);
        assert_eq!(l.disabled.len(), 1);
        assert_eq!(l.disabled[0].signal, "syncfs");
        assert!(
            l.disabled[0].reason.contains("not found"),
            "{}",
            l.disabled[0].reason
        );
    }
}
