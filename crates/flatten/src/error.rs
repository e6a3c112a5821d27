//! Errors of the flattener.

use std::io;

use kindling_ext4::Ext4Error;
use kindling_oci::OciError;

/// Why flattening failed. Messages name the layer and the path.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    /// Reading or verifying a layer failed (digest mismatch, corrupt stream, bad tar).
    #[error("layer {index} ({digest})")]
    Layer {
        index: usize,
        digest: String,
        #[source]
        source: LayerError,
    },
    /// Laying out the ext4 image failed.
    #[error("building the ext4 image")]
    Ext4(#[from] Ext4Error),
    /// Opening the image failed.
    #[error("opening the image")]
    Oci(#[from] OciError),
    /// Writing the output failed.
    #[error("writing the output")]
    Io(#[from] io::Error),
    /// The image would exceed the maximum size.
    #[error("the image needs more than the maximum of {max} bytes (--max-size)")]
    TooLarge { max: u64 },
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

/// A problem within one layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Tar(#[from] kindling_oci::TarError),
    #[error("reading the layer")]
    Io(#[from] io::Error),
    /// An entry that cannot be applied; `path` is the entry's name in the tar.
    #[error("{path}: {reason}")]
    Entry { path: String, reason: String },
    /// The temporary file that holds the layer's cold files until its end
    /// could not be created, written or read.
    #[error("keeping cold files in a temporary file under {dir} (set TMPDIR to change)")]
    Spill {
        dir: String,
        #[source]
        source: io::Error,
    },
    /// File data ran past the size limit; `flatten` reports it as
    /// [`FlattenError::TooLarge`] with the limit.
    #[error("file data exceeds the size limit")]
    TooLarge,
}

impl LayerError {
    pub(crate) fn entry(path: &[u8], reason: impl Into<String>) -> Self {
        LayerError::Entry {
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }
}
