//! Kernel addresses -> function names, from /proc/kallsyms (loaded once, on first use, and
//! kept sorted: a fixed cost of a few MB, bounded by the kernel's symbol count).

use std::path::PathBuf;

pub struct Symbols {
    path: PathBuf,
    /// Sorted by address; None until loaded, empty if unreadable.
    table: Option<Table>,
}

/// The text symbols, compactly: every name in one string, (address, name's end) sorted by
/// address (~100k symbols: ~4 MB instead of a String each).
#[derive(Default)]
struct Table {
    names: String,
    /// (address, start of the name in `names`, its length).
    syms: Vec<(u64, u32, u16)>,
}

impl Table {
    fn name(&self, i: usize) -> &str {
        let (_, at, len) = self.syms[i];
        &self.names[at as usize..at as usize + len as usize]
    }
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

    fn table(&mut self) -> &Table {
        if self.table.is_none() {
            use std::io::BufRead as _;
            let mut t = Table::default();
            if let Ok(f) = std::fs::File::open(&self.path) {
                for l in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                    let mut it = l.split_whitespace();
                    let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next())
                    else {
                        continue;
                    };
                    let Ok(addr) = u64::from_str_radix(addr, 16) else {
                        continue;
                    };
                    // Text symbols only; zero addresses mean kptr_restrict hides them.
                    if addr == 0 || !matches!(kind, "t" | "T" | "w" | "W") || name.len() > 512 {
                        continue;
                    }
                    t.syms.push((addr, t.names.len() as u32, name.len() as u16));
                    t.names.push_str(name);
                }
            }
            t.syms.sort_unstable_by_key(|(a, _, _)| *a);
            t.syms.shrink_to_fit();
            t.names.shrink_to_fit();
            self.table = Some(t);
        }
        self.table.get_or_insert_with(Table::default)
    }

    /// `function+0xoff` for a kernel address, or the raw address.
    pub fn resolve(&mut self, addr: u64) -> String {
        let t = self.table();
        match t.syms.partition_point(|(a, _, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let base = t.syms[i - 1].0;
                format!("{}+{:#x}", t.name(i - 1), addr - base)
            }
        }
    }

    /// The address of a `/proc/<tid>/stack` frame (`function+0xoff`, as
    /// [`crate::threads_now::parse_stack`] leaves it): the way back from a stack read in
    /// /proc to the frames a kernel record carries, which [`Symbols::resolve`] turns into
    /// the same names. A linear search: for the few threads still asleep when a
    /// recording or an incident is closed. None when the function is unknown (kallsyms
    /// hidden, or a name this table does not hold).
    pub fn address_of(&mut self, frame: &str) -> Option<u64> {
        let (name, off) = match frame.split_once('+') {
            Some((n, o)) => (n, u64::from_str_radix(o.trim_start_matches("0x"), 16).ok()?),
            None => (frame, 0),
        };
        let t = self.table();
        let i = (0..t.syms.len()).find(|&i| t.name(i) == name)?;
        Some(t.syms[i].0 + off)
    }
}

/// Frames of the tracing machinery at the top of a stack taken from a tracepoint: the eBPF
/// program, the trampoline, `__traceiter_*`. They say nothing about the wait.
/// A named frame of the tracing machinery (BPF, tracepoint dispatch, perf). An unresolved
/// address (`0x...`) is not one: without kallsyms (no CAP_SYSLOG) every frame is one, and
/// the JIT'd program's own frame on top is skipped with the named ones under it.
fn is_tracing_frame(name: &str) -> bool {
    const PREFIXES: [&str; 7] = [
        "bpf_",
        "__bpf_",
        "__traceiter_",
        "trace_event_",
        "perf_trace_",
        "perf_tp_",
        "__perf_",
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
        // And back, as /proc/<tid>/stack names a frame.
        assert_eq!(
            s.address_of("jbd2_log_wait_commit+0x50"),
            Some(0xffffffff81000150)
        );
        assert_eq!(s.address_of("ext4_sync_file"), Some(0xffffffff81000300));
        assert_eq!(s.address_of("some_data+0x1"), None, "not a text symbol");
        assert_eq!(s.address_of("no_such_function+0x1"), None);
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
        // Without kallsyms every frame is an address: none is dropped.
        let mut blind = Symbols::new(dir.path().join("missing"));
        let st = blind.stack(&[0xffffffff81000310, 0xffffffff81000410]);
        assert_eq!(st.len(), 2, "{st:?}");
    }
}
