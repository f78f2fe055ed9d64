//! Kernel addresses -> function names, from /proc/kallsyms (loaded once, on first use, and
//! kept sorted: a fixed cost of a few MB, bounded by the kernel's symbol count).

use std::path::PathBuf;

pub struct Symbols {
    path: PathBuf,
    /// (address, name), sorted by address; None until loaded, empty if unreadable.
    table: Option<Vec<(u64, String)>>,
}

impl Symbols {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Symbols {
            path: path.into(),
            table: None,
        }
    }

    /// Loads the table now (it is otherwise loaded on first use, which would stall the
    /// pipeline for a moment in the middle of a trace).
    pub fn load(&mut self) {
        let _ = self.table();
    }

    fn table(&mut self) -> &[(u64, String)] {
        if self.table.is_none() {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let mut t: Vec<(u64, String)> = text
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                    let kind = it.next()?;
                    let name = it.next()?;
                    // Text symbols only; zero addresses mean kptr_restrict hides them.
                    (addr != 0 && matches!(kind, "t" | "T" | "w" | "W"))
                        .then(|| (addr, name.to_string()))
                })
                .collect();
            t.sort_unstable_by_key(|(a, _)| *a);
            self.table = Some(t);
        }
        self.table.as_deref().unwrap_or(&[])
    }

    /// `function+0xoff` for a kernel address, or the raw address.
    pub fn resolve(&mut self, addr: u64) -> String {
        let t = self.table();
        match t.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (base, name) = &t[i - 1];
                format!("{name}+{:#x}", addr - base)
            }
        }
    }
}

/// Frames of the tracing machinery at the top of a stack taken from a tracepoint: the eBPF
/// program, the trampoline, `__traceiter_*`. They say nothing about the wait.
fn is_tracing_frame(name: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "bpf_",
        "__bpf_",
        "__traceiter_",
        "trace_event_",
        "perf_trace_",
        "perf_tp_",
        "__perf_",
        "0x",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

impl Symbols {
    /// Symbolizes a stack (innermost first), dropping the tracing frames on top.
    pub fn stack(&mut self, frames: &[u64]) -> Vec<String> {
        let names: Vec<String> = frames.iter().map(|&a| self.resolve(a)).collect();
        let skip = names
            .iter()
            .take(12)
            .rposition(|n| is_tracing_frame(n))
            .map_or(0, |i| i + 1);
        names.into_iter().skip(skip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_to_the_enclosing_symbol() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kallsyms");
        std::fs::write(
            &p,
            "ffffffff81000000 T _stext\nffffffff81000100 t jbd2_log_wait_commit\nffffffff81000200 D some_data\nffffffff81000300 T ext4_sync_file [ext4]\n",
        )
        .unwrap();
        let mut s = Symbols::new(&p);
        assert_eq!(s.resolve(0xffffffff81000150), "jbd2_log_wait_commit+0x50");
        assert_eq!(
            s.resolve(0xffffffff81000250),
            "jbd2_log_wait_commit+0x150",
            "data symbols are skipped"
        );
        assert_eq!(s.resolve(0xffffffff81000300), "ext4_sync_file+0x0");
        assert_eq!(s.resolve(0x10), "0x10");
    }

    #[test]
    fn stacks_start_below_the_tracing_frames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kallsyms");
        std::fs::write(
            &p,
            "ffffffff81000000 T bpf_trace_run4\nffffffff81000100 t __bpf_trace_sched_switch\nffffffff81000200 T __traceiter_sched_switch\nffffffff81000300 T __schedule\nffffffff81000400 T jbd2_log_wait_commit\n",
        )
        .unwrap();
        let mut s = Symbols::new(&p);
        let st = s.stack(&[
            0xffffffff81000010,
            0xffffffff81000110,
            0xffffffff81000210,
            0xffffffff81000310,
            0xffffffff81000410,
        ]);
        assert_eq!(st, vec!["__schedule+0x10", "jbd2_log_wait_commit+0x10"]);
    }
}
