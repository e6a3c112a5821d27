//! Store URLs: the one place a deployment names its origin.
//!
//! `file:///abs/path` and plain paths open a [`LocalStore`],
//! `s3://bucket/optional/prefix` an [`S3Store`]. Everything else is
//! rejected rather than guessed, so a typo in a scheme cannot silently
//! become a directory named after it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{LocalStore, RetryPolicy, Retrying, S3Options, S3Store, Store, StoreError};

/// Opens the store named by `url`, wrapped in [`Retrying`] with the default
/// [`RetryPolicy`]. `s3` is used only for `s3://` URLs.
pub fn open(url: &str, s3: &S3Options) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, s3, Some(RetryPolicy::default()))
}

/// Opens the store named by `url`, wrapped in [`Retrying`] with `retry`, or
/// bare when `retry` is `None` (to put a [`crate::FaultyStore`] in front).
pub fn open_with(
    url: &str,
    s3: &S3Options,
    retry: Option<RetryPolicy>,
) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match parse(url)? {
        Location::Local(root) => Arc::new(LocalStore::new(root)),
        Location::S3 { bucket, prefix } => Arc::new(S3Store::new(&bucket, &prefix, s3)?),
    };
    Ok(match retry {
        Some(policy) => Arc::new(Retrying::with_policy(store, policy)),
        None => store,
    })
}

/// The directory of a local store's URL (`file:///path` or a plain path);
/// `None` for S3. Errors as [`open`] does for a malformed URL.
pub fn local_root(url: &str) -> Result<Option<PathBuf>, StoreError> {
    Ok(match parse(url)? {
        Location::Local(root) => Some(root),
        Location::S3 { .. } => None,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

fn parse(url: &str) -> Result<Location, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if url.is_empty() {
        return Err(invalid("empty"));
    }
    let Some((scheme, rest)) = split_scheme(url) else {
        return Ok(Location::Local(PathBuf::from(url)));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            // file:///abs/path, or file://localhost/abs/path (RFC 8089).
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(invalid(
                    "file url needs an absolute path and no host (file:///path)",
                ));
            }
            if path.contains(['?', '#', '%']) {
                return Err(invalid("file url with query, fragment or escapes"));
            }
            Ok(Location::Local(PathBuf::from(path)))
        }
        "s3" => {
            if rest.contains(['?', '#']) {
                return Err(invalid("s3 url with query or fragment"));
            }
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("missing bucket (s3://bucket/prefix)"));
            }
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            })
        }
        _ => Err(invalid(
            "unsupported scheme, expected file://, s3:// or a path",
        )),
    }
}

/// Splits "scheme://rest" when `url` starts with an RFC 3986 scheme.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> Location {
        Location::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn parses_supported_urls() {
        let local = |p: &str| Location::Local(PathBuf::from(p));
        assert_eq!(parse("file:///var/lib/x").unwrap(), local("/var/lib/x"));
        assert_eq!(parse("FILE:///var/lib/x").unwrap(), local("/var/lib/x"));
        assert_eq!(parse("file://localhost/srv").unwrap(), local("/srv"));
        assert_eq!(parse("/abs/dir").unwrap(), local("/abs/dir"));
        assert_eq!(parse("rel/dir").unwrap(), local("rel/dir"));
        assert_eq!(parse("./odd:name").unwrap(), local("./odd:name"));
        assert_eq!(parse("s3://bucket").unwrap(), s3("bucket", ""));
        assert_eq!(parse("s3://bucket/").unwrap(), s3("bucket", ""));
        assert_eq!(parse("s3://bucket/a/b").unwrap(), s3("bucket", "a/b"));
    }

    #[test]
    fn local_roots_of_local_urls_only() {
        assert_eq!(local_root("/a/b").unwrap(), Some(PathBuf::from("/a/b")));
        assert_eq!(
            local_root("FILE://localhost/a").unwrap(),
            Some(PathBuf::from("/a"))
        );
        assert_eq!(local_root("s3://bucket/p").unwrap(), None);
        assert!(local_root("gs://x").is_err());
    }

    #[test]
    fn rejects_other_urls() {
        for url in [
            "",
            "http://host/x",
            "gs://bucket",
            "file://host/x",
            "file://relative",
            "file:///a?b",
            "s3://",
            "s3:///prefix",
            "s3://b/p?x=1",
        ] {
            let err = parse(url).unwrap_err();
            assert!(matches!(err, StoreError::InvalidUrl { .. }), "{url}: {err}");
            assert!(!err.is_transient());
        }
        assert_eq!(
            parse("gs://bucket").unwrap_err().to_string(),
            "invalid store url \"gs://bucket\": unsupported scheme, expected file://, s3:// or a path"
        );
    }

    #[tokio::test]
    async fn open_builds_the_named_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = open(&url, &S3Options::default()).unwrap();
        assert_eq!(store.url(), url);
        store
            .put("k", crate::Bytes::from_static(b"v"))
            .await
            .unwrap();
        assert!(dir.path().join("k").is_file());

        let s3 = open("s3://bucket/pre/fix/", &S3Options::default()).unwrap();
        assert_eq!(s3.url(), "s3://bucket/pre/fix");
        let bare = open_with("s3://bucket", &S3Options::default(), None).unwrap();
        assert!(format!("{bare:?}").starts_with("S3Store"));
        assert!(matches!(
            open("s3://bad/../prefix", &S3Options::default()),
            Err(StoreError::Config { .. })
        ));
    }
}
