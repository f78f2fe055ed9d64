//! Just enough of a BTF reader to learn, at load time, where the kernel keeps the struct
//! fields the block programs read (`struct request`, `struct gendisk`, ...) and the values
//! of the request flag enums. This is "CO-RE done in userspace": Rust eBPF programs cannot
//! carry BTF field relocations yet, so userspace reads the running kernel's BTF
//! (/sys/kernel/btf/vmlinux) and hands the offsets to the programs in `CONFIG`, as it does
//! with tracefs formats.
//!
//! Written here rather than taken from a crate: aya's BTF parser is crate-private, and the
//! maintained standalone parser (btf-rs) is LGPL, which does not fit a statically linked
//! MIT/Apache binary. The format is small and stable (Documentation/bpf/btf.rst).

use std::{collections::HashMap, path::Path};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("{0}: cannot read: {1}")]
    Unreadable(String, String),
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF data is cut short at byte {0}")]
    Truncated(usize),
    #[error("unknown BTF type kind {0}")]
    UnknownKind(u32),
}

const MAGIC: u16 = 0xeb9f;

// Kinds (include/uapi/linux/btf.h).
const INT: u8 = 1;
const PTR: u8 = 2;
const ARRAY: u8 = 3;
const STRUCT: u8 = 4;
const UNION: u8 = 5;
const ENUM: u8 = 6;
const FWD: u8 = 7;
const TYPEDEF: u8 = 8;
const VOLATILE: u8 = 9;
const CONST: u8 = 10;
const RESTRICT: u8 = 11;
const FUNC: u8 = 12;
const FUNC_PROTO: u8 = 13;
const VAR: u8 = 14;
const DATASEC: u8 = 15;
const FLOAT: u8 = 16;
const DECL_TAG: u8 = 17;
const TYPE_TAG: u8 = 18;
const ENUM64: u8 = 19;

#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u8,
    kind_flag: bool,
    vlen: u16,
    name_off: u32,
    /// Size (int, struct, union, enum, datasec) or referenced type id.
    size_or_type: u32,
    /// Byte offset of the kind-specific data following the type record.
    extra: usize,
}

/// A struct member's place: byte offset from the start of the outer struct, and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

pub struct Btf {
    data: Vec<u8>,
    /// Index 0 is the void type.
    types: Vec<Type>,
    str_start: usize,
    str_len: usize,
    /// Named types by (kind, name), first definition wins.
    by_name: HashMap<(u8, String), u32>,
}

fn u16_at(d: &[u8], at: usize) -> Result<u16, BtfError> {
    d.get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfError::Truncated(at))
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Truncated(at))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path)
            .map_err(|e| BtfError::Unreadable(path.display().to_string(), e.to_string()))?;
        Self::parse(data)
    }

    /// Parses little-endian BTF (the only byte order zkstall runs on).
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if u16_at(&data, 0)? != MAGIC {
            return Err(BtfError::BadHeader);
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let type_start = hdr_len.checked_add(type_off).ok_or(BtfError::BadHeader)?;
        let type_end = type_start
            .checked_add(type_len)
            .ok_or(BtfError::BadHeader)?;
        let str_start = hdr_len.checked_add(str_off).ok_or(BtfError::BadHeader)?;
        if type_end > data.len() || str_start.saturating_add(str_len) > data.len() {
            return Err(BtfError::Truncated(data.len()));
        }
        let mut types = vec![Type {
            kind: 0,
            kind_flag: false,
            vlen: 0,
            name_off: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = type_start;
        while at < type_end {
            let name_off = u32_at(&data, at)?;
            let info = u32_at(&data, at + 4)?;
            let size_or_type = u32_at(&data, at + 8)?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as u16;
            let extra = at + 12;
            let extra_len = match kind {
                INT => 4,
                PTR | FWD | TYPEDEF | VOLATILE | CONST | RESTRICT | FUNC | FLOAT | TYPE_TAG => 0,
                ARRAY => 12,
                STRUCT | UNION => 12 * vlen as usize,
                ENUM => 8 * vlen as usize,
                FUNC_PROTO => 8 * vlen as usize,
                VAR => 4,
                DATASEC => 12 * vlen as usize,
                DECL_TAG => 4,
                ENUM64 => 12 * vlen as usize,
                k => return Err(BtfError::UnknownKind(k as u32)),
            };
            types.push(Type {
                kind,
                kind_flag: info >> 31 == 1,
                vlen,
                name_off,
                size_or_type,
                extra,
            });
            at = extra + extra_len;
        }
        if at != type_end {
            return Err(BtfError::Truncated(at));
        }
        let mut btf = Btf {
            data,
            types,
            str_start,
            str_len,
            by_name: HashMap::new(),
        };
        for id in 1..btf.types.len() {
            let t = btf.types[id];
            if t.name_off != 0 && matches!(t.kind, STRUCT | UNION | ENUM | ENUM64 | TYPEDEF) {
                let name = btf.str_at(t.name_off).to_string();
                btf.by_name.entry((t.kind, name)).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let start = self.str_start + off as usize;
        let end = self.str_start + self.str_len;
        let Some(bytes) = self.data.get(start..end) else {
            return "";
        };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..len]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<Type> {
        for _ in 0..32 {
            let t = *self.types.get(id as usize)?;
            match t.kind {
                TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let t = self.resolve(id)?;
        match t.kind {
            INT | STRUCT | UNION | ENUM | ENUM64 | FLOAT => Some(t.size_or_type),
            PTR => Some(8),
            ARRAY => {
                let elem = u32_at(&self.data, t.extra).ok()?;
                let n = u32_at(&self.data, t.extra + 8).ok()?;
                self.size_of(elem)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// Where `path` (`"field"` or `"field.sub"`) lies in `struct name` (or a union of that
    /// name). Anonymous inner structs and unions are searched as C does. None when the
    /// struct or a field is missing, or a field is a bitfield (not byte-addressable).
    pub fn member(&self, name: &str, path: &str) -> Option<Member> {
        let id = self
            .by_name
            .get(&(STRUCT, name.to_string()))
            .or_else(|| self.by_name.get(&(UNION, name.to_string())))?;
        let mut cur = *id;
        let mut offset = 0u32;
        let mut size = 0u32;
        for part in path.split('.') {
            let (off, ty) = self.find_member(cur, part, 0)?;
            offset = offset.checked_add(off)?;
            size = self.size_of(ty)?;
            cur = ty;
        }
        Some(Member { offset, size })
    }

    /// Byte offset and type of member `field` of aggregate `id`, searching anonymous
    /// members recursively.
    fn find_member(&self, id: u32, field: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.resolve(id)?;
        if !matches!(t.kind, STRUCT | UNION) {
            return None;
        }
        for i in 0..t.vlen as usize {
            let at = t.extra + 12 * i;
            let name_off = u32_at(&self.data, at).ok()?;
            let ty = u32_at(&self.data, at + 4).ok()?;
            let raw = u32_at(&self.data, at + 8).ok()?;
            let (bit_off, bitfield) = if t.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24 != 0)
            } else {
                (raw, false)
            };
            if name_off == 0 {
                if let Some((off, inner)) = self.find_member(ty, field, depth + 1) {
                    if bit_off % 8 != 0 {
                        return None;
                    }
                    return Some((bit_off / 8 + off, inner));
                }
                continue;
            }
            if self.str_at(name_off) == field {
                if bitfield || bit_off % 8 != 0 {
                    return None;
                }
                return Some((bit_off / 8, ty));
            }
        }
        None
    }

    /// The number of parameters of the function type a typedef points to (the kernel
    /// declares `btf_trace_<tracepoint>` this way: its first parameter is the context, the
    /// rest are the tracepoint's arguments).
    pub fn typedef_fn_params(&self, name: &str) -> Option<usize> {
        let id = *self.by_name.get(&(TYPEDEF, name.to_string()))?;
        let t = *self.types.get(id as usize)?;
        let ptr = *self.types.get(t.size_or_type as usize)?;
        let proto = if ptr.kind == PTR {
            *self.types.get(ptr.size_or_type as usize)?
        } else {
            ptr
        };
        (proto.kind == FUNC_PROTO).then_some(proto.vlen as usize)
    }

    /// The value of enumerator `member`, looked up in every enum (kernels rename enums,
    /// e.g. `req_opf` became `req_op`, while the enumerators keep their names).
    pub fn enumerator(&self, member: &str) -> Option<i64> {
        for t in &self.types {
            match t.kind {
                ENUM => {
                    for i in 0..t.vlen as usize {
                        let at = t.extra + 8 * i;
                        if self.str_at(u32_at(&self.data, at).ok()?) == member {
                            let v = u32_at(&self.data, at + 4).ok()?;
                            // kind_flag set: signed values.
                            return Some(if t.kind_flag {
                                v as i32 as i64
                            } else {
                                v as i64
                            });
                        }
                    }
                }
                ENUM64 => {
                    for i in 0..t.vlen as usize {
                        let at = t.extra + 12 * i;
                        if self.str_at(u32_at(&self.data, at).ok()?) == member {
                            let lo = u32_at(&self.data, at + 4).ok()? as u64;
                            let hi = u32_at(&self.data, at + 8).ok()? as u64;
                            return Some((hi << 32 | lo) as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF blobs for tests: types are added in order (ids from 1).
    #[derive(Default)]
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn rec(&mut self, name: &str, kind: u8, kflag: bool, vlen: u16, st: u32) -> u32 {
            let n = self.s(name);
            self.types.extend_from_slice(&n.to_le_bytes());
            let info = ((kflag as u32) << 31) | ((kind as u32) << 24) | vlen as u32;
            self.types.extend_from_slice(&info.to_le_bytes());
            self.types.extend_from_slice(&st.to_le_bytes());
            let id = self.next_id;
            self.next_id += 1;
            id
        }
        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.rec(name, INT, false, 0, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }
        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.rec("", PTR, false, 0, to)
        }
        pub(crate) fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.rec(name, TYPEDEF, false, 0, to)
        }
        /// members: (name, type, byte offset)
        pub(crate) fn structure(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let kind = STRUCT;
            let id = self.rec(name, kind, false, members.len() as u16, size);
            for (m, ty, off) in members {
                let n = self.s(m);
                self.types.extend_from_slice(&n.to_le_bytes());
                self.types.extend_from_slice(&ty.to_le_bytes());
                self.types.extend_from_slice(&(off * 8).to_le_bytes());
            }
            id
        }
        pub(crate) fn union(&mut self, name: &str, size: u32, members: &[(&str, u32)]) -> u32 {
            let id = self.rec(name, UNION, false, members.len() as u16, size);
            for (m, ty) in members {
                let n = self.s(m);
                self.types.extend_from_slice(&n.to_le_bytes());
                self.types.extend_from_slice(&ty.to_le_bytes());
                self.types.extend_from_slice(&0u32.to_le_bytes());
            }
            id
        }
        pub(crate) fn func_proto(&mut self, params: u16) -> u32 {
            let id = self.rec("", FUNC_PROTO, false, params, 0);
            for _ in 0..params {
                self.types.extend_from_slice(&0u32.to_le_bytes());
                self.types.extend_from_slice(&0u32.to_le_bytes());
            }
            id
        }
        pub(crate) fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
            let id = self.rec(name, ENUM, true, values.len() as u16, 4);
            for (m, v) in values {
                let n = self.s(m);
                self.types.extend_from_slice(&n.to_le_bytes());
                self.types.extend_from_slice(&v.to_le_bytes());
            }
            id
        }
        pub(crate) fn build(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            out.extend_from_slice(&24u32.to_le_bytes()); // hdr_len
            out.extend_from_slice(&0u32.to_le_bytes()); // type_off
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes()); // str_off
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    #[test]
    fn finds_members_through_typedefs_anonymous_unions_and_paths() {
        let mut b = Builder::new();
        let u32t = b.int("unsigned int", 4);
        let u64t = b.int("long long unsigned int", 8);
        let sector = b.typedef("sector_t", u64t);
        let inner = b.structure("kernfs_node", 16, &[("id", u64t, 8)]);
        let anon = b.union("", 8, &[("x", u32t), ("__data_len", u32t)]);
        let pinner = b.ptr(inner);
        b.structure(
            "request",
            64,
            &[
                ("q", pinner, 0),
                ("", anon, 16),
                ("__sector", sector, 24),
                ("kn", inner, 32),
            ],
        );
        b.enumeration("req_flag_bits", &[("__REQ_SYNC", 11), ("__REQ_FUA", 17)]);
        let btf = Btf::parse(b.build()).unwrap();
        assert_eq!(
            btf.member("request", "q"),
            Some(Member { offset: 0, size: 8 })
        );
        assert_eq!(
            btf.member("request", "__data_len"),
            Some(Member {
                offset: 16,
                size: 4
            })
        );
        assert_eq!(
            btf.member("request", "__sector"),
            Some(Member {
                offset: 24,
                size: 8
            })
        );
        assert_eq!(
            btf.member("request", "kn.id"),
            Some(Member {
                offset: 40,
                size: 8
            })
        );
        assert_eq!(btf.member("request", "nope"), None);
        assert_eq!(btf.member("nostruct", "q"), None);
        assert_eq!(btf.enumerator("__REQ_FUA"), Some(17));
        assert_eq!(btf.enumerator("__REQ_NOPE"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Btf::parse(vec![]).err(), Some(BtfError::Truncated(0)));
        assert_eq!(Btf::parse(vec![0; 64]).err(), Some(BtfError::BadHeader));
        let mut b = Builder::new();
        b.int("int", 4);
        let mut blob = b.build();
        blob.truncate(blob.len() - 10);
        assert!(Btf::parse(blob).is_err());
    }

    #[test]
    fn reads_this_kernels_struct_request_when_there_is_btf() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no /sys/kernel/btf/vmlinux here: nothing to check");
            return;
        };
        for f in ["q", "cmd_flags", "__data_len", "__sector", "bio"] {
            assert!(btf.member("request", f).is_some(), "request.{f}");
        }
        assert_eq!(btf.member("request", "__sector").unwrap().size, 8);
        assert!(btf.enumerator("__REQ_PREFLUSH").is_some());
        // 6.18: (void *ctx, bool preempt, prev, next, unsigned int prev_state).
        assert!(btf.typedef_fn_params("btf_trace_sched_switch").unwrap() >= 4);
    }
}
