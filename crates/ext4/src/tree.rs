//! The filesystem tree the caller hands to the writer.

/// Index of a node in the slice given to [`crate::write_filesystem`].
pub type NodeId = usize;

/// Seconds since the epoch (may be negative) and nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// Ownership, permissions, time and xattrs shared by every kind of node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits including setuid, setgid and sticky (0o7777).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Used for atime, ctime, mtime and crtime alike: nothing comes from the clock.
    pub mtime: Timestamp,
    /// Full names (`user.x`, `security.capability`, `system.posix_acl_access`)
    /// and values as the VFS sees them.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Default for Metadata {
    /// Root-owned, 0755, time zero: what implied directories get.
    fn default() -> Self {
        Metadata {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            xattrs: Vec::new(),
        }
    }
}

/// A run of file blocks: `len` blocks from logical block `logical` live at
/// physical block `physical`. Any length; the writer splits long runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u32,
    pub physical: u64,
    pub len: u32,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file of `size` bytes; blocks not covered by an extent are holes.
    File {
        size: u64,
        extents: Vec<Extent>,
    },
    /// A directory; entries exclude "." and "..", in any order.
    Dir {
        entries: Vec<(Vec<u8>, NodeId)>,
    },
    Symlink {
        target: Vec<u8>,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

/// One inode's worth of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub meta: Metadata,
    pub content: Content,
}

impl Node {
    pub fn dir(meta: Metadata, entries: Vec<(Vec<u8>, NodeId)>) -> Node {
        Node {
            meta,
            content: Content::Dir { entries },
        }
    }

    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir { .. })
    }
}
