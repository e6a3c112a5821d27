//! The one error type of a pull.
//!
//! Variants classify themselves ([`RegistryError::is_transient`],
//! [`RegistryError::is_integrity`]) so that the retry loop and callers never
//! match on message text. Messages name the registry, repository or digest
//! involved and leave the cause to the `source` chain.

use std::path::PathBuf;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The image reference could not be parsed.
    #[error("invalid image reference '{reference}': {reason}")]
    InvalidReference {
        /// The reference as given (shortened).
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The request could not be sent or its response not read, after
    /// retries (connection refused, TLS, timeout, connection reset).
    #[error("request for {what} from {registry} failed")]
    Http {
        /// The registry host.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },

    /// The HTTP client could not be set up (TLS backend or system
    /// certificate store failed to initialize).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),

    /// The registry answered with an unexpected HTTP status, after retries
    /// for the transient ones (429 and 5xx).
    #[error("{registry} answered {status} for {what}{detail}")]
    Status {
        /// The registry host.
        registry: String,
        /// What was being fetched.
        what: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's own error code and message, if it sent one
        /// (formatted as `: CODE message`), else empty.
        detail: String,
    },

    /// The manifest or blob does not exist (HTTP 404).
    #[error("{what} not found in {registry}{detail}")]
    NotFound {
        /// The registry host.
        registry: String,
        /// What was asked for, with the repository.
        what: String,
        /// The registry's own error code and message, if any.
        detail: String,
    },

    /// The registry wants credentials and none were given.
    #[error("{registry}/{repository} requires authentication (no credentials given)")]
    AuthRequired {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
    },

    /// The registry or its token service still answered 401 after
    /// authenticating: wrong credentials or a token it does not accept.
    #[error("{registry} rejected the credentials for {repository}{detail}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
        /// Which step failed, formatted as `: ...`, or empty.
        detail: String,
    },

    /// The registry answered 403: the credentials are valid but may not
    /// pull this repository.
    #[error("{registry} denied access to {repository}")]
    Denied {
        /// The registry host.
        registry: String,
        /// The repository.
        repository: String,
    },

    /// The registry's authentication challenge or token service did not
    /// follow the protocol.
    #[error("authentication with {registry} failed: {reason}")]
    Auth {
        /// The registry host.
        registry: String,
        /// What went wrong.
        reason: String,
    },

    /// Content did not hash to the digest it was fetched by or announced
    /// with: corruption in transit or in the registry's storage, or a
    /// registry serving something else.
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    DigestMismatch {
        /// The manifest or blob.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },

    /// A blob was longer or shorter than its descriptor says.
    #[error("{what}: size mismatch, expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        what: String,
        /// The size from the descriptor.
        expected: u64,
        /// The bytes that arrived (for a too-long blob: where it was cut off).
        actual: u64,
    },

    /// A manifest, config or token response is larger than we accept.
    #[error("{what} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The document.
        what: String,
        /// Its size (announced or read so far).
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// A manifest, index or token response is not what the protocol says.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// The document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A manifest of a media type this crate does not pull.
    #[error("{what} has unsupported media type '{media_type}'")]
    UnsupportedMediaType {
        /// The manifest.
        what: String,
        /// Its media type.
        media_type: String,
    },

    /// A Docker image manifest v2 schema 1 (deprecated since 2017, signed,
    /// without content-addressed config).
    #[error(
        "{what} is a docker schema 1 manifest, which is not supported; \
         push the image again with a current client"
    )]
    Schema1 {
        /// The manifest.
        what: String,
    },

    /// No manifest of an image index matches the wanted platform.
    #[error("{what} has no image for {wanted} (available: {})", available.join(", "))]
    NoPlatform {
        /// The index.
        what: String,
        /// The wanted `os/architecture`.
        wanted: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },

    /// Writing the layout failed.
    #[error("cannot write {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// True for failures that may pass if the request is made again: network
    /// errors and timeouts, HTTP 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Http { source, .. } => !(source.is_builder() || source.is_redirect()),
            RegistryError::Status { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// True for content that failed verification (digest or size).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. }
        )
    }
}

/// HTTP statuses worth retrying: too many requests, and server-side errors
/// except 501 (not implemented will not change).
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 429 || (status >= 500 && status != 501 && status < 600)
}

/// Cuts `s` to a length fit for an error message and replaces control
/// characters, so a hostile server cannot fill or garble a terminal.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening() {
        assert_eq!(shorten("ab\ncd"), "ab?cd");
        let long = "x".repeat(300);
        assert_eq!(shorten(&long).len(), 203);
        assert_eq!(shorten(&"y".repeat(200)), "y".repeat(200));
    }

    #[test]
    fn transient_statuses() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 501] {
            assert!(!is_transient_status(s), "{s}");
        }
    }
}
