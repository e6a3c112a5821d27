use kindling_store::StoreError;

/// Why a push, fetch or lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("no image named {name:?} in {store}")]
    NoSuchImage { name: String, store: String },
    #[error("store {store}")]
    Store {
        store: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error("image {name:?}: manifest {digest}")]
    Manifest {
        name: String,
        digest: String,
        #[source]
        source: kindling_chunk::ManifestError,
    },
    /// The manifest object does not hash to the digest its name points at.
    #[error("manifest {digest} is corrupt: its bytes hash to {actual}")]
    ManifestCorrupt { digest: String, actual: String },
    #[error("image reference {key} is malformed")]
    BadReference { key: String },
    #[error("store {store} has a malformed salt ({len} bytes, expected 32)")]
    BadSalt { store: String, len: usize },
    /// A chunk could not be read or failed verification.
    #[error("chunk {index} at offset {offset} ({name})")]
    Chunk {
        index: usize,
        offset: u64,
        name: String,
        #[source]
        source: Box<ChunkFault>,
    },
    #[error("tenant key")]
    Key(#[from] kindling_chunk::KeyError),
    #[error("flatten")]
    Flatten(#[source] Box<kindling_flatten::FlattenError>),
    #[error("image of {size} bytes is larger than a manifest can describe ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
    /// The image's run config (entrypoint, cmd, env, ...) is too large for
    /// a manifest: readers would refuse it.
    #[error("the image's run config (entrypoint, cmd, env, working dir, user) takes {bytes} bytes; a manifest holds at most {max}")]
    ConfigTooLarge { bytes: usize, max: usize },
    #[error("output")]
    Io(#[from] std::io::Error),
    #[error("no randomness for the salt: {0}")]
    Random(String),
    #[error("interrupted")]
    Cancelled,
}

/// What went wrong with one chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkFault {
    #[error("cannot read it")]
    Store(#[source] StoreError),
    #[error("it failed verification")]
    Corrupt(#[source] kindling_chunk::ChunkError),
}

impl From<kindling_flatten::FlattenError> for RepoError {
    fn from(e: kindling_flatten::FlattenError) -> Self {
        RepoError::Flatten(Box::new(e))
    }
}
