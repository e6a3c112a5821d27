//! Startup traces: what a start of an image read, recorded by the first
//! start and used by every later one.
//!
//! * The chunk trace: which chunks the start read, in the order it first
//!   read them. An agent that has one prefetches those chunks in parallel
//!   instead of discovering them one dependent round trip at a time (the
//!   kernel reads a loop device's file one request after another).
//! * The file trace: which pages of which files the start had in the
//!   page cache when it ended, in about the order it read them. A runner
//!   that has one reads them ahead of the program, so the program's own
//!   reads find the page cache warm instead of each waiting on the loop
//!   device.
//!
//! The order of a start's reads, and the names of the files it reads, say
//! something about the application, so both are sealed with the tenant
//! key like a manifest's keys:
//!
//! ```text
//! magic [8] | version u16 | key_id [8] | nonce [12]
//! sealed: AES-256-GCM(tenant key, aad = everything before it) of
//!   chunks ("KINDLTR\0"): count u32 | index u32 * count
//!   files  ("KINDLFT\0"): paths u32 | (len u16 | bytes) * paths
//!                         | ranges u32 | (path u32 | page u32 | pages u32) * ranges
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::error::ManifestError;
use crate::key::TenantKey;

const CHUNKS_MAGIC: &[u8; 8] = b"KINDLTR\0";
const FILES_MAGIC: &[u8; 8] = b"KINDLFT\0";
const VERSION: u16 = 1;
/// 2^20 chunks: a 512 GiB image at 512 KiB; bounds what a decoder accepts.
pub const MAX_TRACE_CHUNKS: usize = 1 << 20;
/// Bounds on a file trace a decoder accepts (and a recorder writes): far
/// more files and page runs than any start reads.
pub const MAX_TRACE_FILES: usize = 1 << 20;
pub const MAX_TRACE_RANGES: usize = 1 << 20;
/// The longest path a file trace holds (Linux's PATH_MAX).
pub const MAX_TRACE_PATH: usize = 4096;

/// Which pages of which files a start read, in the order to read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTrace {
    /// Paths relative to the image's root, as bytes (Linux paths need not
    /// be UTF-8); never empty, no NUL, at most [`MAX_TRACE_PATH`] long.
    pub paths: Vec<Vec<u8>>,
    pub ranges: Vec<FileRange>,
}

/// A run of 4 KiB pages of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRange {
    /// Index into [`FileTrace::paths`].
    pub path: u32,
    pub page: u32,
    pub pages: u32,
}

/// Seals a trace of chunk indices.
pub fn seal_trace(indices: &[u32], key: &TenantKey) -> Result<Vec<u8>, ManifestError> {
    if indices.len() > MAX_TRACE_CHUNKS {
        return Err(ManifestError::Malformed("trace too long"));
    }
    let mut plain = Vec::with_capacity(4 + 4 * indices.len());
    plain.extend_from_slice(&(indices.len() as u32).to_le_bytes());
    for i in indices {
        plain.extend_from_slice(&i.to_le_bytes());
    }
    seal(CHUNKS_MAGIC, &plain, key)
}

/// Opens a sealed trace of chunk indices.
pub fn open_trace(bytes: &[u8], key: &TenantKey) -> Result<Vec<u32>, ManifestError> {
    let plain = open(CHUNKS_MAGIC, bytes, key)?;
    let mut r = Fields(&plain);
    let count = r.u32()? as usize;
    if count > MAX_TRACE_CHUNKS || r.0.len() != 4 * count {
        return Err(ManifestError::Malformed(
            "trace length disagrees with its count",
        ));
    }
    (0..count).map(|_| r.u32()).collect()
}

/// Seals a file trace.
pub fn seal_file_trace(trace: &FileTrace, key: &TenantKey) -> Result<Vec<u8>, ManifestError> {
    check_file_trace(trace)?;
    let mut plain = Vec::new();
    plain.extend_from_slice(&(trace.paths.len() as u32).to_le_bytes());
    for p in &trace.paths {
        plain.extend_from_slice(&(p.len() as u16).to_le_bytes());
        plain.extend_from_slice(p);
    }
    plain.extend_from_slice(&(trace.ranges.len() as u32).to_le_bytes());
    for r in &trace.ranges {
        for v in [r.path, r.page, r.pages] {
            plain.extend_from_slice(&v.to_le_bytes());
        }
    }
    seal(FILES_MAGIC, &plain, key)
}

/// Opens a sealed file trace; what it returns passes the same checks
/// [`seal_file_trace`] makes.
pub fn open_file_trace(bytes: &[u8], key: &TenantKey) -> Result<FileTrace, ManifestError> {
    let plain = open(FILES_MAGIC, bytes, key)?;
    let mut r = Fields(&plain);
    let paths = r.u32()? as usize;
    if paths > MAX_TRACE_FILES {
        return Err(ManifestError::Malformed("file trace has too many paths"));
    }
    let mut trace = FileTrace::default();
    for _ in 0..paths {
        let len = r.u16()? as usize;
        trace.paths.push(r.bytes(len)?.to_vec());
    }
    let ranges = r.u32()? as usize;
    if ranges > MAX_TRACE_RANGES || r.0.len() != 12 * ranges {
        return Err(ManifestError::Malformed(
            "file trace length disagrees with its count",
        ));
    }
    for _ in 0..ranges {
        trace.ranges.push(FileRange {
            path: r.u32()?,
            page: r.u32()?,
            pages: r.u32()?,
        });
    }
    check_file_trace(&trace)?;
    Ok(trace)
}

fn check_file_trace(t: &FileTrace) -> Result<(), ManifestError> {
    if t.paths.len() > MAX_TRACE_FILES || t.ranges.len() > MAX_TRACE_RANGES {
        return Err(ManifestError::Malformed("file trace too long"));
    }
    if t.paths
        .iter()
        .any(|p| p.is_empty() || p.len() > MAX_TRACE_PATH || p.contains(&0))
    {
        return Err(ManifestError::Malformed(
            "file trace path empty, too long or with NUL",
        ));
    }
    if t.ranges.iter().any(|r| {
        r.path as usize >= t.paths.len() || r.pages == 0 || r.page.checked_add(r.pages).is_none()
    }) {
        return Err(ManifestError::Malformed("file trace range out of bounds"));
    }
    Ok(())
}

fn seal(magic: &[u8; 8], plain: &[u8], key: &TenantKey) -> Result<Vec<u8>, ManifestError> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&key.id());
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|_| ManifestError::Malformed("no randomness"))?;
    let aad = out.clone();
    out.extend_from_slice(&nonce);
    let sealed = Aes256Gcm::new(key.as_bytes().into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .map_err(|_| ManifestError::Malformed("trace too large to seal"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open(magic: &[u8; 8], bytes: &[u8], key: &TenantKey) -> Result<Vec<u8>, ManifestError> {
    if bytes.len() < 30 || &bytes[..8] != magic {
        return Err(ManifestError::Magic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(ManifestError::Version(version));
    }
    if bytes[10..18] != key.id() {
        return Err(ManifestError::WrongKey {
            expected: hex::encode(&bytes[10..18]),
            actual: hex::encode(key.id()),
        });
    }
    Aes256Gcm::new(key.as_bytes().into())
        .decrypt(
            Nonce::from_slice(&bytes[18..30]),
            Payload {
                msg: &bytes[30..],
                aad: &bytes[..18],
            },
        )
        .map_err(|_| ManifestError::Tampered)
}

/// Little-endian fields off the front of a decrypted trace.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(ManifestError::Truncated(self.0.len()))?;
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, ManifestError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ManifestError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file_trace() -> impl Strategy<Value = FileTrace> {
        proptest::collection::vec(proptest::collection::vec(1u8.., 1..40), 1..20).prop_flat_map(
            |paths| {
                let n = paths.len() as u32;
                let range = (0..n, 0u32..1 << 20, 1u32..1 << 10)
                    .prop_map(|(path, page, pages)| FileRange { path, page, pages });
                proptest::collection::vec(range, 0..100).prop_map(move |ranges| FileTrace {
                    paths: paths.clone(),
                    ranges,
                })
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip_and_tamper(v in proptest::collection::vec(any::<u32>(), 0..500), at in any::<usize>(), x in 1u8..) {
            let key = TenantKey::from_bytes([3; 32]);
            let sealed = seal_trace(&v, &key).unwrap();
            prop_assert_eq!(open_trace(&sealed, &key).unwrap(), v);
            let mut bad = sealed.clone();
            let at = at % bad.len();
            bad[at] ^= x;
            prop_assert!(open_trace(&bad, &key).is_err());
            prop_assert!(open_trace(&sealed, &TenantKey::from_bytes([4; 32])).is_err());
            prop_assert!(open_trace(&sealed[..at], &key).is_err());
        }

        #[test]
        fn file_trace_round_trip_and_tamper(t in file_trace(), at in any::<usize>(), x in 1u8..) {
            let key = TenantKey::from_bytes([3; 32]);
            let sealed = seal_file_trace(&t, &key).unwrap();
            prop_assert_eq!(open_file_trace(&sealed, &key).unwrap(), t);
            let mut bad = sealed.clone();
            let at = at % bad.len();
            bad[at] ^= x;
            prop_assert!(open_file_trace(&bad, &key).is_err());
            prop_assert!(open_file_trace(&sealed, &TenantKey::from_bytes([4; 32])).is_err());
            prop_assert!(open_file_trace(&sealed[..at], &key).is_err());
            // One kind of trace is never taken for the other.
            prop_assert!(matches!(open_trace(&sealed, &key), Err(ManifestError::Magic)));
        }

        /// Whatever a tenant-keyed blob decrypts to, opening it returns an
        /// error or a trace that passes the checks, never panics.
        #[test]
        fn any_sealed_plaintext_opens_or_fails_cleanly(plain in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = TenantKey::from_bytes([5; 32]);
            let sealed = seal(FILES_MAGIC, &plain, &key).unwrap();
            if let Ok(t) = open_file_trace(&sealed, &key) {
                prop_assert!(check_file_trace(&t).is_ok());
            }
            let sealed = seal(CHUNKS_MAGIC, &plain, &key).unwrap();
            let _ = open_trace(&sealed, &key);
        }
    }

    #[test]
    fn bad_file_traces_are_refused() {
        let key = TenantKey::from_bytes([3; 32]);
        let ok = FileTrace {
            paths: vec![b"usr/bin/python3".to_vec()],
            ranges: vec![FileRange {
                path: 0,
                page: 0,
                pages: 4,
            }],
        };
        assert!(seal_file_trace(&ok, &key).is_ok());
        let mut bad = ok.clone();
        bad.ranges[0].path = 1;
        assert!(seal_file_trace(&bad, &key).is_err());
        let mut bad = ok.clone();
        bad.ranges[0].pages = 0;
        assert!(seal_file_trace(&bad, &key).is_err());
        let mut bad = ok.clone();
        bad.ranges[0].page = u32::MAX;
        assert!(seal_file_trace(&bad, &key).is_err());
        for p in [&b""[..], b"a\0b", &[b'x'; MAX_TRACE_PATH + 1]] {
            let mut bad = ok.clone();
            bad.paths[0] = p.to_vec();
            assert!(seal_file_trace(&bad, &key).is_err());
        }
    }
}
