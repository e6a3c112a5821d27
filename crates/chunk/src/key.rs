//! Tenant keys: the key that seals an image's chunk keys.
//!
//! A [`KeyProvider`] is the seam for a KMS later; [`KeyFile`] is the local
//! provider: 32 random bytes in a file (64 hex digits are accepted too, so a
//! key can be pasted). The default key is created on first use, mode 0600,
//! with `O_EXCL` so two first runs cannot race to two different keys.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::KeyError;

/// A tenant's 256-bit key. Its Debug form shows only its id.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantKey([u8; 32]);

impl TenantKey {
    pub fn from_bytes(bytes: [u8; 32]) -> TenantKey {
        TenantKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A public fingerprint, stored in manifests so a wrong key is reported
    /// as such instead of as a damaged manifest.
    pub fn id(&self) -> [u8; 8] {
        let h = Sha256::new()
            .chain_update(b"kindling/tenant-key-id\0")
            .chain_update(self.0)
            .finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&h[..8]);
        out
    }

    /// A fresh random key.
    pub fn generate() -> Result<TenantKey, KeyError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(TenantKey(k))
    }
}

impl fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantKey(id {})", hex::encode(self.id()))
    }
}

/// Where tenant keys come from.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    fn tenant_key(&self) -> Result<TenantKey, KeyError>;
}

/// A key kept in a local file.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
    create: bool,
}

impl KeyFile {
    /// A key file that must exist (`--key-file F`).
    pub fn existing(path: impl Into<PathBuf>) -> KeyFile {
        KeyFile {
            path: path.into(),
            create: false,
        }
    }

    /// The default key file: created, with a new random key and mode 0600,
    /// the first time it is needed.
    pub fn create_if_missing(path: impl Into<PathBuf>) -> KeyFile {
        KeyFile {
            path: path.into(),
            create: true,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<TenantKey, KeyError> {
        let raw = std::fs::read(&self.path).map_err(|source| KeyError::Read {
            path: self.path.clone(),
            source,
        })?;
        parse_key(&raw).map_err(|reason| KeyError::Format {
            path: self.path.clone(),
            reason,
        })
    }

    fn create(&self) -> Result<bool, KeyError> {
        let err = |source| KeyError::Create {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let key = TenantKey::generate()?;
        // Written to a temporary name and linked into place, so a reader
        // never sees a short key and a racing creator loses cleanly.
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        let written = f.write_all(&key.0).and_then(|()| f.sync_all());
        drop(f);
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, &self.path));
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(e)),
        }
    }
}

impl KeyProvider for KeyFile {
    fn tenant_key(&self) -> Result<TenantKey, KeyError> {
        if self.create && !self.path.exists() {
            self.create()?;
        }
        self.read()
    }
}

/// A key file's 32 raw bytes, or 64 hex digits (whitespace around them is
/// fine); else what is wrong with it, for the error.
fn parse_key(raw: &[u8]) -> Result<TenantKey, String> {
    if let Ok(k) = <[u8; 32]>::try_from(raw) {
        return Ok(TenantKey(k));
    }
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut k = [0u8; 32];
        return match hex::decode_to_slice(text, &mut k) {
            Ok(()) => Ok(TenantKey(k)),
            Err(_) => Err(format!("{} hex digits, where a key has 64", text.len())),
        };
    }
    Err(format!(
        "{} bytes, neither the 32 raw bytes of a key nor 64 hex digits",
        raw.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_files_raw_or_hex_and_what_is_wrong_otherwise() {
        let hex64 = "ab".repeat(32);
        assert_eq!(parse_key(&[7; 32]).unwrap().0, [7; 32]);
        assert_eq!(
            parse_key(format!("  {hex64}\n").as_bytes()).unwrap().0,
            [0xab; 32]
        );
        for (raw, says) in [
            (format!("{}\n", &hex64[..63]).into_bytes(), "63 hex digits"),
            (format!("{hex64}00").into_bytes(), "66 hex digits"),
            (vec![b'z'; 64], "64 bytes, neither"),
            (Vec::new(), "0 bytes"),
            (vec![0xff; 31], "31 bytes"),
        ] {
            let e = parse_key(&raw).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn default_key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tenant.key");
        let k1 = KeyFile::create_if_missing(&path).tenant_key().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        let k2 = KeyFile::create_if_missing(&path).tenant_key().unwrap();
        assert_eq!(k1, k2);
        assert_eq!(KeyFile::existing(&path).tenant_key().unwrap(), k1);
        // No temporary files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn existing_key_file_must_exist_and_be_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let e = KeyFile::existing(&path).tenant_key().unwrap_err();
        assert!(matches!(e, KeyError::Read { .. }), "{e}");
        assert!(!path.exists());
        std::fs::write(&path, b"short").unwrap();
        let e = KeyFile::existing(&path).tenant_key().unwrap_err();
        assert!(
            e.to_string().contains("is not a key: it holds 5 bytes"),
            "{e}"
        );
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        let k = KeyFile::existing(&path).tenant_key().unwrap();
        assert_eq!(k.as_bytes(), &[0xab; 32]);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = TenantKey::from_bytes([0x5a; 32]);
        assert!(!format!("{k:?}").contains("5a5a"));
    }
}
