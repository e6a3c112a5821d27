//! `fetch`: the whole image back from the store, every chunk verified.
//!
//! Chunks are read concurrently, checked against their names, decrypted on
//! the blocking pool and written at their offsets; zero chunks are left as
//! holes. A chunk that fails verification is read once more (a damaged
//! transfer), then the fetch fails naming the chunk; no unverified byte is
//! ever written. The caller owns the output file and its cleanup.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use kindling_chunk::{cipher, ChunkEntry, ChunkError, ChunkKey, ChunkName, TenantKey};
use kindling_store::Store;

use crate::error::{ChunkFault, RepoError};
use crate::layout::{chunk_key, Repo};

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Chunks in flight. Default 16, as for uploads.
    pub concurrency: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions { concurrency: 16 }
    }
}

/// What a fetch did.
#[derive(Debug, Clone)]
pub struct FetchSummary {
    pub manifest: String,
    pub image_bytes: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    pub fetched_bytes: u64,
    pub seconds: f64,
}

/// Reads chunk `name` and checks it; one retry on a failed check.
pub async fn read_chunk(store: &dyn Store, name: &ChunkName) -> Result<bytes::Bytes, ChunkFault> {
    let key = chunk_key(name);
    let mut attempt = 0;
    loop {
        let data = store.get(&key).await.map_err(ChunkFault::Store)?;
        // Hashing 512 KiB takes ~0.4 ms: cheap enough to do in place.
        match cipher::verify(name, &data) {
            Ok(()) => return Ok(data),
            Err(e) if attempt > 0 => return Err(ChunkFault::Corrupt(e)),
            Err(_) => attempt += 1,
        }
    }
}

/// Fetches image `name` into `out`, a new empty file.
pub async fn fetch(
    repo: &Repo,
    name: &str,
    key: &TenantKey,
    out: &File,
    opts: &FetchOptions,
) -> Result<FetchSummary, RepoError> {
    let started = Instant::now();
    let (image, manifest) = repo.open_image(name, key).await?;
    let out = Arc::new(out.try_clone()?);
    let store = repo.store().clone();
    let cs = manifest.chunk_size;
    let image_bytes = manifest.image_bytes;
    let stored: Vec<(usize, ChunkName, ChunkKey)> = manifest
        .chunks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            ChunkEntry::Stored { name, key } => Some((i, *name, key.clone())),
            ChunkEntry::Zero => None,
        })
        .collect();
    let fetched = stored.len() as u64;
    let fetched_bytes: u64 = stream::iter(stored)
        .map(|(index, name, ckey)| {
            let store = store.clone();
            let out = out.clone();
            async move {
                let offset = index as u64 * cs;
                let fault = |source| RepoError::Chunk {
                    index,
                    offset,
                    name: name.to_hex(),
                    source: Box::new(source),
                };
                let data = read_chunk(store.as_ref(), &name).await.map_err(fault)?;
                let expected = (image_bytes - offset).min(cs) as usize;
                if data.len() != expected {
                    return Err(fault(ChunkFault::Corrupt(ChunkError::Length {
                        name: name.to_hex(),
                        expected,
                        actual: data.len(),
                    })));
                }
                let n = data.len() as u64;
                tokio::task::spawn_blocking(move || {
                    let mut buf = data.to_vec();
                    cipher::decrypt_in_place(&ckey, &mut buf);
                    out.write_all_at(&buf, offset)
                })
                .await
                .map_err(|e| RepoError::Io(std::io::Error::other(e)))??;
                Ok::<u64, RepoError>(n)
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    out.set_len(manifest.image_bytes)?;
    Ok(FetchSummary {
        manifest: image.manifest,
        image_bytes: manifest.image_bytes,
        chunks: manifest.chunks.len() as u64,
        zero_chunks: manifest.chunks.len() as u64 - fetched,
        fetched_bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}
