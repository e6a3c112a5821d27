//! Pulling images from container registries (the Distribution v2 API that
//! Docker Hub, GHCR, ECR, Harbor, `registry:2` and others serve) into a
//! local OCI image layout, which `kindling_oci::Image::open` then reads
//! like any other layout.
//!
//! Pulling into a layout rather than streaming layers straight into the
//! flattener keeps one reader for all image sources and lets every blob be
//! verified completely before anything trusts it; the cost is disk space
//! for the compressed layers, which the caller's temporary directory holds
//! only for the duration of a conversion.
//!
//! The main items:
//!
//! * [`Reference`]: `HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]`, parsed with
//!   [`str::parse`].
//! * [`pull`] with [`PullOptions`] (plain HTTP, credentials, platform,
//!   concurrency, progress callback, retries, timeouts) returns [`Pulled`].
//! * [`credentials_from_docker_config`] reads `~/.docker/config.json`.
//! * [`RegistryError`] for every failure; integrity failures are
//!   [`RegistryError::DigestMismatch`] and [`RegistryError::SizeMismatch`].
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use kindling_registry::{pull, PullOptions, Reference};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let reference: Reference = "registry.example.com/app:1.0".parse()?;
//! let dest = Path::new("/tmp/app-layout"); // an empty directory
//! let pulled = pull(&reference, dest, &PullOptions::default()).await?;
//! let image = kindling_oci::Image::open(&format!(
//!     "{}:{}",
//!     pulled.layout.display(),
//!     pulled.reference
//! ))?;
//! println!("{} layers, manifest {}", image.layers.len(), pulled.manifest_digest);
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod error;
mod pull;
mod reference;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use auth::{credentials_from_docker_config, Credentials};
pub use error::RegistryError;
pub use pull::{MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE};
pub use reference::{Reference, DEFAULT_TAG};

/// Parallel blob downloads by default: enough to fill a link when layers
/// are small, few enough not to trip registry rate limits (Docker's own
/// client uses 3, containerd 3, skopeo 6).
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Retries of a failed request or interrupted download by default; with
/// the backoff (0.5 s doubling) they span about 8 s, which outlasts a
/// registry restart behind a load balancer but not a real outage.
pub const DEFAULT_MAX_RETRIES: u32 = 4;
/// Connect timeout by default: TCP plus TLS to a registry takes well under
/// a second; 30 s allows for slow DNS and SYN retransmits.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response may stall (no bytes at all) by default before the
/// request counts as failed and is retried.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The progress callback type.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// How to pull. `PullOptions::default()` pulls linux/amd64 over HTTPS
/// anonymously.
#[derive(Clone)]
pub struct PullOptions {
    /// Plain HTTP instead of HTTPS (local and test registries). Default:
    /// false.
    pub insecure: bool,
    /// Credentials, used only when the registry asks for them (Basic) or
    /// sent to its token service (Bearer). Default: none.
    pub credentials: Option<Credentials>,
    /// `(os, architecture)` picked from multi-platform images; the
    /// architecture may carry a variant (`"arm/v7"`). Default:
    /// `("linux", "amd64")`, the machines Kindling runs on.
    pub platform: (String, String),
    /// Blobs downloaded in parallel. Default: [`DEFAULT_CONCURRENCY`];
    /// 0 counts as 1.
    pub concurrency: usize,
    /// Called as blob bytes arrive (from the pulling task: keep it cheap).
    /// Default: none.
    pub progress: Option<ProgressFn>,
    /// Retries of transient failures per request or blob. Default:
    /// [`DEFAULT_MAX_RETRIES`].
    pub max_retries: u32,
    /// Default: [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Longest stall of a response. Default: [`DEFAULT_READ_TIMEOUT`].
    pub read_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            insecure: false,
            credentials: None,
            platform: (
                kindling_oci::source::PLATFORM_OS.to_owned(),
                kindling_oci::source::PLATFORM_ARCHITECTURE.to_owned(),
            ),
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
            max_retries: DEFAULT_MAX_RETRIES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("insecure", &self.insecure)
            .field("credentials", &self.credentials)
            .field("platform", &self.platform)
            .field("concurrency", &self.concurrency)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .field("max_retries", &self.max_retries)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

/// One progress event: a blob (config or layer) received more bytes.
///
/// Each blob reports `downloaded == 0` when its download starts and again
/// after each chunk; a resumed download that had to start over reports a
/// smaller `downloaded` than before. `pull_downloaded`/`pull_total` cover
/// all blobs of the pull (not the manifests, which are small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blob's digest (`sha256:<hex>`).
    pub digest: String,
    /// Bytes of this blob received so far.
    pub downloaded: u64,
    /// This blob's size.
    pub total: u64,
    /// Bytes of all blobs received so far.
    pub pull_downloaded: u64,
    /// Size of all blobs.
    pub pull_total: u64,
}

/// A completed pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The OCI image layout directory (the `dest` given to [`pull`]).
    pub layout: PathBuf,
    /// The image's `org.opencontainers.image.ref.name` in the layout: the
    /// tag, or for a pull by digest alone the digest's hex. Open the image
    /// with `kindling_oci::Image::open(&format!("{}:{}", layout, reference))`.
    pub reference: String,
    /// Digest of the image manifest stored (`sha256:<hex>`): for a
    /// multi-platform image, the chosen platform's manifest, not the index.
    pub manifest_digest: String,
    /// Bytes of the manifest, config and layers stored.
    pub bytes: u64,
}

/// Pulls `reference` into `dest`, an empty directory the caller owns
/// (created if missing), as an OCI image layout holding one image.
///
/// An image index (or Docker manifest list) is resolved to the manifest
/// for `opts.platform`; only that manifest is stored. Blobs are verified
/// while they stream and land under their digest name only once verified;
/// after an error `dest` may hold some verified blobs but no `index.json`.
/// Cancel-safe: dropping the future leaves no temporary files behind.
pub async fn pull(
    reference: &Reference,
    dest: &Path,
    opts: &PullOptions,
) -> Result<Pulled, RegistryError> {
    pull::pull(reference, dest, opts).await
}
