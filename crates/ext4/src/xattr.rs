//! Extended attributes: encoding for the in-inode area and for an xattr
//! block, name-prefix compression, entry hashes, and the translation of POSIX
//! ACLs from the VFS format (what tar carries) to ext4's on-disk format.

use crate::inode::IN_INODE_XATTR_OFFSET;
use crate::superblock::INODE_SIZE;
use crate::BLOCK_SIZE;

const MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;

/// A name split into ext4's namespace index and the suffix stored on disk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct XattrEntry {
    pub index: u8,
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Why an xattr cannot be stored.
pub(crate) type Reason = &'static str;

/// Namespace prefixes ext4 knows, longest match first (fs/ext4/xattr.c).
const PREFIXES: &[(&[u8], u8)] = &[
    (b"user.", 1),
    (b"trusted.", 4),
    (b"security.", 6),
    (b"system.", 7),
];

pub(crate) fn split_name(full: &[u8], value: &[u8]) -> Result<XattrEntry, Reason> {
    if full == b"system.posix_acl_access" || full == b"system.posix_acl_default" {
        let index = if full == b"system.posix_acl_access" {
            2
        } else {
            3
        };
        return Ok(XattrEntry {
            index,
            name: Vec::new(),
            value: acl_to_disk(value)?,
        });
    }
    for (prefix, index) in PREFIXES {
        if let Some(rest) = full.strip_prefix(*prefix) {
            if rest.is_empty() || rest.len() > 255 {
                return Err("name suffix must be 1 to 255 bytes");
            }
            return Ok(XattrEntry {
                index: *index,
                name: rest.to_vec(),
                value: value.to_vec(),
            });
        }
    }
    Err("namespace not supported by ext4")
}

/// VFS ACL (version 2, 8-byte entries) -> ext4 ACL (version 1, 4-byte
/// entries for the owner/group/mask/other tags, 8-byte ones with an id).
fn acl_to_disk(v: &[u8]) -> Result<Vec<u8>, Reason> {
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
        return Err("malformed POSIX ACL");
    }
    if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != 2 {
        return Err("unsupported POSIX ACL version");
    }
    let mut out = 1u32.to_le_bytes().to_vec();
    for e in v[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        match tag {
            0x01 | 0x04 | 0x10 | 0x20 => out.extend_from_slice(&e[0..4]),
            0x02 | 0x08 => out.extend_from_slice(e),
            _ => return Err("unknown POSIX ACL tag"),
        }
    }
    Ok(out)
}

/// Kernel `ext4_xattr_hash_entry` (unsigned name bytes, as kernels since 6.2 write).
fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash = 0u32;
    for &c in name {
        hash = (hash << 5) ^ (hash >> 27) ^ u32::from(c);
    }
    if !value.is_empty() {
        let mut padded = value.to_vec();
        padded.resize(value.len().div_ceil(4) * 4, 0);
        for w in padded.chunks_exact(4) {
            hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        }
    }
    hash
}

fn entry_len(e: &XattrEntry) -> usize {
    (16 + e.name.len()).div_ceil(4) * 4
}

fn value_len(e: &XattrEntry) -> usize {
    e.value.len().div_ceil(4) * 4
}

/// Bytes the entries need in a region: entries, 4-byte terminator, values.
fn needed(entries: &[XattrEntry]) -> usize {
    entries
        .iter()
        .map(|e| entry_len(e) + value_len(e))
        .sum::<usize>()
        + 4
}

/// Space for entries in the inode after the 4-byte magic.
const IN_INODE_SPACE: usize = INODE_SIZE as usize - IN_INODE_XATTR_OFFSET - 4;

/// Where a node's xattrs go.
#[derive(Debug)]
pub(crate) enum Placement {
    None,
    Inline(Vec<u8>),
    Block(Vec<u8>),
}

/// Sorts entries the way the kernel searches them and places them all in
/// the inode if they fit, else all in one block.
pub(crate) fn place(mut entries: Vec<XattrEntry>) -> Result<Placement, usize> {
    if entries.is_empty() {
        return Ok(Placement::None);
    }
    entries.sort_by(|a, b| (a.index, a.name.len(), &a.name).cmp(&(b.index, b.name.len(), &b.name)));
    let need = needed(&entries);
    if need <= IN_INODE_SPACE {
        let mut region = vec![0u8; 4 + IN_INODE_SPACE];
        region[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        fill(&mut region[4..], &entries, 0);
        return Ok(Placement::Inline(region));
    }
    if need <= BLOCK_SIZE as usize - BLOCK_HEADER {
        let mut block = vec![0u8; BLOCK_SIZE as usize];
        block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        block[4..8].copy_from_slice(&1u32.to_le_bytes()); // refcount
        block[8..12].copy_from_slice(&1u32.to_le_bytes()); // blocks
        let hashes = fill(&mut block[BLOCK_HEADER..], &entries, BLOCK_HEADER);
        let mut h = 0u32;
        for eh in hashes {
            h = (h << 16) ^ (h >> 16) ^ eh;
        }
        block[12..16].copy_from_slice(&h.to_le_bytes());
        return Ok(Placement::Block(block));
    }
    Err(need)
}

/// Writes entries at the start of `region` and values at its end. Value
/// offsets count from the first entry (inode) or the block start (block):
/// `base` is the region's offset from that origin. Returns the entry hashes.
fn fill(region: &mut [u8], entries: &[XattrEntry], base: usize) -> Vec<u32> {
    let mut at = 0;
    let mut value_end = region.len();
    let mut hashes = Vec::new();
    for e in entries {
        let mut offs = 0;
        if !e.value.is_empty() {
            value_end -= value_len(e);
            region[value_end..value_end + e.value.len()].copy_from_slice(&e.value);
            offs = value_end + base;
        }
        let hash = entry_hash(&e.name, &e.value);
        hashes.push(hash);
        region[at] = e.name.len() as u8;
        region[at + 1] = e.index;
        region[at + 2..at + 4].copy_from_slice(&(offs as u16).to_le_bytes());
        region[at + 8..at + 12].copy_from_slice(&(e.value.len() as u32).to_le_bytes());
        region[at + 12..at + 16].copy_from_slice(&hash.to_le_bytes());
        region[at + 16..at + 16 + e.name.len()].copy_from_slice(&e.name);
        at += entry_len(e);
    }
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_round_trip_shape() {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        let d = acl_to_disk(&v).unwrap();
        assert_eq!(d.len(), 4 + 4 + 8 + 4 + 4 + 4);
        assert!(acl_to_disk(&v[..7]).is_err());
    }

    #[test]
    fn small_sets_go_inline_large_to_block() {
        let cap = split_name(b"security.capability", &[0; 20]).unwrap();
        assert!(matches!(place(vec![cap]).unwrap(), Placement::Inline(_)));
        let big = split_name(b"user.big", &[1; 1000]).unwrap();
        assert!(matches!(place(vec![big]).unwrap(), Placement::Block(_)));
        let huge = split_name(b"user.huge", &[1; 5000]).unwrap();
        assert!(place(vec![huge]).is_err());
        assert!(split_name(b"com.apple.x", b"").is_err());
    }
}
