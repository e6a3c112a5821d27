//! A deterministic ext4 image writer.
//!
//! The caller (the flattener) decides where every byte of file data goes and
//! writes it itself; this crate then lays out everything else - inode tables,
//! bitmaps, directories, extent trees, xattr blocks, the superblock - in one
//! metadata region *after* the data, so that metadata that changes when upper
//! layers change never lands inside a layer's data region (DESIGN.md, section 1).
//!
//! The main types:
//!
//! * [`Node`]: one file, directory, symlink or special file, with its
//!   [`Metadata`] and [`Content`]. File content is a list of [`Extent`]s that
//!   point at blocks the caller already wrote.
//! * [`FsOptions`]: where the metadata region starts, how much free space and
//!   how many free inodes to leave, the UUID and hash seed.
//! * [`write_filesystem`]: validates the tree and writes the metadata.
//!
//! ```no_run
//! use kindling_ext4::*;
//! let file = std::fs::File::create("/tmp/x.img").unwrap();
//! let root = Node::dir(Metadata::default(), vec![]);
//! let opts = FsOptions::new(first_data_block(1 << 20, 128));
//! write_filesystem(&file, &[root], 0, &opts).unwrap();
//! ```
//!
//! The on-disk choices (4 KiB blocks, 256-byte inodes, extents, flex_bg so
//! group metadata may live anywhere, sparse_super2 with no backup superblocks
//! so no superblock copy lands in a data region, no journal, no checksums) are
//! described in `layout.rs`.

mod bitmap;
mod dir;
mod error;
mod extent;
mod inode;
mod layout;
mod output;
mod superblock;
mod tree;
mod xattr;

pub use error::Ext4Error;
pub use layout::{first_data_block, gdt_blocks, write_filesystem, FsOptions, FsSummary};
pub use output::Output;
pub use tree::{Content, Extent, Metadata, Node, NodeId, Timestamp};

/// Filesystem block size. 4 KiB: the page size, and what every tool expects.
pub const BLOCK_SIZE: u64 = 4096;

/// Blocks per block group: 8 * BLOCK_SIZE, the most one bitmap block can track.
pub const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;

/// Largest regular file: 2 TiB less one block, the kernel's `s_maxbytes`
/// for 4 KiB blocks without the `huge_file` feature (which these images do
/// not set): it refuses to open a larger inode (`bad i_size value`), though
/// e2fsck passes it.
pub const MAX_FILE_BYTES: u64 = (1 << 41) - BLOCK_SIZE;

/// Longest extent of initialized blocks ext4 can describe (2^15 blocks).
pub const MAX_EXTENT_LEN: u32 = 32768;
