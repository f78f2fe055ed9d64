//! USDT (SystemTap SDT) probes of a shared object: HotSpot's `hotspot:thread__start`,
//! `hs_private:safepoint__begin` and friends in libjvm.so. Read from the ELF file's
//! `.note.stapsdt` notes (with the `object` crate), each probe's location translated to
//! the file offset a uprobe attaches at, and its argument specs (`8@%r13`,
//! `-4@-60(%rbp)`, `1@%al`) turned into what the eBPF side reads: a register of the
//! probed instruction's `pt_regs`, or user memory at a register plus an offset.

use std::path::Path;

use object::{Object as _, ObjectSection as _};
use thiserror::Error;
use zkstall_common::{USDT_ARG_CONST, USDT_ARG_MEM, USDT_ARG_REG, UsdtArgSpec};

#[derive(Debug, Error)]
pub enum UsdtError {
    #[error("reading {0}: {1}")]
    Read(String, String),
    #[error("{0} is not an ELF object zkstall can read: {1}")]
    Elf(String, String),
}

/// One probe site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub provider: String,
    pub name: String,
    /// The probed instruction's virtual address (prelink-adjusted) and file offset.
    pub address: u64,
    pub file_offset: u64,
    /// The semaphore's address (0: none; HotSpot's probes have none).
    pub semaphore: u64,
    /// The argument specs as written in the note.
    pub args: String,
}

impl Probe {
    /// The arguments, parsed for the eBPF side (None: a spec this reader does not know).
    pub fn arg_specs(&self) -> Option<Vec<UsdtArgSpec>> {
        self.args.split_whitespace().map(parse_arg).collect()
    }
}

/// Every SDT probe of the ELF file at `path`.
pub fn probes(path: &Path) -> Result<Vec<Probe>, UsdtError> {
    let name = path.display().to_string();
    let data = std::fs::read(path).map_err(|e| UsdtError::Read(name.clone(), e.to_string()))?;
    let file =
        object::File::parse(&*data).map_err(|e| UsdtError::Elf(name.clone(), e.to_string()))?;
    let Some(notes) = file.section_by_name(".note.stapsdt") else {
        return Ok(Vec::new());
    };
    let raw = notes
        .data()
        .map_err(|e| UsdtError::Elf(name.clone(), e.to_string()))?;
    // A prelinked file moved its code: .stapsdt.base's address against the note's base.
    let base_addr = file.section_by_name(".stapsdt.base").map(|s| s.address());
    let sections: Vec<(u64, u64, u64)> = file
        .sections()
        .filter_map(|s| {
            let (off, _) = s.file_range()?;
            Some((s.address(), s.size(), off))
        })
        .collect();
    let mut out = Vec::new();
    for n in parse_notes(raw) {
        let address = match base_addr {
            Some(b) if n.base != 0 => n.pc.wrapping_add(b).wrapping_sub(n.base),
            _ => n.pc,
        };
        let Some(file_offset) = sections
            .iter()
            .find(|(a, size, _)| address >= *a && address < a + size)
            .map(|(a, _, off)| address - a + off)
        else {
            continue;
        };
        out.push(Probe {
            provider: n.provider,
            name: n.name,
            address,
            file_offset,
            semaphore: n.semaphore,
            args: n.args,
        });
    }
    Ok(out)
}

struct RawNote {
    pc: u64,
    base: u64,
    semaphore: u64,
    provider: String,
    name: String,
    args: String,
}

/// The notes of a `.note.stapsdt` section: (namesz, descsz, type) headers, the owner
/// `stapsdt`, type 3, then the descriptor (pc, base, semaphore, provider\0 name\0 args\0),
/// each part padded to 4 bytes. Malformed notes end the walk.
fn parse_notes(mut b: &[u8]) -> Vec<RawNote> {
    let align4 = |n: usize| (n + 3) & !3;
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let u64_at = |b: &[u8], i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
    };
    let mut out = Vec::new();
    while b.len() >= 12 {
        let (Some(namesz), Some(descsz), Some(kind)) = (u32_at(b, 0), u32_at(b, 4), u32_at(b, 8))
        else {
            break;
        };
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        let name_end = 12 + align4(namesz);
        let desc_end = name_end + align4(descsz);
        if desc_end > b.len() {
            break;
        }
        let owner = &b[12..12 + namesz];
        let desc = &b[name_end..name_end + descsz];
        b = &b[desc_end..];
        if kind != 3 || owner != b"stapsdt\0" || desc.len() < 24 {
            continue;
        }
        let (Some(pc), Some(base), Some(semaphore)) =
            (u64_at(desc, 0), u64_at(desc, 8), u64_at(desc, 16))
        else {
            continue;
        };
        let mut strs = desc[24..]
            .split(|c| *c == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned());
        let (Some(provider), Some(name)) = (strs.next(), strs.next()) else {
            continue;
        };
        out.push(RawNote {
            pc,
            base,
            semaphore,
            provider,
            name,
            args: strs.next().unwrap_or_default(),
        });
    }
    out
}

/// x86_64 `struct pt_regs` slots, in the kernel's order (a stable arch ABI); the eBPF
/// side reads the register at the index given.
const PT_REGS: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];

/// The pt_regs slot of an x86_64 register name as GNU as writes it (`rax`, `eax`, `ax`,
/// `al`, `r8d`, `sil`, ...).
fn reg_index(r: &str) -> Option<u8> {
    let canon = match r {
        "rax" | "eax" | "ax" | "al" | "ah" => "ax",
        "rbx" | "ebx" | "bx" | "bl" | "bh" => "bx",
        "rcx" | "ecx" | "cx" | "cl" | "ch" => "cx",
        "rdx" | "edx" | "dx" | "dl" | "dh" => "dx",
        "rsi" | "esi" | "si" | "sil" => "si",
        "rdi" | "edi" | "di" | "dil" => "di",
        "rbp" | "ebp" | "bp" | "bpl" => "bp",
        "rsp" | "esp" | "sp" | "spl" => "sp",
        "rip" | "eip" => "ip",
        _ => {
            let n = r.strip_prefix('r')?;
            let digits = n.trim_end_matches(['d', 'w', 'b']);
            let num: u8 = digits.parse().ok()?;
            if !(8..=15).contains(&num) {
                return None;
            }
            return PT_REGS
                .iter()
                .position(|p| *p == format!("r{num}"))
                .map(|i| i as u8);
        }
    };
    PT_REGS.iter().position(|p| *p == canon).map(|i| i as u8)
}

/// One argument spec: `SIZE@OPERAND`, SIZE negative for signed; OPERAND `%reg`,
/// `OFF(%reg)` or `$CONST`.
fn parse_arg(s: &str) -> Option<UsdtArgSpec> {
    let (size, op) = s.split_once('@')?;
    let size: i8 = size.parse().ok()?;
    if !matches!(size.unsigned_abs(), 1 | 2 | 4 | 8) {
        return None;
    }
    let mut spec = UsdtArgSpec {
        loc: 0,
        reg: 0,
        size,
        _pad: 0,
        off: 0,
        value: 0,
    };
    if let Some(c) = op.strip_prefix('$') {
        spec.loc = USDT_ARG_CONST;
        spec.value = c.parse().ok()?;
    } else if let Some(r) = op.strip_prefix('%') {
        spec.loc = USDT_ARG_REG;
        spec.reg = reg_index(r)?;
    } else {
        let (off, rest) = op.split_once('(')?;
        let r = rest.strip_suffix(')')?.strip_prefix('%')?;
        spec.loc = USDT_ARG_MEM;
        spec.reg = reg_index(r)?;
        spec.off = if off.is_empty() { 0 } else { off.parse().ok()? };
    }
    Some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_specs_as_hotspot_writes_them() {
        let p = |s: &str| parse_arg(s).unwrap();
        let a = p("8@%r13");
        assert_eq!((a.loc, a.reg, a.size), (USDT_ARG_REG, 2, 8));
        let b = p("-4@-60(%rbp)");
        assert_eq!((b.loc, b.reg, b.size, b.off), (USDT_ARG_MEM, 4, -4, -60));
        let c = p("1@%al");
        assert_eq!((c.loc, c.reg, c.size), (USDT_ARG_REG, 10, 1));
        assert_eq!(p("1@%dil").reg, 14);
        assert_eq!(p("4@%r8d").reg, 9);
        assert_eq!(p("8@%r15").reg, 0);
        let k = p("-4@$5");
        assert_eq!((k.loc, k.value), (USDT_ARG_CONST, 5));
        assert!(parse_arg("3@%rax").is_none());
        assert!(parse_arg("8@%xmm0").is_none());
        assert!(parse_arg("garbage").is_none());
    }

    #[test]
    fn notes_are_read_and_malformed_ones_end_the_walk_without_a_panic() {
        let mut n = Vec::new();
        let desc: Vec<u8> = [
            0x1000u64.to_le_bytes().as_slice(),
            0u64.to_le_bytes().as_slice(),
            0u64.to_le_bytes().as_slice(),
            b"hotspot\0thread__start\08@%r13 -4@-60(%rbp)\0",
        ]
        .concat();
        n.extend_from_slice(&8u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&3u32.to_le_bytes());
        n.extend_from_slice(b"stapsdt\0");
        n.extend_from_slice(&desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        let notes = parse_notes(&n);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].name, "thread__start");
        assert_eq!(notes[0].args, "8@%r13 -4@-60(%rbp)");
        assert_eq!(notes[0].pc, 0x1000);
        // Cut anywhere: fewer notes, never a panic.
        for cut in 0..n.len() {
            let _ = parse_notes(&n[..cut]);
        }
    }

    #[test]
    fn the_jdk_on_this_machine_has_the_probes_zkstall_uses() {
        // Debian's JDK 17 (the tests' JVM); skipped where no JDK is installed.
        let Some(jvm) = std::fs::read_dir("/usr/lib/jvm")
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("lib/server/libjvm.so"))
            .find(|p| p.exists())
        else {
            eprintln!("SKIP: no libjvm.so under /usr/lib/jvm");
            return;
        };
        let ps = probes(&jvm).unwrap();
        for (prov, name) in [
            ("hotspot", "thread__start"),
            ("hotspot", "thread__stop"),
            ("hs_private", "safepoint__begin"),
            ("hs_private", "safepoint__end"),
            ("hotspot", "vmops__begin"),
            ("hotspot", "gc__begin"),
        ] {
            let p = ps
                .iter()
                .find(|p| p.provider == prov && p.name == name)
                .unwrap_or_else(|| panic!("{prov}:{name} missing from {}", jvm.display()));
            assert!(p.arg_specs().is_some(), "{p:?}");
            assert_eq!(p.semaphore, 0);
        }
    }
}
