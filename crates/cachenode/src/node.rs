//! [`CacheNode`]: the two tiers behind one lock, and the file I/O around
//! them.
//!
//! Locking: one std mutex guards the [`Index`]; it is held for hash map
//! and B-tree updates only, never across I/O or an `.await`. File reads
//! and writes run on tokio's blocking threads (or the caller's thread for
//! the `_blocking` methods), at most [`FLASH_IO_SLOTS`] at once for the
//! async methods.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kindling_chunk::ChunkName;
use tokio::sync::Semaphore;

use crate::flash::{FlashDir, ReadError};
use crate::index::{FlashMeta, Index, Lookup};
use crate::metrics::{bump, tier_slot, Counters};
use crate::{
    NodeConfig, NodeError, NodeStats, StripeKey, TierHit, FLASH_IO_SLOTS, LRU_K, MAX_STRIPE_BYTES,
};

/// One cache node's storage: a memory tier over a flash tier (see the
/// crate documentation for the rules between them).
///
/// Cheap to clone: clones share the storage.
#[derive(Debug, Clone)]
pub struct CacheNode {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NodeConfig,
    index: Mutex<Index>,
    flash: FlashDir,
    counters: Counters,
    io_slots: Arc<Semaphore>,
}

impl CacheNode {
    /// Opens the flash directory (creating it if needed) and rebuilds the
    /// index from the stripes in it.
    pub fn open(config: NodeConfig) -> Result<CacheNode, NodeError> {
        CacheNode::open_inner(config, false)
    }

    /// Opens the flash directory and deletes every stripe in it, for a
    /// node that restarts empty. A directory that is not a cache node's is
    /// still refused.
    pub fn open_empty(config: NodeConfig) -> Result<CacheNode, NodeError> {
        CacheNode::open_inner(config, true)
    }

    fn open_inner(config: NodeConfig, wipe: bool) -> Result<CacheNode, NodeError> {
        let (flash, scan) = FlashDir::open(&config.disk_dir)?;
        let mut index = Index::new(config.memory_bytes, config.disk_bytes, LRU_K);
        for found in &scan.found {
            if wipe {
                flash.remove(&found.key, found.gen);
                continue;
            }
            for (key, gen) in index.restore_flash(found.key, found.len, found.gen) {
                flash.remove(&key, gen);
            }
        }
        tracing::info!(
            dir = %config.disk_dir.display(),
            entries = index.flash.len(),
            bytes = index.flash.used(),
            evicted = index.flash.evictions(),
            removed_bad = scan.bad,
            wiped = wipe,
            "opened cache node flash tier"
        );
        let counters = Counters::default();
        bump(&counters.corrupt, scan.bad);
        Ok(CacheNode {
            inner: Arc::new(Inner {
                config,
                index: Mutex::new(index),
                flash,
                counters,
                io_slots: Arc::new(Semaphore::new(FLASH_IO_SLOTS)),
            }),
        })
    }

    /// The configuration the node was opened with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The stripe and the tier it came from, or `None` on a miss. A flash
    /// entry whose file fails its checks is deleted and is a miss. Reads
    /// flash on a blocking thread; needs a tokio runtime.
    pub async fn get(&self, name: &ChunkName, index: u8) -> Option<(Bytes, TierHit)> {
        let key = StripeKey { name: *name, index };
        let found = match self.inner.lookup(&key) {
            Lookup::Memory(bytes) => Some((bytes, TierHit::Memory)),
            Lookup::Miss => None,
            Lookup::Flash { meta, hot } => {
                let permit = self.inner.io_slots.clone().acquire_owned().await.ok()?;
                let inner = self.inner.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    inner.read_flash(key, meta, hot)
                });
                read.await
                    .ok()
                    .flatten()
                    .map(|bytes| (bytes, TierHit::Flash))
            }
        };
        self.inner.count_get(found.as_ref());
        found
    }

    /// [`CacheNode::get`] reading flash on the calling thread.
    pub fn get_blocking(&self, name: &ChunkName, index: u8) -> Option<(Bytes, TierHit)> {
        let key = StripeKey { name: *name, index };
        let found = match self.inner.lookup(&key) {
            Lookup::Memory(bytes) => Some((bytes, TierHit::Memory)),
            Lookup::Miss => None,
            Lookup::Flash { meta, hot } => self
                .inner
                .read_flash(key, meta, hot)
                .map(|b| (b, TierHit::Flash)),
        };
        self.inner.count_get(found.as_ref());
        found
    }

    /// The stripe's length and the tier a GET would try first, without
    /// reading it or recording an access. A corrupt flash entry is still
    /// reported here; the GET finds out.
    pub fn head(&self, name: &ChunkName, index: u8) -> Option<(u64, TierHit)> {
        self.inner.lock().head(&StripeKey { name: *name, index })
    }

    /// Stores a stripe in both tiers, replacing any earlier one of the same
    /// key. Returns once the flash file is in place (not fsynced). The
    /// memory tier keeps `bytes` as given: pass a buffer of its own, not a
    /// slice of a larger one, or the whole buffer stays alive. A stripe
    /// larger than a tier is not kept in that tier. Writes flash on a
    /// blocking thread; needs a tokio runtime.
    pub async fn put(&self, name: &ChunkName, index: u8, bytes: Bytes) -> Result<(), NodeError> {
        let Some((key, gen)) = self.inner.put_memory(name, index, &bytes)? else {
            bump(&self.inner.counters.puts, 1);
            return Ok(());
        };
        let permit = self
            .inner
            .io_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NodeError::TaskFailed)?;
        let inner = self.inner.clone();
        let write = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.put_flash(key, gen, &bytes)
        });
        write.await.map_err(|_| NodeError::TaskFailed)??;
        bump(&self.inner.counters.puts, 1);
        Ok(())
    }

    /// [`CacheNode::put`] writing flash on the calling thread.
    pub fn put_blocking(&self, name: &ChunkName, index: u8, bytes: Bytes) -> Result<(), NodeError> {
        if let Some((key, gen)) = self.inner.put_memory(name, index, &bytes)? {
            self.inner.put_flash(key, gen, &bytes)?;
        }
        bump(&self.inner.counters.puts, 1);
        Ok(())
    }

    /// A snapshot of the node's counters and gauges.
    pub fn stats(&self) -> NodeStats {
        let mut stats = NodeStats::default();
        {
            let index = self.inner.lock();
            for (stats, tier) in [
                (&mut stats.memory, &index.memory.stat()),
                (&mut stats.flash, &index.flash.stat()),
            ] {
                (stats.entries, stats.bytes, stats.capacity, stats.evictions) = *tier;
            }
            stats.promotions = index.promotions;
            stats.demotions = index.demotions;
        }
        stats.fill_counters(&self.inner.counters);
        stats
    }

    /// The `/metrics` page: [`CacheNode::stats`] in Prometheus text form.
    pub fn metrics_text(&self) -> String {
        self.stats().to_prometheus()
    }

    /// Adds a stripe GET's handler time to the latency histogram.
    pub fn observe_get_latency(&self, took: Duration) {
        self.inner.counters.observe_get(took);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Index> {
        // The index is consistent between calls (no method panics half
        // way), so a poisoned lock is still usable.
        self.index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lookup(&self, key: &StripeKey) -> Lookup {
        self.lock().lookup(key)
    }

    fn count_get(&self, found: Option<&(Bytes, TierHit)>) {
        let counters = &self.counters;
        match found {
            Some((bytes, tier)) => {
                bump(&counters.hits[tier_slot(*tier)], 1);
                bump(&counters.served_bytes[tier_slot(*tier)], bytes.len() as u64);
            }
            None => bump(&counters.misses, 1),
        }
    }

    /// Reads a flash entry; drops it if its file is bad; promotes it if
    /// hot.
    fn read_flash(&self, key: StripeKey, meta: FlashMeta, hot: bool) -> Option<Bytes> {
        match self.flash.read(&key, meta.gen, meta.len) {
            Ok(bytes) => {
                if hot && self.lock().promote(key, meta.gen, bytes.clone()) {
                    bump(
                        &self.counters.stored_bytes[tier_slot(TierHit::Memory)],
                        bytes.len() as u64,
                    );
                }
                Some(bytes)
            }
            Err(ReadError::Missing) => {
                // Gone since the lookup: evicted or replaced (then it is no
                // longer indexed), or deleted under the node.
                if self.lock().drop_flash(&key, meta.gen) {
                    tracing::warn!(name = %key.name, index = key.index, "flash entry file vanished; dropped");
                    bump(&self.counters.corrupt, 1);
                }
                None
            }
            Err(ReadError::Corrupt(why)) => {
                if self.lock().drop_flash(&key, meta.gen) {
                    tracing::warn!(name = %key.name, index = key.index, why, "corrupt flash entry; dropped");
                    bump(&self.counters.corrupt, 1);
                }
                self.flash.remove(&key, meta.gen);
                None
            }
            Err(ReadError::Io(e)) => {
                // Possibly passing (out of file descriptors): keep the
                // entry, answer a miss.
                tracing::warn!(name = %key.name, index = key.index, error = %e, "cannot read flash entry");
                bump(&self.counters.io_errors, 1);
                None
            }
        }
    }

    /// The memory half of a PUT. Returns the key and a fresh generation if
    /// the stripe is to go to flash too.
    fn put_memory(
        &self,
        name: &ChunkName,
        index: u8,
        bytes: &Bytes,
    ) -> Result<Option<(StripeKey, u64)>, NodeError> {
        if bytes.len() > MAX_STRIPE_BYTES {
            return Err(NodeError::TooLarge {
                len: bytes.len(),
                limit: MAX_STRIPE_BYTES,
            });
        }
        let key = StripeKey { name: *name, index };
        let mut index = self.lock();
        if index.put_memory(key, bytes.clone()) {
            bump(
                &self.counters.stored_bytes[tier_slot(TierHit::Memory)],
                bytes.len() as u64,
            );
        }
        Ok(index
            .flash_fits(bytes.len() as u64)
            .then(|| (key, index.new_gen())))
    }

    /// The flash half of a PUT: the file, then the index, then the files
    /// of whatever that displaced.
    fn put_flash(&self, key: StripeKey, gen: u64, bytes: &[u8]) -> Result<(), NodeError> {
        if let Err(e) = self.flash.write(&key, gen, bytes) {
            bump(&self.counters.io_errors, 1);
            return Err(e);
        }
        // Checked by put_memory: at most MAX_STRIPE_BYTES.
        let len = bytes.len() as u32;
        let dead = self.lock().commit_flash(key, len, gen);
        if !dead.contains(&(key, gen)) {
            bump(
                &self.counters.stored_bytes[tier_slot(TierHit::Flash)],
                bytes.len() as u64,
            );
        }
        for (key, gen) in dead {
            self.flash.remove(&key, gen);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FLASH_ENTRY_CHARGE;

    fn config(dir: &std::path::Path, memory: u64, disk: u64) -> NodeConfig {
        NodeConfig {
            memory_bytes: memory,
            disk_dir: dir.to_path_buf(),
            disk_bytes: disk,
        }
    }

    fn name(n: u8) -> ChunkName {
        ChunkName([n; 32])
    }

    fn stripe(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    fn flash_files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("stripes"))
            .expect("stripes")
            .map(|sub| {
                std::fs::read_dir(sub.expect("sub").path())
                    .expect("sub")
                    .count()
            })
            .sum()
    }

    #[test]
    fn tiers_stay_bounded_and_files_follow_the_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Room for 3 stripes in memory beside the index of 10 on flash.
        let memory = 30_000 + 10 * FLASH_ENTRY_CHARGE;
        let node = CacheNode::open(config(dir.path(), memory, 100_000)).expect("open");
        for n in 0..50 {
            node.put_blocking(&name(n), n % 3, stripe(n, 10_000))
                .expect("put");
            let stats = node.stats();
            assert!(stats.memory.bytes <= memory && stats.flash.bytes <= 100_000);
            let charge = stats.flash.entries * FLASH_ENTRY_CHARGE;
            assert_eq!(stats.memory.capacity, memory - charge);
        }
        let stats = node.stats();
        assert_eq!((stats.memory.entries, stats.flash.entries), (3, 10));
        assert_eq!((stats.memory.evictions, stats.flash.evictions), (47, 40));
        assert_eq!(stats.puts, 50);
        assert_eq!(flash_files(dir.path()), 10);
        // Newest three in memory, the next seven on flash only.
        assert_eq!(
            node.get_blocking(&name(49), 1).map(|(_, t)| t),
            Some(TierHit::Memory)
        );
        assert_eq!(
            node.get_blocking(&name(45), 0),
            Some((stripe(45, 10_000), TierHit::Flash))
        );
        assert_eq!(node.get_blocking(&name(39), 0), None);
        assert_eq!(node.head(&name(45), 0), Some((10_000, TierHit::Flash)));
    }

    #[test]
    fn too_large_and_zero_sized_tiers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = CacheNode::open(config(dir.path(), 0, 0)).expect("open");
        let err = node.put_blocking(&name(1), 0, stripe(1, MAX_STRIPE_BYTES + 1));
        assert!(matches!(err, Err(NodeError::TooLarge { .. })));
        node.put_blocking(&name(1), 0, stripe(1, 10)).expect("put");
        assert_eq!(node.get_blocking(&name(1), 0), None);
        assert_eq!(flash_files(dir.path()), 0);
    }

    #[test]
    fn re_put_replaces_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = CacheNode::open(config(dir.path(), 0, 10_000)).expect("open");
        node.put_blocking(&name(1), 0, stripe(1, 10)).expect("put");
        node.put_blocking(&name(1), 0, stripe(2, 20)).expect("put");
        assert_eq!(flash_files(dir.path()), 1);
        assert_eq!(
            node.get_blocking(&name(1), 0),
            Some((stripe(2, 20), TierHit::Flash))
        );
        assert_eq!(node.stats().flash.bytes, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_paths_match_blocking_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = 1000 + 20 * FLASH_ENTRY_CHARGE;
        let node = CacheNode::open(config(dir.path(), memory, 100_000)).expect("open");
        for n in 0..20 {
            node.put(&name(n), 0, stripe(n, 500)).await.expect("put");
        }
        assert_eq!(
            node.get(&name(19), 0).await.map(|(_, t)| t),
            Some(TierHit::Memory)
        );
        assert_eq!(
            node.get(&name(3), 0).await,
            Some((stripe(3, 500), TierHit::Flash))
        );
        // Second read: hot, promoted, then served from memory.
        assert_eq!(
            node.get(&name(3), 0).await.map(|(_, t)| t),
            Some(TierHit::Flash)
        );
        assert_eq!(
            node.get(&name(3), 0).await.map(|(_, t)| t),
            Some(TierHit::Memory)
        );
        let stats = node.stats();
        assert_eq!(stats.promotions, 1);
        assert_eq!(
            (stats.memory.hits, stats.flash.hits, stats.misses),
            (2, 2, 0)
        );
        assert_eq!(stats.flash.served_bytes, 1000);
        assert_eq!(stats.memory.stored_bytes, 20 * 500 + 500);
    }
}
