//! Which nodes hold the stripes of a chunk: rendezvous (highest random
//! weight) hashing, one pick per stripe (DESIGN.md section 4).
//!
//! Stripe `i` goes to the node with the highest score
//! `XXH3-64(name || i)` seeded by the node's id, among the nodes not already
//! picked for stripes `0..i`. So the `k + m` nodes are distinct, every
//! client computes the same placement from the same node list (no
//! coordination, no ring to store), and the placement changes only where
//! it must:
//!
//! * removing a node that holds none of a chunk's stripes leaves that
//!   chunk's placement exactly as it was; removing one that does moves its
//!   stripe (and, rarely, a later stripe whose node the replacement pick
//!   took). About `1/N` of all stripes move.
//! * adding a node moves only the stripes it wins, again about `1/N`.
//!
//! Scoring each stripe separately, rather than ranking the nodes once and
//! giving stripe `i` the `i`-th, matters: with one ranking, losing the
//! top-ranked node would shift every stripe of the chunk one node down and
//! make all of them misses, more than the `m` a rebuild can tolerate.
//!
//! Load: each stripe lands on a uniformly random node, so nodes get equal
//! shares in expectation, which is what the paper's "consistent hashing
//! with bounded load" is for; no explicit bound is kept.
//!
//! Cost: `(k + m) * N` hashes of 33 bytes, a few microseconds for tens of
//! nodes.

use kindling_chunk::ChunkName;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::stripe::Stripes;

/// The cluster is too small for the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{nodes} cache nodes cannot hold {needed} stripes on distinct nodes")]
pub struct PlacementError {
    pub nodes: usize,
    pub needed: usize,
}

/// The nodes of a cluster, by stable identity.
///
/// A node's id (its address, say) rather than its position in a list is
/// what is hashed, so taking a node out of the middle of the list does not
/// disturb the others.
#[derive(Debug, Clone)]
pub struct Placement {
    seeds: Vec<u64>,
}

impl Placement {
    /// A cluster whose nodes have these ids, in this order; results are
    /// positions in this order.
    pub fn new<I, T>(ids: I) -> Placement
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        Placement {
            seeds: ids.into_iter().map(|id| xxh3_64(id.as_ref())).collect(),
        }
    }

    /// A cluster whose node ids are their positions `0..nodes`.
    pub fn indexed(nodes: usize) -> Placement {
        Placement::new((0..nodes as u64).map(u64::to_le_bytes))
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// The node of each stripe of `name`: `k + m` distinct positions,
    /// stripe `i` on the `i`-th.
    pub fn place(&self, name: &ChunkName, s: Stripes) -> Result<Vec<usize>, PlacementError> {
        let needed = s.total();
        if self.seeds.len() < needed {
            return Err(PlacementError {
                nodes: self.seeds.len(),
                needed,
            });
        }
        let mut key = [0u8; 33];
        key[..32].copy_from_slice(&name.0);
        let mut taken = vec![false; self.seeds.len()];
        let mut out = Vec::with_capacity(needed);
        for stripe in 0..needed {
            // `needed <= MAX_STRIPES`, fits a byte.
            key[32] = stripe as u8;
            let mut best: Option<(u64, usize)> = None;
            for (node, &seed) in self.seeds.iter().enumerate() {
                if taken[node] {
                    continue;
                }
                let score = xxh3_64_with_seed(&key, seed);
                // Ties (equal 64-bit scores) go to the lower position.
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, node));
                }
            }
            // `needed <= nodes`, so a free node is always left.
            let (_, node) = best.ok_or(PlacementError {
                nodes: self.seeds.len(),
                needed,
            })?;
            taken[node] = true;
            out.push(node);
        }
        Ok(out)
    }
}

/// The nodes (positions `0..nodes_len`) of the stripes of `name`; see
/// [`Placement`] to place by node id instead.
pub fn place(
    name: &ChunkName,
    nodes_len: usize,
    stripes: Stripes,
) -> Result<Vec<usize>, PlacementError> {
    Placement::indexed(nodes_len).place(name, stripes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(i: u64) -> ChunkName {
        ChunkName::of(&i.to_le_bytes())
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:7070")).collect()
    }

    #[test]
    fn too_few_nodes_is_an_error() {
        let err = place(&name(1), 4, Stripes::DEFAULT).unwrap_err();
        assert_eq!(
            err,
            PlacementError {
                nodes: 4,
                needed: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "4 cache nodes cannot hold 5 stripes on distinct nodes"
        );
        assert_eq!(place(&name(1), 5, Stripes::DEFAULT).unwrap().len(), 5);
    }

    #[test]
    fn load_is_even() {
        let (n, chunks) = (10, 20_000);
        let p = Placement::new(ids(n));
        let mut load = vec![0usize; n];
        for c in 0..chunks {
            for node in p.place(&name(c), Stripes::DEFAULT).unwrap() {
                load[node] += 1;
            }
        }
        let mean = (chunks as usize * 5 / n) as f64;
        for l in load {
            assert!((l as f64 - mean).abs() < mean * 0.05, "{l} vs {mean}");
        }
    }

    #[test]
    fn about_one_nth_of_stripes_move_when_a_node_goes() {
        let (n, chunks) = (12, 5_000);
        let all = ids(n);
        let before = Placement::new(&all);
        let mut rest = all.clone();
        let gone = 5;
        rest.remove(gone);
        let after = Placement::new(&rest);
        let mut moved = 0;
        for c in 0..chunks {
            let a = before.place(&name(c), Stripes::DEFAULT).unwrap();
            let b: Vec<&String> = after
                .place(&name(c), Stripes::DEFAULT)
                .unwrap()
                .into_iter()
                .map(|i| &rest[i])
                .collect();
            moved += a.iter().zip(&b).filter(|(x, y)| all[**x] != ***y).count();
        }
        let share = moved as f64 / (chunks as f64 * 5.0);
        // One stripe in n lived on the removed node; a replacement pick
        // rarely cascades into a later stripe.
        assert!(share > 0.8 / n as f64 && share < 1.3 / n as f64, "{share}");
    }

    proptest! {
        #[test]
        fn distinct_and_deterministic(
            seed in any::<u64>(),
            n in 1usize..40,
            k in 1u8..=8,
            m in 0u8..=4,
        ) {
            let s = Stripes::new(k, m).unwrap();
            let p = Placement::new(ids(n));
            match p.place(&name(seed), s) {
                Ok(nodes) => {
                    prop_assert!(n >= s.total());
                    prop_assert_eq!(nodes.len(), s.total());
                    let mut sorted = nodes.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    prop_assert_eq!(sorted.len(), nodes.len());
                    prop_assert!(nodes.iter().all(|&i| i < n));
                    prop_assert_eq!(Placement::new(ids(n)).place(&name(seed), s).unwrap(), nodes);
                }
                Err(e) => prop_assert!(n < s.total(), "{e}"),
            }
        }

        #[test]
        fn removing_or_adding_an_unused_node_changes_nothing(
            seed in any::<u64>(),
            n in 6usize..30,
            gone in any::<prop::sample::Index>(),
        ) {
            let s = Stripes::new(4, 1).unwrap();
            let all = ids(n);
            let placed: Vec<String> = Placement::new(&all)
                .place(&name(seed), s)
                .unwrap()
                .into_iter()
                .map(|i| all[i].clone())
                .collect();
            let gone = gone.index(n);
            let mut rest = all.clone();
            let removed = rest.remove(gone);
            let after: Vec<String> = Placement::new(&rest)
                .place(&name(seed), s)
                .unwrap()
                .into_iter()
                .map(|i| rest[i].clone())
                .collect();
            if placed.contains(&removed) {
                // Only the removed node's stripe and those after it may move.
                let at = placed.iter().position(|x| *x == removed).unwrap();
                prop_assert_eq!(&placed[..at], &after[..at]);
            } else {
                prop_assert_eq!(&placed, &after);
            }
            prop_assert!(!after.contains(&removed));
        }
    }
}
