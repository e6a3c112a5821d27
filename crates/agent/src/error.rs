/// Why a read or write of the image failed. At the FUSE edge every variant
/// becomes EIO (or EROFS for writes to a read-only disk).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A chunk could not be had from any tier.
    #[error("chunk {index} at offset {offset} ({name})")]
    Chunk {
        index: usize,
        offset: u64,
        name: String,
        #[source]
        source: Box<crate::source::SourceError>,
    },
    #[error("overlay")]
    Overlay(#[from] std::io::Error),
    /// Pushing a chunk into the kernel's page cache failed.
    #[error("preloading into the page cache")]
    Preload(#[source] std::io::Error),
    #[error("the disk is read-only")]
    ReadOnly,
    #[error("access beyond the end of the image ({size} bytes)")]
    OutOfRange { size: u64 },
}

impl AgentError {
    /// The errno the kernel should see.
    pub fn errno(&self) -> i32 {
        match self {
            AgentError::ReadOnly => libc::EROFS,
            AgentError::OutOfRange { .. } => libc::EINVAL,
            _ => libc::EIO,
        }
    }
}
