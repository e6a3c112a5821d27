//! Reading OCI images for Kindling's flattener: image sources, verified
//! layer streams and the tar entries inside them.
//!
//! The main types:
//!
//! * [`Image`] opens an image from an OCI image layout directory, an
//!   oci-archive or a docker-archive ([`Image::open`]), exposes its
//!   [`ImageConfig`] and [`LayerInfo`] list, and streams each layer
//!   uncompressed with [`Image::open_layer`]. Every JSON blob is
//!   digest-verified when the image is opened; layer blobs and their
//!   diff_ids are verified as they stream.
//! * [`TarReader`] reads the entries of a layer tar from any [`std::io::Read`]
//!   (no seeking, bounded memory) and reports each as an [`Entry`] with all
//!   PAX / GNU extensions applied: long names, xattrs, sparse maps,
//!   high-precision times.
//! * [`Digest`] is a validated `sha256:` digest; [`VerifyingReader`] checks
//!   one over a stream.
//! * Errors: [`OciError`] (opening images, integrity failures),
//!   [`TarError`] (archive format), [`DigestError`] (digest strings).
//!
//! Integrity failures surface where a layer stream ends, as an
//! `io::Error` wrapping [`OciError::DigestMismatch`]: read every layer to
//! EOF (for a tar, call [`TarReader::drain`] after the last entry) and
//! treat an error there as fatal.
//!
//! # Example
//!
//! ```no_run
//! use kindling_oci::{EntryKind, Image, TarReader};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = Image::open("alpine.tar")?; // or "oci-dir:latest", "save.tar:alpine:3.19"
//! println!("entrypoint {:?}", image.config.entrypoint);
//! for index in 0..image.layers.len() {
//!     let mut tar = TarReader::new(image.open_layer(index)?);
//!     while let Some(entry) = tar.next_entry()? {
//!         if entry.kind == EntryKind::Regular {
//!             let mut contents = Vec::new();
//!             std::io::copy(&mut tar.data(), &mut contents)?;
//!         }
//!     }
//!     tar.drain()?; // the digests are checked at the very end of the stream
//! }
//! # Ok(())
//! # }
//! ```

pub mod digest;
pub mod error;
pub mod layer;
mod manifest;
pub mod source;
mod store;
pub mod tar;

pub use digest::{Digest, VerifyingReader};
pub use error::{DigestError, OciError, TarError};
pub use layer::Compression;
pub use source::{Image, ImageConfig, LayerInfo};
pub use tar::{Entry, EntryData, EntryKind, SparseSegment, TarReader, Timestamp};
