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
