//! The superblock and the group descriptor table (32-byte descriptors, no
//! 64bit feature: 2^32 blocks is 16 TiB, far above the 10 GiB image limit).

use crate::BLOCK_SIZE;

pub(crate) const MAGIC: u16 = 0xEF53;
pub(crate) const INODE_SIZE: u16 = 256;
/// Bytes of the large inode beyond the classic 128: room for nanosecond
/// times and crtime, as mke2fs sets it.
pub(crate) const EXTRA_ISIZE: u16 = 32;
pub(crate) const FIRST_INO: u32 = 11;
pub(crate) const ROOT_INO: u32 = 2;
pub(crate) const DESC_SIZE: u64 = 32;

const COMPAT_EXT_ATTR: u32 = 0x0008;
/// Backup superblocks only in the groups named by s_backup_bgs (we name none),
/// so no superblock copy lands inside a layer's data region.
const COMPAT_SPARSE_SUPER2: u32 = 0x0200;
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_EXTENTS: u32 = 0x0040;
/// Lets bitmaps and inode tables live anywhere, i.e. in our metadata region.
const INCOMPAT_FLEX_BG: u32 = 0x0200;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;

/// What the superblock records.
#[derive(Debug, Clone)]
pub(crate) struct SuperInfo {
    pub blocks: u64,
    pub groups: u64,
    pub inodes_per_group: u32,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub volume_name: [u8; 16],
    /// Deterministic stand-in for mkfs and write times.
    pub time: u32,
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// The 1024-byte superblock (written at byte 1024 of block 0).
pub(crate) fn encode_superblock(s: &SuperInfo) -> [u8; 1024] {
    let mut b = [0u8; 1024];
    let inodes = s.groups * u64::from(s.inodes_per_group);
    put32(&mut b, 0x00, inodes as u32);
    put32(&mut b, 0x04, s.blocks as u32);
    put32(&mut b, 0x08, 0); // reserved blocks: none, containers run as anyone
    put32(&mut b, 0x0C, s.free_blocks as u32);
    put32(&mut b, 0x10, s.free_inodes as u32);
    put32(&mut b, 0x14, 0); // first data block (0 for 4 KiB blocks)
    put32(&mut b, 0x18, 2); // log2(block size) - 10
    put32(&mut b, 0x1C, 2); // log2(cluster size) - 10
    put32(&mut b, 0x20, crate::BLOCKS_PER_GROUP as u32);
    put32(&mut b, 0x24, crate::BLOCKS_PER_GROUP as u32);
    put32(&mut b, 0x28, s.inodes_per_group);
    put32(&mut b, 0x2C, 0); // mtime
    put32(&mut b, 0x30, s.time); // wtime
    put16(&mut b, 0x34, 0); // mount count
    put16(&mut b, 0x36, 0xFFFF); // max mount count: never force a check
    put16(&mut b, 0x38, MAGIC);
    put16(&mut b, 0x3A, 1); // state: clean
    put16(&mut b, 0x3C, 1); // errors: continue
    put16(&mut b, 0x3E, 0); // minor rev
    put32(&mut b, 0x40, s.time); // lastcheck
    put32(&mut b, 0x44, 0); // check interval
    put32(&mut b, 0x48, 0); // creator os: Linux
    put32(&mut b, 0x4C, 1); // rev level: dynamic
    put32(&mut b, 0x54, FIRST_INO);
    put16(&mut b, 0x58, INODE_SIZE);
    put16(&mut b, 0x5A, 0); // block group of this superblock
    put32(&mut b, 0x5C, COMPAT_EXT_ATTR | COMPAT_SPARSE_SUPER2);
    put32(
        &mut b,
        0x60,
        INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_FLEX_BG,
    );
    put32(
        &mut b,
        0x64,
        RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_DIR_NLINK | RO_COMPAT_EXTRA_ISIZE,
    );
    b[0x68..0x78].copy_from_slice(&s.uuid);
    b[0x78..0x88].copy_from_slice(&s.volume_name);
    b[0xEC..0xFC].copy_from_slice(&s.hash_seed);
    b[0xFC] = 1; // default hash: half_md4
    put16(&mut b, 0xFE, 0); // desc size: 32 (no 64bit)
    put32(&mut b, 0x100, 0x0004 | 0x0008); // default mount options: user_xattr, acl
    put32(&mut b, 0x108, s.time); // mkfs time
    put16(&mut b, 0x15C, EXTRA_ISIZE); // min extra isize
    put16(&mut b, 0x15E, EXTRA_ISIZE); // want extra isize
    put32(&mut b, 0x160, 0x0002); // flags: unsigned directory hash
    b[0x174] = 4; // log2(groups per flex group)
                  // s_backup_bgs (0x24C, 0x250) stay 0: no backup superblocks.
    b
}

/// One group's descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
}

pub(crate) fn encode_gdt(descs: &[GroupDesc]) -> Vec<u8> {
    let len = (descs.len() as u64 * DESC_SIZE).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    let mut b = vec![0u8; len as usize];
    for (i, d) in descs.iter().enumerate() {
        let o = i * DESC_SIZE as usize;
        put32(&mut b, o, d.block_bitmap as u32);
        put32(&mut b, o + 4, d.inode_bitmap as u32);
        put32(&mut b, o + 8, d.inode_table as u32);
        put16(&mut b, o + 12, d.free_blocks as u16);
        put16(&mut b, o + 14, d.free_inodes as u16);
        put16(&mut b, o + 16, d.used_dirs as u16);
    }
    b
}
