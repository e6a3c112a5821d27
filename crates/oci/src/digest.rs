//! Content digests and a reader that verifies them while streaming.
//!
//! Only sha256 exists in practice for OCI and docker images, so a
//! [`Digest`] is a 32-byte array: `Copy`, cheap to compare and hash, and it
//! can only be built from a validated string or from bytes we hashed, which
//! is what makes [`Digest::blob_path`] safe to join into a filesystem path.
//!
//! [`VerifyingReader`] hashes as bytes pass through and reports a mismatch
//! in place of the end of the stream, so a consumer that reads to EOF cannot
//! mistake corrupt content for good content.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{shorten, DigestError, OciError};

/// A `sha256:<hex>` content digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(DigestError::Malformed(shorten(s)));
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                algorithm: shorten(algorithm),
                digest: shorten(s),
            });
        }
        let lower_hex = encoded.len() == 64
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex {
            return Err(DigestError::Malformed(shorten(s)));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(encoded, &mut bytes)
            .map_err(|_| DigestError::Malformed(shorten(s)))?;
        Ok(Digest { bytes })
    }

    /// The digest whose sha256 value is `bytes`.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        Digest { bytes }
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Digest {
        Digest {
            bytes: Sha256::digest(data).into(),
        }
    }

    /// The algorithm name, always `"sha256"`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The raw hash value.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The hash value as 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// Where an OCI layout keeps this blob: `blobs/sha256/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest string sha256:<hex>")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digest, E> {
                Digest::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// A reader that hashes and counts everything read through it and, when the
/// inner reader reaches EOF, checks the expected digest (and size, if
/// given).
///
/// On a mismatch, the read that would have returned `Ok(0)` returns an
/// `io::Error` of kind `InvalidData` wrapping [`OciError::DigestMismatch`]
/// or [`OciError::SizeMismatch`] (see [`OciError::from_io`]), and so does
/// every later read. Reading more bytes than the expected size fails at once.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    expected: Digest,
    expected_size: Option<u64>,
    what: String,
    state: VerifyState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VerifyState {
    Reading,
    Verified,
    DigestFailed(Digest),
    SizeFailed,
}

impl<R: Read> VerifyingReader<R> {
    /// Verifies `inner` against `expected` (and `expected_size`); `what`
    /// names the content in error messages, e.g. `layer sha256:ab.. (blob)`.
    pub fn new(
        inner: R,
        expected: Digest,
        expected_size: Option<u64>,
        what: impl Into<String>,
    ) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
            expected,
            expected_size,
            what: what.into(),
            state: VerifyState::Reading,
        }
    }

    /// Bytes read through so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// True once EOF was reached and digest and size matched.
    pub fn is_verified(&self) -> bool {
        self.state == VerifyState::Verified
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn failure(&self) -> io::Error {
        let err = match self.state {
            VerifyState::DigestFailed(actual) => OciError::DigestMismatch {
                what: self.what.clone(),
                expected: self.expected,
                actual,
            },
            _ => OciError::SizeMismatch {
                what: self.what.clone(),
                expected: self.expected_size.unwrap_or_default(),
                actual: self.read,
            },
        };
        err.into_io()
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.state {
            VerifyState::Reading => {}
            VerifyState::Verified => return Ok(0),
            VerifyState::DigestFailed(_) | VerifyState::SizeFailed => return Err(self.failure()),
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.read += n as u64;
            if self.expected_size.is_some_and(|size| self.read > size) {
                self.state = VerifyState::SizeFailed;
                return Err(self.failure());
            }
            return Ok(n);
        }
        if self.expected_size.is_some_and(|size| self.read != size) {
            self.state = VerifyState::SizeFailed;
            return Err(self.failure());
        }
        let actual = Digest::from_sha256(self.hasher.clone().finalize().into());
        if actual != self.expected {
            self.state = VerifyState::DigestFailed(actual);
            return Err(self.failure());
        }
        self.state = VerifyState::Verified;
        Ok(0)
    }
}

impl<R> fmt::Debug for VerifyingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingReader")
            .field("what", &self.what)
            .field("expected", &self.expected)
            .field("expected_size", &self.expected_size)
            .field("read", &self.read)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays() {
        let d = Digest::parse(EMPTY).expect("valid digest");
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.blob_path(), format!("blobs/sha256/{}", &EMPTY[7..]));
        assert_eq!(d.hex(), &EMPTY[7..]);
        let json = serde_json::to_string(&d).expect("serialize");
        assert_eq!(json, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, d);
    }

    #[test]
    fn rejects_bad_digests() {
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &upper,
            "sha256:../../etc/passwd",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(DigestError::Malformed(_))),
                "{bad:?}"
            );
        }
        let err = Digest::parse("sha512:00").expect_err("sha512 unsupported");
        assert!(
            matches!(err, DigestError::UnsupportedAlgorithm { ref algorithm, .. } if algorithm == "sha512")
        );
        assert!(err.to_string().contains("sha512"));
        assert!(serde_json::from_str::<Digest>("\"md5:00\"").is_err());
    }

    #[test]
    fn verifying_reader_accepts_good_content() {
        let data = b"hello world".to_vec();
        let mut r = VerifyingReader::new(&data[..], Digest::of(&data), Some(11), "test");
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("verifies");
        assert_eq!(out, data);
        assert!(r.is_verified());
        assert_eq!(r.bytes_read(), 11);
    }

    #[test]
    fn verifying_reader_reports_digest_mismatch_at_eof() {
        let mut r = VerifyingReader::new(&b"hello"[..], Digest::of(b"other"), None, "blob x");
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).expect_err("mismatch");
        assert_eq!(out, b"hello");
        match OciError::from_io(&err) {
            Some(OciError::DigestMismatch {
                what,
                expected,
                actual,
            }) => {
                assert_eq!(what, "blob x");
                assert_eq!(*expected, Digest::of(b"other"));
                assert_eq!(*actual, Digest::of(b"hello"));
            }
            other => panic!("unexpected {other:?}"),
        }
        // Later reads keep failing.
        assert!(r.read(&mut [0u8; 4]).is_err());
    }

    #[test]
    fn verifying_reader_reports_size_mismatch() {
        let data = b"hello";
        let mut short = VerifyingReader::new(&data[..], Digest::of(data), Some(6), "short");
        let err = short.read_to_end(&mut Vec::new()).expect_err("short");
        assert!(matches!(
            OciError::from_io(&err),
            Some(OciError::SizeMismatch {
                expected: 6,
                actual: 5,
                ..
            })
        ));
        let mut long = VerifyingReader::new(&data[..], Digest::of(data), Some(3), "long");
        let err = long.read_to_end(&mut Vec::new()).expect_err("long");
        assert!(matches!(
            OciError::from_io(&err),
            Some(OciError::SizeMismatch { expected: 3, .. })
        ));
    }

    #[test]
    fn empty_buffer_is_not_eof() {
        let mut r = VerifyingReader::new(&b"x"[..], Digest::of(b"y"), None, "t");
        assert_eq!(r.read(&mut []).expect("no error on empty read"), 0);
        assert!(!r.is_verified());
    }
}
