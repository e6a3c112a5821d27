//! Encoding of one 256-byte inode.

use crate::superblock::{EXTRA_ISIZE, INODE_SIZE};
use crate::tree::Timestamp;

pub(crate) const S_IFIFO: u16 = 0o010000;
pub(crate) const S_IFCHR: u16 = 0o020000;
pub(crate) const S_IFDIR: u16 = 0o040000;
pub(crate) const S_IFBLK: u16 = 0o060000;
pub(crate) const S_IFREG: u16 = 0o100000;
pub(crate) const S_IFLNK: u16 = 0o120000;
pub(crate) const S_IFSOCK: u16 = 0o140000;

const EXTENTS_FL: u32 = 0x0008_0000;

/// Offset of in-inode xattrs: after the 128-byte base and the extra fields.
pub(crate) const IN_INODE_XATTR_OFFSET: usize = 128 + EXTRA_ISIZE as usize;

/// Everything that goes into one inode record.
#[derive(Debug, Clone)]
pub(crate) struct InodeRecord {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub time: Timestamp,
    pub links: u16,
    /// 512-byte sectors, including extent-tree and xattr blocks.
    pub sectors: u64,
    pub extents: bool,
    pub i_block: [u8; 60],
    pub xattr_block: u64,
    /// Encoded in-inode xattr area (magic + entries + values), if any.
    pub inline_xattrs: Option<Vec<u8>>,
}

/// ext4's time encoding: low 32 bits of the seconds, plus two "epoch" bits
/// and the nanoseconds in the extra field (kernel `ext4_encode_extra_time`).
/// Times outside the representable range (1901..2446) are clamped.
fn encode_time(t: Timestamp) -> (u32, u32) {
    const MIN: i64 = -(1 << 31);
    // Epoch 3 over the largest signed low word: 2446-05-10 (the kernel's
    // EXT4_EXTRA_TIMESTAMP_MAX). Past it the two epoch bits would wrap.
    const MAX: i64 = 3 * (1 << 32) + (1 << 31) - 1;
    let secs = t.secs.clamp(MIN, MAX);
    let nanos = if secs == t.secs {
        t.nanos.min(999_999_999)
    } else {
        0
    };
    let epoch = ((secs - i64::from(secs as i32)) >> 32) as u32 & 3;
    (secs as u32, epoch | (nanos << 2))
}

pub(crate) fn encode_inode(r: &InodeRecord) -> [u8; INODE_SIZE as usize] {
    let mut b = [0u8; INODE_SIZE as usize];
    let p16 = |b: &mut [u8], o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let p32 = |b: &mut [u8], o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let (secs, extra) = encode_time(r.time);
    p16(&mut b, 0x00, r.mode);
    p16(&mut b, 0x02, r.uid as u16);
    p32(&mut b, 0x04, r.size as u32);
    p32(&mut b, 0x08, secs); // atime
    p32(&mut b, 0x0C, secs); // ctime
    p32(&mut b, 0x10, secs); // mtime
    p16(&mut b, 0x18, r.gid as u16);
    p16(&mut b, 0x1A, r.links);
    p32(&mut b, 0x1C, r.sectors as u32);
    p32(&mut b, 0x20, if r.extents { EXTENTS_FL } else { 0 });
    b[0x28..0x28 + 60].copy_from_slice(&r.i_block);
    p32(&mut b, 0x68, r.xattr_block as u32);
    p32(&mut b, 0x6C, (r.size >> 32) as u32);
    p16(&mut b, 0x74, (r.sectors >> 32) as u16);
    p16(&mut b, 0x76, (r.xattr_block >> 32) as u16);
    p16(&mut b, 0x78, (r.uid >> 16) as u16);
    p16(&mut b, 0x7A, (r.gid >> 16) as u16);
    p16(&mut b, 0x80, EXTRA_ISIZE);
    p32(&mut b, 0x84, extra); // ctime extra
    p32(&mut b, 0x88, extra); // mtime extra
    p32(&mut b, 0x8C, extra); // atime extra
    p32(&mut b, 0x90, secs); // crtime
    p32(&mut b, 0x94, extra);
    if let Some(x) = &r.inline_xattrs {
        b[IN_INODE_XATTR_OFFSET..IN_INODE_XATTR_OFFSET + x.len()].copy_from_slice(x);
    }
    b
}

/// Device numbers in i_block, as the kernel's ext4 stores them: the old
/// 8:8 encoding when both fit, otherwise the new 12:20 one in the second word.
pub(crate) fn device_i_block(major: u32, minor: u32) -> [u8; 60] {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        b[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let new = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
        b[4..8].copy_from_slice(&new.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_encoding_matches_kernel_examples() {
        // From Documentation/filesystems/ext4/inodes.rst: epoch bits 01 cover 2038..2106.
        assert_eq!(encode_time(Timestamp { secs: 0, nanos: 0 }), (0, 0));
        assert_eq!(encode_time(Timestamp { secs: -1, nanos: 0 }), (u32::MAX, 0));
        assert_eq!(
            encode_time(Timestamp {
                secs: 1 << 31,
                nanos: 0
            }),
            (1 << 31, 1)
        );
        assert_eq!(
            encode_time(Timestamp {
                secs: 4102444800,
                nanos: 5
            }),
            (4102444800u64 as u32, 1 | (5 << 2))
        );
        assert_eq!(
            encode_time(Timestamp {
                secs: 1 << 32,
                nanos: 0
            }),
            (0, 1)
        );
    }

    /// What the kernel decodes (`ext4_decode_extra_time`): the signed low
    /// word plus the epoch times 2^32.
    fn decode(secs: u32, extra: u32) -> i64 {
        i64::from(secs as i32) + (i64::from(extra & 3) << 32)
    }

    #[test]
    fn times_past_the_range_clamp_instead_of_wrapping() {
        let max = 15_032_385_535; // 2446-05-10 22:38:55 UTC
        for (secs, expected) in [
            (max, max),
            (max + 1, max),
            ((1 << 34) + 7, max),
            (i64::MAX, max),
            (-(1 << 31), -(1 << 31)),
            (-(1 << 31) - 1, -(1 << 31)),
            (i64::MIN, -(1 << 31)),
        ] {
            let (s, e) = encode_time(Timestamp { secs, nanos: 9 });
            assert_eq!(decode(s, e), expected, "{secs}");
        }
        // Every representable second decodes to itself.
        for secs in [(1 << 33) - 1, 1 << 33, 3 << 32, (3 << 32) + 12345] {
            let (s, e) = encode_time(Timestamp { secs, nanos: 0 });
            assert_eq!(decode(s, e), secs);
        }
    }
}
