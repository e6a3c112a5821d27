//! Erasure coding of one chunk into `k` data + `m` parity stripes
//! (DESIGN.md section 4).
//!
//! The chunk is cut into `k` equal parts (the last one zero padded); parity
//! is plain XOR when `m == 1` (the paper's 4 + 1 layout, and the fast path)
//! and Reed-Solomon (`reed-solomon-simd`, O(n log n), SIMD) when `m > 1`.
//! Any `k` of the `k + m` stripes rebuild the chunk.
//!
//! Every stripe is self-describing and self-checking, so a reader can throw
//! out a damaged stripe, or one written under another layout, on its own,
//! before it spends a rebuild (and a SHA-256 of the whole chunk) on it:
//!
//! ```text
//! offset size  field
//!      0    4  magic "KAZS"
//!      4    1  format version (1)
//!      5    1  k (data stripes)
//!      6    1  m (parity stripes)
//!      7    1  index of this stripe, 0..k+m (data first, then parity)
//!      8    4  chunk length in bytes, u32 little endian
//!     12    4  body length in bytes, u32 little endian
//!     16    8  XXH3-64 of bytes 0..16 followed by the body, little endian
//!     24    -  body
//! ```
//!
//! The body length is `ceil(chunk_len / k)` rounded up to an even number,
//! and at least 2: `reed-solomon-simd` needs non-empty shards of even size,
//! and one rule for all layouts keeps the format simple. It is implied by
//! the chunk length and `k`, and stored anyway so that a truncated stripe
//! is reported as such.
//!
//! All stripes of one chunk come out of [`encode`] as slices of one buffer:
//! one allocation and one copy of the chunk, whatever `k + m` is.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};
use xxhash_rust::xxh3::Xxh3;

/// The first four bytes of every stripe.
pub const MAGIC: [u8; 4] = *b"KAZS";
/// The stripe format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of header in front of every stripe body.
pub const HEADER_LEN: usize = 24;
/// Most stripes (`k + m`) a layout may have. Placement spreads the stripes
/// of a chunk over distinct nodes and an AZ cache cluster has tens of nodes,
/// so more would not fit anyway; the limit also keeps indices in one byte
/// and the rebuild search small.
pub const MAX_STRIPES: usize = 32;

/// A stripe could not be checked or a chunk could not be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// A layout string or pair of counts is not a usable `K+M`.
    #[error("invalid stripe layout {text:?}: {reason}")]
    InvalidLayout { text: String, reason: &'static str },
    /// The stripe is shorter than its header.
    #[error("stripe {index} is truncated: {len} bytes")]
    Truncated { index: u8, len: usize },
    /// The stripe does not start with [`MAGIC`].
    #[error("stripe {index} is not a kindling stripe (bad magic)")]
    Magic { index: u8 },
    /// The stripe was written by a format this build does not read.
    #[error("stripe {index} has format version {version}, this build reads version {VERSION}")]
    Version { index: u8, version: u8 },
    /// The checksum over header and body does not match: the stripe was
    /// damaged in storage or in flight.
    #[error("stripe {index} is corrupt (checksum mismatch)")]
    Checksum { index: u8 },
    /// The stripe belongs to another `k + m` layout.
    #[error("stripe {index} was written as {found}, expected {expected}")]
    Layout {
        index: u8,
        expected: Stripes,
        found: String,
    },
    /// The stripe says it has another index than the one it was stored at.
    #[error("stripe stored as index {index} says it is stripe {found}")]
    Index { index: u8, found: u8 },
    /// The stripe's lengths do not fit together.
    #[error("stripe {index} is malformed: {reason}")]
    Malformed { index: u8, reason: &'static str },
    /// The stripe is valid but belongs to a chunk of another length than
    /// the other stripes given with it.
    #[error("stripe {index} is of a {found}-byte chunk, the others of a {expected}-byte chunk")]
    Inconsistent {
        index: u8,
        expected: usize,
        found: usize,
    },
    /// Fewer than `k` valid stripes were given.
    #[error("{valid} valid stripes, {needed} needed to rebuild the chunk")]
    TooFew { valid: usize, needed: usize },
    /// The Reed-Solomon codec refused its input (a bug: inputs are checked).
    #[error("reed-solomon: {0}")]
    Codec(String),
}

/// An erasure code layout: `k` data stripes and `m` parity stripes.
///
/// Written and parsed as `K+M`, e.g. `4+1`. The default, 4 + 1 with XOR
/// parity, is the paper's: one stripe in five may be lost at 25 % storage
/// overhead.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stripes {
    k: u8,
    m: u8,
}

impl Stripes {
    /// The paper's layout, 4 data + 1 XOR parity.
    pub const DEFAULT: Stripes = Stripes { k: 4, m: 1 };

    /// `k` data and `m` parity stripes; `k >= 1` and `k + m <=`
    /// [`MAX_STRIPES`].
    pub fn new(k: u8, m: u8) -> Result<Stripes, StripeError> {
        let invalid = |reason| StripeError::InvalidLayout {
            text: format!("{k}+{m}"),
            reason,
        };
        if k == 0 {
            return Err(invalid("at least one data stripe is needed"));
        }
        if usize::from(k) + usize::from(m) > MAX_STRIPES {
            return Err(invalid("at most 32 stripes in all are supported"));
        }
        if m > 1 && !ReedSolomonEncoder::supports(k.into(), m.into()) {
            return Err(invalid("the reed-solomon codec does not support it"));
        }
        Ok(Stripes { k, m })
    }

    /// Data stripes: any `k` stripes rebuild the chunk.
    pub fn k(self) -> u8 {
        self.k
    }

    /// Parity stripes: how many stripes (nodes) may be lost.
    pub fn m(self) -> u8 {
        self.m
    }

    /// All stripes, `k + m`.
    pub fn total(self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// The body length of every stripe of a `chunk_len`-byte chunk.
    pub fn body_len(self, chunk_len: usize) -> usize {
        let part = chunk_len.div_ceil(usize::from(self.k));
        (part + (part & 1)).max(2)
    }
}

impl Default for Stripes {
    fn default() -> Stripes {
        Stripes::DEFAULT
    }
}

impl fmt::Display for Stripes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

impl fmt::Debug for Stripes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stripes({}+{})", self.k, self.m)
    }
}

impl FromStr for Stripes {
    type Err = StripeError;

    fn from_str(text: &str) -> Result<Stripes, StripeError> {
        let invalid = |reason| StripeError::InvalidLayout {
            text: text.to_owned(),
            reason,
        };
        let (k, m) = text
            .trim()
            .split_once('+')
            .ok_or_else(|| invalid("expected K+M, for example 4+1"))?;
        let count = |s: &str| {
            s.trim()
                .parse::<u8>()
                .map_err(|_| invalid("K and M must be whole numbers from 0 to 32"))
        };
        let (k, m) = (count(k)?, count(m)?);
        Stripes::new(k, m).map_err(|e| match e {
            StripeError::InvalidLayout { reason, .. } => invalid(reason),
            other => other,
        })
    }
}

/// What a valid stripe header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeInfo {
    /// Length of the whole chunk.
    pub chunk_len: usize,
    /// Length of this stripe's body (the same for all stripes of a chunk).
    pub body_len: usize,
}

/// Splits `chunk` into `s.k()` data stripes and adds `s.m()` parity
/// stripes; stripe `i` of the result has index `i`.
///
/// # Panics
///
/// If `chunk` is 4 GiB or larger (its length must fit the header).
pub fn encode(chunk: &[u8], s: Stripes) -> Vec<Bytes> {
    let chunk_len = u32::try_from(chunk.len()).expect("a chunk is smaller than 4 GiB");
    let k = usize::from(s.k);
    let body = s.body_len(chunk.len());
    let stride = HEADER_LEN + body;
    let mut buf = Vec::with_capacity(s.total() * stride);
    for i in 0..k {
        buf.extend_from_slice(&[0; HEADER_LEN]);
        let start = (i * body).min(chunk.len());
        let part = &chunk[start..(start + body).min(chunk.len())];
        buf.extend_from_slice(part);
        buf.resize(buf.len() + body - part.len(), 0);
    }
    match s.m {
        0 => {}
        1 => {
            buf.extend_from_slice(&[0; HEADER_LEN]);
            buf.extend_from_within(HEADER_LEN..stride);
            let (data, parity) = buf.split_at_mut(k * stride + HEADER_LEN);
            for i in 1..k {
                xor_into(parity, &data[i * stride + HEADER_LEN..(i + 1) * stride]);
            }
        }
        m => RS_ENCODER.with_borrow_mut(|slot| {
            // Checked by `Stripes::new` and `body_len` (even, non-zero), so
            // the codec cannot refuse; a refusal would be a bug here.
            let encoder = match slot {
                Some(e) => {
                    e.reset(k, m.into(), body).expect("layout was checked");
                    e
                }
                None => slot.insert(
                    ReedSolomonEncoder::new(k, m.into(), body).expect("layout was checked"),
                ),
            };
            for i in 0..k {
                encoder
                    .add_original_shard(&buf[i * stride + HEADER_LEN..(i + 1) * stride])
                    .expect("shard sizes are equal");
            }
            let result = encoder.encode().expect("all shards were added");
            for parity in result.recovery_iter() {
                buf.extend_from_slice(&[0; HEADER_LEN]);
                buf.extend_from_slice(parity);
            }
        }),
    }
    debug_assert_eq!(buf.len(), s.total() * stride);
    for (index, slot) in buf.chunks_exact_mut(stride).enumerate() {
        // `index < MAX_STRIPES` and `body <= chunk_len + 2 < 2^32`.
        let header = Header {
            k: s.k,
            m: s.m,
            index: index as u8,
            chunk_len,
            body_len: body as u32,
        };
        header.write(slot);
    }
    let buf = Bytes::from(buf);
    (0..s.total())
        .map(|i| buf.slice(i * stride..(i + 1) * stride))
        .collect()
}

/// Checks one stripe, stored at `index`, against layout `s`: magic,
/// version, checksum, layout, index and lengths.
pub fn check(index: u8, stripe: &[u8], s: Stripes) -> Result<StripeInfo, StripeError> {
    if stripe.len() < HEADER_LEN {
        return Err(StripeError::Truncated {
            index,
            len: stripe.len(),
        });
    }
    let (head, body) = stripe.split_at(HEADER_LEN);
    if head[0..4] != MAGIC {
        return Err(StripeError::Magic { index });
    }
    if head[4] != VERSION {
        return Err(StripeError::Version {
            index,
            version: head[4],
        });
    }
    if checksum(head, body) != u64::from_le_bytes(head_array(&head[16..24])) {
        return Err(StripeError::Checksum { index });
    }
    let (k, m, found) = (head[5], head[6], head[7]);
    if (k, m) != (s.k, s.m) {
        return Err(StripeError::Layout {
            index,
            expected: s,
            found: format!("{k}+{m}"),
        });
    }
    if found != index {
        return Err(StripeError::Index { index, found });
    }
    if usize::from(index) >= s.total() {
        return Err(StripeError::Malformed {
            index,
            reason: "index beyond the layout",
        });
    }
    let chunk_len = u32::from_le_bytes(head_array(&head[8..12])) as usize;
    let body_len = u32::from_le_bytes(head_array(&head[12..16])) as usize;
    if body_len != body.len() {
        return Err(StripeError::Malformed {
            index,
            reason: "body length differs from the header",
        });
    }
    if body_len != s.body_len(chunk_len) {
        return Err(StripeError::Malformed {
            index,
            reason: "body length does not fit the chunk length",
        });
    }
    Ok(StripeInfo {
        chunk_len,
        body_len,
    })
}

/// Rebuilds a chunk from any `s.k()` valid stripes among `stripes`, given
/// as `(index, stripe)`.
///
/// Invalid stripes (see [`check`]) and repeated indices are skipped as long
/// as `k` valid ones remain; data stripes are preferred, so when all of them
/// are present no parity is computed. If fewer than `k` are valid the error
/// is the first stripe's rejection, or [`StripeError::TooFew`].
///
/// The result is only as good as the stripes: it is the caller's job to
/// check it against the chunk's name.
pub fn decode(stripes: &[(u8, Bytes)], s: Stripes) -> Result<Bytes, StripeError> {
    let mut valid: Vec<Checked<'_>> = Vec::with_capacity(stripes.len());
    let mut first_error = None;
    for (index, stripe) in stripes {
        match check(*index, stripe, s) {
            Ok(info) => {
                if valid.iter().any(|c| c.index == *index) {
                    continue;
                }
                if let Some(first) = valid.first() {
                    if first.info != info {
                        first_error.get_or_insert(StripeError::Inconsistent {
                            index: *index,
                            expected: first.info.chunk_len,
                            found: info.chunk_len,
                        });
                        continue;
                    }
                }
                valid.push(Checked {
                    index: *index,
                    stripe,
                    info,
                });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if valid.len() < usize::from(s.k) {
        return Err(first_error.unwrap_or(StripeError::TooFew {
            valid: valid.len(),
            needed: s.k.into(),
        }));
    }
    rebuild(&valid, s)
}

/// A stripe that passed [`check`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked<'a> {
    pub index: u8,
    pub stripe: &'a Bytes,
    pub info: StripeInfo,
}

impl Checked<'_> {
    fn body(&self) -> &[u8] {
        &self.stripe[HEADER_LEN..]
    }
}

/// Rebuilds from stripes that passed [`check`] against `s`, with distinct
/// indices. Checks that they describe the same chunk.
pub(crate) fn rebuild(stripes: &[Checked<'_>], s: Stripes) -> Result<Bytes, StripeError> {
    let k = usize::from(s.k);
    let Some(first) = stripes.first() else {
        return Err(StripeError::TooFew {
            valid: 0,
            needed: k,
        });
    };
    let info = first.info;
    if let Some(odd) = stripes.iter().find(|c| c.info != info) {
        return Err(StripeError::Inconsistent {
            index: odd.index,
            expected: info.chunk_len,
            found: odd.info.chunk_len,
        });
    }
    let mut data: Vec<Option<&Checked<'_>>> = vec![None; k];
    let mut parity: Vec<&Checked<'_>> = Vec::new();
    for c in stripes {
        match data.get_mut(usize::from(c.index)) {
            Some(slot) => *slot = Some(c),
            None => parity.push(c),
        }
    }
    let missing = data.iter().filter(|d| d.is_none()).count();
    if missing > parity.len() {
        return Err(StripeError::TooFew {
            valid: k - missing + parity.len(),
            needed: k,
        });
    }
    let (chunk_len, body) = (info.chunk_len, info.body_len);

    // One data stripe: the chunk is a prefix of it, and with XOR parity the
    // parity stripe is a copy of it; no copy either way.
    if k == 1 {
        if let Some(c) = data[0].or_else(|| parity.first().copied().filter(|_| s.m == 1)) {
            return Ok(c.stripe.slice(HEADER_LEN..HEADER_LEN + chunk_len));
        }
    }

    let mut out = Vec::with_capacity(chunk_len);
    if missing == 0 {
        for c in data.iter().flatten() {
            let take = (chunk_len - out.len()).min(body);
            out.extend_from_slice(&c.body()[..take]);
        }
    } else if s.m == 1 {
        // XOR parity: the one missing data stripe is the parity XOR the
        // others, computed straight into the output.
        for (i, d) in data.iter().enumerate() {
            let take = (chunk_len - out.len()).min(body);
            match d {
                Some(c) => out.extend_from_slice(&c.body()[..take]),
                None => {
                    let start = out.len();
                    out.extend_from_slice(&parity[0].body()[..take]);
                    for (j, other) in data.iter().enumerate() {
                        if let (true, Some(o)) = (j != i, other) {
                            xor_into(&mut out[start..], &o.body()[..take]);
                        }
                    }
                }
            }
        }
    } else {
        RS_DECODER.with_borrow_mut(|slot| -> Result<(), StripeError> {
            let codec = |e: reed_solomon_simd::Error| StripeError::Codec(e.to_string());
            let decoder = match slot {
                Some(d) => {
                    d.reset(k, s.m.into(), body).map_err(codec)?;
                    d
                }
                None => slot.insert(ReedSolomonDecoder::new(k, s.m.into(), body).map_err(codec)?),
            };
            for c in data.iter().flatten() {
                decoder
                    .add_original_shard(c.index.into(), c.body())
                    .map_err(codec)?;
            }
            for c in parity.iter().take(missing) {
                decoder
                    .add_recovery_shard(usize::from(c.index) - k, c.body())
                    .map_err(codec)?;
            }
            let restored = decoder.decode().map_err(codec)?;
            for (i, d) in data.iter().enumerate() {
                let take = (chunk_len - out.len()).min(body);
                let part = match d {
                    Some(c) => c.body(),
                    None => restored
                        .restored_original(i)
                        .ok_or_else(|| StripeError::Codec(format!("shard {i} not restored")))?,
                };
                out.extend_from_slice(&part[..take]);
            }
            Ok(())
        })?;
    }
    debug_assert_eq!(out.len(), chunk_len);
    Ok(Bytes::from(out))
}

thread_local! {
    // The codecs keep their working space between calls; a new one
    // allocates and zeroes about (k + m) * body bytes.
    static RS_ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static RS_DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

struct Header {
    k: u8,
    m: u8,
    index: u8,
    chunk_len: u32,
    body_len: u32,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `slot`,
    /// whose body must already be in place (the checksum covers it).
    fn write(&self, slot: &mut [u8]) {
        let (head, body) = slot.split_at_mut(HEADER_LEN);
        head[0..4].copy_from_slice(&MAGIC);
        head[4] = VERSION;
        head[5] = self.k;
        head[6] = self.m;
        head[7] = self.index;
        head[8..12].copy_from_slice(&self.chunk_len.to_le_bytes());
        head[12..16].copy_from_slice(&self.body_len.to_le_bytes());
        let sum = checksum(head, body);
        head[16..24].copy_from_slice(&sum.to_le_bytes());
    }
}

/// XXH3-64 over the first 16 header bytes and the body.
fn checksum(head: &[u8], body: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&head[..16]);
    h.update(body);
    h.digest()
}

fn head_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(bytes);
    out
}

/// `dst ^= src` over the common length; written as a plain loop, which the
/// compiler turns into SIMD.
fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layouts() -> impl Strategy<Value = Stripes> {
        prop_oneof![
            Just((4, 1)),
            Just((4, 2)),
            Just((2, 1)),
            Just((1, 0)),
            Just((4, 0)),
            Just((1, 1)),
            Just((1, 3)),
            Just((3, 3)),
            Just((10, 4)),
            (1u8..=8, 0u8..=4),
        ]
        .prop_map(|(k, m)| Stripes::new(k, m).unwrap())
    }

    fn chunk_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..=64,
            Just(512 * 1024),
            Just(512 * 1024 - 1),
            0usize..=512 * 1024,
        ]
    }

    /// A random chunk, a layout and a random `k`-subset (in random order)
    /// of its stripe indices.
    fn case() -> impl Strategy<Value = (Vec<u8>, Stripes, Vec<u8>)> {
        (layouts(), chunk_len(), any::<u64>()).prop_flat_map(|(s, len, seed)| {
            let indices: Vec<u8> = (0..s.total() as u8).collect();
            let chunk = pseudo_random(len, seed);
            (
                Just(chunk),
                Just(s),
                Just(indices)
                    .prop_shuffle()
                    .prop_map(move |v| v[..usize::from(s.k())].to_vec()),
            )
        })
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn pick(stripes: &[Bytes], indices: &[u8]) -> Vec<(u8, Bytes)> {
        indices
            .iter()
            .map(|&i| (i, stripes[usize::from(i)].clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_k_stripes_rebuild_the_chunk((chunk, s, subset) in case()) {
            let stripes = encode(&chunk, s);
            prop_assert_eq!(stripes.len(), s.total());
            for (i, st) in stripes.iter().enumerate() {
                let info = check(i as u8, st, s).unwrap();
                prop_assert_eq!(info.chunk_len, chunk.len());
            }
            let rebuilt = decode(&pick(&stripes, &subset), s).unwrap();
            prop_assert!(rebuilt[..] == chunk[..]);
        }

        #[test]
        fn a_corrupt_stripe_is_rejected(
            (chunk, s, subset) in case(),
            victim in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let stripes = encode(&chunk, s);
            let mut given = pick(&stripes, &subset);
            let v = victim.index(given.len());
            let mut bad = given[v].1.to_vec();
            let at = at.index(bad.len());
            bad[at] ^= flip;
            let index = given[v].0;
            prop_assert!(check(index, &bad, s).is_err());
            given[v].1 = Bytes::from(bad);
            // With only k stripes, one of them bad, the rebuild must fail...
            prop_assert!(decode(&given, s).is_err());
            // ...and with a good stripe more it must succeed.
            if let Some(spare) = (0..s.total() as u8).find(|i| !subset.contains(i)) {
                given.push((spare, stripes[usize::from(spare)].clone()));
                let rebuilt = decode(&given, s).unwrap();
                prop_assert!(rebuilt[..] == chunk[..]);
            }
        }

        #[test]
        fn stripes_of_another_layout_are_rejected(
            (chunk, s, subset) in case(),
            other in layouts(),
        ) {
            prop_assume!(other != s);
            let stripes = encode(&chunk, other);
            let given: Vec<(u8, Bytes)> = subset
                .iter()
                .filter(|&&i| usize::from(i) < other.total())
                .map(|&i| (i, stripes[usize::from(i)].clone()))
                .collect();
            for (i, st) in &given {
                let err = check(*i, st, s).unwrap_err();
                prop_assert!(matches!(err, StripeError::Layout { .. }), "{err}");
            }
            prop_assert!(decode(&given, s).is_err());
        }
    }

    #[test]
    fn layout_parses_and_prints() {
        assert_eq!("4+1".parse::<Stripes>().unwrap(), Stripes::DEFAULT);
        assert_eq!(" 4 + 2 ".parse::<Stripes>().unwrap().to_string(), "4+2");
        assert_eq!(Stripes::default().to_string(), "4+1");
        for bad in ["", "4", "4-1", "0+1", "x+1", "4+y", "30+3", "300+1", "-1+1"] {
            let err = bad.parse::<Stripes>().unwrap_err();
            assert!(matches!(err, StripeError::InvalidLayout { .. }), "{bad}");
        }
        let msg = "0+1".parse::<Stripes>().unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid stripe layout \"0+1\": at least one data stripe is needed"
        );
    }

    #[test]
    fn header_is_as_documented() {
        let s = Stripes::new(4, 2).unwrap();
        let stripes = encode(&[7; 1001], s);
        let st = &stripes[5];
        assert_eq!(&st[0..4], b"KAZS");
        assert_eq!(st[4..8], [1, 4, 2, 5]);
        assert_eq!(st[8..12], 1001u32.to_le_bytes());
        assert_eq!(st[12..16], 252u32.to_le_bytes());
        assert_eq!(st.len(), HEADER_LEN + 252);
    }

    #[test]
    fn bad_stripes_get_their_own_errors() {
        let s = Stripes::DEFAULT;
        let stripes = encode(&[1; 1000], s);
        let e = |i: u8, b: &[u8]| check(i, b, s).unwrap_err();
        assert!(matches!(
            e(0, &stripes[0][..10]),
            StripeError::Truncated { .. }
        ));
        assert!(matches!(
            e(0, &stripes[0][..100]),
            StripeError::Checksum { .. }
        ));
        assert!(matches!(e(1, &stripes[0]), StripeError::Index { .. }));
        let mut b = stripes[0].to_vec();
        b[0] = b'X';
        assert!(matches!(e(0, &b), StripeError::Magic { .. }));
        b[0] = b'K';
        b[4] = 2;
        assert!(matches!(e(0, &b), StripeError::Version { .. }));
        // Stripes of another chunk of another length do not mix.
        let other = encode(&[1; 2000], s);
        let mixed = vec![
            (0, stripes[0].clone()),
            (1, other[1].clone()),
            (2, stripes[2].clone()),
            (3, stripes[3].clone()),
        ];
        assert!(matches!(
            decode(&mixed, s).unwrap_err(),
            StripeError::Inconsistent { .. }
        ));
        assert!(matches!(
            decode(&mixed[..2], s).unwrap_err(),
            StripeError::Inconsistent { .. }
        ));
        assert!(matches!(
            decode(&[], s).unwrap_err(),
            StripeError::TooFew {
                valid: 0,
                needed: 4
            }
        ));
    }
}
