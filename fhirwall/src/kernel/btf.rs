//! Field offsets of the running kernel's structures, from its BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The LSM programs read `struct socket`, `struct sock` and `struct msghdr`, whose layouts change
//! between kernel versions and configurations. C programs get CO-RE relocations for this; Rust
//! kernel programs do not, so the agent looks the offsets up here and hands them over in a map.
//! aya parses BTF but keeps its type lookups private, and the one BTF crate on crates.io is
//! LGPL, so this reads the few records it needs itself.
//!
//! Format: Documentation/bpf/btf.rst, "BTF Type and String Encoding".

use std::{collections::HashMap, path::Path};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read the kernel's BTF at {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel's BTF is malformed: {what}")]
    Malformed { what: &'static str },
    #[error("the kernel's BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("the kernel's BTF has no member {member} in struct {name}")]
    NoMember { name: String, member: String },
}

/// One struct or union: members as (name, type id, bit offset). Anonymous members have an
/// empty name and are searched through.
#[derive(Debug)]
struct Composite {
    members: Vec<(String, u32, u32)>,
}

/// The structs and unions of a BTF blob, by type id, and the named ones by name.
#[derive(Debug)]
pub struct KernelTypes {
    by_id: HashMap<u32, Composite>,
    by_name: HashMap<String, u32>,
}

impl KernelTypes {
    /// The running kernel's types.
    pub fn running() -> Result<Self, BtfError> {
        let path = Path::new("/sys/kernel/btf/vmlinux");
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let header = Header::parse(bytes)?;
        let types = section(bytes, header.len, header.type_off, header.type_len)?;
        let strings = section(bytes, header.len, header.str_off, header.str_len)?;
        let mut out = Self {
            by_id: HashMap::new(),
            by_name: HashMap::new(),
        };
        let mut at = 0;
        let mut id = 1;
        while at < types.len() {
            at = out.record(types, strings, at, id)?;
            id += 1;
        }
        Ok(out)
    }

    /// Byte offset of `path` (member names, through named struct members) inside struct `name`.
    pub fn offset(&self, name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let mut id = *self.by_name.get(name).ok_or_else(|| BtfError::NoStruct {
            name: name.to_owned(),
        })?;
        let mut bits = 0;
        for member in path {
            let (found_bits, type_id) =
                self.find(id, member).ok_or_else(|| BtfError::NoMember {
                    name: name.to_owned(),
                    member: (*member).to_owned(),
                })?;
            bits += found_bits;
            id = type_id;
        }
        if bits % 8 != 0 {
            return Err(BtfError::Malformed {
                what: "a member the agent reads is a bitfield",
            });
        }
        Ok(bits / 8)
    }

    /// A member of composite `id`, searching anonymous members depth first: (bit offset, type).
    fn find(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        let composite = self.by_id.get(&id)?;
        for (name, type_id, bits) in &composite.members {
            if name == member {
                return Some((*bits, *type_id));
            }
            if name.is_empty()
                && let Some((inner, type_id)) = self.find(*type_id, member)
            {
                return Some((bits + inner, type_id));
            }
        }
        None
    }

    /// Reads the type record at `at`; keeps it if it is a struct or union. Returns the offset
    /// of the next record.
    fn record(
        &mut self,
        types: &[u8],
        strings: &[u8],
        at: usize,
        id: u32,
    ) -> Result<usize, BtfError> {
        let name_off = word(types, at)?;
        let info = word(types, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let body = at + 12;
        let extra = match kind {
            1 | 14 | 17 => 4,                                // int, var, decl tag
            3 => 12,                                         // array
            KIND_STRUCT | KIND_UNION | 15 | 19 => vlen * 12, // members, datasec, enum64
            6 | 13 => vlen * 8,                              // enum, func proto
            2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, qualifiers, func, float, tag
            _ => {
                return Err(BtfError::Malformed {
                    what: "unknown type kind",
                });
            }
        };
        if kind == KIND_STRUCT || kind == KIND_UNION {
            let mut members = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let m = body + i * 12;
                let offset = word(types, m + 8)?;
                // With kind_flag the top 8 bits hold a bitfield size, the rest the bit offset.
                let bits = if kind_flag {
                    offset & 0x00ff_ffff
                } else {
                    offset
                };
                members.push((string(strings, word(types, m)?)?, word(types, m + 4)?, bits));
            }
            let name = string(strings, name_off)?;
            if !name.is_empty() && kind == KIND_STRUCT {
                // The first definition wins (duplicates only in split BTF, which is not read here).
                self.by_name.entry(name).or_insert(id);
            }
            self.by_id.insert(id, Composite { members });
        }
        Ok(body + extra)
    }
}

struct Header {
    len: usize,
    type_off: usize,
    type_len: usize,
    str_off: usize,
    str_len: usize,
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let magic = bytes
            .get(..2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .ok_or(BtfError::Malformed {
                what: "truncated header",
            })?;
        if magic != MAGIC {
            return Err(BtfError::Malformed {
                what: "bad magic (not native-endian BTF)",
            });
        }
        let len = word(bytes, 4)? as usize;
        if len < HEADER_LEN {
            return Err(BtfError::Malformed {
                what: "short header",
            });
        }
        Ok(Self {
            len,
            type_off: word(bytes, 8)? as usize,
            type_len: word(bytes, 12)? as usize,
            str_off: word(bytes, 16)? as usize,
            str_len: word(bytes, 20)? as usize,
        })
    }
}

fn section(bytes: &[u8], header: usize, off: usize, len: usize) -> Result<&[u8], BtfError> {
    header
        .checked_add(off)
        .and_then(|start| Some(start..start.checked_add(len)?))
        .and_then(|range| bytes.get(range))
        .ok_or(BtfError::Malformed {
            what: "section out of bounds",
        })
}

fn word(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed {
            what: "truncated type record",
        })
}

fn string(strings: &[u8], off: u32) -> Result<String, BtfError> {
    let tail = strings.get(off as usize..).ok_or(BtfError::Malformed {
        what: "string offset out of bounds",
    })?;
    let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> Option<KernelTypes> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            eprintln!("skipped: this kernel has no BTF");
            assert!(std::env::var_os("CI").is_none(), "CI machines have BTF");
            return None;
        }
        Some(KernelTypes::running().expect("the running kernel's BTF parses"))
    }

    #[test]
    fn finds_the_socket_fields_the_lsm_programs_read() {
        let Some(types) = running() else { return };
        // Stable for a decade on 64-bit kernels: the pointer after state, type, flags and file.
        assert_eq!(types.offset("socket", &["sk"]).expect("socket.sk"), 24);
        assert_eq!(types.offset("socket", &["type"]).expect("socket.type"), 4);
        // sock_common starts struct sock; its address pair and port pair lead it.
        assert_eq!(
            types
                .offset("sock", &["__sk_common", "skc_daddr"])
                .expect("daddr"),
            0
        );
        assert_eq!(
            types
                .offset("sock", &["__sk_common", "skc_dport"])
                .expect("dport"),
            12
        );
        assert_eq!(
            types
                .offset("sock", &["__sk_common", "skc_family"])
                .expect("family"),
            16
        );
        let v6 = types
            .offset("sock", &["__sk_common", "skc_v6_daddr"])
            .expect("v6 daddr");
        let mark = types.offset("sock", &["sk_mark"]).expect("sk_mark");
        assert!(v6 > 16 && mark > v6, "v6 {v6}, mark {mark}");
        assert_eq!(types.offset("msghdr", &["msg_name"]).expect("msg_name"), 0);
    }

    #[test]
    fn names_a_missing_struct_or_member() {
        let Some(types) = running() else { return };
        assert!(matches!(
            types.offset("no_such_struct", &["x"]),
            Err(BtfError::NoStruct { .. })
        ));
        assert!(matches!(
            types.offset("socket", &["no_such_member"]),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        for bytes in [&[][..], &[0x9f, 0xeb, 1, 0][..], &[0u8; 24][..]] {
            assert!(KernelTypes::parse(bytes).is_err());
        }
        let mut header = vec![0x9f, 0xeb, 1, 0];
        header.extend_from_slice(&24u32.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes());
        header.extend_from_slice(&1000u32.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes());
        header.extend_from_slice(&0u32.to_ne_bytes());
        assert!(matches!(
            KernelTypes::parse(&header),
            Err(BtfError::Malformed { .. })
        ));
    }
}
