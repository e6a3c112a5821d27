//! The cache through its public API, in one process: tiers, single flight
//! among tasks, bounds, corruption and reopening.

// Helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kindling_cache::{CacheError, CacheOptions, Hit, WorkerCache};
use kindling_chunk::ChunkName;
use proptest::prelude::*;

mod common;
use common::chunk;

fn opts(disk_bytes: u64, memory_bytes: u64) -> CacheOptions {
    CacheOptions {
        disk_bytes,
        memory_bytes,
        k: 2,
        verify_fills: true,
    }
}

/// A fill that hands out `bytes` and counts its calls.
fn counted(
    calls: &Arc<AtomicUsize>,
    bytes: Bytes,
) -> impl FnOnce() -> std::future::Ready<Result<Bytes, io::Error>> {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(bytes))
    }
}

async fn fill(cache: &WorkerCache, name: &ChunkName, bytes: &Bytes) -> Hit {
    let bytes = bytes.clone();
    let (got, hit) = cache
        .get_or_fill(name, || async move { Ok::<_, io::Error>(bytes) })
        .await
        .unwrap();
    assert_eq!(ChunkName::of(&got), *name);
    hit
}

/// Total size of the chunk files under the cache directory.
fn tree_bytes(dir: &Path) -> u64 {
    let chunks = dir.join("v1/chunks");
    let mut total = 0;
    for sub in fs::read_dir(chunks).unwrap() {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}

#[tokio::test]
async fn tiers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let (name, bytes) = chunk(1, 512 << 10);
    assert_eq!(cache.get(&name).await.unwrap(), None);
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Memory);
    assert_eq!(cache.get(&name).await.unwrap(), Some(bytes.clone()));
    assert_eq!(fs::read(cache.chunk_path(&name)).unwrap(), bytes);

    // A second handle (another process, as far as the tiers go) starts
    // with an empty memory tier and finds the chunk on disk.
    let other = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (got, hit) = other
        .get_or_fill(&name, counted(&calls, bytes.clone()))
        .await
        .unwrap();
    assert_eq!((got, hit), (bytes.clone(), Hit::Disk));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(fill(&other, &name, &bytes).await, Hit::Memory);

    let stats = cache.stats();
    assert_eq!((stats.fills, stats.memory_hits), (1, 2));
    assert_eq!(stats.disk_bytes, bytes.len() as u64);
    assert_eq!(stats.memory_bytes, bytes.len() as u64);
    let stats = other.stats();
    assert_eq!((stats.fills, stats.disk_hits, stats.memory_hits), (0, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_within_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let (name, bytes) = chunk(7, 512 << 10);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let cache = cache.clone();
            let calls = calls.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fill(&name, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, io::Error>(bytes)
                    })
                    .await
            })
        })
        .collect();
    let mut hits = Vec::new();
    for task in tasks {
        let (got, hit) = task.await.unwrap().unwrap();
        assert_eq!(got, bytes);
        hits.push(hit);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(hits.iter().filter(|h| **h == Hit::Filled).count(), 1);
    // The others joined the flight, or came after it and hit memory.
    assert!(hits
        .iter()
        .all(|h| matches!(h, Hit::Filled | Hit::Joined | Hit::Memory)));
    let stats = cache.stats();
    assert_eq!(stats.fills, 1);
    assert_eq!(stats.fill_waits + stats.memory_hits, 31);
}

/// Two fills of different chunks that share a fill-lock stripe, on a
/// runtime with one blocking thread: the second must wait for the first as
/// a task. Waiting on the file lock would hold the only blocking thread, which
/// the first fill needs to write its chunk: a deadlock, caught here by the
/// timeout.
#[test]
fn fills_sharing_a_stripe_need_no_spare_blocking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The stripe is picked by the name's last two bytes.
    let mut by_tail = std::collections::HashMap::new();
    let (a, b) = (0u32..)
        .find_map(|i| {
            let c = chunk(i, 4096);
            let tail = [c.0 .0[30], c.0 .0[31]];
            by_tail.insert(tail, c.clone()).map(|other| (other, c))
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let (want_a, want_b) = (a.1.clone(), b.1.clone());
    let both = rt.block_on(async move {
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let first = {
            let (cache, (name, bytes)) = (cache.clone(), a.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fill(&name, || async move {
                        let _ = held_tx.send(());
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, io::Error>(bytes)
                    })
                    .await
            })
        };
        held_rx.await.unwrap();
        let second = {
            let (cache, (name, bytes)) = (cache.clone(), b.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fill(&name, || async move { Ok::<_, io::Error>(bytes) })
                    .await
            })
        };
        tokio::time::timeout(Duration::from_secs(20), async {
            (first.await.unwrap(), second.await.unwrap())
        })
        .await
    });
    let (first, second) = both.expect("the fills deadlocked");
    assert_eq!(first.unwrap(), (want_a, Hit::Filled));
    assert_eq!(second.unwrap(), (want_b, Hit::Filled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_fillers_error_and_a_later_call_retries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let (name, bytes) = chunk(3, 1000);
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fill(&name, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<Bytes, _>(io::Error::other("origin is down"))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, CacheError::Fill { name: n, .. } if n == name),
            "{err}"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(source, "origin is down");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
}

#[tokio::test]
async fn a_corrupt_fill_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let (name, bytes) = chunk(4, 1000);
    let mut wrong = bytes.to_vec();
    wrong[10] ^= 1;
    let err = cache
        .get_or_fill(
            &name,
            || async move { Ok::<_, io::Error>(Bytes::from(wrong)) },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CacheError::Corrupt { name: n } if n == name),
        "{err}"
    );
    assert!(err.to_string().contains(&name.to_hex()));
    assert!(!cache.chunk_path(&name).exists());
    assert_eq!(cache.get(&name).await.unwrap(), None);
    assert_eq!(cache.stats().disk_bytes, 0);
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
}

/// With `verify_fills` off the cache trusts its filler (the agent's tiers
/// verify already), but a chunk read back from disk is still checked.
#[tokio::test]
async fn unverified_fills_are_still_checked_when_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let trusting = CacheOptions {
        verify_fills: false,
        memory_bytes: 0,
        ..CacheOptions::default()
    };
    let cache = WorkerCache::open(dir.path(), trusting.clone()).unwrap();
    let (name, bytes) = chunk(5, 1000);
    let mut wrong = bytes.to_vec();
    wrong[10] ^= 1;
    let wrong = Bytes::from(wrong);
    let (got, hit) = cache
        .get_or_fill(&name, || {
            let w = wrong.clone();
            async move { Ok::<_, io::Error>(w) }
        })
        .await
        .unwrap();
    assert_eq!((got, hit), (wrong, Hit::Filled));
    // From disk: detected, dropped, filled again.
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
    assert_eq!(cache.stats().corrupt_dropped, 1);
}

#[tokio::test]
async fn corruption_on_disk_is_detected_dropped_and_refilled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), opts(1 << 30, 0)).unwrap();
    let (name, bytes) = chunk(5, 64 << 10);
    let path = cache.chunk_path(&name);

    // A flipped bit.
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
    let mut altered = fs::read(&path).unwrap();
    altered[1234] ^= 0x40;
    fs::write(&path, &altered).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (got, hit) = cache
        .get_or_fill(&name, counted(&calls, bytes.clone()))
        .await
        .unwrap();
    assert_eq!((got, hit), (bytes.clone(), Hit::Filled));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(fs::read(&path).unwrap(), bytes);

    // A truncated file, found by a read without fill.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(1000).unwrap();
    drop(file);
    assert_eq!(cache.get(&name).await.unwrap(), None);
    assert!(!path.exists());

    // An empty file.
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
    fs::write(&path, b"").unwrap();
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
    assert_eq!(fill(&cache, &name, &bytes).await, Hit::Disk);

    let stats = cache.stats();
    assert_eq!(stats.corrupt_dropped, 3);
    assert_eq!(tree_bytes(dir.path()), bytes.len() as u64);
    // The counter took off the sizes the bad files had when dropped, not
    // the sizes they were counted with (unknown): it is high by what was
    // cut off. Overcounting only brings the next recount forward, which
    // repairs it; a bound below the counter forces one now.
    assert_eq!(stats.disk_bytes, 3 * bytes.len() as u64 - 1000);
    drop(cache);
    let cache = WorkerCache::open(dir.path(), opts(2 * bytes.len() as u64, 0)).unwrap();
    assert_eq!(cache.stats().disk_bytes, bytes.len() as u64);
    assert_eq!(cache.stats().evictions, 0);
}

/// A pair read gives what two single reads give: each chunk from memory,
/// else from disk (verified, a bad file dropped), else nothing; no fills.
#[tokio::test]
async fn a_pair_read_equals_two_single_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), opts(1 << 30, 0)).unwrap();
    let chunks: Vec<_> = (0..5).map(|i| chunk(i, 64 << 10)).collect();
    for (name, bytes) in &chunks[..4] {
        assert_eq!(fill(&cache, name, bytes).await, Hit::Filled);
    }
    let (a, b, c, d, missing) = (&chunks[0], &chunks[1], &chunks[2], &chunks[3], &chunks[4]);
    // Both on disk.
    assert_eq!(
        cache.get_pair(&a.0, &b.0).await.unwrap(),
        [Some(a.1.clone()), Some(b.1.clone())]
    );
    // One missing: the other still comes.
    assert_eq!(
        cache.get_pair(&missing.0, &c.0).await.unwrap(),
        [None, Some(c.1.clone())]
    );
    // One damaged on disk: dropped, counted, the other unharmed.
    let path = cache.chunk_path(&d.0);
    let mut altered = fs::read(&path).unwrap();
    altered[7] ^= 1;
    fs::write(&path, &altered).unwrap();
    assert_eq!(
        cache.get_pair(&a.0, &d.0).await.unwrap(),
        [Some(a.1.clone()), None]
    );
    assert!(!path.exists());
    let stats = cache.stats();
    assert_eq!(stats.corrupt_dropped, 1);
    assert_eq!(stats.disk_hits, 4);
    assert_eq!(stats.fills, 4);
    // Unequal lengths are checked one by one.
    let short = chunk(9, 1000);
    assert_eq!(fill(&cache, &short.0, &short.1).await, Hit::Filled);
    assert_eq!(
        cache.get_pair(&short.0, &b.0).await.unwrap(),
        [Some(short.1.clone()), Some(b.1.clone())]
    );
}

#[tokio::test]
async fn a_scan_does_not_evict_chunks_read_twice() {
    let dir = tempfile::tempdir().unwrap();
    let size = 4096 + 4;
    // Ten chunks fit on disk, four in memory.
    let cache = WorkerCache::open(dir.path(), opts(10 * size, 4 * size)).unwrap();
    let (hot, hot_bytes) = chunk(0, 4096);
    let (early, early_bytes) = chunk(1, 4096);
    assert_eq!(fill(&cache, &hot, &hot_bytes).await, Hit::Filled);
    assert_eq!(fill(&cache, &hot, &hot_bytes).await, Hit::Memory);
    assert_eq!(fill(&cache, &early, &early_bytes).await, Hit::Filled);
    // Another process reads hot from disk: its second disk access.
    let other = WorkerCache::open(dir.path(), opts(10 * size, 0)).unwrap();
    assert_eq!(fill(&other, &hot, &hot_bytes).await, Hit::Disk);

    for i in 2..200 {
        let (name, bytes) = chunk(i, 4096);
        assert_eq!(fill(&cache, &name, &bytes).await, Hit::Filled);
        assert!(tree_bytes(dir.path()) <= 10 * size);
        assert!(cache.stats().memory_bytes <= 4 * size);
    }
    // Hot stayed in both tiers; the once-read chunk of the same age left.
    assert_eq!(fill(&cache, &hot, &hot_bytes).await, Hit::Memory);
    assert_eq!(fill(&other, &hot, &hot_bytes).await, Hit::Disk);
    assert_eq!(other.get(&early).await.unwrap(), None);
    let stats = cache.stats();
    assert!(stats.evictions >= 190 - 10, "{stats:?}");
    assert_eq!(stats.memory_evictions, 200 - 4);
}

#[tokio::test]
async fn a_reopened_cache_sees_its_chunks_and_respects_a_smaller_bound() {
    let dir = tempfile::tempdir().unwrap();
    let size = 8192 + 4;
    let cache = WorkerCache::open(dir.path(), opts(100 * size, 0)).unwrap();
    let chunks: Vec<_> = (0..40).map(|i| chunk(i, 8192)).collect();
    for (name, bytes) in &chunks {
        assert_eq!(fill(&cache, name, bytes).await, Hit::Filled);
    }
    // Chunk 0 is read once more: two accesses.
    assert_eq!(fill(&cache, &chunks[0].0, &chunks[0].1).await, Hit::Disk);
    drop(cache);

    let cache = WorkerCache::open(dir.path(), opts(100 * size, 0)).unwrap();
    assert_eq!(cache.stats().disk_bytes, 40 * size);
    for (name, bytes) in &chunks {
        assert_eq!(cache.get(name).await.unwrap().as_ref(), Some(bytes));
    }
    drop(cache);

    // Everything was read twice now; read chunk 0 a third time so it is
    // the one with the most recent second-to-last read.
    let cache = WorkerCache::open(dir.path(), opts(100 * size, 0)).unwrap();
    assert!(cache.get(&chunks[0].0).await.unwrap().is_some());
    drop(cache);

    let cache = WorkerCache::open(dir.path(), opts(10 * size, 0)).unwrap();
    assert!(tree_bytes(dir.path()) <= 10 * size);
    assert_eq!(cache.stats().disk_bytes, tree_bytes(dir.path()));
    assert_eq!(cache.stats().evictions, 31);
    assert!(cache.get(&chunks[0].0).await.unwrap().is_some());
    // The survivors are chunk 0 and the last-read ones.
    for (name, _) in &chunks[1..32] {
        assert!(!cache.chunk_path(name).exists());
    }
}

#[tokio::test]
async fn stale_temporary_files_are_cleaned_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    let tmp = cache.layout_dir().join("tmp");
    let stale = tmp.join(".tmp.4242.0");
    fs::write(&stale, b"half a chunk").unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let fresh = tmp.join(".tmp.4242.1");
    fs::write(&fresh, b"being written").unwrap();
    drop(cache);
    let _cache = WorkerCache::open(dir.path(), CacheOptions::default()).unwrap();
    assert!(!stale.exists());
    assert!(fresh.exists());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random workloads over skewed names with random sizes: neither tier
    /// ever holds more than its bound, the disk counter matches the tree,
    /// and every answer is the right chunk.
    #[test]
    fn bounds_hold_under_random_workloads(
        disk_bytes in 0u64..60_000,
        memory_bytes in 0u64..20_000,
        k in 1usize..4,
        ops in prop::collection::vec((0u32..60, 0u32..60, any::<bool>()), 1..150),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let opts = CacheOptions {
                disk_bytes,
                memory_bytes,
                k,
                ..CacheOptions::default()
            };
            let mut cache = WorkerCache::open(dir.path(), opts.clone()).unwrap();
            for (a, b, reopen) in ops {
                // min of two uniform draws: low names are hot.
                let i = a.min(b);
                // Sizes are a function of the name, as for real chunks.
                let (name, bytes) = chunk(i, (i as usize * 997) % 9000);
                if reopen && i % 7 == 0 {
                    cache = WorkerCache::open(dir.path(), opts.clone()).unwrap();
                }
                let (got, _) = cache
                    .get_or_fill(&name, || async { Ok::<_, io::Error>(bytes.clone()) })
                    .await
                    .unwrap();
                assert_eq!(got, bytes);
                let stats = cache.stats();
                let tree = tree_bytes(dir.path());
                assert!(tree <= disk_bytes, "{tree} > {disk_bytes}");
                assert_eq!(stats.disk_bytes, tree);
                assert!(stats.memory_bytes <= memory_bytes);
            }
        });
    }
}
