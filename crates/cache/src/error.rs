//! The cache's one error type.
//!
//! Every variant is `Clone` (sources sit behind `Arc`): the waiters of a
//! single flight each get their own copy of the filler's error.

use std::path::PathBuf;
use std::sync::Arc;

use kindling_chunk::ChunkName;

/// Boxed cause of a failed fill.
pub type FillSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the [`crate::WorkerCache`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A file system error in the cache directory. `action` says what was
    /// being done and names the chunk where there is one.
    #[error("cannot {action} ({})", path.display())]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The fill returned bytes that do not hash to the chunk's name.
    /// Nothing was stored.
    #[error("chunk {name} from the fill is corrupt: its bytes do not hash to its name")]
    Corrupt { name: ChunkName },

    /// The fill returned an error.
    #[error("cannot fill chunk {name}")]
    Fill {
        name: ChunkName,
        #[source]
        source: FillSource,
    },

    /// The fill returned more bytes than any chunk can hold.
    #[error("chunk {name} from the fill has {len} bytes, more than the cache's limit of {limit}")]
    TooLarge {
        name: ChunkName,
        len: usize,
        limit: usize,
    },

    /// The directory holds a cache layout this build cannot use.
    #[error("{} is not a usable cache directory: {reason}", dir.display())]
    Layout { dir: PathBuf, reason: String },
}

impl CacheError {
    pub(crate) fn io(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        e: std::io::Error,
    ) -> Self {
        CacheError::Io {
            action: action.into(),
            path: path.into(),
            source: Arc::new(e),
        }
    }

    /// The chunk the error is about, if it is about one.
    pub fn chunk(&self) -> Option<&ChunkName> {
        match self {
            CacheError::Corrupt { name }
            | CacheError::Fill { name, .. }
            | CacheError::TooLarge { name, .. } => Some(name),
            CacheError::Io { .. } | CacheError::Layout { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_messages() {
        fn assert_bounds<T: Send + Sync + Clone + 'static + std::error::Error>() {}
        assert_bounds::<CacheError>();
        let name = ChunkName([0xab; 32]);
        let e = CacheError::Corrupt { name };
        assert!(e.to_string().contains(&name.to_hex()));
        assert_eq!(e.chunk(), Some(&name));
        let e = CacheError::Fill {
            name,
            source: Arc::new(std::io::Error::other("origin down")),
        };
        assert_eq!(e.to_string(), format!("cannot fill chunk {name}"));
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("origin down"));
    }
}
