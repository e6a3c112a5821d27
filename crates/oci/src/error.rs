//! Error types, one enum per boundary: [`DigestError`] for parsing digest
//! strings, [`TarError`] for the streaming tar reader and [`OciError`] for
//! opening images and their layer streams.
//!
//! Messages are short, lowercase and name the blob, path or offset they are
//! about; they do not repeat their `source`. Integrity failures (a digest or
//! size that does not match) are variants of their own so callers can tell a
//! corrupt image from a malformed one without matching strings.

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;

/// A digest string that is not `sha256:<64 lowercase hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The algorithm part is not `sha256`.
    #[error("unsupported digest algorithm '{algorithm}' in '{digest}'")]
    UnsupportedAlgorithm {
        /// The algorithm named before the `:`.
        algorithm: String,
        /// The whole digest string (shortened if very long).
        digest: String,
    },
    /// No `:`, wrong length or characters other than `0-9a-f`.
    #[error("malformed digest '{0}': expected sha256:<64 lowercase hex digits>")]
    Malformed(String),
}

/// An error from [`TarReader`](crate::tar::TarReader). Offsets count bytes
/// from the start of the stream given to the reader.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The underlying reader failed. This is where a digest mismatch from a
    /// [`VerifyingReader`](crate::digest::VerifyingReader) below the tar
    /// reader shows up; see [`TarError::oci_error`].
    #[error("read error at offset {offset}")]
    Io {
        /// Stream offset of the failed read.
        offset: u64,
        /// The error of the underlying reader, unchanged.
        #[source]
        source: io::Error,
    },
    /// The stream ended inside a header or inside an entry's data.
    #[error("truncated archive: {context} at offset {offset}")]
    Truncated {
        /// What was being read.
        context: &'static str,
        /// Stream offset where the end came.
        offset: u64,
    },
    /// The header checksum is missing or does not match the block.
    #[error("bad header checksum at offset {offset}")]
    BadChecksum {
        /// Stream offset of the header block.
        offset: u64,
    },
    /// A header field cannot be parsed or is out of range.
    #[error("invalid header at offset {offset}: {reason}")]
    InvalidHeader {
        /// Stream offset of the header block.
        offset: u64,
        /// Which field and why.
        reason: String,
    },
    /// A PAX extended header is malformed.
    #[error("invalid pax header at offset {offset}: {reason}")]
    InvalidPax {
        /// Stream offset of the PAX header block.
        offset: u64,
        /// Which record and why.
        reason: String,
    },
    /// A sparse map (old GNU, PAX 0.x or 1.0) is malformed or inconsistent.
    #[error("invalid sparse map at offset {offset}: {reason}")]
    InvalidSparse {
        /// Stream offset of the entry's header block.
        offset: u64,
        /// What is wrong with the map.
        reason: String,
    },
    /// An extension payload (PAX header, GNU long name or link) is larger
    /// than the reader accepts.
    #[error("{what} of {size} bytes at offset {offset} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which kind of payload.
        what: &'static str,
        /// Its size according to the header.
        size: u64,
        /// The limit.
        limit: u64,
        /// Stream offset of the header block.
        offset: u64,
    },
    /// An entry type this reader does not handle (GNU multi-volume 'M',
    /// old GNU long name 'N').
    #[error("unsupported entry type '{}' ({what}) at offset {offset}", char::from(*.typeflag))]
    Unsupported {
        /// The typeflag byte.
        typeflag: u8,
        /// What that typeflag means.
        what: &'static str,
        /// Stream offset of the header block.
        offset: u64,
    },
    /// A PAX, GNU long name or long link header is followed by the end of
    /// the archive instead of the entry it describes.
    #[error("{what} header at offset {offset} is not followed by an entry")]
    DanglingExtension {
        /// Which kind of extension header.
        what: &'static str,
        /// Stream offset of the extension header.
        offset: u64,
    },
    /// The reader was used again after it returned an error.
    #[error("tar reader used after an earlier error")]
    Poisoned,
}

impl TarError {
    /// The [`OciError`] carried by an underlying read error, if any (for
    /// example the [`OciError::DigestMismatch`] of a verifying layer stream).
    pub fn oci_error(&self) -> Option<&OciError> {
        match self {
            TarError::Io { source, .. } => OciError::from_io(source),
            _ => None,
        }
    }
}

/// Turns a tar error into an `io::Error`: a read error of the underlying
/// stream comes back unchanged (so an [`OciError`] inside stays
/// downcastable), anything else becomes `InvalidData`.
impl From<TarError> for io::Error {
    fn from(err: TarError) -> io::Error {
        match err {
            TarError::Io { source, .. } => source,
            TarError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, err),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// An error opening an image or reading one of its blobs.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The source path (without any `:REF` suffix) does not exist.
    #[error("no such image source '{0}'")]
    NotFound(String),
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The outer tar of an oci-archive or docker-archive is malformed.
    #[error("malformed archive {}", path.display())]
    Archive {
        /// The archive file.
        path: PathBuf,
        /// What the tar reader found.
        #[source]
        source: TarError,
    },
    /// The archive file is gzip or zstd compressed; it is read in place, so
    /// it must be a plain tar.
    #[error("compressed archive {}: decompress it first", path.display())]
    CompressedArchive {
        /// The archive file.
        path: PathBuf,
    },
    /// Neither an OCI layout (index.json) nor a docker-archive (manifest.json).
    #[error("{} is not an OCI layout, oci-archive or docker-archive: {reason}", path.display())]
    NotAnImage {
        /// The directory or file.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A blob (or docker-archive member) the image refers to is absent.
    #[error("missing blob {what}")]
    MissingBlob {
        /// The blob, e.g. `layer sha256:ab..` or `config 123.json`.
        what: String,
    },
    /// A JSON document is larger than [`MAX_JSON_SIZE`](crate::source::MAX_JSON_SIZE).
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The document.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document does not parse or violates the image spec.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The document, e.g. `manifest sha256:ab..`.
        what: String,
        /// The parser's message or the violated rule.
        reason: String,
    },
    /// A media type this crate does not read.
    #[error("unsupported media type '{media_type}' for {what}")]
    UnsupportedMediaType {
        /// The descriptor, e.g. `layer sha256:ab..`.
        what: String,
        /// The media type.
        media_type: String,
    },
    /// The source names a ref/tag that is not in the image.
    #[error(
        "no image '{reference}' in {source_path} (available: {})",
        list(available)
    )]
    UnknownRef {
        /// The requested ref.
        reference: String,
        /// The source path.
        source_path: String,
        /// The refs that are there.
        available: Vec<String>,
    },
    /// The source holds several images and no ref was given.
    #[error(
        "{source_path} holds {count} images; pick one with SOURCE:REF (available: {})",
        list(available)
    )]
    AmbiguousImage {
        /// The source path.
        source_path: String,
        /// How many images it lists.
        count: usize,
        /// The refs that are there.
        available: Vec<String>,
    },
    /// The source lists no image at all.
    #[error("{0} lists no image")]
    NoImage(String),
    /// An image index has no linux/amd64 entry (and more than one entry).
    #[error("no linux/amd64 image in {what} (platforms: {})", list(available))]
    NoPlatform {
        /// The index, e.g. `index sha256:ab..`.
        what: String,
        /// The platforms it lists.
        available: Vec<String>,
    },
    /// The manifest lists a different number of layers than the config's
    /// `rootfs.diff_ids`.
    #[error("image has {layers} layers but {diff_ids} diff_ids in config {config}")]
    LayerCountMismatch {
        /// Number of layers in the manifest.
        layers: usize,
        /// Number of diff_ids in the config.
        diff_ids: usize,
        /// The config blob.
        config: String,
    },
    /// A layer blob's compression (from its magic bytes) is not what its
    /// media type says.
    #[error("{what} has media type {media_type} but its content is {found}")]
    CompressionMismatch {
        /// The layer blob.
        what: String,
        /// Its media type.
        media_type: String,
        /// The compression its first bytes show.
        found: crate::layer::Compression,
    },
    /// A path in docker-archive's manifest.json that would leave the archive.
    #[error("unsafe path '{path}' in {what}")]
    UnsafePath {
        /// The offending path.
        path: String,
        /// Where it was found.
        what: String,
    },
    /// `open_layer` with an index past the last layer.
    #[error("no layer {index}: the image has {count} layers")]
    NoSuchLayer {
        /// The requested index.
        index: usize,
        /// Number of layers.
        count: usize,
    },
    /// Integrity failure: the content's digest is not the expected one.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The content, e.g. `layer sha256:ab.. (blob)`.
        what: String,
        /// The digest the image promises.
        expected: Digest,
        /// The digest of the bytes read.
        actual: Digest,
    },
    /// Integrity failure: the content's size is not the expected one.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The content, e.g. `layer sha256:ab.. (blob)`.
        what: String,
        /// The size the image promises.
        expected: u64,
        /// The number of bytes read (so far, when there are too many).
        actual: u64,
    },
}

impl OciError {
    /// True for integrity failures: the bytes are not the ones the image's
    /// digests and sizes promise.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. }
        )
    }

    /// The `OciError` inside an `io::Error` (as returned by the streams of
    /// [`Image::open_layer`](crate::source::Image::open_layer)), if any.
    pub fn from_io(err: &io::Error) -> Option<&OciError> {
        err.get_ref().and_then(|e| e.downcast_ref::<OciError>())
    }

    /// Wraps this error in an `io::Error` of kind `InvalidData`.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// Shortens untrusted strings quoted in messages.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 100;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
