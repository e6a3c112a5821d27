//! Where things live in a store, and the small objects beside the chunks.

use std::sync::Arc;

use bytes::Bytes;
use kindling_chunk::{ChunkName, Manifest, PublicManifest, Salt, TenantKey};
use kindling_store::{Store, StoreError};
use sha2::{Digest, Sha256};

use crate::error::RepoError;

const SALT_KEY: &str = "config/salt";
const IMAGES: &str = "images/";

/// The store key of a chunk. Two hex digits of fan-out keep directories of
/// the local store small; S3 does not care.
pub fn chunk_key(name: &ChunkName) -> String {
    let hex = name.to_hex();
    format!("chunks/{}/{hex}", &hex[..2])
}

fn manifest_key(digest_hex: &str) -> String {
    format!("manifests/{digest_hex}")
}

/// Checks an image name: what users type after `--name`, e.g. `python-app:v1`
/// or `team/app:v2`.
pub fn validate_image_name(name: &str) -> Result<(), RepoError> {
    let bad = |reason| {
        Err(RepoError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 200 {
        return bad("must be 1 to 200 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:@/+".contains(&b))
    {
        return bad("only letters, digits and . _ - : @ / + are allowed");
    }
    if name.split('/').any(|s| s.is_empty() || s.starts_with('.')) {
        return bad("no empty path segments, and none starting with '.'");
    }
    Ok(())
}

/// An image name and the manifest it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    /// `sha256:<hex>` of the sealed manifest.
    pub manifest: String,
}

/// Images in one store.
#[derive(Debug, Clone)]
pub struct Repo {
    store: Arc<dyn Store>,
}

impl Repo {
    pub fn new(store: Arc<dyn Store>) -> Repo {
        Repo { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn err(&self, source: StoreError) -> RepoError {
        RepoError::Store {
            store: self.store.url(),
            source: Box::new(source),
        }
    }

    /// The store's convergence salt, created (randomly, once) by the first
    /// push. Every image in the store shares it, so their chunks dedup.
    pub async fn salt(&self) -> Result<Salt, RepoError> {
        for _ in 0..2 {
            match self.store.get(SALT_KEY).await {
                Ok(b) => {
                    let arr: [u8; 32] = b[..].try_into().map_err(|_| RepoError::BadSalt {
                        store: self.store.url(),
                        len: b.len(),
                    })?;
                    return Ok(Salt::from_bytes(arr));
                }
                Err(StoreError::NotFound { .. }) => {
                    let mut s = [0u8; 32];
                    getrandom::fill(&mut s).map_err(|e| RepoError::Random(e.to_string()))?;
                    // Losing a race to another first push is fine: the
                    // loop then reads the winner's salt.
                    self.store
                        .put_if_absent(SALT_KEY, Bytes::copy_from_slice(&s))
                        .await
                        .map_err(|e| self.err(e))?;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(self.err(StoreError::NotFound {
            key: SALT_KEY.to_owned(),
        }))
    }

    /// Stores a sealed manifest; returns its digest (`sha256:<hex>`).
    pub async fn put_manifest(&self, sealed: Vec<u8>) -> Result<String, RepoError> {
        let hex = hex::encode(Sha256::digest(&sealed));
        let key = manifest_key(&hex);
        // Content-addressed: an existing object is this very manifest.
        self.store
            .put_if_absent(&key, Bytes::from(sealed))
            .await
            .map_err(|e| self.err(e))?;
        Ok(format!("sha256:{hex}"))
    }

    /// Points `name` at a manifest. One small whole-object write, so a
    /// reader sees the old manifest or the new one.
    pub async fn set_image(&self, name: &str, manifest: &str) -> Result<(), RepoError> {
        validate_image_name(name)?;
        self.store
            .put(
                &format!("{IMAGES}{name}"),
                Bytes::from(format!("{manifest}\n")),
            )
            .await
            .map_err(|e| self.err(e))
    }

    /// The manifest digest `name` points at.
    pub async fn image(&self, name: &str) -> Result<ImageRef, RepoError> {
        validate_image_name(name)?;
        let key = format!("{IMAGES}{name}");
        let raw = match self.store.get(&key).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => {
                return Err(RepoError::NoSuchImage {
                    name: name.to_owned(),
                    store: self.store.url(),
                })
            }
            Err(e) => return Err(self.err(e)),
        };
        let text =
            std::str::from_utf8(&raw).map_err(|_| RepoError::BadReference { key: key.clone() })?;
        let digest = text.trim();
        match digest.strip_prefix("sha256:") {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(ImageRef {
                name: name.to_owned(),
                manifest: digest.to_ascii_lowercase(),
            }),
            _ => Err(RepoError::BadReference { key }),
        }
    }

    /// Every image in the store, sorted by name.
    pub async fn images(&self) -> Result<Vec<ImageRef>, RepoError> {
        let keys = self.store.list(IMAGES).await.map_err(|e| self.err(e))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(name) = key.strip_prefix(IMAGES) else {
                continue;
            };
            out.push(self.image(name).await?);
        }
        Ok(out)
    }

    /// The sealed manifest bytes of a digest, checked against it.
    pub async fn manifest_bytes(&self, digest: &str) -> Result<Bytes, RepoError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let bytes = self
            .store
            .get(&manifest_key(hex))
            .await
            .map_err(|e| self.err(e))?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != hex {
            return Err(RepoError::ManifestCorrupt {
                digest: digest.to_owned(),
                actual: format!("sha256:{actual}"),
            });
        }
        Ok(bytes)
    }

    /// Looks up `name` and opens its manifest with the tenant key.
    pub async fn open_image(
        &self,
        name: &str,
        key: &TenantKey,
    ) -> Result<(ImageRef, Manifest), RepoError> {
        let r = self.image(name).await?;
        let bytes = self.manifest_bytes(&r.manifest).await?;
        let m = Manifest::open(&bytes, key).map_err(|source| RepoError::Manifest {
            name: name.to_owned(),
            digest: r.manifest.clone(),
            source,
        })?;
        Ok((r, m))
    }

    /// The sealed startup trace of `kind` recorded for a manifest, if any.
    pub async fn trace(&self, manifest: &str, kind: TraceKind) -> Result<Option<Bytes>, RepoError> {
        match self.store.get(&trace_key(manifest, kind)).await {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Records a sealed startup trace of `kind` for a manifest, unless one
    /// exists: the first start's trace serves every later one.
    pub async fn put_trace(
        &self,
        manifest: &str,
        kind: TraceKind,
        sealed: Vec<u8>,
    ) -> Result<bool, RepoError> {
        self.store
            .put_if_absent(&trace_key(manifest, kind), Bytes::from(sealed))
            .await
            .map_err(|e| self.err(e))
    }

    /// The public part of the manifest a reference already read points at
    /// (and the manifest's size): `ls` has the references from `images`.
    pub async fn public_of(&self, r: &ImageRef) -> Result<(PublicManifest, usize), RepoError> {
        let bytes = self.manifest_bytes(&r.manifest).await?;
        let m = Manifest::public(&bytes).map_err(|source| RepoError::Manifest {
            name: r.name.clone(),
            digest: r.manifest.clone(),
            source,
        })?;
        Ok((m, bytes.len()))
    }
}

/// What a startup trace records (see `kindling_chunk`'s trace module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// The chunks a start read, for the agent's prefetch.
    Chunks,
    /// The file pages a start read, for warming the page cache.
    Files,
}

/// Kept apart so a store whose chunk traces predate file traces still
/// gets a file trace from its next start.
fn trace_key(manifest: &str, kind: TraceKind) -> String {
    let hex = manifest.strip_prefix("sha256:").unwrap_or(manifest);
    match kind {
        TraceKind::Chunks => format!("traces/{hex}"),
        TraceKind::Files => format!("traces/{hex}.files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        for ok in ["a", "python-app:v1", "team/app:v2", "x@sha256.1", "a+b"] {
            validate_image_name(ok).unwrap();
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "../x",
            "a/../b",
            ".hidden",
            "a b",
            "é",
            &"x".repeat(201),
        ] {
            assert!(validate_image_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunk_keys_fan_out() {
        let n = ChunkName([0xab; 32]);
        assert_eq!(chunk_key(&n), format!("chunks/ab/{}", "ab".repeat(32)));
    }
}
