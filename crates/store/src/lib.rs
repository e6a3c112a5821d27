//! Origin object stores behind one async trait.
//!
//! The origin holds chunks, manifests and image roots (DESIGN.md section 3).
//! Everything above this crate talks to a [`Store`]; which backend sits
//! behind it is a deployment choice made once, from a URL, by [`open`]:
//!
//! * [`LocalStore`]: a directory, the embedded default (`file:///var/lib/x`
//!   or a plain path);
//! * [`S3Store`]: any S3-compatible server (`s3://bucket/prefix`), through
//!   the `object_store` crate;
//! * [`Retrying`]: wraps any store and retries the errors that say they are
//!   transient ([`StoreError::is_transient`]), so no caller matches strings;
//! * [`FaultyStore`]: wraps any store and injects failures, corruption and
//!   latency, so retry paths above this crate are tested against real stores;
//! * `S3Server` (feature `s3-server`): an in-process S3 server on loopback,
//!   so S3 tests and benchmarks need no external service.
//!
//! Keys are relative `/`-separated strings (`chunks/ab/abcdef…`,
//! `images/team/app:v2`), checked by [`validate_key`] before any I/O, so a key
//! means the same object in every backend.
//!
//! ```
//! # async fn demo() -> Result<(), kindling_store::StoreError> {
//! use kindling_store::{open, Bytes, S3Options};
//! let dir = std::env::temp_dir().join("kindling-store-doc");
//! let store = open(dir.to_str().unwrap_or("/tmp/x"), &S3Options::default())?;
//! store.put("manifests/abc", Bytes::from_static(b"{}")).await?;
//! assert!(store.exists("manifests/abc").await?);
//! # Ok(()) }
//! ```

use std::sync::Arc;

pub use bytes::Bytes;

mod error;
mod faulty;
mod key;
mod local;
mod retry;
mod s3;
#[cfg(feature = "s3-server")]
mod s3_server;
mod throttled;
mod url;

pub use error::{Op, StoreError};
pub use faulty::{FaultyStore, OpCounts};
pub use key::{validate_key, validate_prefix, MAX_KEY_LEN};
pub use local::LocalStore;
pub use retry::{RetryPolicy, Retrying};
pub use s3::{S3Options, S3Store};
#[cfg(feature = "s3-server")]
pub use s3_server::S3Server;
pub use throttled::{Link, LinkReader, Throttled};
pub use url::{local_root, open, open_with};

/// An origin object store: whole objects under validated keys.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Whole object. Missing -> Err(StoreError::NotFound { key }).
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Writes a whole object atomically: a concurrent reader sees the old
    /// object, nothing, or all of the new one — never part.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    /// Writes only if no object has this key; Ok(true) if written, Ok(false)
    /// if one was already there. Atomic where the backend allows (see each
    /// backend's documentation for where it is not).
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError>;
    /// Whether an object has this key.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Full keys under `prefix` (prefix is a "dir/"-style string or ""),
    /// sorted, recursive. A prefix without a trailing '/' matches keys that
    /// start with it as a string (`chunks/a` matches `chunks/ab/…`).
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Removes an object. Missing is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// URL for messages, e.g. "file:///var/lib/x" or "s3://bucket/prefix".
    fn url(&self) -> String;
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        (**self).get(key).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        (**self).put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        (**self).put_if_absent(key, data).await
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        (**self).exists(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
    fn url(&self) -> String {
        (**self).url()
    }
}
