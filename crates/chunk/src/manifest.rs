//! The per-image manifest and its binary encoding.
//!
//! ```text
//! magic "KINDLMF\0" | version u16 | chunk_shift u8 | 0 u8 | 0 u32
//! image_bytes u64 | salt_id [16] | key_id [8] | stored u64
//! bitmap [ceil(chunks / 8)]      bit i set: chunk i is stored, else zero
//! names  [stored * 32]           in chunk order
//! sealed_len u32 | nonce [12]
//! sealed [sealed_len]            AES-256-GCM(tenant key) of
//!                                keys [stored * 32] || run config (JSON)
//! ```
//!
//! Integers are little-endian. Names are outside the seal so storage can
//! collect garbage without tenant keys; everything before the nonce is the
//! GCM associated data, so no byte of the manifest can change unnoticed.
//! The nonce is derived from the key and the whole content, which makes a
//! manifest a pure function of its content (re-pushing an image writes the
//! same bytes) and never reuses a nonce for two different plaintexts.
//! 64 bytes per stored chunk: 0.0122 % of a 512 KiB chunk.
//!
//! Decoding is bounded: every length is checked against the bytes that are
//! actually there before anything is allocated.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cipher::{ChunkKey, ChunkName};
use crate::error::ManifestError;
use crate::key::TenantKey;

pub const MANIFEST_MAGIC: &[u8; 8] = b"KINDLMF\0";
pub const MANIFEST_VERSION: u16 = 1;
/// 64 GiB: six times the paper's 10 GiB image limit, and low enough that a
/// hostile header cannot make the decoder allocate more than ~35 MiB
/// (2^20 chunks of 64 KiB).
pub const MAX_IMAGE_BYTES: u64 = 1 << 36;
/// Run configs are a few KiB; this only stops a hostile manifest (and a
/// pusher refuses an image whose config would not fit).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
const FIXED_HEADER: usize = 8 + 2 + 1 + 1 + 4 + 8 + 16 + 8 + 8;
const TAG: usize = 16;

/// What is needed to start the image: the OCI config's process fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub architecture: String,
    pub os: String,
    /// The OCI image this was built from: its manifest digest.
    pub source: String,
    /// Byte ranges `[offset, length]` every start reads (the superblock's
    /// chunk, the metadata region): agents fetch them first, in parallel,
    /// instead of one dependent round trip at a time.
    pub hot_ranges: Vec<[u64; 2]>,
}

impl RunConfig {
    /// Its size in a sealed manifest, which takes at most
    /// [`MAX_CONFIG_BYTES`]: a pusher checks before it seals.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }
}

/// One chunk of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkEntry {
    /// All zeros: not stored, reads return zeros.
    Zero,
    Stored {
        name: ChunkName,
        key: ChunkKey,
    },
}

/// An image's manifest, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub image_bytes: u64,
    pub chunk_size: u64,
    /// The dedup domain the chunks were encrypted in ([`crate::Salt::id`]).
    pub salt_id: [u8; 16],
    pub chunks: Vec<ChunkEntry>,
    pub config: RunConfig,
}

/// What anyone can read from a manifest without the tenant key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicManifest {
    pub image_bytes: u64,
    pub chunk_size: u64,
    pub salt_id: [u8; 16],
    pub key_id: [u8; 8],
    /// Per chunk: its name, or `None` for a zero chunk.
    pub names: Vec<Option<ChunkName>>,
}

/// Number of chunks of an image.
fn chunk_count(image_bytes: u64, chunk_size: u64) -> u64 {
    image_bytes.div_ceil(chunk_size)
}

impl Manifest {
    /// Encodes and seals the manifest with `key`.
    ///
    /// Panics if `chunks.len()` does not match the image and chunk size or
    /// the chunk size is not a power of two: those are caller bugs, not
    /// input.
    pub fn seal(&self, key: &TenantKey) -> Vec<u8> {
        assert!(self.chunk_size.is_power_of_two());
        assert_eq!(
            chunk_count(self.image_bytes, self.chunk_size),
            self.chunks.len() as u64
        );
        let stored: Vec<(&ChunkName, &ChunkKey)> = self
            .chunks
            .iter()
            .filter_map(|c| match c {
                ChunkEntry::Stored { name, key } => Some((name, key)),
                ChunkEntry::Zero => None,
            })
            .collect();
        let mut out =
            Vec::with_capacity(FIXED_HEADER + self.chunks.len() / 8 + 64 * stored.len() + 512);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        out.push(self.chunk_size.trailing_zeros() as u8);
        out.push(0);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.image_bytes.to_le_bytes());
        out.extend_from_slice(&self.salt_id);
        out.extend_from_slice(&key.id());
        out.extend_from_slice(&(stored.len() as u64).to_le_bytes());
        let mut bitmap = vec![0u8; self.chunks.len().div_ceil(8)];
        for (i, c) in self.chunks.iter().enumerate() {
            if matches!(c, ChunkEntry::Stored { .. }) {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        for (name, _) in &stored {
            out.extend_from_slice(&name.0);
        }
        let mut plain = Vec::with_capacity(32 * stored.len() + 512);
        for (_, k) in &stored {
            plain.extend_from_slice(&k.0);
        }
        // Serialising a struct of strings cannot fail.
        plain.extend_from_slice(&serde_json::to_vec(&self.config).unwrap_or_default());
        out.extend_from_slice(&((plain.len() + TAG) as u32).to_le_bytes());
        let aad_len = out.len();
        let nonce: [u8; 12] = {
            let h = Sha256::new()
                .chain_update(b"kindling/manifest-nonce\0")
                .chain_update(key.as_bytes())
                .chain_update(&out)
                .chain_update(&plain)
                .finalize();
            h[..12].try_into().unwrap_or([0; 12])
        };
        let gcm = Aes256Gcm::new(key.as_bytes().into());
        let sealed = gcm
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &out[..aad_len],
                },
            )
            // AES-GCM encryption fails only for messages over 64 GiB.
            .unwrap_or_default();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decodes `bytes` and opens the seal with `key`.
    pub fn open(bytes: &[u8], key: &TenantKey) -> Result<Manifest, ManifestError> {
        let d = decode(bytes)?;
        if d.public.key_id != key.id() {
            return Err(ManifestError::WrongKey {
                expected: hex::encode(d.public.key_id),
                actual: hex::encode(key.id()),
            });
        }
        let gcm = Aes256Gcm::new(key.as_bytes().into());
        let plain = gcm
            .decrypt(
                Nonce::from_slice(d.nonce),
                Payload {
                    msg: d.sealed,
                    aad: d.aad,
                },
            )
            .map_err(|_| ManifestError::Tampered)?;
        let stored = d.public.names.iter().flatten().count();
        // Authenticated, so a size mismatch here means a broken encoder.
        let (keys, config) =
            plain
                .split_at_checked(32 * stored)
                .ok_or(ManifestError::Malformed(
                    "sealed part shorter than its key table",
                ))?;
        let config: RunConfig =
            serde_json::from_slice(config).map_err(|e| ManifestError::Config(e.to_string()))?;
        let mut keys = keys.chunks_exact(32);
        let mut chunks = Vec::with_capacity(d.public.names.len());
        for name in &d.public.names {
            chunks.push(match name {
                None => ChunkEntry::Zero,
                Some(name) => {
                    let k = keys
                        .next()
                        .ok_or(ManifestError::Malformed("key table too short"))?;
                    let mut key = [0u8; 32];
                    key.copy_from_slice(k);
                    ChunkEntry::Stored {
                        name: *name,
                        key: ChunkKey(key),
                    }
                }
            });
        }
        Ok(Manifest {
            image_bytes: d.public.image_bytes,
            chunk_size: d.public.chunk_size,
            salt_id: d.public.salt_id,
            chunks,
            config,
        })
    }

    /// Reads the public part only: sizes, ids and chunk names.
    pub fn public(bytes: &[u8]) -> Result<PublicManifest, ManifestError> {
        Ok(decode(bytes)?.public)
    }

    /// Byte offset of chunk `index` in the image.
    pub fn chunk_offset(&self, index: usize) -> u64 {
        index as u64 * self.chunk_size
    }

    /// Length of chunk `index` (the last one may be short).
    pub fn chunk_len(&self, index: usize) -> usize {
        let start = self.chunk_offset(index);
        (self.image_bytes - start).min(self.chunk_size) as usize
    }
}

struct Decoded<'a> {
    public: PublicManifest,
    aad: &'a [u8],
    nonce: &'a [u8],
    sealed: &'a [u8],
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(ManifestError::Truncated(self.bytes.len()))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, ManifestError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

fn decode(bytes: &[u8]) -> Result<Decoded<'_>, ManifestError> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8).map_err(|_| ManifestError::Magic)? != MANIFEST_MAGIC {
        return Err(ManifestError::Magic);
    }
    let version = u16::from_le_bytes(r.array()?);
    if version != MANIFEST_VERSION {
        return Err(ManifestError::Version(version));
    }
    let [shift, pad0] = r.array()?;
    if !(16..=22).contains(&shift) {
        return Err(ManifestError::Malformed(
            "chunk size outside 64 KiB - 4 MiB",
        ));
    }
    if pad0 != 0 || r.array::<4>()? != [0; 4] {
        return Err(ManifestError::Malformed("reserved bytes are not zero"));
    }
    let chunk_size = 1u64 << shift;
    let image_bytes = r.u64()?;
    if image_bytes > MAX_IMAGE_BYTES {
        return Err(ManifestError::Malformed("image size over 64 GiB"));
    }
    let salt_id = r.array()?;
    let key_id = r.array()?;
    let stored = r.u64()?;
    let chunks = chunk_count(image_bytes, chunk_size);
    if stored > chunks {
        return Err(ManifestError::Malformed("more stored chunks than chunks"));
    }
    let bitmap = r.take(chunks.div_ceil(8) as usize)?;
    if !chunks.is_multiple_of(8) && bitmap[bitmap.len() - 1] >> (chunks % 8) != 0 {
        return Err(ManifestError::Malformed("bits set past the last chunk"));
    }
    let ones: u64 = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
    if ones != stored {
        return Err(ManifestError::Malformed(
            "bitmap disagrees with the stored count",
        ));
    }
    // `stored` <= chunks <= 2^20, so this cannot overflow.
    let names = r.take(stored as usize * 32)?;
    let sealed_len = u32::from_le_bytes(r.array()?) as usize;
    let aad = &bytes[..r.pos];
    let nonce = r.take(12)?;
    let sealed = r.take(sealed_len)?;
    if r.pos != bytes.len() {
        return Err(ManifestError::Malformed("trailing bytes"));
    }
    let keys = stored as usize * 32;
    if sealed_len < TAG + keys || sealed_len - TAG - keys > MAX_CONFIG_BYTES {
        return Err(ManifestError::Malformed("sealed part has the wrong size"));
    }
    let mut name_iter = names.chunks_exact(32);
    let mut table = Vec::with_capacity(chunks as usize);
    for i in 0..chunks as usize {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            let n = name_iter
                .next()
                .ok_or(ManifestError::Malformed("name table too short"))?;
            let mut a = [0u8; 32];
            a.copy_from_slice(n);
            table.push(Some(ChunkName(a)));
        } else {
            table.push(None);
        }
    }
    Ok(Decoded {
        public: PublicManifest {
            image_bytes,
            chunk_size,
            salt_id,
            key_id,
            names: table,
        },
        aad,
        nonce,
        sealed,
    })
}

#[cfg(test)]
mod tests;
