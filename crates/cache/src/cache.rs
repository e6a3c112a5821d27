//! [`WorkerCache`]: the memory tier over the disk tier, with single flight
//! within a process (one shared future per chunk) and across processes
//! (the disk tier's fill locks).
//!
//! Cancellation: dropping a `get_or_fill` future is safe at any point. A
//! leader that is dropped hands the flight to one of its waiters, which
//! runs its own fill; a write already on the blocking pool finishes, and
//! holds the fill lock until its chunk is in place.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use kindling_chunk::ChunkName;
use tokio::sync::OnceCell;

use crate::disk::{stripe, DiskTier, FillLock, MAX_CHUNK_BYTES, STRIPES};
use crate::error::CacheError;
use crate::memory::MemoryTier;
use crate::{CacheOptions, CacheStats, Hit};

/// A fill lock held by this process: the file lock (other processes) and
/// the stripe's mutex (this process's other tasks), released in that
/// order when the chunk is in place.
struct Held {
    lock: FillLock,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// The outcome of one flight, shared by the leader and its waiters.
type Flight = OnceCell<Result<(Bytes, Hit), CacheError>>;

/// The worker-local chunk cache: a handle on one cache directory plus this
/// process's memory tier. Clones share everything.
#[derive(Debug, Clone)]
pub struct WorkerCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: CacheOptions,
    disk: DiskTier,
    memory: Mutex<MemoryTier>,
    flights: Mutex<HashMap<ChunkName, Arc<Flight>>>,
    /// The fill-lock stripes within this process. Two of its fills that
    /// share a stripe wait for each other here, as tasks: waiting on the
    /// file lock would hold a blocking thread that the other fill may need
    /// to finish (a runtime with few blocking threads would deadlock), and
    /// the file lock, owned by the tier's open file, does not exclude this
    /// process's own fills anyway. It only ever waits for other processes.
    stripes: Box<[Arc<tokio::sync::Mutex<()>>]>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    fills: AtomicU64,
    fill_waits: AtomicU64,
}

impl WorkerCache {
    /// Opens the cache in `dir`, creating it if needed. Other processes may
    /// have it open too.
    ///
    /// This does blocking file work: cheap normally (a few directory
    /// creations and reads), but a full scan of the tree when the tree is
    /// over `opts.disk_bytes` (a restart with a smaller bound) or its usage
    /// counter is missing.
    pub fn open(dir: &Path, opts: CacheOptions) -> Result<WorkerCache, CacheError> {
        let disk = DiskTier::open(dir, opts.disk_bytes, opts.k)?;
        let memory = Mutex::new(MemoryTier::new(opts.memory_bytes, opts.k));
        Ok(WorkerCache {
            inner: Arc::new(Inner {
                opts,
                disk,
                memory,
                flights: Mutex::new(HashMap::new()),
                stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
                memory_hits: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                fills: AtomicU64::new(0),
                fill_waits: AtomicU64::new(0),
            }),
        })
    }

    /// The verified ciphertext of `name`: from the memory tier, else from
    /// the disk tier (verified as read; a bad file is deleted and counts as
    /// a miss), else from `fill`.
    ///
    /// `fill` runs at most once per miss across every task of this process
    /// and every process sharing the directory; the others wait for it and
    /// then read its result ([`Hit::Joined`]). Its bytes are verified
    /// against `name` ([`CacheError::Corrupt`] if they do not match, and
    /// nothing is stored), written to disk atomically and kept in memory.
    /// If the disk write fails the bytes are still returned (the failure is
    /// logged and counted in [`CacheStats::write_errors`]).
    ///
    /// Tasks of this process waiting on the same fill get its error if it
    /// fails; a later call tries again.
    pub async fn get_or_fill<F, Fut, E>(
        &self,
        name: &ChunkName,
        fill: F,
    ) -> Result<(Bytes, Hit), CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(bytes) = self.memory_get(name) {
            return Ok((bytes, Hit::Memory));
        }
        let flight = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(*name)
            .or_default()
            .clone();
        let mut led = false;
        let outcome = flight
            .get_or_init(|| {
                led = true;
                async {
                    let outcome = self.lead(*name, fill).await;
                    self.end_flight(name, &flight);
                    outcome
                }
            })
            .await
            .clone();
        if led {
            return outcome;
        }
        let (bytes, hit) = outcome?;
        let hit = match hit {
            Hit::Memory => {
                self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
                Hit::Memory
            }
            Hit::Disk => {
                self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
                Hit::Disk
            }
            Hit::Filled | Hit::Joined => {
                self.inner.fill_waits.fetch_add(1, Ordering::Relaxed);
                Hit::Joined
            }
        };
        Ok((bytes, hit))
    }

    /// The verified ciphertext of `name` if either tier has it; no fill.
    /// A disk hit is copied into the memory tier.
    pub async fn get(&self, name: &ChunkName) -> Result<Option<Bytes>, CacheError> {
        if let Some(bytes) = self.memory_get(name) {
            return Ok(Some(bytes));
        }
        let found = self.disk_read(*name).await?;
        if let Some(bytes) = &found {
            self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
            self.memory().insert(*name, bytes.clone());
        }
        Ok(found)
    }

    /// [`WorkerCache::get`] of two chunks. Two that both come from disk
    /// are read in one trip to the blocking pool and hashed together, at
    /// about the cost of one: for callers that have two chunks to load
    /// and no reader waiting on either (a preload).
    pub async fn get_pair(
        &self,
        a: &ChunkName,
        b: &ChunkName,
    ) -> Result<[Option<Bytes>; 2], CacheError> {
        match (self.memory_get(a), self.memory_get(b)) {
            (Some(x), Some(y)) => return Ok([Some(x), Some(y)]),
            (Some(x), None) => return Ok([Some(x), self.get(b).await?]),
            (None, Some(y)) => return Ok([self.get(a).await?, Some(y)]),
            (None, None) => {}
        }
        let (a, b) = (*a, *b);
        let read = self.blocking(move |disk| disk.read_pair(&a, &b)).await?;
        let mut out = [None, None];
        for (slot, (name, outcome)) in out.iter_mut().zip([a, b].into_iter().zip(read)) {
            if let Some(bytes) = outcome.hit() {
                self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
                self.memory().insert(name, bytes.clone());
                *slot = Some(bytes);
            }
        }
        Ok(out)
    }

    /// Counters of this handle (and its clones) since it was opened, plus
    /// the current sizes of the tiers.
    pub fn stats(&self) -> CacheStats {
        let inner = &self.inner;
        let (memory_bytes, memory_evictions) = {
            let memory = self.memory();
            (memory.used(), memory.evictions())
        };
        CacheStats {
            memory_hits: inner.memory_hits.load(Ordering::Relaxed),
            disk_hits: inner.disk_hits.load(Ordering::Relaxed),
            fills: inner.fills.load(Ordering::Relaxed),
            fill_waits: inner.fill_waits.load(Ordering::Relaxed),
            corrupt_dropped: inner.disk.corrupt_dropped(),
            evictions: inner.disk.evictions(),
            memory_evictions,
            write_errors: inner.disk.write_errors(),
            disk_bytes: inner.disk.last_usage(),
            memory_bytes,
        }
    }

    /// The options the cache was opened with.
    pub fn options(&self) -> &CacheOptions {
        &self.inner.opts
    }

    /// Whether the disk tier has a file for `name` (unverified: a prefetcher
    /// uses it to skip chunks the cache already holds; reads still verify).
    pub fn contains(&self, name: &ChunkName) -> bool {
        self.inner.disk.chunk_path(name).exists()
    }

    /// The path of `name`'s file in the disk tier (whether or not it is
    /// there): for tools and tests that look at the tree.
    pub fn chunk_path(&self, name: &ChunkName) -> std::path::PathBuf {
        self.inner.disk.chunk_path(name)
    }

    /// The versioned layout directory, `DIR/v1`.
    pub fn layout_dir(&self) -> &Path {
        self.inner.disk.root()
    }

    /// Ends the flight (so that a later call starts afresh), once its
    /// outcome is known; a flight whose leader was dropped stays, for its
    /// waiters to take over.
    fn end_flight(&self, name: &ChunkName, flight: &Arc<Flight>) {
        let mut flights = self
            .inner
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flights.get(name).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(name);
        }
    }

    /// The flight's leader: everything below the memory tier.
    async fn lead<F, Fut, E>(&self, name: ChunkName, fill: F) -> Result<(Bytes, Hit), CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        // A flight that ended between our memory check and our joining
        // this one left the chunk in memory.
        if let Some(bytes) = self.memory_get(&name) {
            return Ok((bytes, Hit::Memory));
        }
        if let Some(bytes) = self.disk_read(name).await? {
            self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
            self.memory().insert(name, bytes.clone());
            return Ok((bytes, Hit::Disk));
        }

        let local = Arc::clone(&self.inner.stripes[stripe(&name)])
            .lock_owned()
            .await;
        // One trip to the blocking pool: the lock, then a second look,
        // since whoever held the lock may have filled this very chunk.
        let (lock, filled) = self
            .blocking(move |disk| {
                let lock = disk.lock_fill(&name)?;
                let filled = disk.read(&name).hit();
                Ok::<_, CacheError>((
                    Held {
                        lock,
                        _local: local,
                    },
                    filled,
                ))
            })
            .await??;
        if let Some(bytes) = filled {
            drop(lock);
            self.inner.fill_waits.fetch_add(1, Ordering::Relaxed);
            self.memory().insert(name, bytes.clone());
            return Ok((bytes, Hit::Joined));
        }

        let bytes = fill().await.map_err(|e| CacheError::Fill {
            name,
            source: Arc::new(e),
        })?;
        if bytes.len() > MAX_CHUNK_BYTES {
            return Err(CacheError::TooLarge {
                name,
                len: bytes.len(),
                limit: MAX_CHUNK_BYTES,
            });
        }
        let data = bytes.clone();
        let verify = self.inner.opts.verify_fills;
        let stored = self
            .blocking(move |disk| {
                if verify {
                    kindling_chunk::cipher::verify(&name, &data)
                        .map_err(|_| CacheError::Corrupt { name })?;
                }
                Ok(disk.write(&name, &data, lock.lock))
            })
            .await??;
        if let Err(e) = stored {
            tracing::warn!(chunk = %name, error = %e, "cannot store a filled chunk on disk; serving it anyway");
        }
        self.inner.fills.fetch_add(1, Ordering::Relaxed);
        self.memory().insert(name, bytes.clone());
        Ok((bytes, Hit::Filled))
    }

    fn memory(&self) -> MutexGuard<'_, MemoryTier> {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn memory_get(&self, name: &ChunkName) -> Option<Bytes> {
        let bytes = self.memory().get(name)?;
        self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
        Some(bytes)
    }

    async fn disk_read(&self, name: ChunkName) -> Result<Option<Bytes>, CacheError> {
        Ok(self.blocking(move |disk| disk.read(&name)).await?.hit())
    }

    /// Runs file work on tokio's blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, CacheError>
    where
        T: Send + 'static,
        F: FnOnce(&DiskTier) -> T + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner.disk))
            .await
            .map_err(|e| {
                CacheError::io(
                    "run file work for the cache",
                    self.inner.disk.root(),
                    std::io::Error::other(e.to_string()),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_their_futures_cross_threads() {
        fn assert_handle<T: Send + Sync + Clone + 'static>() {}
        assert_handle::<WorkerCache>();
        fn assert_send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
        let name = ChunkName([0; 32]);
        let fill = || async { Ok::<_, std::io::Error>(Bytes::new()) };
        assert_send(&cache.get_or_fill(&name, fill));
        assert_send(&cache.get(&name));
    }
}
