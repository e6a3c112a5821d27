//! LRU-K, the eviction policy of both cache tiers (O'Neil, O'Neil and
//! Weikum, SIGMOD '93).
//!
//! Each entry keeps the stamps of its last K accesses. The victim is the
//! entry with the largest *backward K-distance*: the one whose K-th most
//! recent access is oldest. Entries seen fewer than K times have an
//! infinite distance and go first, the least recently used of them first.
//! That is what makes the policy scan resistant: a one-time scan of many
//! chunks only ever evicts other once-seen chunks (the scan's own among
//! them), never a chunk that was read K times.
//!
//! The policy is pure and in memory. Stamps are plain `u64`s chosen by the
//! caller: a logical clock ([`LruK::access`] keeps one) or any other
//! monotonic source. The disk tier feeds it stamps read back from the
//! files, which other processes wrote, so stamps may arrive out of order
//! and may repeat; both are handled.
//!
//! Not implemented from the paper: the "correlated reference period" (the
//! tiers get that effect by recording one disk access per process, see
//! `disk.rs`) and the "retained information period" (the history of an
//! evicted key is forgotten with it).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// An LRU-K eviction policy over keys of type `K`.
///
/// ```
/// use kindling_cache::LruK;
/// let mut lru = LruK::new(2);
/// lru.access("hot");
/// lru.access("hot");
/// for key in ["scan-1", "scan-2", "scan-3"] {
///     lru.access(key);
/// }
/// // The once-seen keys go first, oldest first; "hot" goes last.
/// assert_eq!(lru.pop_victim(), Some("scan-1"));
/// assert_eq!(lru.pop_victim(), Some("scan-2"));
/// assert_eq!(lru.pop_victim(), Some("scan-3"));
/// assert_eq!(lru.pop_victim(), Some("hot"));
/// assert_eq!(lru.pop_victim(), None);
/// ```
#[derive(Debug, Clone)]
pub struct LruK<K> {
    k: usize,
    /// The next stamp [`LruK::access`] hands out; always above every stamp
    /// seen so far.
    clock: u64,
    /// Source of [`Rank::seq`].
    seq: u64,
    entries: HashMap<K, Entry>,
    /// Every entry by eviction order: the first is the victim.
    order: BTreeMap<Rank, K>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Stamps of the last `k` accesses, newest first.
    history: Vec<u64>,
    rank: Rank,
}

/// Eviction order. Fields compare in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// Whether the entry has K accesses; `false` (infinite backward
    /// K-distance) sorts first.
    full: bool,
    /// For a full entry its K-th most recent stamp, else its most recent.
    stamp: u64,
    /// Breaks ties between equal stamps: the entry ranked earlier goes
    /// first. Unique, so a rank identifies its entry.
    seq: u64,
}

impl<K: Hash + Eq + Clone> LruK<K> {
    /// An empty policy remembering `k` accesses per entry (`k` = 0 is
    /// taken as 1, which is plain LRU).
    pub fn new(k: usize) -> Self {
        LruK {
            k: k.max(1),
            clock: 0,
            seq: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// K: how many accesses each entry remembers.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// The stamps of `key`'s last K accesses, newest first.
    pub fn history(&self, key: &K) -> Option<&[u64]> {
        self.entries.get(key).map(|e| e.history.as_slice())
    }

    /// Records an access to `key` now, on the policy's own logical clock,
    /// and returns the stamp used. Adds `key` if it is new.
    pub fn access(&mut self, key: K) -> u64 {
        let now = self.clock;
        self.record_access(key, now);
        now
    }

    /// Records an access to `key` at stamp `now`, adding `key` if it is
    /// new. `now` need not be the latest stamp: an old stamp is merged
    /// into the history in order, and dropped if K newer ones are known.
    pub fn record_access(&mut self, key: K, now: u64) {
        self.clock = self.clock.max(now.saturating_add(1));
        let seq = self.seq;
        self.seq += 1;
        let k = self.k;
        match self.entries.get_mut(&key) {
            Some(entry) => {
                self.order.remove(&entry.rank);
                let at = entry.history.partition_point(|&s| s >= now);
                entry.history.insert(at, now);
                entry.history.truncate(k);
                entry.rank = rank(&entry.history, k, seq);
                self.order.insert(entry.rank, key);
            }
            None => {
                let history = vec![now];
                let entry = Entry {
                    rank: rank(&history, k, seq),
                    history,
                };
                self.order.insert(entry.rank, key.clone());
                self.entries.insert(key, entry);
            }
        }
    }

    /// Forgets `key` and its history. Returns whether it was present.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.order.remove(&entry.rank);
                true
            }
            None => false,
        }
    }

    /// The entry to evict next, without removing it: the largest backward
    /// K-distance; among entries with fewer than K accesses (infinite
    /// distance, these come first) the least recently accessed.
    pub fn victim(&self) -> Option<K> {
        self.order.values().next().cloned()
    }

    /// Removes and returns [`LruK::victim`].
    pub fn pop_victim(&mut self) -> Option<K> {
        let (_, key) = self.order.pop_first()?;
        self.entries.remove(&key);
        Some(key)
    }
}

fn rank(history: &[u64], k: usize, seq: u64) -> Rank {
    let newest = history.first().copied().unwrap_or(0);
    match history.get(k - 1) {
        Some(&kth) => Rank {
            full: true,
            stamp: kth,
            seq,
        },
        None => Rank {
            full: false,
            stamp: newest,
            seq,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain reference: every stamp of every key, victim found by a
    /// full scan computing the textbook backward K-distance.
    #[derive(Debug, Default)]
    struct Model {
        k: usize,
        stamps: HashMap<u8, Vec<u64>>,
    }

    impl Model {
        fn victim(&self) -> Option<u8> {
            // (finite distance?, stamp): smaller goes first.
            let key_of = |stamps: &Vec<u64>| {
                let mut sorted = stamps.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                if sorted.len() >= self.k {
                    (true, sorted[self.k - 1])
                } else {
                    (false, sorted[0])
                }
            };
            self.stamps
                .iter()
                .min_by_key(|(_, stamps)| key_of(stamps))
                .map(|(&key, _)| key)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Access(u8),
        /// An access with a stamp from the past (a slow process's record).
        Late(u8, u64),
        Remove(u8),
        Victim,
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..12).prop_map(Op::Access),
            1 => (0u8..12, 1u64..40).prop_map(|(k, back)| Op::Late(k, back)),
            1 => (0u8..12).prop_map(Op::Remove),
            2 => Just(Op::Victim),
            1 => Just(Op::Pop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_the_reference_model(k in 1usize..5, ops in prop::collection::vec(op(), 0..300)) {
            let mut lru = LruK::new(k);
            let mut model = Model { k, ..Model::default() };
            // Every stamp ends in its op's index (below 1024), so stamps are
            // unique, the victim is unique and the model needs no tie rule.
            for (i, op) in ops.into_iter().enumerate() {
                let time = 10_000 + 50 * i as u64;
                let stamp = |time: u64| time * 1024 + i as u64;
                match op {
                    Op::Access(key) => {
                        lru.record_access(key, stamp(time));
                        model.stamps.entry(key).or_default().push(stamp(time));
                    }
                    Op::Late(key, back) => {
                        let late = stamp(time - 50 * back - 7);
                        lru.record_access(key, late);
                        model.stamps.entry(key).or_default().push(late);
                    }
                    Op::Remove(key) => {
                        prop_assert_eq!(lru.remove(&key), model.stamps.remove(&key).is_some());
                    }
                    Op::Victim => prop_assert_eq!(lru.victim(), model.victim()),
                    Op::Pop => {
                        let expected = model.victim();
                        if let Some(key) = expected {
                            model.stamps.remove(&key);
                        }
                        prop_assert_eq!(lru.pop_victim(), expected);
                    }
                }
                prop_assert_eq!(lru.len(), model.stamps.len());
                prop_assert_eq!(lru.order.len(), lru.entries.len());
            }
        }
    }

    #[test]
    fn a_scan_does_not_push_out_a_key_seen_k_times() {
        let mut lru = LruK::new(2);
        lru.access("hot");
        lru.access("hot");
        lru.access("warm");
        for i in 0..1000 {
            let scan = format!("scan-{i}");
            lru.access(scan.leak() as &str);
            // Keep four entries, as a full tier would.
            while lru.len() > 4 {
                lru.pop_victim();
            }
        }
        assert!(lru.contains(&"hot"));
        assert!(!lru.contains(&"warm"));
    }

    #[test]
    fn full_entries_go_by_their_kth_most_recent_access() {
        let mut lru = LruK::new(2);
        lru.record_access('a', 1);
        lru.record_access('b', 2);
        lru.record_access('b', 3);
        lru.record_access('a', 10);
        // a: (10, 1), b: (3, 2). a's 2nd most recent access is older, so a
        // goes first although it was used last (plain LRU would pick b).
        assert_eq!(lru.victim(), Some('a'));
        lru.record_access('a', 11);
        assert_eq!(lru.history(&'a'), Some(&[11, 10][..]));
        assert_eq!(lru.victim(), Some('b'));
    }

    #[test]
    fn late_and_repeated_stamps() {
        let mut lru = LruK::new(3);
        lru.record_access(1, 50);
        lru.record_access(1, 10);
        lru.record_access(1, 30);
        lru.record_access(1, 30);
        assert_eq!(lru.history(&1), Some(&[50, 30, 30][..]));
        // The clock stays above everything seen.
        assert_eq!(lru.access(2), 51);
        // Equal ranks: the one ranked first goes first.
        let mut lru = LruK::new(2);
        lru.record_access('x', 5);
        lru.record_access('y', 5);
        assert_eq!(lru.pop_victim(), Some('x'));
        assert_eq!(lru.pop_victim(), Some('y'));
    }

    #[test]
    fn k_zero_is_lru() {
        let mut lru = LruK::new(0);
        assert_eq!(lru.k(), 1);
        lru.access('a');
        lru.access('b');
        lru.access('a');
        assert_eq!(lru.victim(), Some('b'));
    }
}
