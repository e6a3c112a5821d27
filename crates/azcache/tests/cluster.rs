//! The AZ cache client against a cluster of five real cache nodes
//! (`kindling-cachenode`, memory over flash in temporary directories),
//! in-process on loopback, in the paper's 4 + 1 layout: one test per fault
//! the cluster must ride out (DESIGN.md section 4). Every test counts its
//! hits and misses exactly: a miss is an origin read in the agent.
//!
//! With five nodes and five stripes every node holds one stripe of every
//! chunk, so each fault touches every chunk. Which stripe a node holds
//! differs per chunk; where that decides whether a rebuild needs the
//! parity stripe, the expected count is computed from the placement.
//!
//! Timing bounds are loose on purpose: the tests run on a loaded two-core
//! machine next to each other.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kindling_azcache::{AzClient, ClientConfig, Stripes};
use kindling_cachenode::{CacheNode, Faults, NodeConfig, RunningNode};
use kindling_chunk::ChunkName;
use kindling_testkit::prng;
use tempfile::TempDir;

/// Nodes in the cluster: exactly `k + m` of the default 4 + 1 layout.
const NODES: usize = 5;
/// Flash capacity of each node (a tenth of it in memory): far more than
/// the tests store, so nothing is evicted.
const NODE_CAPACITY: u64 = 64 << 20;
/// Chunks each test stores.
const CHUNKS: usize = 24;
/// The largest chunk.
const MAX_CHUNK: usize = 512 * 1024;

/// One node's place in the cluster: its address and flash directory stay
/// when it is stopped and started again.
#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    dir: TempDir,
    running: Option<RunningNode>,
}

/// How a stopped node comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flash {
    /// `CacheNode::open`: the stripes on flash are served again.
    Kept,
    /// `CacheNode::open_empty`: a replaced disk, every stripe gone.
    Wiped,
}

#[derive(Debug)]
struct Cluster {
    slots: Vec<Slot>,
}

impl Cluster {
    /// `NODES` real nodes on `127.0.0.1`, each on a port of its own.
    async fn start() -> Cluster {
        let mut slots = Vec::with_capacity(NODES);
        for _ in 0..NODES {
            let dir = tempfile::tempdir().unwrap();
            let node = CacheNode::open(node_config(&dir)).unwrap();
            let running = RunningNode::start(Arc::new(node), ([127, 0, 0, 1], 0).into())
                .await
                .unwrap();
            slots.push(Slot {
                addr: running.addr(),
                dir,
                running: Some(running),
            });
        }
        Cluster { slots }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.slots.iter().map(|s| s.addr).collect()
    }

    fn client(&self, cfg: ClientConfig) -> AzClient {
        AzClient::new(self.addrs(), Stripes::DEFAULT, cfg).unwrap()
    }

    fn slot_mut(&mut self, addr: SocketAddr) -> &mut Slot {
        self.slots.iter_mut().find(|s| s.addr == addr).unwrap()
    }

    /// The running node at `addr`.
    fn node(&self, addr: SocketAddr) -> &RunningNode {
        self.slots
            .iter()
            .find(|s| s.addr == addr)
            .and_then(|s| s.running.as_ref())
            .expect("node is running")
    }

    /// Stops the node at `addr` as a crash would: port closed, connections
    /// cut. Its flash directory stays.
    async fn stop(&mut self, addr: SocketAddr) {
        let running = self.slot_mut(addr).running.take().expect("node is running");
        running.shutdown().await;
    }

    /// Starts the stopped node at `addr` again, on the same address and
    /// directory.
    async fn restart(&mut self, addr: SocketAddr, flash: Flash) {
        let slot = self.slot_mut(addr);
        assert!(slot.running.is_none(), "stop the node first");
        let cfg = node_config(&slot.dir);
        let node = match flash {
            Flash::Kept => CacheNode::open(cfg),
            Flash::Wiped => CacheNode::open_empty(cfg),
        }
        .unwrap();
        let running = RunningNode::start(Arc::new(node), addr).await.unwrap();
        assert_eq!(running.addr(), addr);
        slot.running = Some(running);
    }

    /// Stops every node and removes the flash directories, all at once:
    /// removing one (256 subdirectories) can take most of a second on a
    /// busy disk, about as long as removing all five in parallel.
    async fn shutdown(self) {
        let mut removals = Vec::with_capacity(self.slots.len());
        for slot in self.slots {
            if let Some(running) = slot.running {
                running.shutdown().await;
            }
            let dir = slot.dir;
            removals.push(tokio::task::spawn_blocking(move || dir.close()));
        }
        for removal in removals {
            removal.await.unwrap().unwrap();
        }
    }
}

fn node_config(dir: &TempDir) -> NodeConfig {
    NodeConfig::with_capacity(dir.path(), NODE_CAPACITY)
}

/// Client settings for the tests: the default but for a read timeout
/// roomy enough that a loaded two-core machine does not turn a hit into a
/// miss (30 ms by default).
fn config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Chunk {
    name: ChunkName,
    bytes: Bytes,
}

/// `CHUNKS` chunks of random content (the same in every run of a test) and varied sizes up to `MAX_CHUNK`:
/// the edges (empty, one byte, the largest, sizes that do not divide by
/// `k`) and random ones.
fn chunks(seed: u64) -> Vec<Chunk> {
    let edges = [MAX_CHUNK, MAX_CHUNK - 1, 0, 1, 3, 4096, 100_001];
    (0..CHUNKS)
        .map(|i| {
            let len = match edges.get(i) {
                Some(&len) => len,
                None => {
                    let r = prng(&format!("len-{seed}-{i}"), 8);
                    (u64::from_le_bytes(r.try_into().unwrap()) % (MAX_CHUNK as u64 + 1)) as usize
                }
            };
            let bytes = Bytes::from(prng(&format!("chunk-{seed}-{i}"), len));
            Chunk {
                name: ChunkName::of(&bytes),
                bytes,
            }
        })
        .collect()
}

async fn put_all(az: &AzClient, chunks: &[Chunk]) {
    for c in chunks {
        az.put(&c.name, c.bytes.clone()).await.unwrap();
    }
}

/// Reads `c`, asserts the exact bytes came back, and gives the time taken.
async fn get_hit(az: &AzClient, c: &Chunk) -> Duration {
    let started = Instant::now();
    let got = az.get(&c.name).await.unwrap();
    let took = started.elapsed();
    assert!(
        got.as_ref() == Some(&c.bytes),
        "chunk {} of {} bytes: {}",
        c.name,
        c.bytes.len(),
        match got {
            None => "a miss".to_owned(),
            Some(b) => format!("{} wrong bytes", b.len()),
        }
    );
    took
}

/// Reads every chunk, asserting each is a hit with the exact bytes; gives
/// the times taken.
async fn get_all_hit(az: &AzClient, chunks: &[Chunk]) -> Vec<Duration> {
    let mut times = Vec::with_capacity(chunks.len());
    for c in chunks {
        times.push(get_hit(az, c).await);
    }
    times
}

/// The stripe index `addr` holds of `c`.
fn stripe_of(az: &AzClient, c: &Chunk, addr: SocketAddr) -> usize {
    let placed = az.placement(&c.name).unwrap();
    placed.iter().position(|&a| a == addr).unwrap()
}

/// How many reads of `chunks` need the parity stripe when the node at
/// `addr` gives nothing usable and the other four answer: those where it
/// holds a data stripe.
fn parity_rebuilds_without(az: &AzClient, chunks: &[Chunk], addr: SocketAddr) -> u64 {
    let k = usize::from(az.stripes().k());
    chunks.iter().filter(|c| stripe_of(az, c, addr) < k).count() as u64
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

fn served(node: &RunningNode) -> u64 {
    let st = node.node().stats();
    st.memory.hits + st.flash.hits
}

/// With `other` stopped, every chunk is read once: all hit, the parity
/// rebuilds are the ones the placement predicts, and `node` serves a
/// stripe of each.
async fn assert_serves_every_chunk(
    cluster: &mut Cluster,
    az: &AzClient,
    chunks: &[Chunk],
    node: SocketAddr,
    other: SocketAddr,
) {
    cluster.stop(other).await;
    // Let any cancelled stripe request still running on it finish.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = az.stats();
    let served_before = served(cluster.node(node));
    get_all_hit(az, chunks).await;
    let st = az.stats();
    let n = chunks.len() as u64;
    assert_eq!(
        (st.hits - before.hits, st.misses - before.misses),
        (n, 0),
        "{st:?}"
    );
    assert_eq!(
        st.rebuilds_with_parity - before.rebuilds_with_parity,
        parity_rebuilds_without(az, chunks, other),
        "{st:?}"
    );
    assert_eq!(served(cluster.node(node)) - served_before, n);
}

async fn wait_for_fills(az: &AzClient) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while az.fills_in_flight() > 0 {
        assert!(Instant::now() < deadline, "fills did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_cluster_returns_every_chunk() {
    let cluster = Cluster::start().await;
    let az = cluster.client(config());
    let chunks = chunks(1);
    put_all(&az, &chunks).await;
    // One stripe of each chunk on each node, in memory and on flash.
    for addr in cluster.addrs() {
        let st = cluster.node(addr).node().stats();
        assert_eq!(st.puts, CHUNKS as u64, "{addr}");
        assert_eq!(st.flash.entries, CHUNKS as u64, "{addr}");
        assert_eq!(st.memory.entries, CHUNKS as u64, "{addr}");
    }
    get_all_hit(&az, &chunks).await;
    // A second round: the same bytes again.
    get_all_hit(&az, &chunks).await;
    let st = az.stats();
    let n = CHUNKS as u64;
    assert_eq!((st.gets, st.hits, st.misses), (2 * n, 2 * n, 0), "{st:?}");
    assert_eq!((st.puts, st.stripes_put), (n, n * NODES as u64), "{st:?}");
    assert_eq!(
        (st.stripes_corrupt, st.rebuilds_bad, st.stripes_missing),
        (0, 0, 0),
        "{st:?}"
    );
    assert_eq!((st.node_errors, st.connect_failures), (0, 0), "{st:?}");
    // One multiplexed connection per node for everything.
    assert_eq!(st.connects, NODES as u64, "{st:?}");
    // Which four stripes come first varies; parity is used at most once a
    // read.
    assert!(st.rebuilds_with_parity <= 2 * n, "{st:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_down_still_hits_by_parity() {
    let mut cluster = Cluster::start().await;
    let az = cluster.client(config());
    let chunks = chunks(2);
    put_all(&az, &chunks).await;
    let down = cluster.addrs()[0];
    cluster.stop(down).await;
    let times = get_all_hit(&az, &chunks).await;
    let st = az.stats();
    let n = CHUNKS as u64;
    // No misses: in the agent, no origin read.
    assert_eq!((st.gets, st.hits, st.misses), (n, n, 0), "{st:?}");
    // Parity fills in for every chunk the node held a data stripe of.
    let expected = parity_rebuilds_without(&az, &chunks, down);
    assert!(expected > 0 && expected < n, "placement spreads stripes");
    assert_eq!(st.rebuilds_with_parity, expected, "{st:?}");
    assert_eq!((st.stripes_corrupt, st.rebuilds_bad), (0, 0), "{st:?}");
    // The first read finds the dead connection; reconnecting is refused
    // and the node is left alone for its backoff. (Whether it is still
    // marked down when the reads end depends on how long they took.)
    assert!(st.node_errors >= 1, "{st:?}");
    assert!(st.connect_failures >= 1, "{st:?}");
    // A dead node costs a fast local failure, not a wait.
    let slowest = times.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(1), "{times:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_node_does_not_slow_reads() {
    let cluster = Cluster::start().await;
    let cfg = config();
    let timeout = cfg.request_timeout;
    let az = cluster.client(cfg);
    let chunks = chunks(3);
    put_all(&az, &chunks).await;
    let slow = cluster.addrs()[2];
    // Ten times the request timeout: waiting for it even once would show.
    let delay = timeout * 10;
    cluster.node(slow).set_faults(Faults {
        delay: Some(delay),
        corrupt: false,
    });
    let started = Instant::now();
    let times = get_all_hit(&az, &chunks).await;
    let total = started.elapsed();
    let st = az.stats();
    let n = CHUNKS as u64;
    assert_eq!((st.gets, st.hits, st.misses), (n, n, 0), "{st:?}");
    // The four fast stripes rebuild the chunk; the slow request is
    // cancelled, neither waited for nor timed out.
    assert_eq!(
        st.rebuilds_with_parity,
        parity_rebuilds_without(&az, &chunks, slow),
        "{st:?}"
    );
    assert_eq!(st.stripes_timed_out, 0, "{st:?}");
    // A slow node is not a down node.
    assert!(!az.is_down(slow));
    let slowest = *times.iter().max().unwrap();
    let med = median(&times);
    assert!(slowest < delay / 2, "slowest {slowest:?} of {times:?}");
    assert!(med < timeout, "median {med:?} of {times:?}");
    // All of them together take less than the one slow answer.
    assert!(total < delay, "{total:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupting_node_is_caught_and_left_out() {
    let cluster = Cluster::start().await;
    let az = cluster.client(config());
    let chunks = chunks(4);
    put_all(&az, &chunks).await;
    let addrs = cluster.addrs();
    let bad = addrs[1];
    cluster.node(bad).set_faults(Faults {
        delay: None,
        corrupt: true,
    });
    let n = CHUNKS as u64;
    let expected_parity = parity_rebuilds_without(&az, &chunks, bad);

    // Its stripes fail their checks and the other four rebuild the chunk.
    // Whether its answer arrives before the read is done varies, so the
    // number of corrupt stripes seen does too.
    get_all_hit(&az, &chunks).await;
    let st = az.stats();
    assert_eq!((st.gets, st.hits, st.misses), (n, n, 0), "{st:?}");
    assert_eq!(st.rebuilds_with_parity, expected_parity, "{st:?}");
    assert!(st.stripes_corrupt <= n, "{st:?}");
    // Caught by the stripe checksum, before any rebuild.
    assert_eq!(st.rebuilds_bad, 0, "{st:?}");
    let seen_before = st.stripes_corrupt;

    // With another node slow (within the request timeout), every read
    // waits for it and so sees the corrupt stripe first: one each.
    let mut cfg = config();
    cfg.request_timeout = Duration::from_secs(3);
    let patient = cluster.client(cfg);
    let slow = addrs[3];
    cluster.node(slow).set_faults(Faults {
        delay: Some(Duration::from_millis(250)),
        corrupt: false,
    });
    let few = &chunks[..8];
    get_all_hit(&patient, few).await;
    let st = patient.stats();
    let m = few.len() as u64;
    assert_eq!((st.gets, st.hits, st.misses), (m, m, 0), "{st:?}");
    assert_eq!(st.stripes_corrupt, m, "{st:?}");
    assert_eq!(
        st.rebuilds_with_parity,
        parity_rebuilds_without(&patient, few, bad),
        "{st:?}"
    );
    assert_eq!((st.rebuilds_bad, st.stripes_timed_out), (0, 0), "{st:?}");

    // The node corrupts on the way out only: what it stores is intact,
    // and once it stops, reads use it again without complaint.
    cluster.node(bad).set_faults(Faults::default());
    cluster.node(slow).set_faults(Faults::default());
    get_all_hit(&az, &chunks).await;
    let st = az.stats();
    assert_eq!((st.hits, st.misses), (2 * n, 0), "{st:?}");
    assert_eq!(st.stripes_corrupt, seen_before, "{st:?}");
    assert_eq!(cluster.node(bad).node().stats().corrupt, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_empty_is_refilled() {
    let mut cluster = Cluster::start().await;
    let az = cluster.client(config());
    let chunks = chunks(5);
    put_all(&az, &chunks).await;
    let addrs = cluster.addrs();
    let wiped = addrs[4];
    cluster.stop(wiped).await;
    cluster.restart(wiped, Flash::Wiped).await;
    let st = cluster.node(wiped).node().stats();
    assert_eq!((st.flash.entries, st.memory.entries), (0, 0), "{st:?}");

    // Its stripes are gone: the other four rebuild every chunk.
    get_all_hit(&az, &chunks).await;
    let st = az.stats();
    let n = CHUNKS as u64;
    assert_eq!((st.gets, st.hits, st.misses), (n, n, 0), "{st:?}");
    assert_eq!(
        st.rebuilds_with_parity,
        parity_rebuilds_without(&az, &chunks, wiped),
        "{st:?}"
    );
    // It answers (404), so it is not marked down.
    assert!(!az.is_down(wiped));
    assert!(st.stripes_missing <= n, "{st:?}");
    assert_eq!(cluster.node(wiped).node().stats().flash.entries, 0);

    // A fill (what the agent does after an origin read) stores the stripes
    // again, its stripe included.
    for c in &chunks {
        az.fill(c.name, c.bytes.clone());
    }
    wait_for_fills(&az).await;
    let st = az.stats();
    assert_eq!(
        (
            st.fills_started,
            st.fills_done,
            st.fills_failed,
            st.fills_dropped
        ),
        (n, n, 0, 0),
        "{st:?}"
    );
    let node_st = cluster.node(wiped).node().stats();
    assert_eq!(node_st.puts, n, "{node_st:?}");
    assert_eq!(node_st.flash.entries, n, "{node_st:?}");

    // Proof it serves them: with another node down, every read needs the
    // refilled node's stripe.
    assert_serves_every_chunk(&mut cluster, &az, &chunks, wiped, addrs[0]).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_down_is_a_bounded_miss_without_retry_storms() {
    let mut cluster = Cluster::start().await;
    let cfg = config();
    let backoff = cfg.down_backoff;
    let az = cluster.client(cfg);
    let chunks = chunks(6);
    put_all(&az, &chunks).await;
    let addrs = cluster.addrs();
    let down = [addrs[1], addrs[3]];
    for addr in down {
        cluster.stop(addr).await;
    }

    // m + 1 stripes gone: every chunk is a miss (the agent reads the
    // origin), quickly, and never a wrong answer.
    let mut gets = 0;
    for c in &chunks {
        let started = Instant::now();
        assert_eq!(az.get(&c.name).await.unwrap(), None);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}");
        gets += 1;
    }
    let st = az.stats();
    assert_eq!((st.gets, st.hits, st.misses), (gets, 0, gets), "{st:?}");
    assert!(st.connect_failures >= 2, "{st:?}");
    assert_eq!((st.rebuilds_bad, st.stripes_corrupt), (0, 0), "{st:?}");

    // 50 more reads spread over time: the dead nodes are tried at most
    // once per backoff window each (the backoff only grows), not once a
    // read.
    let connects = st.connects;
    let started = Instant::now();
    for i in 0..50 {
        let c = &chunks[i % chunks.len()];
        let t = Instant::now();
        assert_eq!(az.get(&c.name).await.unwrap(), None);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        gets += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let st = az.stats();
    assert_eq!((st.gets, st.hits, st.misses), (gets, 0, gets), "{st:?}");
    let windows = (elapsed.as_secs_f64() / backoff.as_secs_f64()).ceil() as u64;
    let bound = down.len() as u64 * (windows + 1);
    let new = st.connects - connects;
    assert!(
        new <= bound,
        "{new} connect attempts in {elapsed:?} (bound {bound}): {st:?}"
    );
    // Each attempt was refused, and no live node was reconnected.
    assert_eq!(st.connects - st.connect_failures, NODES as u64, "{st:?}");

    // The fill after the origin read stores three stripes of five: fewer
    // than k, so it fails, quietly.
    let c = &chunks[0];
    az.fill(c.name, c.bytes.clone());
    wait_for_fills(&az).await;
    let st = az.stats();
    assert_eq!((st.fills_started, st.fills_failed), (1, 1), "{st:?}");
    assert_eq!(az.get(&c.name).await.unwrap(), None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_its_flash_is_used_again() {
    let mut cluster = Cluster::start().await;
    let az = cluster.client(config());
    let chunks = chunks(7);
    put_all(&az, &chunks).await;
    let addrs = cluster.addrs();
    let restarted = addrs[2];
    cluster.stop(restarted).await;

    // Reads hit by parity until the client marks the node down.
    let mut gets = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !az.is_down(restarted) {
        assert!(Instant::now() < deadline, "the node was not marked down");
        get_hit(&az, &chunks[gets as usize % chunks.len()]).await;
        gets += 1;
    }

    cluster.restart(restarted, Flash::Kept).await;
    // Its stripes are back from flash, memory starts cold.
    let st = cluster.node(restarted).node().stats();
    assert_eq!(
        (st.flash.entries, st.memory.entries),
        (CHUNKS as u64, 0),
        "{st:?}"
    );

    // After the down-backoff a read connects again and the node answers
    // from its flash.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut polls = 0u64;
    while served(cluster.node(restarted)) == 0 {
        assert!(Instant::now() < deadline, "the node was not used again");
        get_hit(&az, &chunks[gets as usize % chunks.len()]).await;
        gets += 1;
        polls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!az.is_down(restarted));
    assert!(polls >= 1);
    assert!(cluster.node(restarted).node().stats().flash.hits >= 1);
    let st = az.stats();
    assert_eq!((st.gets, st.hits, st.misses), (gets, gets, 0), "{st:?}");

    // Proof it serves every chunk: with another node down each read needs
    // its stripe.
    assert_serves_every_chunk(&mut cluster, &az, &chunks, restarted, addrs[0]).await;
    cluster.shutdown().await;
}
