//! The AZ tier in front of the origin, against real cache nodes on
//! loopback: a slow cluster is raced against the origin; a missing chunk
//! is filled, also when a slow cluster's miss comes after the origin's
//! answer; a chunk the slow cluster holds is not written again.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kindling_agent::{AzCached, ChunkSource, Fetched, SourceError, Tier};
use kindling_azcache::{AzClient, ClientConfig, Stripes};
use kindling_cachenode::{CacheNode, Faults, NodeConfig, RunningNode};
use kindling_chunk::ChunkName;

/// An origin that answers after `delay`, counting requests.
#[derive(Debug)]
struct SlowOrigin {
    delay: Duration,
    bytes: Bytes,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ChunkSource for SlowOrigin {
    async fn fetch(&self, _name: &ChunkName) -> Result<Fetched, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        Ok(Fetched {
            bytes: self.bytes.clone(),
            tier: Tier::Origin,
        })
    }
}

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    nodes: Vec<RunningNode>,
    client: Arc<AzClient>,
}

async fn cluster() -> Cluster {
    let (mut dirs, mut nodes) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let node = CacheNode::open(NodeConfig::with_capacity(dir.path(), 64 << 20)).unwrap();
        nodes.push(
            RunningNode::start(Arc::new(node), ([127, 0, 0, 1], 0).into())
                .await
                .unwrap(),
        );
        dirs.push(dir);
    }
    let cfg = ClientConfig {
        request_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let addrs = nodes.iter().map(|n| n.addr()).collect();
    Cluster {
        _dirs: dirs,
        nodes,
        client: Arc::new(AzClient::new(addrs, Stripes::DEFAULT, cfg).unwrap()),
    }
}

fn chunk() -> (ChunkName, Bytes) {
    let bytes = Bytes::from(kindling_testkit::prng("az-hedge", 512 << 10));
    (ChunkName::of(&bytes), bytes)
}

fn over(c: &Cluster, origin: &Arc<SlowOrigin>) -> AzCached {
    AzCached::new(c.client.clone(), origin.clone(), Duration::from_millis(30))
}

fn origin(delay: Duration, bytes: &Bytes) -> Arc<SlowOrigin> {
    Arc::new(SlowOrigin {
        delay,
        bytes: bytes.clone(),
        calls: AtomicUsize::new(0),
    })
}

fn slow_nodes(c: &Cluster, delay: Option<Duration>) {
    for n in &c.nodes {
        n.set_faults(Faults {
            delay,
            ..Faults::default()
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cluster_still_wins_against_a_slower_origin() {
    let c = cluster().await;
    let (name, bytes) = chunk();
    c.client.put(&name, bytes.clone()).await.unwrap();
    slow_nodes(&c, Some(Duration::from_millis(150)));
    let o = origin(Duration::from_secs(3), &bytes);
    let t = Instant::now();
    let f = over(&c, &o).fetch(&name).await.unwrap();
    assert_eq!(f.tier, Tier::Az, "the cluster answered first");
    assert_eq!(f.bytes, bytes);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(o.calls.load(Ordering::SeqCst), 1, "one hedge to the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faster_origin_wins_against_a_slow_cluster_without_a_fill() {
    let c = cluster().await;
    let (name, bytes) = chunk();
    c.client.put(&name, bytes.clone()).await.unwrap();
    slow_nodes(&c, Some(Duration::from_millis(300)));
    let o = origin(Duration::ZERO, &bytes);
    let t = Instant::now();
    let f = over(&c, &o).fetch(&name).await.unwrap();
    assert_eq!(f.tier, Tier::Origin);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // The cluster's late answer, a hit, arrives in the background.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.client.stats().hits == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.client.stats().hits, 1);
    assert_eq!(
        c.client.stats().fills_started,
        0,
        "the cluster was slow, not missing the chunk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_comes_from_the_origin_and_is_filled() {
    let c = cluster().await;
    let (name, bytes) = chunk();
    let o = origin(Duration::ZERO, &bytes);
    let f = over(&c, &o).fetch(&name).await.unwrap();
    assert_eq!(f.tier, Tier::Origin);
    assert_eq!(c.client.stats().fills_started, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.client.fills_in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let f = over(&c, &o).fetch(&name).await.unwrap();
    assert_eq!(f.tier, Tier::Az, "the fill landed");
    assert_eq!(o.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_miss_overtaken_by_the_origin_is_still_filled() {
    let c = cluster().await;
    let (name, bytes) = chunk();
    slow_nodes(&c, Some(Duration::from_millis(200)));
    let o = origin(Duration::ZERO, &bytes);
    let f = over(&c, &o).fetch(&name).await.unwrap();
    assert_eq!(f.tier, Tier::Origin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.client.stats().fills_done == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        c.client.stats().fills_done,
        1,
        "the late miss led to a fill"
    );
    slow_nodes(&c, None);
    let f = over(&c, &o).fetch(&name).await.unwrap();
    assert_eq!(f.tier, Tier::Az);
}
