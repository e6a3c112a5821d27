//! Errors of the ext4 writer.

use std::io;

/// An error while building the filesystem image.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// Writing the image failed.
    #[error("writing the image")]
    Io(#[from] io::Error),
    /// A name that ext4 cannot hold (empty, over 255 bytes, '/' or NUL, "." or "..").
    #[error("invalid file name {name:?} in {dir}")]
    InvalidName { dir: String, name: String },
    /// Two entries of one directory carry the same name.
    #[error("duplicate name {name:?} in {dir}")]
    DuplicateName { dir: String, name: String },
    /// A directory is reachable from two places (ext4 has no directory hard links).
    #[error("directory {path} is linked more than once")]
    DirectoryHardLink { path: String },
    /// A node id points outside the node list.
    #[error("node {0} does not exist")]
    BadNode(usize),
    /// More hard links to one file than ext4 allows (65000).
    #[error("{path} has {links} hard links; ext4 allows at most 65000")]
    TooManyLinks { path: String, links: u64 },
    /// A symlink target that is empty or longer than 4095 bytes.
    #[error("symlink {path} has a target of {len} bytes (ext4 takes 1 to 4095)")]
    BadSymlink { path: String, len: usize },
    /// The extended attributes of one inode do not fit in the inode plus one block.
    #[error("extended attributes of {path} take {bytes} bytes; at most one 4 KiB block fits")]
    XattrTooLarge { path: String, bytes: usize },
    /// An xattr that ext4 cannot store (unknown namespace or a malformed POSIX ACL).
    #[error("extended attribute {name:?} of {path}: {reason}")]
    BadXattr {
        path: String,
        name: String,
        reason: &'static str,
    },
    /// Two files claim one block, or a file claims a block reserved for metadata.
    #[error("block {block} of {path} is outside the data area or used twice")]
    BlockConflict { path: String, block: u64 },
    /// A file larger than ext4 without huge_file can describe.
    #[error("{path} is too large for ext4 ({size} bytes)")]
    FileTooLarge { path: String, size: u64 },
    /// The image would exceed the configured maximum size.
    #[error("the image needs {needed} bytes, over the maximum of {max}")]
    TooLarge { needed: u64, max: u64 },
}
