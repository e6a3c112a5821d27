//! Several processes on one cache directory: fills run once in total, a
//! filler that dies does not block the others, a writer killed at any
//! moment leaves no partial chunk, and the disk bound holds.
//!
//! The child processes are this test binary again, running the `child`
//! test with its instructions in environment variables (without them that
//! test does nothing).

// Helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kindling_cache::{CacheOptions, Hit, WorkerCache};
use kindling_chunk::ChunkName;

mod common;
use common::chunk;

const MODE: &str = "KINDLING_CACHE_TEST_CHILD";
const DIR: &str = "KINDLING_CACHE_TEST_DIR";
const LOG: &str = "KINDLING_CACHE_TEST_LOG";
const CHUNKS: &str = "KINDLING_CACHE_TEST_CHUNKS";
const FIRST: &str = "KINDLING_CACHE_TEST_FIRST";
const SIZE: &str = "KINDLING_CACHE_TEST_SIZE";
const DELAY_MS: &str = "KINDLING_CACHE_TEST_DELAY_MS";
const DISK_BYTES: &str = "KINDLING_CACHE_TEST_DISK_BYTES";
const SEED: &str = "KINDLING_CACHE_TEST_SEED";
const MARKER: &str = "KINDLING_CACHE_TEST_MARKER";

/// Tasks per child, all walking the same chunks in different orders.
const TASKS: usize = 4;

/// A small xorshift generator: orders and kill times differ run to run
/// only through the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env<T: std::str::FromStr>(key: &str) -> T {
    std::env::var(key)
        .unwrap_or_else(|_| panic!("{key} not set"))
        .parse()
        .unwrap_or_else(|_| panic!("{key} is malformed"))
}

/// The child side. Modes:
/// * `fill`: TASKS tasks each get_or_fill chunks FIRST..FIRST+CHUNKS in a
///   shuffled order; every fill appends the chunk's name to LOG and sleeps
///   DELAY_MS. Prints `HITS filled joined disk memory`.
/// * `hang`: starts filling chunk FIRST, creates MARKER, and never returns.
#[test]
fn child() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let dir: PathBuf = env::<String>(DIR).into();
    let opts = CacheOptions {
        disk_bytes: env(DISK_BYTES),
        ..CacheOptions::default()
    };
    let first: u32 = env(FIRST);
    let size: usize = env(SIZE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cache = WorkerCache::open(&dir, opts).unwrap();
        if mode == "hang" {
            let marker: PathBuf = env::<String>(MARKER).into();
            let (name, _) = chunk(first, size);
            let result = cache
                .get_or_fill(&name, || async move {
                    fs::write(&marker, b"filling").unwrap();
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Err::<Bytes, _>(io::Error::other("never"))
                })
                .await;
            panic!("the hanging fill returned: {result:?}");
        }
        let count: u32 = env(CHUNKS);
        let delay = Duration::from_millis(env(DELAY_MS));
        let log: PathBuf = env::<String>(LOG).into();
        let seed: u64 = env(SEED);
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let cache = cache.clone();
            let log = log.clone();
            let mut rng =
                Rng((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((t as u64 + 1) * 7919)) | 1);
            let mut order: Vec<u32> = (first..first + count).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            tasks.push(tokio::spawn(async move {
                let mut hits = Vec::new();
                for i in order {
                    let (name, bytes) = chunk(i, size);
                    let log = log.clone();
                    let expected = bytes.clone();
                    let (got, hit) = cache
                        .get_or_fill(&name, || async move {
                            let mut f = fs::OpenOptions::new()
                                .append(true)
                                .create(true)
                                .open(&log)
                                .unwrap();
                            // One short append: atomic among processes.
                            f.write_all(format!("{name}\n").as_bytes()).unwrap();
                            tokio::time::sleep(delay).await;
                            Ok::<_, io::Error>(bytes)
                        })
                        .await
                        .unwrap();
                    assert_eq!(got, expected);
                    hits.push(hit);
                }
                hits
            }));
        }
        let mut counts = [0usize; 4];
        for task in tasks {
            for hit in task.await.unwrap() {
                counts[match hit {
                    Hit::Filled => 0,
                    Hit::Joined => 1,
                    Hit::Disk => 2,
                    Hit::Memory => 3,
                }] += 1;
            }
        }
        println!(
            "HITS {} {} {} {}",
            counts[0], counts[1], counts[2], counts[3]
        );
    });
}

/// Instructions for one child.
struct Spawn<'a> {
    mode: &'a str,
    dir: &'a Path,
    first: u32,
    chunks: u32,
    size: usize,
    delay_ms: u64,
    disk_bytes: u64,
    seed: u64,
    marker: Option<&'a Path>,
}

impl Spawn<'_> {
    fn start(&self) -> Child {
        let exe = std::env::current_exe().unwrap();
        let log = self.dir.join("fills.log");
        let mut cmd = Command::new(exe);
        cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"])
            .env(MODE, self.mode)
            .env(DIR, self.dir.join("cache"))
            .env(LOG, log)
            .env(CHUNKS, self.chunks.to_string())
            .env(FIRST, self.first.to_string())
            .env(SIZE, self.size.to_string())
            .env(DELAY_MS, self.delay_ms.to_string())
            .env(DISK_BYTES, self.disk_bytes.to_string())
            .env(SEED, self.seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(marker) = self.marker {
            cmd.env(MARKER, marker);
        }
        cmd.spawn().unwrap()
    }
}

/// Waits for a child that should succeed; returns its hit counts
/// (filled, joined, disk, memory).
fn finish(child: Child) -> [usize; 4] {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("HITS ").map(|(_, counts)| counts))
        .unwrap_or_else(|| panic!("child printed no counts:\n{stdout}"));
    let n: Vec<usize> = line
        .split_whitespace()
        .take(4)
        .map(|x| x.parse().unwrap())
        .collect();
    [n[0], n[1], n[2], n[3]]
}

/// Every chunk file under the cache; verifies each one it can read (a file
/// evicted meanwhile is skipped). Returns the total size seen.
fn check_tree(cache_dir: &Path) -> u64 {
    let chunks = cache_dir.join("v1/chunks");
    let Ok(subs) = fs::read_dir(chunks) else {
        return 0;
    };
    let mut total = 0;
    for sub in subs {
        for f in fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(
                !file_name.starts_with(".tmp"),
                "temporary file among chunks: {path:?}"
            );
            let name = ChunkName::from_hex(&file_name).unwrap();
            match fs::read(&path) {
                Ok(data) => {
                    assert_eq!(
                        ChunkName::of(&data),
                        name,
                        "partial or corrupt chunk {path:?}"
                    );
                    total += data.len() as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot read {path:?}: {e}"),
            }
        }
    }
    total
}

/// The usage counter's value; None if there is none yet.
fn read_counter(usage: &fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 16];
    usage.read_exact_at(&mut buf, 0).ok()?;
    Some(u64::from_le_bytes(buf[8..].try_into().unwrap()))
}

/// Checks the tree over and over, on a thread, until stopped, each time
/// holding the cache's usage lock: every change to the set of chunk files
/// happens under it, so each look sees a consistent state, one that must
/// be within `bound`. With `exact`, the counter must also match the tree
/// (no process was killed between a rename and its count). Returns the
/// largest total seen.
fn watch_tree(
    cache_dir: PathBuf,
    bound: u64,
    exact: bool,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    use std::os::fd::AsRawFd;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut largest = 0;
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2));
            let Ok(usage) = fs::File::open(cache_dir.join("v1/usage")) else {
                continue;
            };
            // SAFETY: flock only reads the descriptor, which `usage` keeps
            // open; closing it at the end of the iteration unlocks.
            assert_eq!(unsafe { libc::flock(usage.as_raw_fd(), libc::LOCK_EX) }, 0);
            let total = check_tree(&cache_dir);
            assert!(total <= bound, "{total} bytes on disk, bound {bound}");
            if exact {
                if let Some(counted) = read_counter(&usage) {
                    assert_eq!(counted, total);
                }
            }
            largest = largest.max(total);
        }
        largest
    });
    (stop, thread)
}

fn fill_log(dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    if let Ok(text) = fs::read_to_string(dir.join("fills.log")) {
        for line in text.lines() {
            *counts.entry(line.to_owned()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn each_chunk_is_filled_once_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (chunks, size, processes) = (24u32, 128 << 10, 4u64);
    let (stop, watcher) = watch_tree(dir.path().join("cache"), 1 << 30, true);
    let children: Vec<_> = (0..processes)
        .map(|seed| {
            Spawn {
                mode: "fill",
                dir: dir.path(),
                first: 0,
                chunks,
                size,
                delay_ms: 30,
                disk_bytes: 1 << 30,
                seed: seed + 1,
                marker: None,
            }
            .start()
        })
        .collect();
    let mut totals = [0usize; 4];
    for child in children {
        let counts = finish(child);
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();

    let log = fill_log(dir.path());
    assert_eq!(log.len(), chunks as usize);
    assert!(log.values().all(|&n| n == 1), "{log:?}");
    let [filled, joined, disk, memory] = totals;
    assert_eq!(filled, chunks as usize);
    assert_eq!(
        filled + joined + disk + memory,
        processes as usize * TASKS * chunks as usize
    );
    // Shuffled orders and 30 ms fills: processes did meet at a fill lock.
    assert!(joined > 0, "{totals:?}");
    assert_eq!(
        check_tree(&dir.path().join("cache")),
        u64::from(chunks) * (size as u64 + 4)
    );
}

#[test]
fn a_filler_killed_while_holding_the_lock_does_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let marker = dir.path().join("filling");
    let size = 64 << 10;
    let mut child = Spawn {
        mode: "hang",
        dir: dir.path(),
        first: 9,
        chunks: 1,
        size,
        delay_ms: 0,
        disk_bytes: 1 << 30,
        seed: 1,
        marker: Some(&marker),
    }
    .start();
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the child never started filling"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = WorkerCache::open(&cache_dir, CacheOptions::default()).unwrap();
        let (name, bytes) = chunk(9, size);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let expected = bytes.clone();
        let waiter = tokio::spawn(async move {
            cache
                .get_or_fill(&name, || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, io::Error>(bytes)
                })
                .await
        });
        // The child holds the fill lock: we wait, and the runtime stays
        // free (this sleep runs on it).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished());
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (got, hit) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("still blocked after the filler died")
            .unwrap()
            .unwrap();
        assert_eq!((got, hit), (expected, Hit::Filled));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
    check_tree(&cache_dir);
}

#[test]
fn writers_killed_at_random_moments_leave_no_partial_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let (chunks, size) = (48u32, 1 << 20);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let bound = 20 * (size as u64 + 4);
    // A child killed between its rename and its count leaves the counter
    // one chunk short until the next recount, and the tree one chunk over;
    // allow two such kills.
    let slack = 2 * (size as u64 + 4);
    let (stop, watcher) = watch_tree(cache_dir.clone(), bound + slack, false);
    for round in 0..6 {
        let mut children: Vec<_> = (0..3)
            .map(|c| {
                Spawn {
                    mode: "fill",
                    dir: dir.path(),
                    first: 0,
                    chunks,
                    size,
                    delay_ms: 0,
                    // Room for 20 chunks: evictions run too.
                    disk_bytes: bound,
                    seed: rng.next() ^ (round * 3 + c),
                    marker: None,
                }
                .start()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20 + rng.below(150)));
        for child in &mut children {
            child.kill().unwrap();
        }
        for mut child in children {
            child.wait().unwrap();
        }
        let on_disk = check_tree(&cache_dir);
        let fills: usize = fill_log(dir.path()).values().sum();
        let temps = fs::read_dir(cache_dir.join("v1/tmp")).unwrap().count();
        eprintln!("round {round}: {fills} fills so far, {on_disk} bytes on disk, {temps} temporary files left");
    }
    stop.store(true, Ordering::Relaxed);
    let largest = watcher.join().unwrap();
    assert!(largest > 0);
    // The children got far enough to fill, and so to be killed mid-fill.
    assert!(!fill_log(dir.path()).is_empty());

    // What survived is whole; everything else fills again.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = CacheOptions {
            disk_bytes: bound,
            ..CacheOptions::default()
        };
        let cache = WorkerCache::open(&cache_dir, opts).unwrap();
        for i in 0..chunks {
            let (name, bytes) = chunk(i, size);
            let expected = bytes.clone();
            let (got, _) = tokio::time::timeout(
                Duration::from_secs(10),
                cache.get_or_fill(&name, || async move { Ok::<_, io::Error>(bytes) }),
            )
            .await
            .expect("a fill lock is still held")
            .unwrap();
            assert_eq!(got, expected);
        }
        assert_eq!(cache.stats().corrupt_dropped, 0);
    });
    assert!(check_tree(&cache_dir) <= bound + slack);
}

#[test]
fn the_disk_bound_holds_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let size = 32 << 10;
    let bound = 12 * (size as u64 + 4);
    let (stop, watcher) = watch_tree(cache_dir.clone(), bound, true);
    // Overlapping ranges: 0..32, 16..48, 32..64.
    let children: Vec<_> = (0..3u32)
        .map(|c| {
            Spawn {
                mode: "fill",
                dir: dir.path(),
                first: c * 16,
                chunks: 32,
                size,
                delay_ms: 1,
                disk_bytes: bound,
                seed: u64::from(c) + 11,
                marker: None,
            }
            .start()
        })
        .collect();
    for child in children {
        finish(child);
    }
    stop.store(true, Ordering::Relaxed);
    let largest = watcher.join().unwrap();
    assert!(
        largest > bound / 2,
        "the watcher saw no full cache: {largest}"
    );
    let total = check_tree(&cache_dir);
    assert!(total <= bound);
    let cache = WorkerCache::open(
        &cache_dir,
        CacheOptions {
            disk_bytes: bound,
            ..CacheOptions::default()
        },
    )
    .unwrap();
    assert_eq!(cache.stats().disk_bytes, total);
}
