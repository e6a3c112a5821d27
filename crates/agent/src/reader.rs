//! The read path: (offset, length) -> chunks -> tiers -> verify -> decrypt.
//!
//! A small LRU of verified ciphertext chunks absorbs the kernel's habit of
//! reading a chunk in several pieces (128 KiB FUSE reads of a 512 KiB
//! chunk would otherwise fetch and verify it four times). A read decrypts
//! only the bytes it returns (CTR seeks), straight into its reply; the
//! chunks kept are the very buffers the worker cache's memory tier holds,
//! so keeping them costs no second copy. In-flight fetches are shared:
//! concurrent reads of one chunk wait on one fetch. Lock order: only
//! `state` is ever locked, never across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use futures_util::future::try_join_all;
use kindling_chunk::{cipher, ChunkEntry, Manifest};
use tokio::sync::OnceCell;

use crate::error::AgentError;
use crate::source::{ChunkSource, SourceError, Tier};
use crate::stats::Stats;

/// How the reader caches.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Verified ciphertext chunks kept in memory. Default 32 (16 MiB at
    /// 512 KiB, shared with the worker cache's memory tier): a start's
    /// reads wander over more chunks than that, and every chunk dropped
    /// too early is read, and hashed, again.
    pub cached_chunks: usize,
    /// Prefetched chunks are decrypted and pushed into the kernel's page
    /// cache of the disk file (a [`PageSink`], attached once the file is
    /// served), so the kernel's reads of them never reach the agent.
    /// Prefetches wait for the sink. Only for a disk nobody writes: a
    /// store racing a write could put old bytes over new ones.
    pub preload: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            cached_chunks: 32,
            preload: false,
        }
    }
}

/// Preloaded chunks waiting for their store, at most (8 MiB at 512 KiB,
/// inside the agent's memory budget). Each store runs on a blocking thread
/// and may wait there for the kernel, so an agent's runtime needs more
/// blocking threads than this.
pub const PENDING_STORES: usize = 16;

/// Where preloaded chunks go: the kernel's page cache of the disk file.
pub trait PageSink: Send + Sync + std::fmt::Debug {
    /// Puts `data` at `offset` of the disk file. Blocks (it copies).
    fn store(&self, offset: u64, data: &[u8]) -> std::io::Result<()>;
}

/// A stored chunk's verified ciphertext.
type Cipher = bytes::Bytes;

/// A chunk a preload has taken on: its key and name.
type Claimed = (kindling_chunk::ChunkKey, kindling_chunk::ChunkName);

/// What a prefetch worker does with the chunk it took: preload it with the
/// next one (both local), or alone (whether it is local, if looked up).
enum Partner {
    Pair(usize),
    Alone(Option<bool>),
}

/// Who wants a chunk: a read keeps it (in the small cache, in the trace);
/// a preload hands it to the page cache and must not push out what reads
/// keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Read,
    Preload,
}

#[derive(Debug, Default)]
struct State {
    /// Stored chunks in the order they were first read, and a bitmap of
    /// which were: this start's trace.
    trace: Vec<u32>,
    traced: std::collections::HashSet<usize>,
    /// Most recently used last.
    lru: VecDeque<(usize, Cipher)>,
    inflight: HashMap<usize, Arc<OnceCell<Cipher>>>,
    /// Chunks a preload holds until they are in the page cache: a read
    /// racing the store takes them from here instead of fetching (and
    /// verifying) them again. At most the prefetch's concurrency.
    preloading: HashMap<usize, Cipher>,
    /// Chunks a preload has taken on: the hot ranges and the trace overlap,
    /// and a chunk is fetched, verified and stored once.
    preloaded: std::collections::HashSet<usize>,
    /// Chunks waiting to be prefetched, and the tasks taking from them.
    waiting: VecDeque<usize>,
    prefetchers: usize,
    /// The start is over: later reads are not part of its trace.
    trace_ended: bool,
}

impl State {
    fn note_read(&mut self, index: usize) {
        if !self.trace_ended && self.traced.insert(index) {
            self.trace.push(index as u32);
        }
    }
}

/// Reads an image through the tiers.
#[derive(Debug)]
pub struct ImageReader {
    manifest: Arc<Manifest>,
    source: Arc<dyn ChunkSource>,
    stats: Arc<Stats>,
    opts: ReaderOptions,
    state: Mutex<State>,
    sink: tokio::sync::watch::Sender<Option<Arc<dyn PageSink>>>,
    /// Bounds the preloaded chunks waiting to be stored (their memory).
    store_slots: Arc<tokio::sync::Semaphore>,
    /// Bounds the preloads of chunks the tiers hold locally (see
    /// [`ChunkSource::holds`]): one per core.
    local_slots: tokio::sync::Semaphore,
}

impl ImageReader {
    pub fn new(
        manifest: Arc<Manifest>,
        source: Arc<dyn ChunkSource>,
        stats: Arc<Stats>,
        opts: ReaderOptions,
    ) -> ImageReader {
        ImageReader {
            manifest,
            source,
            stats,
            opts,
            state: Mutex::new(State::default()),
            sink: tokio::sync::watch::Sender::new(None),
            store_slots: Arc::new(tokio::sync::Semaphore::new(PENDING_STORES)),
            local_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        }
    }

    /// Where preloaded chunks go from now on (see [`ReaderOptions::preload`]).
    pub fn attach_page_sink(&self, sink: Arc<dyn PageSink>) {
        self.sink.send_replace(Some(sink));
    }

    pub fn size(&self) -> u64 {
        self.manifest.image_bytes
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `len` bytes at `offset`; short only at the end of the image.
    pub async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, AgentError> {
        let Some((first, last, end)) = self.span(offset, len) else {
            return Ok(Vec::new());
        };
        let chunks = try_join_all((first..=last).map(|i| self.chunk(i))).await?;
        Ok(self.assemble(offset, end, first, chunks))
    }

    /// [`ImageReader::read`], if every chunk it needs is in memory now
    /// (held by a preload or in the small cache): then it runs on the
    /// caller's thread, with no task to schedule. A start's reads are
    /// mostly these, and a task waits behind every fetch the runtime is
    /// busy with. `None`: a chunk must be fetched; nothing was counted.
    pub fn read_cached(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let Some((first, last, end)) = self.span(offset, len) else {
            return Some(Vec::new());
        };
        let chunks = {
            let mut s = self.lock();
            let mut found = Vec::with_capacity(last - first + 1);
            for i in first..=last {
                found.push(match self.manifest.chunks.get(i)? {
                    ChunkEntry::Zero => None,
                    ChunkEntry::Stored { .. } => Some(
                        s.preloading
                            .get(&i)
                            .or_else(|| s.lru.iter().find(|(j, _)| *j == i).map(|(_, c)| c))?
                            .clone(),
                    ),
                });
            }
            // Every chunk is here: count them as `chunk_as` would.
            for (i, c) in (first..=last).zip(&found) {
                if c.is_none() {
                    self.stats.chunks_zero.fetch_add(1, Relaxed);
                    continue;
                }
                s.note_read(i);
                if let Some(pos) = s.lru.iter().position(|(j, _)| *j == i) {
                    if let Some(hit) = s.lru.remove(pos) {
                        s.lru.push_back(hit);
                    }
                }
                self.stats.chunks_memory.fetch_add(1, Relaxed);
            }
            found
        };
        Some(self.assemble(offset, end, first, chunks))
    }

    /// The chunks `len` bytes at `offset` span and where they end, or
    /// `None` if that is nothing.
    fn span(&self, offset: u64, len: usize) -> Option<(usize, usize, u64)> {
        let size = self.size();
        if offset >= size || len == 0 {
            return None;
        }
        let end = (offset + len as u64).min(size);
        let cs = self.manifest.chunk_size;
        Some(((offset / cs) as usize, ((end - 1) / cs) as usize, end))
    }

    /// The plaintext of `offset..end` from the ciphertext of the chunks
    /// from `first` on (`None`: a zero chunk).
    fn assemble(
        &self,
        offset: u64,
        end: u64,
        first: usize,
        chunks: Vec<Option<Cipher>>,
    ) -> Vec<u8> {
        let cs = self.manifest.chunk_size;
        let mut out = vec![0u8; (end - offset) as usize];
        for (i, cipher) in (first..).zip(chunks) {
            let chunk_start = i as u64 * cs;
            let from = offset.max(chunk_start);
            let to = end.min(chunk_start + cs);
            if let (Some(c), Some(ChunkEntry::Stored { key, .. })) =
                (cipher, self.manifest.chunks.get(i))
            {
                let src = &c[(from - chunk_start) as usize..(to - chunk_start) as usize];
                let dst = &mut out[(from - offset) as usize..(to - offset) as usize];
                dst.copy_from_slice(src);
                cipher::decrypt_range(key, from - chunk_start, dst);
            }
        }
        out
    }

    /// The verified ciphertext of chunk `index`, or `None` for a zero
    /// chunk.
    pub async fn chunk(&self, index: usize) -> Result<Option<Cipher>, AgentError> {
        self.chunk_as(index, Use::Read).await
    }

    async fn chunk_as(&self, index: usize, usage: Use) -> Result<Option<Cipher>, AgentError> {
        let name = match self.manifest.chunks.get(index) {
            Some(ChunkEntry::Stored { name, .. }) => *name,
            Some(ChunkEntry::Zero) => {
                self.stats.chunks_zero.fetch_add(1, Relaxed);
                return Ok(None);
            }
            None => return Err(AgentError::OutOfRange { size: self.size() }),
        };
        let cell = {
            let mut s = self.lock();
            if usage == Use::Read {
                s.note_read(index);
            }
            if let Some(p) = s.preloading.get(&index) {
                self.stats.chunks_memory.fetch_add(1, Relaxed);
                return Ok(Some(p.clone()));
            }
            if let Some(pos) = s.lru.iter().position(|(i, _)| *i == index) {
                let hit = s.lru.remove(pos).map(|(_, p)| p);
                if let Some(p) = hit {
                    s.lru.push_back((index, p.clone()));
                    self.stats.chunks_memory.fetch_add(1, Relaxed);
                    return Ok(Some(p));
                }
            }
            s.inflight.entry(index).or_default().clone()
        };
        let expected = self.manifest.chunk_len(index);
        let result = cell
            .get_or_try_init(|| async {
                let fetched = self.source.fetch(&name).await?;
                if fetched.bytes.len() != expected {
                    return Err(SourceError::Cache(
                        format!("{} bytes, expected {expected}", fetched.bytes.len()).into(),
                    ));
                }
                self.count(fetched.tier, fetched.bytes.len());
                Ok(fetched.bytes)
            })
            .await
            .cloned();
        let mut s = self.lock();
        if s.inflight
            .get(&index)
            .is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            s.inflight.remove(&index);
        }
        match result {
            Ok(p) => {
                if usage == Use::Read && !s.lru.iter().any(|(i, _)| *i == index) {
                    s.lru.push_back((index, p.clone()));
                    while s.lru.len() > self.opts.cached_chunks {
                        s.lru.pop_front();
                    }
                }
                Ok(Some(p))
            }
            Err(e) => {
                let e = AgentError::Chunk {
                    index,
                    offset: self.manifest.chunk_offset(index),
                    name: name.to_hex(),
                    source: Box::new(e),
                };
                self.stats.chunk_failed(&e);
                Err(e)
            }
        }
    }
}

impl ImageReader {
    /// Starts fetching every stored chunk that `ranges` touch, `concurrency`
    /// at a time, in the background, into the tiers below (the worker
    /// cache keeps them; reads then find them there, or join the fetch in
    /// flight). Origin fetches count in the stats like any other.
    pub fn prefetch(self: &Arc<Self>, ranges: &[[u64; 2]], concurrency: usize) {
        let cs = self.manifest.chunk_size;
        let mut indices: Vec<usize> = ranges
            .iter()
            .filter(|[_, len]| *len > 0)
            .flat_map(|[off, len]| (off / cs)..=((off + len - 1) / cs))
            .map(|i| i as usize)
            .collect();
        indices.sort_unstable();
        indices.dedup();
        self.enqueue(indices, false, concurrency);
    }

    /// Like [`ImageReader::prefetch`], for chunk indices, in the given
    /// order (a startup trace's), ahead of the chunks still waiting: a
    /// trace lists what the start reads, in the order it reads it.
    pub fn prefetch_chunks(self: &Arc<Self>, indices: Vec<usize>, concurrency: usize) {
        self.enqueue(indices, true, concurrency);
    }

    fn enqueue(self: &Arc<Self>, indices: Vec<usize>, first: bool, concurrency: usize) {
        let indices = indices
            .into_iter()
            .filter(|&i| matches!(self.manifest.chunks.get(i), Some(ChunkEntry::Stored { .. })));
        let start = {
            let mut s = self.lock();
            if first {
                let ahead: Vec<usize> = indices.collect();
                for i in ahead.into_iter().rev() {
                    s.waiting.push_front(i);
                }
            } else {
                s.waiting.extend(indices);
            }
            let start = concurrency
                .max(1)
                .min(s.waiting.len())
                .saturating_sub(s.prefetchers);
            s.prefetchers += start;
            start
        };
        for _ in 0..start {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    let next = {
                        let mut s = this.lock();
                        let next = s.waiting.pop_front();
                        if next.is_none() {
                            s.prefetchers -= 1;
                        }
                        next
                    };
                    match next {
                        Some(i) => match this.local_partner(i) {
                            Partner::Pair(j) => this.preload_pair(i, j).await,
                            Partner::Alone(local) => this.prefetch_one(i, local).await,
                        },
                        None => return,
                    }
                }
            });
        }
    }

    /// `local`: whether this machine's tiers hold the chunk, if already
    /// looked up.
    async fn prefetch_one(self: &Arc<Self>, index: usize, local: Option<bool>) {
        // Errors are left for the read that needs the chunk.
        if self.opts.preload {
            if let Some(claimed) = self.claim(index) {
                let _ = self.preload_claimed(index, claimed, local).await;
            }
            return;
        }
        let Some(ChunkEntry::Stored { name, .. }) = self.manifest.chunks.get(index) else {
            return;
        };
        if let Ok(Some(f)) = self.source.prefetch(name).await {
            self.count(f.tier, f.bytes.len());
        }
    }

    /// Fetches chunk `index`, which this preload has claimed, decrypts it
    /// whole and stores it in the page sink. The fetch does not wait for
    /// the sink: the disk is served a little after the agent opens, and a
    /// cold start should not lose that head start. `local`: whether this
    /// machine's tiers hold it, if already looked up.
    async fn preload_claimed(
        self: &Arc<Self>,
        index: usize,
        (key, name): Claimed,
        local: Option<bool>,
    ) -> Result<(), AgentError> {
        // A chunk the worker cache holds costs only CPU (read, verify):
        // more of those at once than there are cores just crowds out the
        // container and the reads it is waiting on.
        let slot = match local.unwrap_or_else(|| self.source.holds(&name)) {
            true => self.local_slots.acquire().await.ok(),
            false => None,
        };
        let Some(cipher) = self.chunk_as(index, Use::Preload).await? else {
            return Ok(());
        };
        drop(slot);
        self.hand_to_store(index, key, cipher).await;
        Ok(())
    }

    /// When preloading chunk `index`, whether it and the next chunk
    /// waiting are both local: the two are then read and verified
    /// together (see [`ChunkSource::fetch_local_pair`]). Each chunk's
    /// tiers are looked up once here, not again by the preload.
    fn local_partner(&self, index: usize) -> Partner {
        let local = |i: usize| match self.manifest.chunks.get(i) {
            Some(ChunkEntry::Stored { name, .. }) => self.source.holds(name),
            _ => false,
        };
        if !self.opts.preload {
            return Partner::Alone(None);
        }
        if !local(index) {
            return Partner::Alone(Some(false));
        }
        let Some(next) = self.lock().waiting.pop_front() else {
            return Partner::Alone(Some(true));
        };
        if local(next) {
            return Partner::Pair(next);
        }
        self.lock().waiting.push_front(next);
        Partner::Alone(Some(true))
    }

    /// [`ImageReader::preload_claimed`] of two local chunks, read and verified in
    /// one go. A chunk the pair read does not deliver takes the single
    /// path, which also reports its errors.
    async fn preload_pair(self: &Arc<Self>, a: usize, b: usize) {
        let ((key_a, name_a), (key_b, name_b)) = match (self.claim(a), self.claim(b)) {
            (Some(ca), Some(cb)) => (ca, cb),
            // Some preload took one on already (the hot ranges and the
            // trace overlap): the other goes alone.
            (Some(claimed), None) => {
                let _ = self.preload_claimed(a, claimed, Some(true)).await;
                return;
            }
            (None, Some(claimed)) => {
                let _ = self.preload_claimed(b, claimed, Some(true)).await;
                return;
            }
            (None, None) => return,
        };
        let slot = self.local_slots.acquire().await.ok();
        let fetched = self.source.fetch_local_pair(&name_a, &name_b).await;
        drop(slot);
        for ((index, key), got) in [(a, key_a), (b, key_b)].into_iter().zip(fetched) {
            match got {
                Ok(f) if f.bytes.len() == self.manifest.chunk_len(index) => {
                    self.count(f.tier, f.bytes.len());
                    self.hand_to_store(index, key, f.bytes).await;
                }
                _ => {
                    if let Ok(Some(cipher)) = self.chunk_as(index, Use::Preload).await {
                        self.hand_to_store(index, key, cipher).await;
                    }
                }
            }
        }
    }

    /// Marks chunk `index` as taken on by a preload; its key and name,
    /// unless it is not stored or some preload has taken it on already.
    fn claim(&self, index: usize) -> Option<Claimed> {
        let Some(ChunkEntry::Stored { key, name }) = self.manifest.chunks.get(index) else {
            return None;
        };
        self.lock()
            .preloaded
            .insert(index)
            .then(|| (key.clone(), *name))
    }

    /// Hands a verified chunk to the page sink, on a task of its own: a
    /// store can wait a long time for pages a kernel read holds locked (a
    /// read spanning into a chunk still on its way), and must not hold up
    /// the fetches behind it meanwhile. Waits only for a store slot.
    async fn hand_to_store(
        self: &Arc<Self>,
        index: usize,
        key: kindling_chunk::ChunkKey,
        cipher: Cipher,
    ) {
        let Ok(slot) = self.store_slots.clone().acquire_owned().await else {
            return;
        };
        self.lock().preloading.insert(index, cipher.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.store(index, key, cipher).await;
            this.lock().preloading.remove(&index);
            drop(slot);
        });
    }

    async fn store(
        &self,
        index: usize,
        key: kindling_chunk::ChunkKey,
        cipher: Cipher,
    ) -> Result<(), AgentError> {
        let mut rx = self.sink.subscribe();
        let Ok(sink) = rx.wait_for(Option::is_some).await.map(|s| s.clone()) else {
            return Ok(());
        };
        let Some(sink) = sink else {
            return Ok(());
        };
        let offset = self.manifest.chunk_offset(index);
        let stats = self.stats.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut plain = cipher.to_vec();
            cipher::decrypt_range(&key, 0, &mut plain);
            sink.store(offset, &plain)?;
            stats.bytes_preloaded.fetch_add(plain.len() as u64, Relaxed);
            Ok::<_, std::io::Error>(())
        })
        .await;
        match stored {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AgentError::Preload(e)),
            Err(e) => Err(AgentError::Preload(std::io::Error::other(e))),
        }
    }

    fn count(&self, tier: Tier, len: usize) {
        match tier {
            Tier::Origin => {
                self.stats.chunks_origin.fetch_add(1, Relaxed);
                self.stats.bytes_fetched.fetch_add(len as u64, Relaxed);
            }
            Tier::Az => {
                self.stats.chunks_az.fetch_add(1, Relaxed);
                self.stats.bytes_fetched.fetch_add(len as u64, Relaxed);
            }
            Tier::WorkerCache => {
                self.stats.chunks_worker_cache.fetch_add(1, Relaxed);
            }
        }
    }
}

impl ImageReader {
    /// The stored chunks read so far, in first-read order.
    pub fn trace(&self) -> Vec<u32> {
        self.lock().trace.clone()
    }

    /// Ends the trace: what is read from now on (`run` recording its file
    /// trace reads extent blocks the start never did) is not the start's.
    pub fn end_trace(&self) {
        self.lock().trace_ended = true;
    }
}
