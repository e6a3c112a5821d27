use std::path::PathBuf;

/// A chunk failed its integrity check.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The bytes do not hash to the chunk's name.
    #[error("chunk {name} is corrupt: its bytes hash to {actual}")]
    Corrupt { name: String, actual: String },
    /// A chunk came back with the wrong length.
    #[error("chunk {name} has {actual} bytes, expected {expected}")]
    Length {
        name: String,
        expected: usize,
        actual: usize,
    },
}

/// A manifest could not be decoded or opened.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not a kindling manifest (bad magic)")]
    Magic,
    #[error("manifest format version {0} is not supported (this build reads version 1)")]
    Version(u16),
    #[error("manifest is malformed: {0}")]
    Malformed(&'static str),
    #[error("manifest is truncated at byte {0}")]
    Truncated(usize),
    /// The manifest names a different tenant key than the one given.
    #[error("wrong tenant key: the manifest was sealed with key {expected}, this key is {actual}")]
    WrongKey { expected: String, actual: String },
    /// The key id matched but authentication failed: the bytes were changed.
    #[error("manifest failed authentication: it was modified or damaged")]
    Tampered,
    #[error("manifest run config is invalid: {0}")]
    Config(String),
}

/// The tenant key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create key file {path}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not a key: it holds {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("no randomness available: {0}")]
    Random(String),
}
