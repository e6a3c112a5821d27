//! Startup traces: which chunks a start of an image read, in the order it
//! first read them. An agent that has one prefetches those chunks in
//! parallel instead of discovering them one dependent round trip at a time
//! (the kernel reads a loop device's file one request after another).
//!
//! The order of a start's reads says something about the application, so
//! a trace is sealed with the tenant key like a manifest's keys:
//!
//! ```text
//! magic "KINDLTR\0" | version u16 | key_id [8] | nonce [12]
//! sealed: AES-256-GCM(tenant key, aad = everything before it) of
//!         count u32 | index u32 * count
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::error::ManifestError;
use crate::key::TenantKey;

const MAGIC: &[u8; 8] = b"KINDLTR\0";
const VERSION: u16 = 1;
/// 2^20 chunks: a 512 GiB image at 512 KiB; bounds what a decoder accepts.
pub const MAX_TRACE_CHUNKS: usize = 1 << 20;

/// Seals a trace of chunk indices.
pub fn seal_trace(indices: &[u32], key: &TenantKey) -> Result<Vec<u8>, ManifestError> {
    if indices.len() > MAX_TRACE_CHUNKS {
        return Err(ManifestError::Malformed("trace too long"));
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&key.id());
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|_| ManifestError::Malformed("no randomness"))?;
    let aad = out.clone();
    out.extend_from_slice(&nonce);
    let mut plain = Vec::with_capacity(4 + 4 * indices.len());
    plain.extend_from_slice(&(indices.len() as u32).to_le_bytes());
    for i in indices {
        plain.extend_from_slice(&i.to_le_bytes());
    }
    let sealed = Aes256Gcm::new(key.as_bytes().into())
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| ManifestError::Malformed("trace too large to seal"))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a sealed trace.
pub fn open_trace(bytes: &[u8], key: &TenantKey) -> Result<Vec<u32>, ManifestError> {
    if bytes.len() < 30 || &bytes[..8] != MAGIC {
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
    let plain = Aes256Gcm::new(key.as_bytes().into())
        .decrypt(
            Nonce::from_slice(&bytes[18..30]),
            Payload {
                msg: &bytes[30..],
                aad: &bytes[..18],
            },
        )
        .map_err(|_| ManifestError::Tampered)?;
    let (count, rest) = plain
        .split_at_checked(4)
        .ok_or(ManifestError::Truncated(plain.len()))?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if count > MAX_TRACE_CHUNKS || rest.len() != 4 * count {
        return Err(ManifestError::Malformed(
            "trace length disagrees with its count",
        ));
    }
    Ok(rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    }
}
