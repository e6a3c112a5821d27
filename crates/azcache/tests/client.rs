//! The AZ cache client against stub nodes over real loopback HTTP/2.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Stub;
use kindling_azcache::{encode, AzClient, ClientConfig, Stripes};
use kindling_chunk::ChunkName;

/// A chunk of `len` bytes that differs with `seed`.
fn chunk(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn config() -> ClientConfig {
    ClientConfig {
        // Roomy for a loaded two-core test machine.
        request_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

fn client(stubs: &[Stub], cfg: ClientConfig) -> AzClient {
    let addrs = stubs.iter().map(|s| s.addr).collect();
    AzClient::new(addrs, Stripes::DEFAULT, cfg).unwrap()
}

fn stub_at(stubs: &[Stub], addr: SocketAddr) -> &Stub {
    stubs.iter().find(|s| s.addr == addr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_round_trips_across_five_nodes() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, config());
    let sizes = [512 * 1024, 512 * 1024 - 1, 100_001, 4096, 3, 1, 0];
    let chunks: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| chunk(n, i as u64))
        .collect();
    for c in &chunks {
        az.put(&ChunkName::of(c), c.clone()).await.unwrap();
    }
    // One stripe of each chunk on each node.
    for s in &stubs {
        assert_eq!(s.stripe_count(), chunks.len());
    }
    for c in &chunks {
        let got = az.get(&ChunkName::of(c)).await.unwrap();
        assert_eq!(got.as_ref(), Some(c));
    }
    let st = az.stats();
    assert_eq!((st.gets, st.hits, st.misses), (7, 7, 0));
    assert_eq!(st.puts, 7);
    assert_eq!(st.stripes_put, 35);
    assert_eq!(
        st.stripes_corrupt + st.node_errors + st.stripes_timed_out,
        0
    );
    // One connection per node, shared by all requests.
    assert_eq!(st.connects, 5);
    for s in &stubs {
        assert_eq!(
            s.state
                .connections
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_chunk_is_a_miss() {
    let stubs = Stub::cluster(6).await;
    let az = client(&stubs, config());
    let started = Instant::now();
    assert_eq!(
        az.get(&ChunkName::of(b"nobody put me")).await.unwrap(),
        None
    );
    assert!(started.elapsed() < Duration::from_millis(150));
    let st = az.stats();
    assert_eq!((st.gets, st.hits, st.misses), (1, 0, 1));
    // The miss is known after m + 1 = 2 answers of 404; the rest may be cut.
    assert!(st.stripes_missing >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_still_hits() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, config());
    let c = chunk(512 * 1024, 1);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    // Take down the node of data stripe 0: the rebuild needs the parity.
    let placed = az.placement(&name).unwrap();
    stub_at(&stubs, placed[0]).stop().await;
    // The first reads may still find the old connection open and fail on
    // it; then a connect attempt is refused and marks the node down.
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !az.is_down(placed[0]) {
        assert!(Instant::now() < deadline, "the node was not marked down");
        assert_eq!(az.get(&name).await.unwrap(), Some(c.clone()));
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(az.get(&name).await.unwrap(), Some(c.clone()));
    let st = az.stats();
    assert_eq!((st.hits, st.rebuilds_with_parity), (reads + 1, reads + 1));
    assert!(st.node_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_m_nodes_down_is_a_quick_miss_without_retry_storms() {
    let stubs = Stub::cluster(5).await;
    let cfg = ClientConfig {
        down_backoff: Duration::from_secs(5),
        ..config()
    };
    let az = client(&stubs, cfg.clone());
    let c = chunk(512 * 1024, 2);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let placed = az.placement(&name).unwrap();
    stub_at(&stubs, placed[1]).stop().await;
    stub_at(&stubs, placed[4]).stop().await;
    // The first reads may still find the old connections open and see them
    // fail; then one connect attempt each is refused.
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(az.is_down(placed[1]) && az.is_down(placed[4])) {
        assert!(Instant::now() < deadline, "the nodes were not marked down");
        let started = Instant::now();
        assert_eq!(az.get(&name).await.unwrap(), None);
        assert!(started.elapsed() <= cfg.request_timeout + Duration::from_millis(50));
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connects = az.stats().connects;
    // The down nodes are skipped for their backoff: no new connect attempts
    // and each further miss is immediate.
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(az.get(&name).await.unwrap(), None);
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    let st = az.stats();
    assert_eq!(st.connects, connects);
    assert_eq!(st.misses, reads + 50);
    assert!(az.is_down(placed[1]) && az.is_down(placed[4]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_node_is_used_again_after_its_backoff() {
    let stubs = Stub::cluster(5).await;
    let cfg = ClientConfig {
        down_backoff: Duration::from_millis(100),
        down_backoff_max: Duration::from_millis(100),
        ..config()
    };
    let az = client(&stubs, cfg);
    let c = chunk(10_000, 3);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let node = az.placement(&name).unwrap()[2];
    let stub = stub_at(&stubs, node);
    stub.stop().await;
    // The first read may find the old connection still open; the next
    // connect attempt is refused and marks the node down.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !az.is_down(node) {
        assert!(Instant::now() < deadline, "the node was not marked down");
        assert!(az.get(&name).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stub.restart().await;
    let gets_before = stub.gets();
    // Once the backoff is over, a read connects again and the node answers.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stub.gets() == gets_before {
        assert!(Instant::now() < deadline, "the node was not used again");
        assert!(az.get(&name).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!az.is_down(node));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_node_is_left_out() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, config());
    let c = chunk(300_001, 4);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let placed = az.placement(&name).unwrap();
    stub_at(&stubs, placed[3]).set_corrupt(true);
    // Make sure the corrupt stripe arrives among the first k: the parity
    // node is slow.
    stub_at(&stubs, placed[4]).set_delay(Duration::from_millis(100));
    assert_eq!(az.get(&name).await.unwrap(), Some(c));
    let st = az.stats();
    assert_eq!(st.stripes_corrupt, 1);
    assert_eq!(st.rebuilds_with_parity, 1);
    // Caught by the stripe checksum; no rebuild was wasted on it.
    assert_eq!(st.rebuilds_bad, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_of_another_chunk_is_found_by_the_name_check() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, config());
    let c = chunk(200_000, 5);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let placed = az.placement(&name).unwrap();
    // Stripe 1 is replaced by a well-formed stripe 1 of another chunk of
    // the same length: it passes its own checks.
    let other = encode(&chunk(200_000, 6), Stripes::DEFAULT);
    stub_at(&stubs, placed[1]).insert(&name.to_hex(), 1, other[1].clone());
    stub_at(&stubs, placed[4]).set_delay(Duration::from_millis(100));
    assert_eq!(az.get(&name).await.unwrap(), Some(c));
    let st = az.stats();
    assert_eq!(st.stripes_corrupt, 0);
    // The first four stripes fail the name check; then the subsets of the
    // parity and three of them are tried until one leaves stripe 1 out.
    assert!((1..=4).contains(&st.rebuilds_bad), "{st:?}");
    assert_eq!((st.hits, st.rebuilds_with_parity), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_does_not_slow_the_read() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, config());
    let c = chunk(512 * 1024, 7);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let placed = az.placement(&name).unwrap();
    // Slower than the request timeout.
    stub_at(&stubs, placed[0]).set_delay(Duration::from_secs(2));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(az.get(&name).await.unwrap(), Some(c.clone()));
        let took = started.elapsed();
        assert!(took < Duration::from_millis(150), "{took:?}");
    }
    let st = az.stats();
    assert_eq!((st.hits, st.rebuilds_with_parity), (5, 5));
    // The slow requests were cancelled, not waited for.
    assert_eq!(st.stripes_timed_out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_slow_nodes_is_a_miss_bounded_by_the_timeout() {
    let stubs = Stub::cluster(5).await;
    let cfg = ClientConfig {
        request_timeout: Duration::from_millis(50),
        ..config()
    };
    let az = client(&stubs, cfg);
    let c = chunk(512 * 1024, 8);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let placed = az.placement(&name).unwrap();
    stub_at(&stubs, placed[0]).set_delay(Duration::from_secs(2));
    stub_at(&stubs, placed[2]).set_delay(Duration::from_secs(2));
    let started = Instant::now();
    assert_eq!(az.get(&name).await.unwrap(), None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_millis(150),
        "{took:?}"
    );
    assert!(az.stats().stripes_timed_out >= 1);
    // Timeouts do not mark nodes down (a client short of CPU would see all
    // nodes time out at once): every read waits out its timeout, no longer.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(az.get(&name).await.unwrap(), None);
        assert!(started.elapsed() < Duration::from_millis(150));
    }
    assert!(!az.is_down(placed[0]) && !az.is_down(placed[2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_runs_in_the_background_and_is_deduplicated() {
    let stubs = Stub::cluster(5).await;
    let cfg = ClientConfig {
        max_fills_in_flight: 2,
        put_timeout: Duration::from_secs(5),
        ..config()
    };
    let az = client(&stubs, cfg);
    // Uploads take a second: a fill that waited for one would show.
    for s in &stubs {
        s.set_delay(Duration::from_secs(1));
    }
    let chunks: Vec<Bytes> = (0..4).map(|i| chunk(512 * 1024, 100 + i)).collect();
    let started = Instant::now();
    for _ in 0..3 {
        az.fill(ChunkName::of(&chunks[0]), chunks[0].clone());
    }
    az.fill(ChunkName::of(&chunks[1]), chunks[1].clone());
    // Over the limit of two in flight: dropped.
    az.fill(ChunkName::of(&chunks[2]), chunks[2].clone());
    az.fill(ChunkName::of(&chunks[3]), chunks[3].clone());
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(az.fills_in_flight(), 2);
    assert!(stubs.iter().all(|s| s.stripe_count() == 0));
    let st = az.stats();
    assert_eq!(
        (st.fills_started, st.fills_deduped, st.fills_dropped),
        (2, 2, 2)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while az.fills_in_flight() > 0 {
        assert!(Instant::now() < deadline, "fills did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = az.stats();
    assert_eq!((st.fills_done, st.fills_failed), (2, 0));
    // Each chunk was uploaded once: one stripe per node per chunk.
    for s in &stubs {
        assert_eq!(s.puts(), 2);
        s.set_delay(Duration::ZERO);
    }
    for (i, c) in chunks.iter().enumerate() {
        let got = az.get(&ChunkName::of(c)).await.unwrap();
        assert_eq!(got.is_some(), i < 2);
    }
    // Once done, the same chunk can be filled again.
    az.fill(ChunkName::of(&chunks[0]), chunks[0].clone());
    assert_eq!(az.stats().fills_started, 3);
}

#[test]
fn fill_outside_a_runtime_is_dropped() {
    let addrs: Vec<SocketAddr> = (0..5)
        .map(|p| SocketAddr::from(([127, 0, 0, 1], 9 + p)))
        .collect();
    let az = AzClient::new(addrs, Stripes::DEFAULT, ClientConfig::default()).unwrap();
    let c = chunk(100, 9);
    az.fill(ChunkName::of(&c), c);
    assert_eq!(az.stats().fills_dropped, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reed_solomon_layout_survives_two_nodes_down() {
    let stubs = Stub::cluster(7).await;
    let s: Stripes = "4+2".parse().unwrap();
    let az = AzClient::new(stubs.iter().map(|s| s.addr).collect(), s, config()).unwrap();
    let c = chunk(512 * 1024 - 7, 10);
    let name = ChunkName::of(&c);
    az.put(&name, c.clone()).await.unwrap();
    let placed = az.placement(&name).unwrap();
    stub_at(&stubs, placed[0]).stop().await;
    stub_at(&stubs, placed[3]).stop().await;
    assert_eq!(az.get(&name).await.unwrap(), Some(c.clone()));
    stub_at(&stubs, placed[5]).stop().await;
    assert_eq!(az.get(&name).await.unwrap(), None);
    // A put with nodes down stores what it can and says so.
    let err = az.put(&name, c).await.unwrap_err();
    assert_eq!(
        err,
        kindling_azcache::AzError::PartialPut {
            stored: 3,
            total: 6
        }
    );
}

/// p50 / p99 of reads of 512 KiB chunks from 5 stub nodes on loopback, with
/// 1 and 16 reads in flight. Run with
/// `cargo test --release -p kindling-azcache --test client -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn get_latency() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, ClientConfig::default());
    let chunks: Vec<Bytes> = (0..64).map(|i| chunk(512 * 1024, 1000 + i)).collect();
    let names: Vec<ChunkName> = chunks.iter().map(|c| ChunkName::of(c)).collect();
    for (n, c) in names.iter().zip(&chunks) {
        az.put(n, c.clone()).await.unwrap();
    }
    for in_flight in [1usize, 16] {
        let per_task = 4000 / in_flight;
        let mut tasks = Vec::new();
        let started = Instant::now();
        for t in 0..in_flight {
            let az = az.clone();
            let names = names.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let name = &names[(t * 7 + i) % names.len()];
                    let start = Instant::now();
                    // A miss here is a timeout on a loaded machine: it
                    // shows in the counters printed below.
                    let _ = az.get(name).await.unwrap();
                    lat.push(start.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let wall = started.elapsed();
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        let misses = az.stats().misses;
        println!(
            "{in_flight:>2} in flight ({misses} misses so far): {} gets, p50 {:?}, p99 {:?}, p99.9 {:?}, {:.0} gets/s",
            all.len(),
            pct(0.50),
            pct(0.99),
            pct(0.999),
            all.len() as f64 / wall.as_secs_f64()
        );
    }
    println!("{:?}", az.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_all_opens_every_connection_before_any_read() {
    let stubs = Stub::cluster(5).await;
    let az = client(&stubs, config());
    assert_eq!(az.stats().connects, 0, "connections are lazy");
    az.connect_all();
    az.connect_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    while az.stats().connects < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Five attempts, one per node however often it is called, and the
    // first read then opens none.
    assert_eq!(az.stats().connects, 5);
    let data = chunk(512 * 1024, 7);
    let name = ChunkName::of(&data);
    assert!(az.get(&name).await.unwrap().is_none());
    assert_eq!(az.stats().connects, 5);
}
