//! AES-256-CTR with the chunk cipher's parameters (IV 0, 128-bit
//! big-endian counter), from any byte offset.
//!
//! The `aes` crate uses AES-NI, one 128-bit block per instruction: about
//! 5.7 GB/s on one core here. CPUs with VAES and AVX-512 run four blocks
//! per instruction, and CTR has no dependency between blocks, so the
//! keystream comes at 15.5 GB/s (a scratch benchmark over 512 KiB
//! buffers). Every chunk pushed is encrypted and every chunk read is
//! decrypted, so this is on both paths. Other CPUs use the `aes` crate.

use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// XORs `buf` with the keystream of `key` from byte `offset` on.
pub(crate) fn apply_keystream_at(key: &[u8; 32], offset: u64, buf: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if vaes::available() && vaes::fits(offset, buf.len()) {
        // SAFETY: `available` checked the CPU features `apply` needs.
        unsafe { vaes::apply(key, offset, buf) };
        return;
    }
    portable(key, offset, buf);
}

/// The `aes` crate's CTR: the fallback, and the reference in tests.
fn portable(key: &[u8; 32], offset: u64, buf: &mut [u8]) {
    let mut c = Aes256Ctr::new(key.into(), &[0u8; 16].into());
    if offset != 0 {
        c.seek(offset);
    }
    c.apply_keystream(buf);
}

#[cfg(target_arch = "x86_64")]
mod vaes {
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        // std caches the answers; each check is a load and a test.
        is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("aes")
    }

    /// Whether the counter stays below 2^64 blocks, so only its low half
    /// moves (chunks are megabytes; this only turns away absurd offsets).
    pub fn fits(offset: u64, len: usize) -> bool {
        offset
            .checked_add(len as u64)
            .is_some_and(|end| end < 1 << 60)
    }

    /// w ^ (w << 32) ^ (w << 64) ^ (w << 96): each word of a round key is
    /// the word two keys back XORed with all words before it.
    #[target_feature(enable = "sse2")]
    fn spread(w: __m128i) -> __m128i {
        let w = _mm_xor_si128(w, _mm_slli_si128(w, 4));
        let w = _mm_xor_si128(w, _mm_slli_si128(w, 4));
        _mm_xor_si128(w, _mm_slli_si128(w, 4))
    }

    /// An even round key: RotWord(SubWord(last word of `prev`)) ^ rcon.
    #[target_feature(enable = "aes,sse2")]
    fn even<const RCON: i32>(two_back: __m128i, prev: __m128i) -> __m128i {
        let t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128::<RCON>(prev), 0xff);
        _mm_xor_si128(spread(two_back), t)
    }

    /// An odd round key: SubWord(last word of `prev`), no rotation or rcon.
    #[target_feature(enable = "aes,sse2")]
    fn odd(two_back: __m128i, prev: __m128i) -> __m128i {
        let t = _mm_shuffle_epi32(_mm_aeskeygenassist_si128::<0>(prev), 0xaa);
        _mm_xor_si128(spread(two_back), t)
    }

    /// The 15 round keys of AES-256 (FIPS-197 5.2).
    #[target_feature(enable = "aes,sse2")]
    fn expand_key(key: &[u8; 32]) -> [__m128i; 15] {
        // SAFETY: two 16-byte unaligned loads from a 32-byte array.
        let (k0, k1) = unsafe {
            (
                _mm_loadu_si128(key.as_ptr().cast()),
                _mm_loadu_si128(key.as_ptr().add(16).cast()),
            )
        };
        let k2 = even::<0x01>(k0, k1);
        let k3 = odd(k1, k2);
        let k4 = even::<0x02>(k2, k3);
        let k5 = odd(k3, k4);
        let k6 = even::<0x04>(k4, k5);
        let k7 = odd(k5, k6);
        let k8 = even::<0x08>(k6, k7);
        let k9 = odd(k7, k8);
        let k10 = even::<0x10>(k8, k9);
        let k11 = odd(k9, k10);
        let k12 = even::<0x20>(k10, k11);
        let k13 = odd(k11, k12);
        let k14 = even::<0x40>(k12, k13);
        [
            k0, k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12, k13, k14,
        ]
    }

    /// One keystream block, for the ragged ends.
    #[target_feature(enable = "aes,sse2,ssse3")]
    fn block(rk: &[__m128i; 15], counter: u64) -> [u8; 16] {
        let bswap = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f);
        let mut b = _mm_shuffle_epi8(_mm_set_epi64x(0, counter as i64), bswap);
        b = _mm_xor_si128(b, rk[0]);
        for k in &rk[1..14] {
            b = _mm_aesenc_si128(b, *k);
        }
        b = _mm_aesenclast_si128(b, rk[14]);
        let mut out = [0u8; 16];
        // SAFETY: a 16-byte unaligned store into a 16-byte array.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), b) };
        out
    }

    fn xor(dst: &mut [u8], ks: &[u8]) {
        for (d, k) in dst.iter_mut().zip(ks) {
            *d ^= k;
        }
    }

    /// Eight 512-bit registers of four blocks each per step: enough
    /// independent AESENCs in flight to cover the instruction's latency.
    const LANES: usize = 8;
    const STEP: usize = 64 * LANES;

    /// # Safety
    /// The CPU must have VAES, AVX-512F, AVX-512BW and AES-NI, and
    /// `fits(offset, buf.len())` must hold.
    #[target_feature(enable = "aes,sse2,ssse3,avx512f,avx512bw,vaes")]
    pub unsafe fn apply(key: &[u8; 32], offset: u64, mut buf: &mut [u8]) {
        let rk = expand_key(key);
        let mut counter = offset / 16;
        let skip = (offset % 16) as usize;
        if skip != 0 {
            let n = buf.len().min(16 - skip);
            xor(&mut buf[..n], &block(&rk, counter)[skip..skip + n]);
            buf = &mut buf[n..];
            counter += 1;
        }
        let rkz: [__m512i; 15] = std::array::from_fn(|i| _mm512_broadcast_i32x4(rk[i]));
        // Counters are kept as little-endian u64 in each lane's low half
        // and byte-swapped into the big-endian block.
        let bswap =
            _mm512_broadcast_i32x4(_mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0a0b_0c0d_0e0f));
        let mut steps = buf.chunks_exact_mut(STEP);
        for piece in &mut steps {
            let mut s: [__m512i; LANES] = std::array::from_fn(|j| {
                let c = (counter + 4 * j as u64) as i64;
                let v = _mm512_set_epi64(0, c + 3, 0, c + 2, 0, c + 1, 0, c);
                _mm512_xor_si512(_mm512_shuffle_epi8(v, bswap), rkz[0])
            });
            for k in &rkz[1..14] {
                for x in &mut s {
                    *x = _mm512_aesenc_epi128(*x, *k);
                }
            }
            for (j, x) in s.iter().enumerate() {
                let p = piece[64 * j..64 * j + 64].as_mut_ptr().cast::<__m512i>();
                // SAFETY: `p` points at 64 bytes of `piece`; unaligned
                // load and store.
                unsafe {
                    let ks = _mm512_aesenclast_epi128(*x, rkz[14]);
                    _mm512_storeu_si512(p, _mm512_xor_si512(_mm512_loadu_si512(p), ks));
                }
            }
            counter += 4 * LANES as u64;
        }
        for piece in steps.into_remainder().chunks_mut(16) {
            let n = piece.len();
            xor(piece, &block(&rk, counter)[..n]);
            counter += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any key, offset and length: the same bytes as the `aes` crate's
        /// CTR (on a CPU without VAES both sides are that crate).
        #[test]
        fn equals_the_aes_crate(
            key in any::<[u8; 32]>(),
            offset in prop_oneof![0u64..64, 0u64..(1 << 20)],
            len in prop_oneof![0usize..100, 0usize..5000],
            seed in any::<u8>(),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut fast = data.clone();
            apply_keystream_at(&key, offset, &mut fast);
            let mut reference = data;
            portable(&key, offset, &mut reference);
            prop_assert_eq!(fast, reference);
        }
    }

    #[test]
    fn a_whole_chunk_equals_the_aes_crate_and_round_trips() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let data: Vec<u8> = (0..512 * 1024 + 5).map(|i| (i % 251) as u8).collect();
        let mut fast = data.clone();
        apply_keystream_at(&key, 0, &mut fast);
        let mut reference = data.clone();
        portable(&key, 0, &mut reference);
        assert!(fast == reference);
        apply_keystream_at(&key, 0, &mut fast);
        assert!(fast == data);
    }

    #[test]
    fn keystream_blocks_are_aes_of_the_counter() {
        // CTR's keystream block i is AES-256(key, i as a big-endian block).
        // The raw cipher is pinned to FIPS-197 C.3 first.
        use aes::cipher::{BlockEncrypt, KeyInit};
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let aes = aes::Aes256::new(&key.into());
        let mut p = aes::Block::from(std::array::from_fn::<u8, 16, _>(|i| (i * 0x11) as u8));
        aes.encrypt_block(&mut p);
        assert_eq!(hex::encode(p), "8ea2b7ca516745bfeafc49904b496089");
        let mut ks = vec![0u8; 16 * 40];
        apply_keystream_at(&key, 0, &mut ks);
        for (i, got) in ks.chunks(16).enumerate() {
            let mut b = aes::Block::from((i as u128).to_be_bytes());
            aes.encrypt_block(&mut b);
            assert_eq!(got, &b[..], "block {i}");
        }
    }

    #[test]
    fn offsets_beyond_the_fast_path_use_the_reference() {
        let key = [9u8; 32];
        let offset = (1u64 << 60) - 8;
        let mut fast = vec![0u8; 40];
        apply_keystream_at(&key, offset, &mut fast);
        let mut reference = vec![0u8; 40];
        portable(&key, offset, &mut reference);
        assert_eq!(fast, reference);
    }
}
