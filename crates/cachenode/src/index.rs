//! What the node holds and where: both tiers' entries, their LRU-K
//! histories and byte counts, and the rules that move entries between
//! tiers. Pure and in memory; the node calls it under one mutex and does
//! every file operation outside that lock.
//!
//! Both tiers share one logical clock, so a history can move from the
//! flash tier to the memory tier on promotion and keep its meaning there.
//! Every stamp goes to exactly one key, so no two entries of a tier ever
//! tie.
//!
//! Per entry the index keeps the key (33 bytes), the LRU-K history (K
//! stamps) and, on flash, a [`FlashMeta`] (16 bytes): about 460 bytes
//! with the hash map and B-tree overhead (measured with 500 000 entries).
//! That cost grows with the flash tier, not with the memory tier, so it is
//! charged to the memory tier: its bound is the configured memory less
//! [`FLASH_ENTRY_CHARGE`] per flash entry, and memory evicts when flash
//! grows. The node's memory then stays near its configured size whatever
//! the flash tier's.

use std::collections::HashMap;

use bytes::Bytes;
use kindling_cache::LruK;

use crate::{StripeKey, TierHit, FLASH_ENTRY_CHARGE};

/// Size of an entry in its tier's byte bound.
pub(crate) trait Weighed {
    fn weight(&self) -> u64;
}

impl Weighed for Bytes {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

/// A flash entry as the index knows it: enough to find and check its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlashMeta {
    /// Body length in bytes (stripes are at most [`crate::MAX_STRIPE_BYTES`]).
    pub(crate) len: u32,
    /// Stripe GETs of this entry (from either tier) since it was stored,
    /// saturating; decides promotion.
    pub(crate) reads: u8,
    /// Generation: names the entry's file, unique per write, so a file
    /// being replaced or deleted is never confused with its successor.
    pub(crate) gen: u64,
}

impl Weighed for FlashMeta {
    fn weight(&self) -> u64 {
        u64::from(self.len)
    }
}

/// One tier: entries bounded in bytes, evicted by LRU-K.
#[derive(Debug)]
pub(crate) struct Tier<V> {
    bound: u64,
    used: u64,
    entries: HashMap<StripeKey, V>,
    lru: LruK<StripeKey>,
    evictions: u64,
}

/// What [`Tier::insert`] displaced.
#[derive(Debug)]
pub(crate) struct Displaced<V> {
    /// The key's previous value, if it had one.
    pub(crate) replaced: Option<V>,
    /// Entries evicted to make room, victims first.
    pub(crate) evicted: Vec<(StripeKey, V)>,
}

impl<V: Weighed> Tier<V> {
    pub(crate) fn new(bound: u64, k: usize) -> Self {
        Tier {
            bound,
            used: 0,
            entries: HashMap::new(),
            lru: LruK::new(k),
            evictions: 0,
        }
    }

    pub(crate) fn get(&self, key: &StripeKey) -> Option<&V> {
        self.entries.get(key)
    }

    pub(crate) fn contains(&self, key: &StripeKey) -> bool {
        self.entries.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn bound(&self) -> u64 {
        self.bound
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// (entries, bytes, bound, evictions), for the node's stats.
    pub(crate) fn stat(&self) -> (u64, u64, u64, u64) {
        (self.len() as u64, self.used, self.bound, self.evictions)
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &StripeKey> {
        self.entries.keys()
    }

    /// Records an access to `key` at `stamp` if the tier holds it.
    fn touch(&mut self, key: &StripeKey, stamp: u64) -> Option<&mut V> {
        let value = self.entries.get_mut(key)?;
        self.lru.record_access(*key, stamp);
        Some(value)
    }

    /// Stores `value` under `key` with the access `history` (any order),
    /// merged with the key's earlier history if it was present. Evicts
    /// LRU-K victims first until the value fits; as in LRU-K the new entry
    /// is never the victim of its own admission. A value larger than the
    /// whole tier is not stored (and the key's old value is still
    /// removed: it is stale).
    pub(crate) fn insert(&mut self, key: StripeKey, value: V, history: &[u64]) -> Displaced<V> {
        let mut stamps: Vec<u64> = self
            .lru
            .history(&key)
            .map(<[u64]>::to_vec)
            .unwrap_or_default();
        let replaced = self.remove(&key);
        let size = value.weight();
        if size > self.bound {
            return Displaced {
                replaced,
                evicted: Vec::new(),
            };
        }
        // size <= bound: no underflow.
        let evicted = self.evict_until(self.bound - size);
        stamps.extend_from_slice(history);
        for stamp in stamps {
            self.lru.record_access(key, stamp);
        }
        self.used += size;
        self.entries.insert(key, value);
        Displaced { replaced, evicted }
    }

    /// Forgets `key`, its value and its history.
    pub(crate) fn remove(&mut self, key: &StripeKey) -> Option<V> {
        let value = self.entries.remove(key)?;
        self.lru.remove(key);
        self.used -= value.weight();
        Some(value)
    }

    fn history(&self, key: &StripeKey) -> &[u64] {
        self.lru.history(key).unwrap_or(&[])
    }

    /// Changes the bound, evicting LRU-K victims until the tier fits.
    fn set_bound(&mut self, bound: u64) -> Vec<(StripeKey, V)> {
        self.bound = bound;
        self.evict_until(bound)
    }

    /// Evicts LRU-K victims until the tier holds at most `limit` bytes.
    fn evict_until(&mut self, limit: u64) -> Vec<(StripeKey, V)> {
        let mut evicted = Vec::new();
        while self.used > limit {
            let Some(victim) = self.lru.pop_victim() else {
                debug_assert!(false, "tier uses {} bytes but has no entry", self.used);
                break;
            };
            if let Some(gone) = self.entries.remove(&victim) {
                self.used -= gone.weight();
                self.evictions += 1;
                evicted.push((victim, gone));
            }
        }
        evicted
    }
}

/// What [`Index::lookup`] found.
#[derive(Debug)]
pub(crate) enum Lookup {
    Memory(Bytes),
    /// On flash only: read the file named by `meta`, then call
    /// [`Index::promote`] if `hot`.
    Flash {
        meta: FlashMeta,
        hot: bool,
    },
    Miss,
}

/// A flash file that is no longer indexed and is to be deleted.
pub(crate) type DeadFile = (StripeKey, u64);

/// Both tiers and the moves between them.
#[derive(Debug)]
pub(crate) struct Index {
    k: usize,
    /// The configured memory: the memory tier's bound plus the flash
    /// index's charge.
    memory_bytes: u64,
    /// Bytes charged per flash entry ([`FLASH_ENTRY_CHARGE`]; smaller in
    /// tests).
    flash_entry_charge: u64,
    clock: u64,
    next_gen: u64,
    pub(crate) memory: Tier<Bytes>,
    pub(crate) flash: Tier<FlashMeta>,
    pub(crate) promotions: u64,
    pub(crate) demotions: u64,
}

impl Index {
    pub(crate) fn new(memory_bytes: u64, flash_bytes: u64, k: usize) -> Self {
        Index::with_charge(memory_bytes, flash_bytes, k, FLASH_ENTRY_CHARGE)
    }

    pub(crate) fn with_charge(
        memory_bytes: u64,
        flash_bytes: u64,
        k: usize,
        flash_entry_charge: u64,
    ) -> Self {
        let k = k.max(1);
        Index {
            k,
            memory_bytes,
            flash_entry_charge,
            clock: 0,
            next_gen: 0,
            memory: Tier::new(memory_bytes, k),
            flash: Tier::new(flash_bytes, k),
            promotions: 0,
            demotions: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A generation number no file has yet.
    pub(crate) fn new_gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// Makes every later [`Index::new_gen`] larger than `gen` (used when
    /// the flash directory is scanned at open).
    pub(crate) fn seen_gen(&mut self, gen: u64) {
        self.next_gen = self.next_gen.max(gen);
    }

    /// A stripe GET: records the access in every tier holding the key and
    /// says where to read it from. A memory hit also counts on flash, so
    /// the flash tier does not evict what the memory tier serves.
    pub(crate) fn lookup(&mut self, key: &StripeKey) -> Lookup {
        let stamp = self.tick();
        let flash = self.flash.touch(key, stamp).map(|meta| {
            meta.reads = meta.reads.saturating_add(1);
            *meta
        });
        if let Some(bytes) = self.memory.touch(key, stamp) {
            return Lookup::Memory(bytes.clone());
        }
        match flash {
            Some(meta) => Lookup::Flash {
                meta,
                hot: usize::from(meta.reads) >= self.k,
            },
            None => Lookup::Miss,
        }
    }

    /// A HEAD: the stored length and the tier that would serve it, without
    /// recording an access.
    pub(crate) fn head(&self, key: &StripeKey) -> Option<(u64, TierHit)> {
        if let Some(bytes) = self.memory.get(key) {
            return Some((bytes.len() as u64, TierHit::Memory));
        }
        self.flash
            .get(key)
            .map(|meta| (u64::from(meta.len), TierHit::Flash))
    }

    /// A PUT's memory half: the stripe enters the memory tier with one
    /// access, so a burst of new stripes only ever evicts other once-seen
    /// entries. Returns whether it was stored.
    pub(crate) fn put_memory(&mut self, key: StripeKey, bytes: Bytes) -> bool {
        let stamp = self.tick();
        let displaced = self.memory.insert(key, bytes, &[stamp]);
        self.count_demotions(&displaced.evicted);
        self.memory.contains(&key)
    }

    /// Whether a stripe of `len` bytes can be kept on flash at all.
    pub(crate) fn flash_fits(&self, len: u64) -> bool {
        len <= self.flash.bound()
    }

    /// A PUT's flash half, once the file of generation `gen` is in place.
    /// Returns the files no longer indexed: the key's previous file and
    /// the victims evicted to make room (or the new file itself if it did
    /// not fit).
    pub(crate) fn commit_flash(&mut self, key: StripeKey, len: u32, gen: u64) -> Vec<DeadFile> {
        let stamp = self.tick();
        let reads = self.flash.get(&key).map_or(0, |old| old.reads);
        self.insert_flash(key, FlashMeta { len, reads, gen }, stamp)
    }

    /// Adds a flash entry found at open, `stamp` being its place in the
    /// scan order (oldest first).
    pub(crate) fn restore_flash(&mut self, key: StripeKey, len: u32, gen: u64) -> Vec<DeadFile> {
        let stamp = self.tick();
        self.seen_gen(gen);
        self.insert_flash(key, FlashMeta { len, reads: 0, gen }, stamp)
    }

    fn insert_flash(&mut self, key: StripeKey, meta: FlashMeta, stamp: u64) -> Vec<DeadFile> {
        let displaced = self.flash.insert(key, meta, &[stamp]);
        let mut dead: Vec<DeadFile> = displaced
            .evicted
            .iter()
            .map(|(key, meta)| (*key, meta.gen))
            .collect();
        if let Some(old) = displaced.replaced {
            if old.gen != meta.gen {
                dead.push((key, old.gen));
            }
        }
        if !self.flash.contains(&key) {
            dead.push((key, meta.gen));
        }
        self.rebound_memory();
        dead
    }

    /// Sets the memory tier's bound after the flash tier's entry count
    /// changed, evicting if it shrank.
    fn rebound_memory(&mut self) {
        let charge = (self.flash.len() as u64).saturating_mul(self.flash_entry_charge);
        let evicted = self
            .memory
            .set_bound(self.memory_bytes.saturating_sub(charge));
        self.count_demotions(&evicted);
    }

    /// Forgets the flash entry of `key` if it is still generation `gen`
    /// (its file was found corrupt or missing). Returns whether it was.
    pub(crate) fn drop_flash(&mut self, key: &StripeKey, gen: u64) -> bool {
        if self.flash.get(key).is_some_and(|meta| meta.gen == gen) {
            self.flash.remove(key);
            self.rebound_memory();
            true
        } else {
            false
        }
    }

    /// After a hot flash hit: copies the stripe into the memory tier with
    /// its flash history, if the flash entry is still generation `gen`
    /// and memory does not hold the key already. Returns whether it was
    /// promoted.
    pub(crate) fn promote(&mut self, key: StripeKey, gen: u64, bytes: Bytes) -> bool {
        if self.memory.contains(&key) || self.flash.get(&key).is_none_or(|meta| meta.gen != gen) {
            return false;
        }
        let history = self.flash.history(&key).to_vec();
        let displaced = self.memory.insert(key, bytes, &history);
        self.count_demotions(&displaced.evicted);
        let promoted = self.memory.contains(&key);
        if promoted {
            self.promotions += 1;
        }
        promoted
    }

    /// A memory eviction whose stripe is still on flash is a demotion: the
    /// stripe stays served, from flash. (Memory evictions are counted by
    /// the tier either way.)
    fn count_demotions(&mut self, evicted: &[(StripeKey, Bytes)]) {
        let still_on_flash = evicted
            .iter()
            .filter(|(key, _)| self.flash.contains(key))
            .count();
        self.demotions += still_on_flash as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_chunk::ChunkName;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn key(n: u8) -> StripeKey {
        StripeKey {
            name: ChunkName([n; 32]),
            index: n % 5,
        }
    }

    fn bytes(len: usize) -> Bytes {
        Bytes::from(vec![0xa5; len])
    }

    /// A PUT as the node does it: memory, then flash.
    fn put(index: &mut Index, n: u8, len: usize) {
        index.put_memory(key(n), bytes(len));
        if index.flash_fits(len as u64) {
            let gen = index.new_gen();
            index.commit_flash(key(n), len as u32, gen);
        }
    }

    /// A GET as the node does it: a flash hit that is hot is promoted.
    fn get(index: &mut Index, n: u8) -> Option<TierHit> {
        match index.lookup(&key(n)) {
            Lookup::Memory(_) => Some(TierHit::Memory),
            Lookup::Flash { meta, hot } => {
                if hot {
                    index.promote(key(n), meta.gen, bytes(meta.len as usize));
                }
                Some(TierHit::Flash)
            }
            Lookup::Miss => None,
        }
    }

    #[test]
    fn a_put_scan_does_not_evict_hot_stripes_from_memory() {
        // Memory holds 4 stripes of 100 bytes, flash 40.
        let mut index = Index::with_charge(400, 4000, 2, 0);
        for n in 0..2 {
            put(&mut index, n, 100);
            assert_eq!(get(&mut index, n), Some(TierHit::Memory));
        }
        for n in 10..40 {
            put(&mut index, n, 100);
        }
        for n in 0..2 {
            assert_eq!(get(&mut index, n), Some(TierHit::Memory), "hot stripe {n}");
        }
        assert!(index.memory.used() <= 400);
        assert_eq!(index.memory.len(), 4);
        // 30 scanned stripes went through 2 free slots: 28 evicted, every
        // one of them still on flash.
        assert_eq!(index.memory.evictions(), 28);
        assert_eq!(index.demotions, 28);
        assert_eq!(index.flash.evictions(), 0);
    }

    #[test]
    fn a_read_scan_from_flash_promotes_nothing() {
        let mut index = Index::with_charge(200, 10_000, 2, 0);
        for n in 0..50 {
            put(&mut index, n, 100);
        }
        for n in 0..40 {
            assert_eq!(get(&mut index, n), Some(TierHit::Flash));
        }
        assert_eq!(index.promotions, 0);
        // The second read makes a stripe hot: it is promoted and the next
        // read is a memory hit.
        assert_eq!(get(&mut index, 7), Some(TierHit::Flash));
        assert_eq!(index.promotions, 1);
        assert_eq!(get(&mut index, 7), Some(TierHit::Memory));
    }

    #[test]
    fn a_promoted_stripe_keeps_its_history_and_outranks_once_seen_ones() {
        let mut index = Index::with_charge(200, 10_000, 2, 0);
        for n in 0..10 {
            put(&mut index, n, 100);
        }
        // 8 and 9 are in memory, read never. 3 is read twice from flash
        // and promoted with a full history.
        get(&mut index, 3);
        get(&mut index, 3);
        assert!(index.memory.contains(&key(3)));
        // A burst of new stripes evicts the once-seen entry, not 3.
        put(&mut index, 20, 100);
        put(&mut index, 21, 100);
        assert!(index.memory.contains(&key(3)));
        assert!(!index.memory.contains(&key(20)));
        assert!(index.memory.contains(&key(21)));
    }

    #[test]
    fn flash_evictions_report_their_files_and_never_the_newest() {
        let mut index = Index::with_charge(0, 250, 2, 0);
        let gen_a = index.new_gen();
        assert!(index.commit_flash(key(1), 100, gen_a).is_empty());
        let gen_b = index.new_gen();
        assert!(index.commit_flash(key(2), 100, gen_b).is_empty());
        let gen_c = index.new_gen();
        assert_eq!(
            index.commit_flash(key(3), 100, gen_c),
            vec![(key(1), gen_a)]
        );
        // Replacing reports the old file.
        let gen_d = index.new_gen();
        assert_eq!(index.commit_flash(key(3), 50, gen_d), vec![(key(3), gen_c)]);
        // Too large for the tier: the new file itself is dead, and so is
        // the stale old one.
        let gen_e = index.new_gen();
        assert_eq!(
            index.commit_flash(key(2), 300, gen_e),
            vec![(key(2), gen_b), (key(2), gen_e)]
        );
        assert_eq!(index.flash.used(), 50);
        // Dropping checks the generation.
        assert!(!index.drop_flash(&key(3), gen_c));
        assert!(index.drop_flash(&key(3), gen_d));
        assert_eq!(index.flash.used(), 0);
    }

    #[test]
    fn memory_hits_keep_a_stripe_alive_on_flash() {
        let mut index = Index::with_charge(1000, 300, 2, 0);
        put(&mut index, 1, 100);
        for n in 2..20 {
            put(&mut index, n, 100);
            get(&mut index, 1);
        }
        assert!(index.flash.contains(&key(1)));
        assert_eq!(index.flash.used(), 300);
    }

    #[test]
    fn flash_entries_are_charged_to_the_memory_tier() {
        // 1000 bytes of memory, 100 per flash entry.
        let mut index = Index::with_charge(1000, 100_000, 2, 100);
        for n in 0..5 {
            put(&mut index, n, 100);
        }
        // 5 flash entries leave 500 for memory: all five stripes fit.
        assert_eq!((index.memory.len(), index.memory.bound()), (5, 500));
        put(&mut index, 5, 100);
        // 6 leave 400: the sixth PUT pushed out two.
        assert_eq!((index.memory.len(), index.memory.bound()), (4, 400));
        assert_eq!((index.memory.evictions(), index.demotions), (2, 2));
        for n in 6..20 {
            put(&mut index, n, 100);
        }
        assert_eq!((index.memory.len(), index.memory.bound()), (0, 0));
        // Dropping flash entries gives the memory back.
        for n in 0..3 {
            let gen = index.flash.get(&key(n)).map(|m| m.gen).expect("on flash");
            assert!(index.drop_flash(&key(n), gen));
        }
        assert_eq!(index.memory.bound(), 0);
        for n in 3..12 {
            let gen = index.flash.get(&key(n)).map(|m| m.gen).expect("on flash");
            index.drop_flash(&key(n), gen);
        }
        assert_eq!(index.memory.bound(), 200);
        assert!(index.memory.used() <= index.memory.bound());
    }

    /// The plain reference: a tier as a list of (key, size, every stamp),
    /// victims found by a full scan computing the backward K-distance.
    #[derive(Debug, Default, Clone)]
    struct ModelTier {
        bound: u64,
        entries: Vec<(StripeKey, u64, Vec<u64>)>,
        evictions: u64,
    }

    impl ModelTier {
        fn used(&self) -> u64 {
            self.entries.iter().map(|e| e.1).sum()
        }

        fn find(&self, key: &StripeKey) -> Option<usize> {
            self.entries.iter().position(|e| e.0 == *key)
        }

        fn victim(&self, k: usize) -> usize {
            let rank = |stamps: &Vec<u64>| {
                let mut sorted = stamps.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                if sorted.len() >= k {
                    (true, sorted[k - 1])
                } else {
                    (false, sorted[0])
                }
            };
            (0..self.entries.len())
                .min_by_key(|&i| rank(&self.entries[i].2))
                .expect("a victim")
        }

        /// Returns the evicted keys.
        fn insert(
            &mut self,
            k: usize,
            key: StripeKey,
            size: u64,
            mut stamps: Vec<u64>,
        ) -> Vec<StripeKey> {
            if let Some(i) = self.find(&key) {
                let old = self.entries.remove(i);
                stamps.extend(old.2);
            }
            let mut evicted = Vec::new();
            if size > self.bound {
                return evicted;
            }
            while self.used() + size > self.bound {
                let victim = self.entries.remove(self.victim(k));
                self.evictions += 1;
                evicted.push(victim.0);
            }
            self.entries.push((key, size, stamps));
            evicted
        }
    }

    #[derive(Debug, Default)]
    struct Model {
        k: usize,
        memory_bytes: u64,
        charge: u64,
        clock: u64,
        memory: ModelTier,
        flash: ModelTier,
        reads: HashMap<StripeKey, u32>,
        promotions: u64,
        demotions: u64,
    }

    impl Model {
        fn put(&mut self, n: u8, size: u64) {
            let key = key(n);
            self.clock += 1;
            let evicted = self.memory.insert(self.k, key, size, vec![self.clock]);
            self.demotions += evicted
                .iter()
                .filter(|k| self.flash.find(k).is_some())
                .count() as u64;
            if size <= self.flash.bound {
                self.clock += 1;
                let was = self.flash.find(&key).is_some();
                for gone in self.flash.insert(self.k, key, size, vec![self.clock]) {
                    self.reads.remove(&gone);
                }
                if !was {
                    self.reads.insert(key, 0);
                }
                self.rebound();
            }
        }

        fn rebound(&mut self) {
            let charge = self.flash.entries.len() as u64 * self.charge;
            self.memory.bound = self.memory_bytes.saturating_sub(charge);
            while self.memory.used() > self.memory.bound {
                let victim = self.memory.entries.remove(self.memory.victim(self.k));
                self.memory.evictions += 1;
                if self.flash.find(&victim.0).is_some() {
                    self.demotions += 1;
                }
            }
        }

        fn get(&mut self, n: u8) -> Option<TierHit> {
            let key = key(n);
            self.clock += 1;
            let stamp = self.clock;
            let on_flash = self.flash.find(&key);
            if let Some(i) = on_flash {
                self.flash.entries[i].2.push(stamp);
                *self.reads.entry(key).or_default() += 1;
            }
            if let Some(i) = self.memory.find(&key) {
                self.memory.entries[i].2.push(stamp);
                return Some(TierHit::Memory);
            }
            let i = on_flash?;
            if self.reads[&key] >= self.k as u32 {
                let (_, size, stamps) = self.flash.entries[i].clone();
                let evicted = self.memory.insert(self.k, key, size, stamps);
                self.demotions += evicted
                    .iter()
                    .filter(|k| self.flash.find(k).is_some())
                    .count() as u64;
                if self.memory.find(&key).is_some() {
                    self.promotions += 1;
                }
            }
            Some(TierHit::Flash)
        }

        fn corrupt(&mut self, n: u8) {
            if let Some(i) = self.flash.find(&key(n)) {
                self.flash.entries.remove(i);
                self.reads.remove(&key(n));
                self.rebound();
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u64),
        Get(u8),
        Corrupt(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..24, 1u64..140).prop_map(|(n, size)| Op::Put(n, size)),
            6 => (0u8..24).prop_map(Op::Get),
            1 => (0u8..24).prop_map(Op::Corrupt),
        ]
    }

    fn contents<V: Weighed>(tier: &Tier<V>) -> BTreeSet<StripeKey> {
        tier.keys().copied().collect()
    }

    fn model_contents(tier: &ModelTier) -> BTreeSet<StripeKey> {
        tier.entries.iter().map(|e| e.0).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn tiers_match_the_reference_model(
            k in 1usize..4,
            memory in 0u64..400,
            charge in prop_oneof![Just(0u64), 1u64..20],
            flash in 0u64..1500,
            ops in prop::collection::vec(op(), 0..250),
        ) {
            let mut index = Index::with_charge(memory, flash, k, charge);
            let mut model = Model {
                k,
                memory_bytes: memory,
                charge,
                memory: ModelTier { bound: memory, ..ModelTier::default() },
                flash: ModelTier { bound: flash, ..ModelTier::default() },
                ..Model::default()
            };
            for op in ops {
                match op {
                    Op::Put(n, size) => {
                        put(&mut index, n, size as usize);
                        model.put(n, size);
                    }
                    Op::Get(n) => prop_assert_eq!(get(&mut index, n), model.get(n)),
                    Op::Corrupt(n) => {
                        let gen = index.flash.get(&key(n)).map(|m| m.gen);
                        if let Some(gen) = gen {
                            prop_assert!(index.drop_flash(&key(n), gen));
                        }
                        model.corrupt(n);
                    }
                }
                prop_assert!(index.memory.used() <= memory);
                prop_assert!(index.flash.used() <= flash);
                prop_assert_eq!(index.memory.used(), model.memory.used());
                prop_assert_eq!(index.flash.used(), model.flash.used());
                prop_assert_eq!(contents(&index.memory), model_contents(&model.memory));
                prop_assert_eq!(contents(&index.flash), model_contents(&model.flash));
                prop_assert_eq!(index.memory.evictions(), model.memory.evictions);
                prop_assert_eq!(index.flash.evictions(), model.flash.evictions);
                prop_assert_eq!(index.promotions, model.promotions);
                prop_assert_eq!(index.demotions, model.demotions);
            }
        }
    }
}
