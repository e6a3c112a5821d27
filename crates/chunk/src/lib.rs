//! Chunks, convergent encryption and the per-image manifest (DESIGN.md,
//! section 2).
//!
//! * [`cipher`]: a chunk's key is `SHA-256(salt || plaintext)`, its
//!   ciphertext AES-256-CTR under that key with IV 0, its [`ChunkName`] the
//!   SHA-256 of the ciphertext. Equal plaintexts under one salt give equal
//!   names, so a chunk is stored and cached once however many images hold
//!   it, while every tier below the agent sees only ciphertext.
//! * [`Manifest`]: the chunk table of one image plus what is needed to run
//!   it. Chunk names stay readable (garbage collection needs them); the keys
//!   and the run config are sealed with the tenant's key (AES-256-GCM) and
//!   the whole encoding is authenticated.
//! * [`KeyProvider`] / [`KeyFile`]: where the tenant key comes from.
//!
//! ```
//! use kindling_chunk::{cipher, Salt};
//! let salt = Salt::from_bytes([7; 32]);
//! let mut chunk = vec![1u8; 4096];
//! let (key, name) = cipher::encrypt_in_place(&salt, &mut chunk);
//! cipher::verify(&name, &chunk).unwrap();
//! cipher::decrypt_in_place(&key, &mut chunk);
//! assert_eq!(chunk, vec![1u8; 4096]);
//! ```

mod aes_ctr;
pub mod cipher;
mod error;
mod key;
mod manifest;
pub mod sha256x2;
mod trace;

pub use cipher::{ChunkKey, ChunkName, Salt};
pub use error::{ChunkError, KeyError, ManifestError};
pub use key::{KeyFile, KeyProvider, TenantKey};
pub use manifest::{
    ChunkEntry, Manifest, PublicManifest, RunConfig, MANIFEST_MAGIC, MANIFEST_VERSION,
    MAX_CONFIG_BYTES, MAX_IMAGE_BYTES,
};
pub use trace::{
    open_file_trace, open_trace, seal_file_trace, seal_trace, FileRange, FileTrace,
    MAX_TRACE_CHUNKS, MAX_TRACE_FILES, MAX_TRACE_PATH, MAX_TRACE_RANGES,
};
