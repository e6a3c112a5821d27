//! The agent core against a reference: every byte read through the tiers
//! equals what `fetch` writes, under random read patterns and writes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kindling_agent::{Disk, ImageReader, Origin, Overlay, PageSink, ReaderOptions, Stats};
use kindling_chunk::{Manifest, TenantKey};
use kindling_repo::Repo;
use kindling_store::{FaultyStore, LocalStore, Op, RetryPolicy, Retrying, Store};
use kindling_testkit::{prng, write_layout, Layer};
use proptest::prelude::*;

struct Fixture {
    _dir: tempfile::TempDir,
    store_dir: std::path::PathBuf,
    manifest: Arc<Manifest>,
    reference: Vec<u8>,
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

const KEY: [u8; 32] = [5; 32];

/// One small image pushed once: multi-chunk files, small files, and free
/// space (zero chunks). 64 KiB chunks so reads cross many chunk edges.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let mut layer = Layer::new()
            .dir("d/")
            .file("d/big", 0o644, &prng("big", 900_000));
        for i in 0..40 {
            layer = layer.file(
                &format!("d/f{i}"),
                0o644,
                &prng(&format!("f{i}"), 3000 + i * 511),
            );
        }
        write_layout(&layout, &[layer.finish()]);
        let store_dir = dir.path().join("store");
        let repo = Repo::new(Arc::new(LocalStore::new(store_dir.clone())));
        let key = TenantKey::from_bytes(KEY);
        let mut opts = kindling_repo::PushOptions::default();
        opts.flatten.chunk_size = 64 << 10;
        opts.flatten.free_space = 1 << 20;
        opts.flatten.free_inodes = 64;
        let image = kindling_oci::Image::open(layout.to_str().unwrap()).unwrap();
        rt().block_on(kindling_repo::push(&repo, image, "t:1", &key, &opts))
            .unwrap();
        let out = dir.path().join("ref.img");
        let f = std::fs::File::create(&out).unwrap();
        rt().block_on(kindling_repo::fetch(
            &repo,
            "t:1",
            &key,
            &f,
            &Default::default(),
        ))
        .unwrap();
        let reference = std::fs::read(&out).unwrap();
        let (_, manifest) = rt().block_on(repo.open_image("t:1", &key)).unwrap();
        assert!(manifest
            .chunks
            .iter()
            .any(|c| matches!(c, kindling_chunk::ChunkEntry::Zero)));
        Fixture {
            _dir: dir,
            store_dir,
            manifest: Arc::new(manifest),
            reference,
        }
    })
}

fn reader_over(store: Arc<dyn Store>, cached: usize) -> ImageReader {
    ImageReader::new(
        fixture().manifest.clone(),
        Arc::new(Origin::new(store)),
        Arc::new(Stats::default()),
        ReaderOptions {
            cached_chunks: cached,
            ..ReaderOptions::default()
        },
    )
}

fn local() -> Arc<dyn Store> {
    Arc::new(LocalStore::new(fixture().store_dir.clone()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reads_equal_the_fetched_image(
        reads in proptest::collection::vec((any::<u64>(), 1usize..300_000), 1..20),
        cached in 0usize..4,
    ) {
        let f = fixture();
        let r = reader_over(local(), cached);
        let size = f.reference.len() as u64;
        for (off, len) in reads {
            let off = off % (size + 1000);
            let got = rt().block_on(r.read(off, len)).unwrap();
            let lo = off.min(size) as usize;
            let hi = (off + len as u64).min(size) as usize;
            prop_assert_eq!(&got[..], &f.reference[lo..hi], "read at {} len {}", off, len);
            // Answered from memory or not at all, never wrong.
            if let Some(now) = r.read_cached(off, len) {
                prop_assert_eq!(&now[..], &f.reference[lo..hi], "cached read at {} len {}", off, len);
            }
        }
    }

    /// Writes go to the overlay: reads see them, untouched bytes stay the
    /// image's, and the store does not change.
    #[test]
    fn overlay_matches_a_model(
        ops in proptest::collection::vec((any::<bool>(), any::<u64>(), 1usize..20_000, any::<u8>()), 1..30),
    ) {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(reader_over(local(), 2), Some(Overlay::new(dir.path(), f.reference.len() as u64).unwrap()));
        let mut model = f.reference.clone();
        let size = model.len() as u64;
        for (write, off, len, v) in ops {
            let off = off % size;
            let len = len.min((size - off) as usize);
            if write {
                let data = vec![v; len];
                rt().block_on(disk.write(off, &data)).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&data);
            } else {
                let got = rt().block_on(disk.read(off, len)).unwrap();
                prop_assert_eq!(&got[..], &model[off as usize..off as usize + len]);
            }
        }
        let all = rt().block_on(disk.read(0, size as usize)).unwrap();
        prop_assert!(all == model);
    }
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_never_reach_the_store() {
    let f = fixture();
    let before = snapshot(&f.store_dir);
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::new(
        reader_over(local(), 2),
        Some(Overlay::new(dir.path(), f.reference.len() as u64).unwrap()),
    );
    rt().block_on(disk.write(0, &vec![0xee; f.reference.len()]))
        .unwrap();
    assert_eq!(disk.overlay_pages(), f.reference.len() as u64 / 4096);
    assert_eq!(snapshot(&f.store_dir), before);
    // A read-only disk refuses writes.
    let ro = Disk::new(reader_over(local(), 2), None);
    let e = rt().block_on(ro.write(0, b"x")).unwrap_err();
    assert_eq!(e.errno(), libc::EROFS);
}

#[test]
fn concurrent_reads_of_one_chunk_fetch_it_once() {
    let f = fixture();
    let faulty = Arc::new(FaultyStore::new(LocalStore::new(f.store_dir.clone())));
    faulty.set_op_latency(Op::Get, Duration::from_millis(50));
    let r = Arc::new(reader_over(faulty.clone(), 4));
    let (index, _) = f
        .manifest
        .chunks
        .iter()
        .enumerate()
        .find(|(_, c)| matches!(c, kindling_chunk::ChunkEntry::Stored { .. }))
        .unwrap();
    let at = index as u64 * f.manifest.chunk_size;
    let reads: Vec<_> = (0..32)
        .map(|i| {
            let r = r.clone();
            rt().spawn(async move { r.read(at + i * 100, 4096).await })
        })
        .collect();
    for h in reads {
        rt().block_on(h).unwrap().unwrap();
    }
    assert_eq!(faulty.counts().gets, 1);
    let s = r.stats().snapshot();
    assert_eq!(s.chunks_origin, 1);
    assert_eq!(s.bytes_fetched, f.manifest.chunk_size);
    // Zero chunks cost no I/O at all.
    let zero = zero_chunk();
    let got = rt()
        .block_on(r.read(zero as u64 * f.manifest.chunk_size, 65536))
        .unwrap();
    assert!(got.iter().all(|&b| b == 0));
    assert_eq!(faulty.counts().gets, 1);
}

#[test]
fn an_unreachable_or_corrupt_origin_fails_reads_without_hanging() {
    let f = fixture();
    let faulty = Arc::new(FaultyStore::new(LocalStore::new(f.store_dir.clone())));
    let policy = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
    };
    let store = Arc::new(Retrying::with_policy(faulty.clone(), policy));
    let r = reader_over(store, 0);
    faulty.fail_next(Op::Get, 1000);
    let t = std::time::Instant::now();
    let e = rt().block_on(r.read(0, 4096)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(e.errno(), libc::EIO);
    let msg = kindling_agent::fuse::chain(&e);
    assert!(msg.contains("chunk 0 at offset 0"), "{msg}");
    faulty.clear_faults();
    // Corrupt bytes are never returned.
    let name = match &f.manifest.chunks[0] {
        kindling_chunk::ChunkEntry::Stored { name, .. } => *name,
        _ => unreachable!(),
    };
    faulty.corrupt_key(&kindling_repo::chunk_key(&name));
    let e = rt().block_on(r.read(0, 4096)).unwrap_err();
    assert!(
        kindling_agent::fuse::chain(&e).contains("verification"),
        "{e}"
    );
    faulty.clear_faults();
    assert_eq!(rt().block_on(r.read(0, 4096)).unwrap(), f.reference[..4096]);
}

/// Records what a preload stores.
#[derive(Debug, Default)]
struct Recorded(std::sync::Mutex<Vec<(u64, Vec<u8>)>>);

impl PageSink for Recorded {
    fn store(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().push((offset, data.to_vec()));
        Ok(())
    }
}

impl Recorded {
    /// Waits until `n` stores came in; fails the test after 10 s.
    async fn wait_for(&self, n: usize) {
        let t = std::time::Instant::now();
        while self.0.lock().unwrap().len() < n {
            assert!(t.elapsed() < Duration::from_secs(10), "preload stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Every store holds the image's bytes at its offset, and no offset was
/// stored twice.
fn assert_image_stored_once(got: &[(u64, Vec<u8>)]) {
    let reference = &fixture().reference;
    let mut offsets = std::collections::HashSet::new();
    for (offset, data) in got {
        let at = *offset as usize;
        assert_eq!(
            &data[..],
            &reference[at..at + data.len()],
            "chunk at {offset}"
        );
        assert!(offsets.insert(*offset), "chunk at {offset} stored twice");
    }
}

/// A preload waits for its sink, then stores each stored chunk it was
/// given whole and decrypted at its offset - the image's bytes exactly -
/// and skips zero chunks; it neither enters the trace nor counts as read.
#[test]
fn preload_stores_decrypted_chunks_once_a_sink_is_attached() {
    let f = fixture();
    let r = Arc::new(ImageReader::new(
        f.manifest.clone(),
        Arc::new(Origin::new(local())),
        Arc::new(Stats::default()),
        ReaderOptions {
            preload: true,
            ..ReaderOptions::default()
        },
    ));
    let all: Vec<usize> = (0..f.manifest.chunks.len()).collect();
    let stored_chunks = f
        .manifest
        .chunks
        .iter()
        .filter(|c| matches!(c, kindling_chunk::ChunkEntry::Stored { .. }))
        .count();
    let sink = Arc::new(Recorded::default());
    rt().block_on(async {
        r.prefetch_chunks(all, 4);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(sink.0.lock().unwrap().is_empty());
        r.attach_page_sink(sink.clone());
        sink.wait_for(stored_chunks).await;
    });
    let got = sink.0.lock().unwrap();
    assert_eq!(got.len(), stored_chunks);
    assert_image_stored_once(&got);
    let s = r.stats().snapshot();
    assert_eq!(
        s.bytes_preloaded,
        got.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    );
    assert_eq!(s.bytes_read, 0);
    assert!(r.trace().is_empty());
}

/// The index of the fixture's first all-zero chunk.
fn zero_chunk() -> usize {
    fixture()
        .manifest
        .chunks
        .iter()
        .position(|c| matches!(c, kindling_chunk::ChunkEntry::Zero))
        .unwrap()
}

/// The index of the `n`th stored chunk of the fixture.
fn stored_chunk(n: usize) -> usize {
    fixture()
        .manifest
        .chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, kindling_chunk::ChunkEntry::Stored { .. }))
        .nth(n)
        .unwrap()
        .0
}

/// A read served on the caller's thread takes only chunks already in
/// Reads after the trace ended are served but not traced.
#[test]
fn reads_after_the_trace_ends_are_not_in_it() {
    let f = fixture();
    let r = reader_over(local(), 4);
    let cs = f.manifest.chunk_size;
    let (a, b) = (stored_chunk(0), stored_chunk(2));
    rt().block_on(r.read(a as u64 * cs, 10)).unwrap();
    r.end_trace();
    let got = rt().block_on(r.read(b as u64 * cs, 10)).unwrap();
    assert_eq!(got, f.reference[b * cs as usize..b * cs as usize + 10]);
    assert_eq!(r.trace(), vec![a as u32]);
}

/// memory: it fetches nothing, answers what a read through the tiers
/// answers, and enters the trace like one.
#[test]
fn read_cached_serves_only_chunks_in_memory() {
    let f = fixture();
    let faulty = Arc::new(FaultyStore::new(LocalStore::new(f.store_dir.clone())));
    let r = reader_over(faulty.clone(), 4);
    let cs = f.manifest.chunk_size;
    let (a, b) = (stored_chunk(0), stored_chunk(1));
    let at = a as u64 * cs + 100;
    assert!(r.read_cached(at, 4096).is_none());
    assert_eq!(faulty.counts().gets, 0);
    assert!(r.trace().is_empty());
    rt().block_on(r.read(at, 10)).unwrap();
    assert_eq!(faulty.counts().gets, 1);
    let got = r.read_cached(at, 4096).unwrap();
    assert_eq!(got, f.reference[at as usize..at as usize + 4096]);
    assert_eq!(faulty.counts().gets, 1);
    assert_eq!(r.trace(), vec![a as u32]);
    // A read reaching into a chunk not in memory is left to the tiers.
    let end_of_a = (a as u64 + 1) * cs;
    if b == a + 1 {
        assert!(r.read_cached(end_of_a - 10, 20).is_none());
        assert_eq!(faulty.counts().gets, 1);
    }
    // Zero chunks need nothing.
    let zero = zero_chunk();
    let got = r.read_cached(zero as u64 * cs, 8192).unwrap();
    assert!(got.iter().all(|&x| x == 0));
    assert_eq!(faulty.counts().gets, 1);
}

/// A tier that records what it is asked for, holds every fetch until the
/// test lets it go, and can claim to hold chunks locally.
#[derive(Debug)]
struct Gated {
    inner: Origin,
    asked: std::sync::Mutex<Vec<kindling_chunk::ChunkName>>,
    gate: tokio::sync::Semaphore,
    local: bool,
    running: std::sync::atomic::AtomicUsize,
    most_running: std::sync::atomic::AtomicUsize,
    /// Calls of `holds`: each one a stat in the worker cache.
    looked_up: std::sync::atomic::AtomicUsize,
}

impl Gated {
    fn new(held_here: bool) -> Gated {
        Gated {
            inner: Origin::new(local()),
            asked: Default::default(),
            gate: tokio::sync::Semaphore::new(0),
            running: Default::default(),
            most_running: Default::default(),
            looked_up: Default::default(),
            local: held_here,
        }
    }
}

#[async_trait::async_trait]
impl kindling_agent::ChunkSource for Gated {
    async fn fetch(
        &self,
        name: &kindling_chunk::ChunkName,
    ) -> Result<kindling_agent::Fetched, kindling_agent::SourceError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.asked.lock().unwrap().push(*name);
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most_running.fetch_max(now, SeqCst);
        self.gate.acquire().await.unwrap().forget();
        self.running.fetch_sub(1, SeqCst);
        self.inner.fetch(name).await
    }

    fn holds(&self, _name: &kindling_chunk::ChunkName) -> bool {
        self.looked_up
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.local
    }
}

fn name_of(index: usize) -> kindling_chunk::ChunkName {
    match &fixture().manifest.chunks[index] {
        kindling_chunk::ChunkEntry::Stored { name, .. } => *name,
        _ => unreachable!(),
    }
}

/// A startup trace, known a little after the hot ranges, goes ahead of
/// the hot-range chunks still waiting: it lists what the start reads
/// first.
#[test]
fn a_trace_goes_ahead_of_waiting_prefetches() {
    let f = fixture();
    let source = Arc::new(Gated::new(false));
    let r = Arc::new(ImageReader::new(
        f.manifest.clone(),
        source.clone(),
        Arc::new(Stats::default()),
        ReaderOptions::default(),
    ));
    let cs = f.manifest.chunk_size;
    let hot: Vec<usize> = (0..3).map(stored_chunk).collect();
    let trace: Vec<usize> = (5..7).rev().map(stored_chunk).collect();
    let ranges: Vec<[u64; 2]> = hot.iter().map(|&i| [i as u64 * cs, 1]).collect();
    rt().block_on(async {
        r.prefetch(&ranges, 1);
        while source.asked.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        r.prefetch_chunks(trace.clone(), 1);
        source.gate.add_permits(100);
        let t = std::time::Instant::now();
        while source.asked.lock().unwrap().len() < 5 {
            assert!(t.elapsed() < Duration::from_secs(10), "prefetch stalled");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let want: Vec<_> = [hot[0], trace[0], trace[1], hot[1], hot[2]]
        .into_iter()
        .map(name_of)
        .collect();
    assert_eq!(*source.asked.lock().unwrap(), want);
}

/// Preloading chunks a local tier holds is CPU work: at most one per core
/// at once, however wide the prefetch; chunks from a network tier are
/// fetched as wide as asked.
#[test]
fn local_preloads_run_one_per_core() {
    let f = fixture();
    let cores = std::thread::available_parallelism().unwrap().get();
    let all: Vec<usize> = (0..f.manifest.chunks.len()).collect();
    for local in [true, false] {
        let source = Arc::new(Gated::new(local));
        let r = Arc::new(ImageReader::new(
            f.manifest.clone(),
            source.clone(),
            Arc::new(Stats::default()),
            ReaderOptions {
                preload: true,
                ..ReaderOptions::default()
            },
        ));
        r.attach_page_sink(Arc::new(Recorded::default()));
        let wide = cores + 4;
        let looked_up = rt().block_on(async {
            r.prefetch_chunks(all.clone(), wide);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = source.looked_up.load(std::sync::atomic::Ordering::SeqCst);
            source.gate.add_permits(10_000);
            n
        });
        let most = source
            .most_running
            .load(std::sync::atomic::Ordering::SeqCst);
        if local {
            assert_eq!(most, cores, "local preloads at once");
        } else {
            assert_eq!(most, wide, "network preloads at once");
            // Each chunk taken is looked up in the local tiers once, when
            // its worker looks for a partner, not again to preload it.
            assert_eq!(looked_up, wide, "tier lookups for {wide} chunks taken");
        }
    }
}

/// Preloads from a warm worker cache take its chunks two at a time (read
/// and hashed together); a chunk file damaged on disk is dropped and
/// fetched again from the origin, and the page cache still gets exactly
/// the image, each chunk once.
#[test]
fn paired_preloads_from_the_worker_cache_store_the_image() {
    use kindling_agent::{ChunkSource, WorkerCached};
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cache = kindling_cache::WorkerCache::open(
        dir.path(),
        kindling_cache::CacheOptions {
            memory_bytes: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let source = Arc::new(CountsPairs {
        inner: WorkerCached::new(cache.clone(), Arc::new(Origin::new(local()))),
        pairs: Default::default(),
    });
    let stored: Vec<usize> = (0..f.manifest.chunks.len())
        .filter(|&i| {
            matches!(
                f.manifest.chunks[i],
                kindling_chunk::ChunkEntry::Stored { .. }
            )
        })
        .collect();
    assert!(stored.len() >= 4, "the fixture has too few chunks");
    for &i in &stored {
        rt().block_on(source.fetch(&name_of(i))).unwrap();
    }
    let victim = cache.chunk_path(&name_of(stored[1]));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();

    let r = Arc::new(ImageReader::new(
        f.manifest.clone(),
        source.clone(),
        Arc::new(Stats::default()),
        ReaderOptions {
            preload: true,
            ..ReaderOptions::default()
        },
    ));
    let sink = Arc::new(Recorded::default());
    r.attach_page_sink(sink.clone());
    rt().block_on(async {
        r.prefetch_chunks(stored.clone(), 4);
        sink.wait_for(stored.len()).await;
    });
    let got = sink.0.lock().unwrap();
    assert_eq!(got.len(), stored.len());
    assert_image_stored_once(&got);
    let s = r.stats().snapshot();
    assert_eq!(s.chunks_worker_cache, stored.len() as u64 - 1);
    assert_eq!(s.chunks_origin, 1);
    let c = cache.stats();
    assert_eq!(c.corrupt_dropped, 1);
    assert_eq!(c.disk_hits, stored.len() as u64 - 1);
    assert!(
        source.pairs.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no pair was read"
    );
}

/// A worker cache that counts the pairs asked of it.
#[derive(Debug)]
struct CountsPairs {
    inner: kindling_agent::WorkerCached,
    pairs: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl kindling_agent::ChunkSource for CountsPairs {
    async fn fetch(
        &self,
        name: &kindling_chunk::ChunkName,
    ) -> Result<kindling_agent::Fetched, kindling_agent::SourceError> {
        self.inner.fetch(name).await
    }

    fn holds(&self, name: &kindling_chunk::ChunkName) -> bool {
        self.inner.holds(name)
    }

    async fn fetch_local_pair(
        &self,
        a: &kindling_chunk::ChunkName,
        b: &kindling_chunk::ChunkName,
    ) -> [Result<kindling_agent::Fetched, kindling_agent::SourceError>; 2] {
        self.pairs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.fetch_local_pair(a, b).await
    }
}
