//! The key rules shared by every backend.
//!
//! A key names the same object in a directory and in a bucket, so it must be
//! a safe relative path and a plain S3 key at once: '/'-separated non-empty
//! segments, never `.` or `..`, printable ASCII without spaces. Checking it
//! before any I/O keeps a bad key from escaping the store root or turning
//! into a different object after URL or path normalisation.

use crate::StoreError;

/// Longest key in bytes: S3's own limit for object keys.
pub const MAX_KEY_LEN: usize = 1024;

/// File names starting with this are the local store's temporary files;
/// keys may not use it, so a listing can tell the two apart in every backend.
pub(crate) const TEMP_PREFIX: &str = ".tmp.";

/// Checks `key` against the key rules.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    check(key).map_err(|reason| StoreError::InvalidKey {
        key: key.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Checks a list prefix: "" (everything), a key followed by '/' (a
/// directory), or a key (a string prefix of keys).
pub fn validate_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() {
        return Ok(());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    check(body).map_err(|reason| StoreError::InvalidKey {
        key: prefix.to_owned(),
        reason: reason.to_owned(),
    })
}

fn check(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("longer than 1024 bytes");
    }
    if key.starts_with('/') {
        return Err("starts with '/'");
    }
    if key.contains('\0') {
        return Err("contains NUL");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("not printable ascii without spaces");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err("empty segment");
        }
        if segment == "." || segment == ".." {
            return Err("'.' or '..' segment");
        }
        if segment.starts_with(TEMP_PREFIX) {
            return Err("segment starts with '.tmp.', reserved for temporary files");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_design_keys() {
        for key in [
            "chunks/ab/abcdef0123",
            "manifests/00ff",
            "images/python-app:v1",
            "images/team/app:v2",
            "a",
            ".hidden/x",
            "x/..y/z.",
        ] {
            validate_key(key).unwrap();
        }
        validate_key(&"k".repeat(MAX_KEY_LEN)).unwrap();
    }

    #[test]
    fn rejects_bad_keys() {
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for key in [
            "",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "a/../b",
            "a/..",
            "a\0b",
            "a b",
            "tab\tkey",
            "é",
            "a/.tmp.1.2",
            long.as_str(),
        ] {
            let err = validate_key(key).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidKey { .. }),
                "{key:?}: {err}"
            );
            assert!(!err.is_transient());
        }
    }

    #[test]
    fn prefixes() {
        for prefix in ["", "chunks/", "chunks/ab", "images/team/"] {
            validate_prefix(prefix).unwrap();
        }
        for prefix in ["/", "/a/", "a//", "../", "a/./"] {
            validate_prefix(prefix).unwrap_err();
        }
    }

    #[test]
    fn message_names_key_and_reason() {
        let err = validate_key("a/../b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid key \"a/../b\": '.' or '..' segment"
        );
    }
}
