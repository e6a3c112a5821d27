//! The tiers a chunk can come from, as one trait so the chain (worker
//! cache -> AZ cache -> origin) is assembled from parts and each part is
//! tested alone. Every source returns verified ciphertext.

use std::sync::Arc;

use bytes::Bytes;
use kindling_chunk::ChunkName;
use kindling_repo::ChunkFault;
use kindling_store::Store;

/// Where a chunk was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    WorkerCache,
    /// The AZ cache cluster.
    Az,
    Origin,
}

/// A chunk's verified ciphertext and the tier that had it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    pub tier: Tier,
}

/// A chunk could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("origin")]
    Origin(#[source] ChunkFault),
    #[error("worker cache")]
    Cache(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[async_trait::async_trait]
pub trait ChunkSource: Send + Sync + std::fmt::Debug {
    /// The verified ciphertext of `name`.
    async fn fetch(&self, name: &ChunkName) -> Result<Fetched, SourceError>;

    /// Brings `name` close without needing its bytes now: a cache that
    /// already holds it does nothing (`Ok(None)`). Default: a fetch.
    async fn prefetch(&self, name: &ChunkName) -> Result<Option<Fetched>, SourceError> {
        self.fetch(name).await.map(Some)
    }

    /// Whether a fetch of `name` would be served here, on this machine:
    /// work for the CPU, no wait on a network. Cheap; may be stale.
    fn holds(&self, _name: &ChunkName) -> bool {
        false
    }

    /// [`ChunkSource::fetch`] of two chunks that [`ChunkSource::holds`]
    /// says are here, for a preload (no reader waiting on either): a
    /// source may do both at once. Default: one after the other.
    async fn fetch_local_pair(
        &self,
        a: &ChunkName,
        b: &ChunkName,
    ) -> [Result<Fetched, SourceError>; 2] {
        [self.fetch(a).await, self.fetch(b).await]
    }
}

/// The origin store: the last tier.
#[derive(Debug, Clone)]
pub struct Origin {
    store: Arc<dyn Store>,
}

impl Origin {
    pub fn new(store: Arc<dyn Store>) -> Origin {
        Origin { store }
    }
}

#[async_trait::async_trait]
impl ChunkSource for Origin {
    async fn fetch(&self, name: &ChunkName) -> Result<Fetched, SourceError> {
        let bytes = kindling_repo::read_chunk(self.store.as_ref(), name)
            .await
            .map_err(SourceError::Origin)?;
        Ok(Fetched {
            bytes,
            tier: Tier::Origin,
        })
    }
}

/// The worker-local cache in front of another tier: a miss fills the
/// cache from `next`, once across every agent on the machine.
#[derive(Debug, Clone)]
pub struct WorkerCached {
    cache: kindling_cache::WorkerCache,
    next: Arc<dyn ChunkSource>,
}

impl WorkerCached {
    pub fn new(cache: kindling_cache::WorkerCache, next: Arc<dyn ChunkSource>) -> WorkerCached {
        WorkerCached { cache, next }
    }

    pub fn cache(&self) -> &kindling_cache::WorkerCache {
        &self.cache
    }
}

#[async_trait::async_trait]
impl ChunkSource for WorkerCached {
    async fn fetch(&self, name: &ChunkName) -> Result<Fetched, SourceError> {
        let next = self.next.clone();
        let below = std::sync::Mutex::new(None);
        let (bytes, hit) = self
            .cache
            .get_or_fill(name, || async {
                let f = next.fetch(name).await?;
                *below.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.tier);
                Ok::<_, SourceError>(f.bytes)
            })
            .await
            .map_err(|e| SourceError::Cache(Box::new(e)))?;
        let tier = match hit {
            kindling_cache::Hit::Filled => below
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or(Tier::Origin),
            _ => Tier::WorkerCache,
        };
        Ok(Fetched { bytes, tier })
    }

    async fn prefetch(&self, name: &ChunkName) -> Result<Option<Fetched>, SourceError> {
        // A warm cache must not spend a verification per chunk, nor push
        // hot chunks out of the memory tier, on chunks it already has.
        if self.cache.contains(name) {
            return Ok(None);
        }
        self.fetch(name).await.map(Some)
    }

    fn holds(&self, name: &ChunkName) -> bool {
        self.cache.contains(name)
    }

    /// Both read from disk in one go and hashed together; whatever the
    /// cache turns out not to have (or fails to read) takes the usual path.
    async fn fetch_local_pair(
        &self,
        a: &ChunkName,
        b: &ChunkName,
    ) -> [Result<Fetched, SourceError>; 2] {
        let found = self.cache.get_pair(a, b).await.unwrap_or_default();
        let [fa, fb] = found.map(|f| {
            f.map(|bytes| Fetched {
                bytes,
                tier: Tier::WorkerCache,
            })
        });
        let a = match fa {
            Some(f) => Ok(f),
            None => self.fetch(a).await,
        };
        let b = match fb {
            Some(f) => Ok(f),
            None => self.fetch(b).await,
        };
        [a, b]
    }
}

/// The AZ cache cluster in front of another tier (the origin). A hit is
/// rebuilt from the first stripes to arrive and checked against its name
/// by the client; a miss - or a cluster too broken to answer - reads from
/// `next`, and what the origin returned is written to the cluster in the
/// background: the read never waits for the fill.
///
/// A cluster that has not answered after `hedge_after` is slow, not
/// necessarily missing the chunk (nodes that share a busy worker's cores,
/// a flash tier under load): the origin is asked too and the first answer
/// wins. One hedge per read; a chunk the origin delivered that way is
/// written back only if the cluster's answer, when it comes, is a miss.
#[derive(Debug, Clone)]
pub struct AzCached {
    client: Arc<kindling_azcache::AzClient>,
    next: Arc<dyn ChunkSource>,
    hedge_after: std::time::Duration,
}

impl AzCached {
    pub fn new(
        client: Arc<kindling_azcache::AzClient>,
        next: Arc<dyn ChunkSource>,
        hedge_after: std::time::Duration,
    ) -> AzCached {
        AzCached {
            client,
            next,
            hedge_after,
        }
    }

    /// What the next tier returned after a miss: a chunk from the origin
    /// is written to the cluster.
    fn after_miss(&self, name: &ChunkName, f: Fetched) -> Fetched {
        if f.tier == Tier::Origin {
            self.client.fill(*name, f.bytes.clone());
        }
        f
    }

    pub fn client(&self) -> &Arc<kindling_azcache::AzClient> {
        &self.client
    }
}

#[async_trait::async_trait]
impl ChunkSource for AzCached {
    async fn fetch(&self, name: &ChunkName) -> Result<Fetched, SourceError> {
        let hit = |bytes| {
            Ok(Fetched {
                bytes,
                tier: Tier::Az,
            })
        };
        let (client, key) = (self.client.clone(), *name);
        // Owned, so that a get the origin overtakes can finish on its own.
        let mut az = Box::pin(async move { client.get(&key).await });
        // A failed get is a miss: the client counts it, the origin answers.
        match tokio::time::timeout(self.hedge_after, &mut az).await {
            Ok(Ok(Some(bytes))) => return hit(bytes),
            Ok(_) => return Ok(self.after_miss(name, self.next.fetch(name).await?)),
            Err(_slow) => {}
        }
        let origin = self.next.fetch(name);
        tokio::pin!(origin);
        tokio::select! {
            got = &mut az => match got {
                Ok(Some(bytes)) => hit(bytes),
                _ => Ok(self.after_miss(name, origin.await?)),
            },
            f = &mut origin => {
                let f = f?;
                if f.tier == Tier::Origin {
                    // The cluster was slow; should it turn out not to hold
                    // the chunk, it gets it.
                    let (client, bytes) = (self.client.clone(), f.bytes.clone());
                    tokio::spawn(async move {
                        if !matches!(az.await, Ok(Some(_))) {
                            client.fill(key, bytes);
                        }
                    });
                }
                Ok(f)
            }
        }
    }
}
