//! `push`: OCI image -> flatten -> chunks -> encrypt -> upload -> manifest.
//!
//! Three stages run at once, joined by bounded channels:
//!
//! 1. the flattener (its own decompression threads included) writes into a
//!    [`ChunkSink`], which ships each chunk as soon as it is settled;
//! 2. `encrypt_threads` threads drop zero chunks and encrypt the rest
//!    (SHA-256, AES-CTR, SHA-256), two chunks at a time, since two hashes
//!    interleaved cost about one;
//! 3. an async dispatcher skips names already uploaded by this push, and
//!    runs up to `uploads` concurrent "exists? else put" tasks against the
//!    store (HEAD first: an S3 PUT of a chunk the store has would send its
//!    bytes for nothing).
//!
//! Failure anywhere closes the channels, which stops the other stages; the
//! manifest and the image name are written only after every chunk is in
//! the store, so a failed or interrupted push leaves at most unreferenced
//! chunks behind (garbage for the collector, harmless to readers).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kindling_chunk::{
    cipher, ChunkEntry, ChunkKey, ChunkName, Manifest, RunConfig, Salt, TenantKey, MAX_IMAGE_BYTES,
};
use kindling_flatten::{FlattenOptions, FlattenSummary};
use kindling_oci::Image;
use kindling_store::Store;
use tokio::task::JoinSet;

use crate::error::RepoError;
use crate::layout::{chunk_key, validate_image_name, Repo};
use crate::sink::{ChunkSink, SealedChunk};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub flatten: FlattenOptions,
    /// Encryption threads. Default 2: one per core of a small worker; the
    /// flattener's own threads mostly wait on these when both run.
    pub encrypt_threads: usize,
    /// Concurrent store requests. Default 16: enough to hide S3 latency
    /// (36 ms median in the paper) at 512 KiB chunks.
    pub uploads: usize,
    /// Live counters for a progress display.
    pub counters: Option<Arc<PushCounters>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            flatten: FlattenOptions::default(),
            encrypt_threads: 2,
            uploads: 16,
            counters: None,
        }
    }
}

/// Counters a progress bar can read while a push runs.
#[derive(Debug, Default)]
pub struct PushCounters {
    pub chunks: AtomicU64,
    pub zero_chunks: AtomicU64,
    pub present_chunks: AtomicU64,
    pub uploaded_chunks: AtomicU64,
    pub uploaded_bytes: AtomicU64,
}

/// What a push did. `chunks = zero_chunks + present_chunks + uploaded_chunks`.
#[derive(Debug, Clone)]
pub struct PushSummary {
    pub name: String,
    /// `sha256:<hex>` of the sealed manifest.
    pub manifest: String,
    pub manifest_bytes: u64,
    pub image_bytes: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    /// All-zero chunks: not stored.
    pub zero_chunks: u64,
    /// Non-zero chunks not uploaded because the store, or an earlier chunk
    /// of this image, already had them.
    pub present_chunks: u64,
    pub uploaded_chunks: u64,
    pub uploaded_bytes: u64,
    pub seconds: f64,
    pub flatten: FlattenSummary,
}

impl PushSummary {
    /// Share of the non-zero chunks that were not uploaded.
    pub fn dedup_ratio(&self) -> f64 {
        let stored = self.chunks - self.zero_chunks;
        if stored == 0 {
            0.0
        } else {
            self.present_chunks as f64 / stored as f64
        }
    }
}

enum Encrypted {
    Zero(u64),
    Stored {
        index: u64,
        name: ChunkName,
        key: ChunkKey,
        data: Bytes,
    },
}

/// A chunk's plaintext, unless it is all zeros (not stored).
fn plaintext((index, buf): SealedChunk) -> Result<(u64, Vec<u8>), Encrypted> {
    match buf {
        Some(b) if !cipher::is_zero(&b) => Ok((index, b.into_vec())),
        _ => Err(Encrypted::Zero(index)),
    }
}

fn stored(index: u64, (key, name): (ChunkKey, ChunkName), v: Vec<u8>) -> Encrypted {
    Encrypted::Stored {
        index,
        name,
        key,
        data: Bytes::from(v),
    }
}

/// Encrypts the chunks an encryptor has at hand, two together where it
/// can: a pair costs about one chunk's hashing (`encrypt_pair_in_place`).
fn encrypt(salt: &Salt, first: SealedChunk, second: Option<SealedChunk>) -> Vec<Encrypted> {
    let mut out = Vec::with_capacity(2);
    let mut todo = Vec::with_capacity(2);
    for c in std::iter::once(first).chain(second) {
        match plaintext(c) {
            Ok(p) => todo.push(p),
            Err(zero) => out.push(zero),
        }
    }
    match <[_; 2]>::try_from(todo) {
        Ok([(ia, mut a), (ib, mut b)]) => {
            let [ka, kb] = cipher::encrypt_pair_in_place(salt, &mut a, &mut b);
            out.push(stored(ia, ka, a));
            out.push(stored(ib, kb, b));
        }
        Err(todo) => {
            for (i, mut v) in todo {
                let kn = cipher::encrypt_in_place(salt, &mut v);
                out.push(stored(i, kn, v));
            }
        }
    }
    out
}

/// Upload one chunk unless the store has it; returns the bytes sent.
async fn upload(
    store: Arc<dyn Store>,
    name: ChunkName,
    data: Bytes,
) -> Result<u64, kindling_store::StoreError> {
    let key = chunk_key(&name);
    if store.exists(&key).await? {
        return Ok(0);
    }
    let n = data.len() as u64;
    store.put(&key, data).await?;
    Ok(n)
}

/// Flattens `image` into the store as `name`.
pub async fn push(
    repo: &Repo,
    image: Image,
    name: &str,
    key: &TenantKey,
    opts: &PushOptions,
) -> Result<PushSummary, RepoError> {
    let started = Instant::now();
    validate_image_name(name)?;
    let salt = repo.salt().await?;
    let cs = opts.flatten.chunk_size;
    let counters = opts.counters.clone().unwrap_or_default();
    let config = RunConfig {
        entrypoint: image.config.entrypoint.clone(),
        cmd: image.config.cmd.clone(),
        env: image.config.env.clone(),
        working_dir: image.config.working_dir.clone(),
        user: image.config.user.clone(),
        architecture: image.config.architecture.clone(),
        os: image.config.os.clone(),
        source: image
            .manifest_digest
            .as_ref()
            .unwrap_or(&image.config_digest)
            .to_string(),
        hot_ranges: Vec::new(),
    };
    // Before any work: with the two hot ranges it gets at the end, at
    // their longest.
    let bytes = RunConfig {
        hot_ranges: vec![[u64::MAX; 2]; 2],
        ..config.clone()
    }
    .encoded_len();
    if bytes > kindling_chunk::MAX_CONFIG_BYTES {
        return Err(RepoError::ConfigTooLarge {
            bytes,
            max: kindling_chunk::MAX_CONFIG_BYTES,
        });
    }

    let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<SealedChunk>(4);
    let (enc_tx, mut enc_rx) = tokio::sync::mpsc::channel::<Encrypted>(16);
    let fopts = opts.flatten.clone();
    let flattener = tokio::task::spawn_blocking(move || {
        let sink = ChunkSink::new(cs, chunk_tx);
        let summary = kindling_flatten::flatten(&image, &sink, &fopts)?;
        let chunks = sink.finish()?;
        Ok::<_, RepoError>((summary, chunks))
    });
    for _ in 0..opts.encrypt_threads.max(1) {
        let rx = chunk_rx.clone();
        let tx = enc_tx.clone();
        let salt = salt.clone();
        tokio::task::spawn_blocking(move || {
            // Waits for a second chunk: a chunk held back for one more
            // chunk's flattening costs push nothing, and two hashed together
            // save a hash. The last one goes alone when the channel closes.
            while let Ok(first) = rx.recv() {
                for e in encrypt(&salt, first, rx.recv().ok()) {
                    if tx.blocking_send(e).is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop((chunk_rx, enc_tx));

    let mut table: Vec<Option<ChunkEntry>> = Vec::new();
    let mut seen = HashSet::new();
    let mut uploads = JoinSet::new();
    let mut failure: Option<RepoError> = None;
    let record = |r: Result<Result<u64, kindling_store::StoreError>, tokio::task::JoinError>,
                  failure: &mut Option<RepoError>| match r {
        Ok(Ok(0)) => {
            counters.present_chunks.fetch_add(1, Relaxed);
        }
        Ok(Ok(n)) => {
            counters.uploaded_chunks.fetch_add(1, Relaxed);
            counters.uploaded_bytes.fetch_add(n, Relaxed);
        }
        Ok(Err(e)) => {
            failure.get_or_insert(repo.err(e));
        }
        Err(e) => {
            failure.get_or_insert(RepoError::Io(std::io::Error::other(e)));
        }
    };
    while let Some(enc) = enc_rx.recv().await {
        counters.chunks.fetch_add(1, Relaxed);
        let (index, entry) = match enc {
            Encrypted::Zero(index) => {
                counters.zero_chunks.fetch_add(1, Relaxed);
                (index, ChunkEntry::Zero)
            }
            Encrypted::Stored {
                index,
                name,
                key,
                data,
            } => {
                if seen.insert(name) {
                    while uploads.len() >= opts.uploads.max(1) {
                        if let Some(r) = uploads.join_next().await {
                            record(r, &mut failure);
                        }
                    }
                    uploads.spawn(upload(repo.store().clone(), name, data));
                } else {
                    counters.present_chunks.fetch_add(1, Relaxed);
                }
                (index, ChunkEntry::Stored { name, key })
            }
        };
        if failure.is_some() {
            break;
        }
        let i = index as usize;
        if table.len() <= i {
            table.resize(i + 1, None);
        }
        table[i] = Some(entry);
    }
    // Closing the receiver stops the encryptors and, through the sink, the
    // flattener.
    drop(enc_rx);
    while let Some(r) = uploads.join_next().await {
        record(r, &mut failure);
    }
    let flattened = flattener
        .await
        .map_err(|e| RepoError::Io(std::io::Error::other(e)))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let (flatten, chunks) = flattened?;
    let image_bytes = flatten.image_bytes;
    if image_bytes > MAX_IMAGE_BYTES {
        return Err(RepoError::TooLarge {
            size: image_bytes,
            max: MAX_IMAGE_BYTES,
        });
    }
    if table.len() as u64 != chunks || table.iter().any(Option::is_none) {
        return Err(RepoError::Io(std::io::Error::other(
            "internal error: a chunk of the image was never processed",
        )));
    }
    let mut config = config;
    config.hot_ranges = vec![[0, cs], flatten.hot_metadata];
    let manifest = Manifest {
        image_bytes,
        chunk_size: cs,
        salt_id: salt.id(),
        chunks: table.into_iter().flatten().collect(),
        config,
    };
    let sealed = manifest.seal(key);
    let manifest_bytes = sealed.len() as u64;
    let digest = repo.put_manifest(sealed).await?;
    repo.set_image(name, &digest).await?;
    Ok(PushSummary {
        name: name.to_owned(),
        manifest: digest,
        manifest_bytes,
        image_bytes,
        chunk_size: cs,
        chunks,
        zero_chunks: counters.zero_chunks.load(Relaxed),
        present_chunks: counters.present_chunks.load(Relaxed),
        uploaded_chunks: counters.uploaded_chunks.load(Relaxed),
        uploaded_bytes: counters.uploaded_bytes.load(Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        flatten,
    })
}
