//! The one error type of every store.
//!
//! Errors classify themselves ([`StoreError::is_transient`]) so that the
//! retry wrapper, and callers above it, decide without matching strings.
//! Messages name the operation, the key and the store; the underlying cause
//! stays in `source()` instead of being repeated in the message.

use std::fmt;
use std::time::Duration;

/// Boxed cause of a backend error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store operation, for error messages and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`crate::Store::get`]
    Get,
    /// [`crate::Store::put`]
    Put,
    /// [`crate::Store::put_if_absent`]
    PutIfAbsent,
    /// [`crate::Store::exists`]
    Exists,
    /// [`crate::Store::list`]
    List,
    /// [`crate::Store::delete`]
    Delete,
}

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; 6] = [
        Op::Get,
        Op::Put,
        Op::PutIfAbsent,
        Op::Exists,
        Op::List,
        Op::Delete,
    ];

    /// The verb used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::PutIfAbsent => "create",
            Op::Exists => "check",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a [`crate::Store`].
///
/// For [`Op::List`] the `key` field holds the prefix followed by `*`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object has this key.
    #[error("object not found: {key}")]
    NotFound { key: String },

    /// The key (or list prefix) breaks the key rules; nothing was sent.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// A store URL that [`crate::open`] cannot use.
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A store that cannot be built from its options.
    #[error("bad configuration for {store}: {reason}")]
    Config { store: String, reason: String },

    /// A local file system error.
    #[error("cannot {op} {key} in {store}")]
    Io {
        op: Op,
        key: String,
        store: String,
        #[source]
        source: std::io::Error,
    },

    /// The server refused the credentials or the access.
    #[error("cannot {op} {key} in {store}: access denied ({detail})")]
    Denied {
        op: Op,
        key: String,
        store: String,
        detail: String,
        #[source]
        source: BoxError,
    },

    /// Any other failure of a remote store; `detail` is a short summary
    /// such as "http 503 SlowDown" or "connection failed".
    #[error("cannot {op} {key} in {store}: {detail}")]
    Remote {
        op: Op,
        key: String,
        store: String,
        detail: String,
        transient: bool,
        #[source]
        source: BoxError,
    },

    /// The whole call, retries included, took longer than allowed.
    #[error("cannot {op} {key} in {store}: timed out after {after:?}")]
    Timeout {
        op: Op,
        key: String,
        store: String,
        after: Duration,
    },

    /// A failure injected by [`crate::FaultyStore`].
    #[error("cannot {op} {key} in {store}: injected {} fault", if *.transient { "transient" } else { "permanent" })]
    Injected {
        op: Op,
        key: String,
        store: String,
        transient: bool,
    },
}

impl StoreError {
    /// Whether the same call may succeed if tried again: timeouts,
    /// connection errors, 5xx answers and throttling. Never true for
    /// [`StoreError::NotFound`] or for bad keys, URLs or credentials.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::NotFound { .. }
            | StoreError::InvalidKey { .. }
            | StoreError::InvalidUrl { .. }
            | StoreError::Config { .. }
            | StoreError::Denied { .. } => false,
            StoreError::Io { source, .. } => io_is_transient(source),
            StoreError::Remote { transient, .. } | StoreError::Injected { transient, .. } => {
                *transient
            }
            StoreError::Timeout { .. } => true,
        }
    }

    /// Whether this is [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

/// Local I/O errors that a retry can cure: the directory may be on a
/// network file system, where these happen and pass.
fn io_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
    )
}

/// The `key` field of errors for [`Op::List`].
pub(crate) fn list_key(prefix: &str) -> String {
    format!("{prefix}*")
}

/// The `key` field of an error for `op` on `key_or_prefix`.
pub(crate) fn op_key(op: Op, key_or_prefix: &str) -> String {
    if op == Op::List {
        list_key(key_or_prefix)
    } else {
        key_or_prefix.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_cross_threads_and_box_into_anyhow_style_chains() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<StoreError>();
    }

    #[test]
    fn classification() {
        let io = |kind| StoreError::Io {
            op: Op::Get,
            key: "k".into(),
            store: "file:///r".into(),
            source: std::io::Error::from(kind),
        };
        assert!(io(std::io::ErrorKind::TimedOut).is_transient());
        assert!(!io(std::io::ErrorKind::PermissionDenied).is_transient());
        assert!(!StoreError::NotFound { key: "k".into() }.is_transient());
        let timeout = StoreError::Timeout {
            op: Op::List,
            key: list_key("chunks/"),
            store: "s3://b".into(),
            after: Duration::from_secs(30),
        };
        assert!(timeout.is_transient());
        assert_eq!(
            timeout.to_string(),
            "cannot list chunks/* in s3://b: timed out after 30s"
        );
    }
}
