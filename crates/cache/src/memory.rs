//! The memory tier: verified chunks as [`Bytes`] (a hit is a reference
//! count increment), bounded in bytes, LRU-K eviction on a logical clock.
//!
//! Private to one process. Every call holds the tier's mutex for a map
//! lookup and a B-tree update, never across an `.await` or any I/O.

use std::collections::HashMap;

use bytes::Bytes;
use kindling_chunk::ChunkName;

use crate::LruK;

#[derive(Debug)]
pub(crate) struct MemoryTier {
    bound: u64,
    used: u64,
    chunks: HashMap<ChunkName, Bytes>,
    lru: LruK<ChunkName>,
    evictions: u64,
}

impl MemoryTier {
    pub(crate) fn new(bound: u64, k: usize) -> Self {
        MemoryTier {
            bound,
            used: 0,
            chunks: HashMap::new(),
            lru: LruK::new(k),
            evictions: 0,
        }
    }

    /// The chunk, recording an access.
    pub(crate) fn get(&mut self, name: &ChunkName) -> Option<Bytes> {
        let bytes = self.chunks.get(name)?.clone();
        self.lru.access(*name);
        Some(bytes)
    }

    /// Adds a verified chunk, evicting others first as needed: as in
    /// LRU-K, the new entry itself is never the victim of its own
    /// admission (else a tier full of K-times-read chunks would admit
    /// nothing). A chunk larger than the whole tier is not kept.
    pub(crate) fn insert(&mut self, name: ChunkName, bytes: Bytes) {
        if self.chunks.contains_key(&name) {
            self.lru.access(name);
            return;
        }
        let size = bytes.len() as u64;
        if size > self.bound {
            return;
        }
        while self.used + size > self.bound {
            let Some(victim) = self.lru.pop_victim() else {
                break;
            };
            if let Some(gone) = self.chunks.remove(&victim) {
                self.used -= gone.len() as u64;
                self.evictions += 1;
            }
        }
        self.used += size;
        self.chunks.insert(name, bytes);
        self.lru.access(name);
    }

    /// Bytes held.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Chunks evicted so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, name: &ChunkName) -> bool {
        self.chunks.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(i: u16, len: usize) -> (ChunkName, Bytes) {
        let mut data = vec![0u8; len];
        data.iter_mut()
            .enumerate()
            .for_each(|(j, b)| *b = (j as u16 ^ i) as u8);
        data.extend_from_slice(&i.to_le_bytes());
        let bytes = Bytes::from(data);
        (ChunkName::of(&bytes), bytes)
    }

    #[test]
    fn a_scan_does_not_evict_a_chunk_read_twice() {
        let mut tier = MemoryTier::new(10 * 1002, 2);
        let (hot, hot_bytes) = chunk(0, 1000);
        tier.insert(hot, hot_bytes);
        assert!(tier.get(&hot).is_some());
        let (early, early_bytes) = chunk(1, 1000);
        tier.insert(early, early_bytes);
        for i in 2..200 {
            let (name, bytes) = chunk(i, 1000);
            tier.insert(name, bytes);
            assert!(tier.used() <= 10 * 1002);
        }
        assert!(tier.contains(&hot));
        assert!(!tier.contains(&early));
        assert_eq!(tier.evictions(), 200 - 10);
    }

    proptest! {
        #[test]
        fn stays_within_its_bound(
            bound in 0u64..20_000,
            ops in prop::collection::vec((0u16..64, 0usize..3000, any::<bool>()), 0..400),
        ) {
            let mut tier = MemoryTier::new(bound, 2);
            let mut sizes = HashMap::new();
            for (i, len, read) in ops {
                // One size per name, as for real chunks.
                let len = *sizes.entry(i).or_insert(len);
                let (name, bytes) = chunk(i, len);
                if read {
                    if let Some(got) = tier.get(&name) {
                        prop_assert_eq!(got, bytes);
                    }
                } else {
                    tier.insert(name, bytes);
                }
                prop_assert!(tier.used() <= bound);
                let sum: u64 = tier.chunks.values().map(|b| b.len() as u64).sum();
                prop_assert_eq!(sum, tier.used());
                prop_assert_eq!(tier.lru.len(), tier.chunks.len());
            }
        }
    }
}
