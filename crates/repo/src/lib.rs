//! Images on an origin store (DESIGN.md, sections 2 and 3).
//!
//! * [`push()`]: flattens an OCI image straight into chunks - no image file
//!   on disk - encrypts them on worker threads and uploads the ones the
//!   store lacks, then writes the sealed manifest and, last, the image's
//!   name, so a reader never finds a name whose manifest or chunks are
//!   missing.
//! * [`fetch()`]: rebuilds the whole image, verifying every chunk.
//! * [`Repo`]: the store's key layout, image names, the salt, manifests.
//!
//! Store layout:
//!
//! ```text
//! config/salt              32 bytes: the convergence salt of this store
//! chunks/ab/ab12...        one object per chunk, named by its ciphertext
//! manifests/<sha256>       sealed manifests, named by their own digest
//! images/<name>            "sha256:<digest>\n": the image's current manifest
//! ```

mod error;
mod fetch;
mod layout;
mod push;
mod sink;

pub use error::{ChunkFault, RepoError};
pub use fetch::{fetch, read_chunk, FetchOptions, FetchSummary};
pub use layout::{chunk_key, validate_image_name, ImageRef, Repo, TraceKind};
pub use push::{push, PushCounters, PushOptions, PushSummary};
