//! Layer byte streams: media types, compression and the verifying
//! decompression pipeline behind [`Image::open_layer`](crate::source::Image::open_layer).
//!
//! The pipeline is `blob file -> verify blob digest -> decompress -> verify
//! diff_id -> buffer`. The compression a media type announces is checked
//! against the blob's magic bytes before anything is decompressed, so a
//! mislabelled layer is an error naming the blob rather than a stream of
//! garbage. Both digests are checked when their stream reaches EOF, which
//! is why consumers must read layer streams to the end
//! ([`TarReader::drain`](crate::tar::TarReader::drain)).

use std::fmt;
use std::io::{self, BufReader, Cursor, Read};

use crate::digest::{Digest, VerifyingReader};
use crate::error::OciError;

/// OCI uncompressed layer.
pub const MEDIA_TYPE_OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const MEDIA_TYPE_OCI_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const MEDIA_TYPE_OCI_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 layer (always gzip).
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

/// gzip magic (RFC 1952, ID1 ID2).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Whether `magic` opens a zstd skippable frame (0x184D2A50-5F, little
/// endian, RFC 8878): valid zstd, what `pzstd` puts first. No tar starts
/// so (its first bytes are a name, and 0x18 is a control character).
fn is_skippable_frame(magic: &[u8]) -> bool {
    matches!(magic, [b0, 0x2a, 0x4d, 0x18, ..] if b0 & 0xf0 == 0x50)
}

/// zstd frame magic 0xFD2FB528, little endian (RFC 8878).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Read buffer for blob files and for the decompressed stream: large
/// enough that file reads and decompressor calls are few per MiB.
const STREAM_BUFFER_SIZE: usize = 256 * 1024;

impl Compression {
    /// The compression a layer media type announces; `None` (the Option)
    /// for media types that are not layers this crate reads.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            MEDIA_TYPE_OCI_TAR
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            MEDIA_TYPE_OCI_TAR_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | MEDIA_TYPE_DOCKER_TAR_GZIP
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            MEDIA_TYPE_OCI_TAR_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }

    /// The compression the first bytes of a blob show.
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if magic.starts_with(&ZSTD_MAGIC) || is_skippable_frame(magic) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_OCI_TAR,
            Compression::Gzip => MEDIA_TYPE_OCI_TAR_GZIP,
            Compression::Zstd => MEDIA_TYPE_OCI_TAR_ZSTD,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// What to verify while streaming one layer.
pub(crate) struct LayerCheck<'a> {
    /// The blob digest, when the image knows it (not for compressed layers
    /// of old docker-archives, which only record diff_ids).
    pub blob: Option<Digest>,
    pub blob_size: Option<u64>,
    pub diff_id: Digest,
    pub compression: Compression,
    pub media_type: &'a str,
}

/// Builds the verifying, decompressing stream over a raw blob reader.
pub(crate) fn layer_stream<R: Read + Send + 'static>(
    raw: R,
    check: &LayerCheck<'_>,
) -> Result<Box<dyn Read + Send>, OciError> {
    let raw = BufReader::with_capacity(STREAM_BUFFER_SIZE, raw);
    let blob_what = format!("layer {} (blob)", check.blob.unwrap_or(check.diff_id));
    let diff_what = format!("layer {} (diff_id)", check.diff_id);
    // An uncompressed blob is its own diff: hash it once.
    let verify_diff =
        !(check.compression == Compression::None && check.blob == Some(check.diff_id));
    let mut blob: Box<dyn Read + Send> = match check.blob {
        Some(digest) => Box::new(VerifyingReader::new(
            raw,
            digest,
            check.blob_size,
            blob_what.clone(),
        )),
        None => Box::new(raw),
    };
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut blob, &mut magic).map_err(|e| stream_error(e, &blob_what))?;
    let found = Compression::detect(&magic[..n]);
    if found != check.compression {
        return Err(OciError::CompressionMismatch {
            what: blob_what,
            media_type: check.media_type.to_owned(),
            found,
        });
    }
    let blob = Cursor::new(magic[..n].to_vec()).chain(blob);
    let decoded: Box<dyn Read + Send> = match check.compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(blob).map_err(|e| stream_error(e, &blob_what))?,
        ),
    };
    let verified: Box<dyn Read + Send> = if verify_diff {
        Box::new(VerifyingReader::new(
            decoded,
            check.diff_id,
            None,
            diff_what,
        ))
    } else {
        decoded
    };
    Ok(Box::new(BufReader::with_capacity(
        STREAM_BUFFER_SIZE,
        verified,
    )))
}

/// Reads until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An error from reading a blob stream: the `OciError` inside if there is
/// one (a digest mismatch), else an I/O error naming the blob.
pub(crate) fn stream_error(err: io::Error, what: &str) -> OciError {
    if !err.get_ref().is_some_and(|e| e.is::<OciError>()) {
        return OciError::Io {
            path: what.into(),
            source: err,
        };
    }
    let kind = err.kind();
    match err.into_inner().map(|inner| inner.downcast::<OciError>()) {
        Some(Ok(oci)) => *oci,
        Some(Err(other)) => OciError::Io {
            path: what.into(),
            source: io::Error::new(kind, other),
        },
        None => OciError::Io {
            path: what.into(),
            source: kind.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::from_media_type(MEDIA_TYPE_OCI_TAR),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_media_type(
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            ),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            ),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.config.v1+json"),
            None
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
            None
        );
    }

    #[test]
    fn magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::detect(&ZSTD_MAGIC), Compression::Zstd);
        assert_eq!(Compression::detect(b"etc/"), Compression::None);
        assert_eq!(Compression::detect(&[0x1f]), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
        for b0 in 0x50..=0x5f {
            assert_eq!(
                Compression::detect(&[b0, 0x2a, 0x4d, 0x18]),
                Compression::Zstd
            );
        }
        assert_eq!(
            Compression::detect(&[0x60, 0x2a, 0x4d, 0x18]),
            Compression::None
        );
    }

    /// A zstd stream that opens with a skippable frame (as `pzstd` writes
    /// it) decodes like any other.
    #[test]
    fn a_leading_skippable_frame_is_zstd() {
        use sha2::{Digest as _, Sha256};
        let plain = b"not really a tar, but the stream does not care".repeat(100);
        let mut blob = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        blob.extend(zstd::encode_all(&plain[..], 3).unwrap());
        let diff_id: Digest = format!("sha256:{:x}", Sha256::digest(&plain))
            .parse()
            .unwrap();
        let check = LayerCheck {
            blob: None,
            blob_size: None,
            diff_id,
            compression: Compression::detect(&blob),
            media_type: MEDIA_TYPE_OCI_TAR_ZSTD,
        };
        let mut out = Vec::new();
        layer_stream(Cursor::new(blob), &check)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
    }
}
