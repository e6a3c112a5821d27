//! The node's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// An error from opening, writing to or serving a [`crate::CacheNode`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A file system error in the flash directory. `action` says what was
    /// being done.
    #[error("cannot {action} ({})", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The flash directory was written by a build with another on-disk
    /// format. Nothing in it was touched; remove it (or point the node at
    /// another directory) to start empty.
    #[error("{} holds flash format {found:?}, this build reads version {expected}", dir.display())]
    Format {
        dir: PathBuf,
        found: String,
        expected: u32,
    },

    /// The flash directory is not empty and has no `FORMAT` file: it is
    /// not a cache node's, and the node will not delete files in it.
    #[error("{} is not empty and is not a cache node directory (no FORMAT file)", dir.display())]
    NotNodeDir { dir: PathBuf },

    /// A stripe is larger than any node accepts.
    #[error("stripe of {len} bytes is larger than the limit of {limit}")]
    TooLarge { len: usize, limit: usize },

    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// A listener given to the node has no local address.
    #[error("cannot read the listener's address")]
    LocalAddr(#[source] std::io::Error),

    /// A blocking flash task did not finish (it panicked or the runtime is
    /// shutting down).
    #[error("flash task did not finish")]
    TaskFailed,
}

impl NodeError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        NodeError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
