//! The chunk cipher: convergent encryption with AES-256-CTR.
//!
//! `key = SHA-256(salt || plaintext)`, `ciphertext = AES-256-CTR(key, IV 0)`,
//! `name = SHA-256(ciphertext)`. A zero IV is safe because a key is only
//! ever used for the one plaintext it was derived from. CTR keeps the
//! ciphertext the length of the chunk and lets a reader decrypt any part
//! of it; integrity comes from the name, which the manifest authenticates.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::aes_ctr;
use crate::error::ChunkError;
use crate::sha256x2::Sha256x2;

/// A chunk's name: the SHA-256 of its ciphertext. Shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkName(pub [u8; 32]);

impl ChunkName {
    /// The name of `ciphertext`.
    pub fn of(ciphertext: &[u8]) -> ChunkName {
        ChunkName(Sha256::digest(ciphertext).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<ChunkName> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ChunkName(out))
    }
}

impl fmt::Display for ChunkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkName({})", self.to_hex())
    }
}

/// A chunk's key. Secret: its Debug form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkKey(pub [u8; 32]);

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

/// The convergence salt of a dedup domain. It is store configuration, not
/// a secret: it stops chunks from matching across domains and bounds the
/// reach of one bad chunk.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt([u8; 32]);

impl Salt {
    pub fn from_bytes(bytes: [u8; 32]) -> Salt {
        Salt(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A public id for the salt, recorded in manifests: which domain a
    /// manifest's chunks belong to, without repeating the salt.
    pub fn id(&self) -> [u8; 16] {
        let h = Sha256::new()
            .chain_update(b"kindling/salt-id\0")
            .chain_update(self.0)
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt(id {})", hex::encode(self.id()))
    }
}

/// The key of `plaintext` under `salt`.
pub fn derive_key(salt: &Salt, plaintext: &[u8]) -> ChunkKey {
    ChunkKey(
        Sha256::new()
            .chain_update(salt.0)
            .chain_update(plaintext)
            .finalize()
            .into(),
    )
}

fn apply_keystream(key: &ChunkKey, buf: &mut [u8]) {
    aes_ctr::apply_keystream_at(&key.0, 0, buf);
}

/// Encrypts one chunk in place; returns its key and name.
pub fn encrypt_in_place(salt: &Salt, buf: &mut [u8]) -> (ChunkKey, ChunkName) {
    let key = derive_key(salt, buf);
    apply_keystream(&key, buf);
    let name = ChunkName::of(buf);
    (key, name)
}

/// Encrypts two chunks in place, hashing them together (see
/// [`Sha256x2`]): the same keys and names as two [`encrypt_in_place`] calls
/// at close to the cost of one. Chunks of unequal length are done one by
/// one.
pub fn encrypt_pair_in_place(
    salt: &Salt,
    a: &mut [u8],
    b: &mut [u8],
) -> [(ChunkKey, ChunkName); 2] {
    if a.len() != b.len() {
        return [encrypt_in_place(salt, a), encrypt_in_place(salt, b)];
    }
    let mut h = Sha256x2::new();
    h.update(&salt.0, &salt.0);
    h.update(a, b);
    let (ka, kb) = h.finalize();
    let (ka, kb) = (ChunkKey(ka), ChunkKey(kb));
    apply_keystream(&ka, a);
    apply_keystream(&kb, b);
    let (na, nb) = names_of_pair(a, b);
    [(ka, na), (kb, nb)]
}

/// The names of two ciphertexts of equal length, hashed together.
fn names_of_pair(a: &[u8], b: &[u8]) -> (ChunkName, ChunkName) {
    let mut h = Sha256x2::new();
    h.update(a, b);
    let (na, nb) = h.finalize();
    (ChunkName(na), ChunkName(nb))
}

/// Decrypts one chunk in place. Verify it first: CTR decrypts anything.
pub fn decrypt_in_place(key: &ChunkKey, buf: &mut [u8]) {
    apply_keystream(key, buf);
}

/// Decrypts in place `buf`, the ciphertext at byte `offset` of a chunk:
/// CTR needs no other part of the chunk, so a read of 128 KiB decrypts
/// 128 KiB, not the chunk. Verify the chunk first.
pub fn decrypt_range(key: &ChunkKey, offset: u64, buf: &mut [u8]) {
    aes_ctr::apply_keystream_at(&key.0, offset, buf);
}

/// Checks that `ciphertext` is the chunk called `name`.
pub fn verify(name: &ChunkName, ciphertext: &[u8]) -> Result<(), ChunkError> {
    is_named(name, ChunkName::of(ciphertext))
}

/// Whether the name a ciphertext hashed to is the one expected.
fn is_named(name: &ChunkName, actual: ChunkName) -> Result<(), ChunkError> {
    if actual == *name {
        Ok(())
    } else {
        Err(ChunkError::Corrupt {
            name: name.to_hex(),
            actual: actual.to_hex(),
        })
    }
}

/// [`verify`] for two chunks, hashed together when their lengths match
/// (see [`Sha256x2`]): about the cost of one.
pub fn verify_pair(
    (name_a, a): (&ChunkName, &[u8]),
    (name_b, b): (&ChunkName, &[u8]),
) -> [Result<(), ChunkError>; 2] {
    if a.len() != b.len() {
        return [verify(name_a, a), verify(name_b, b)];
    }
    let (actual_a, actual_b) = names_of_pair(a, b);
    [is_named(name_a, actual_a), is_named(name_b, actual_b)]
}

/// Whether a chunk is all zeros: such chunks are not stored at all.
pub fn is_zero(buf: &[u8]) -> bool {
    // OR-folding 64-byte blocks lets the compiler vectorise the scan.
    let mut blocks = buf.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0u8, |a, &x| a | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_range_decrypts_like_the_whole_chunk(
            data in proptest::collection::vec(any::<u8>(), 1..4096),
            a in any::<usize>(),
            b in any::<usize>(),
        ) {
            let salt = Salt::from_bytes([7; 32]);
            let mut cipher = data.clone();
            let (key, _) = encrypt_in_place(&salt, &mut cipher);
            let (from, to) = {
                let (x, y) = (a % (data.len() + 1), b % (data.len() + 1));
                (x.min(y), x.max(y))
            };
            let mut part = cipher[from..to].to_vec();
            decrypt_range(&key, from as u64, &mut part);
            prop_assert_eq!(&part[..], &data[from..to]);
        }
    }

    proptest! {
        /// A pair gives each chunk the key, name and ciphertext it gets
        /// alone, for equal and unequal lengths.
        #[test]
        fn pair_equals_two_singles(
            a in proptest::collection::vec(any::<u8>(), 0..3000),
            b in proptest::collection::vec(any::<u8>(), 0..3000),
            same_len in any::<bool>(),
        ) {
            let mut b = b;
            if same_len {
                b.resize(a.len(), 0x5a);
            }
            let s = Salt::from_bytes([3; 32]);
            let (mut pa, mut pb) = (a.clone(), b.clone());
            let [(ka, na), (kb, nb)] = encrypt_pair_in_place(&s, &mut pa, &mut pb);
            let (mut sa, mut sb) = (a.clone(), b.clone());
            let (ka1, na1) = encrypt_in_place(&s, &mut sa);
            let (kb1, nb1) = encrypt_in_place(&s, &mut sb);
            prop_assert_eq!((ka, na, kb, nb), (ka1, na1, kb1, nb1));
            prop_assert_eq!((pa, pb), (sa, sb));
        }

        /// A pair verifies exactly as two single checks would, whichever
        /// of the two is damaged, for equal and unequal lengths.
        #[test]
        fn pair_verifies_like_two_singles(
            a in proptest::collection::vec(any::<u8>(), 0..3000),
            b in proptest::collection::vec(any::<u8>(), 0..3000),
            same_len in any::<bool>(),
            flip in 0usize..3,
        ) {
            let mut b = b;
            if same_len {
                b.resize(a.len(), 0x5a);
            }
            let (na, mut nb) = (ChunkName::of(&a), ChunkName::of(&b));
            let mut a = a;
            match flip {
                1 if !a.is_empty() => a[0] ^= 1,
                2 => nb.0[5] ^= 1,
                _ => {}
            }
            let pair = verify_pair((&na, &a), (&nb, &b));
            let single = [verify(&na, &a), verify(&nb, &b)];
            prop_assert_eq!(format!("{pair:?}"), format!("{single:?}"));
        }
    }

    fn salt(b: u8) -> Salt {
        Salt::from_bytes([b; 32])
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..70_000), s in any::<u8>()) {
            let mut buf = data.clone();
            let (key, name) = encrypt_in_place(&salt(s), &mut buf);
            prop_assert_eq!(buf.len(), data.len());
            prop_assert!(verify(&name, &buf).is_ok());
            // Convergent: the same plaintext and salt give the same chunk.
            let mut again = data.clone();
            let (key2, name2) = encrypt_in_place(&salt(s), &mut again);
            prop_assert_eq!(&key, &key2);
            prop_assert_eq!(name, name2);
            prop_assert_eq!(&again, &buf);
            decrypt_in_place(&key, &mut buf);
            prop_assert_eq!(buf, data);
        }

        #[test]
        fn a_flipped_bit_fails_verification(data in proptest::collection::vec(any::<u8>(), 1..5000), at in any::<usize>(), bit in 0u8..8) {
            let mut buf = data;
            let (_, name) = encrypt_in_place(&salt(1), &mut buf);
            let at = at % buf.len();
            buf[at] ^= 1 << bit;
            prop_assert!(verify(&name, &buf).is_err());
        }

        #[test]
        fn salts_separate_domains(data in proptest::collection::vec(any::<u8>(), 1..5000)) {
            let mut a = data.clone();
            let mut b = data;
            let (_, na) = encrypt_in_place(&salt(1), &mut a);
            let (_, nb) = encrypt_in_place(&salt(2), &mut b);
            prop_assert_ne!(na, nb);
        }

        #[test]
        fn zero_detection(len in 0usize..5000, at in any::<usize>(), v in 1u8..) {
            let mut buf = vec![0u8; len];
            prop_assert!(is_zero(&buf));
            if len > 0 {
                buf[at % len] = v;
                prop_assert!(!is_zero(&buf));
            }
        }
    }

    #[test]
    fn matches_the_specification() {
        // Independent of this module: SHA-256 and AES-256-CTR from their
        // definitions, composed as DESIGN.md states.
        let plaintext = b"kindling chunk".repeat(100);
        let s = salt(9);
        let mut buf = plaintext.clone();
        let (key, name) = encrypt_in_place(&s, &mut buf);
        let mut expect_key = Sha256::new();
        expect_key.update([9u8; 32]);
        expect_key.update(&plaintext);
        assert_eq!(key.0, <[u8; 32]>::from(expect_key.finalize()));
        assert_eq!(name.0, <[u8; 32]>::from(Sha256::digest(&buf)));
        assert_ne!(buf, plaintext);
        // The first keystream block is AES(key, 0^128).
        use aes::cipher::{BlockEncrypt, KeyInit};
        let aes = aes::Aes256::new((&key.0).into());
        let mut block = [0u8; 16].into();
        aes.encrypt_block(&mut block);
        let first: Vec<u8> = plaintext[..16]
            .iter()
            .zip(block.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(&buf[..16], &first[..]);
    }
}
