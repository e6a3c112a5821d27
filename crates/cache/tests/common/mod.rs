//! Helpers shared by the integration tests.

use bytes::Bytes;
use kindling_chunk::ChunkName;

/// Deterministic ciphertext-like bytes for chunk `i` (`len` bytes, then
/// `i` itself so that equal lengths still differ), and their name.
pub fn chunk(i: u32, len: usize) -> (ChunkName, Bytes) {
    let mut data: Vec<u8> = (0..len)
        .map(|j| (j as u32).wrapping_mul(2_654_435_761).wrapping_add(i) as u8 ^ (j >> 9) as u8)
        .collect();
    data.extend_from_slice(&i.to_le_bytes());
    let bytes = Bytes::from(data);
    (ChunkName::of(&bytes), bytes)
}
