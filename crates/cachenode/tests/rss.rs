//! The node's memory stays within its memory tier plus 64 MiB while many
//! times that passes through it. Alone in its file so the process's peak
//! RSS is this test's.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kindling_cachenode::{CacheNode, NodeConfig, RunningNode};
use kindling_chunk::ChunkName;

/// Peak and current resident set size of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .expect("field")
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_within_the_memory_tier_plus_64_mib() {
    const MEMORY: u64 = 32 << 20;
    const STRIPE: usize = 128 << 10;
    const STRIPES: u32 = 2400; // 300 MiB through a 32 MiB memory tier.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = CacheNode::open(NodeConfig {
        memory_bytes: MEMORY,
        disk_dir: dir.path().to_path_buf(),
        disk_bytes: 96 << 20,
    })
    .expect("open");
    let running = RunningNode::start(Arc::new(node), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start");
    let addr = running.addr();
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(2 << 20)
        .http2_initial_connection_window_size(8 << 20)
        .build_http();
    let (baseline, _) = rss();

    let name = move |n: u32| {
        let mut name = [0u8; 32];
        name[..4].copy_from_slice(&n.to_le_bytes());
        ChunkName(name)
    };
    let request = move |method: Method, n: u32, body: Bytes| {
        Request::builder()
            .method(method)
            .uri(format!("http://{addr}/v1/stripes/{}/0", name(n).to_hex()))
            .body(Full::new(body))
            .expect("request")
    };
    // 16 writers; each re-reads its last few stripes so both tiers see
    // hits, promotions and evictions.
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..16u32 {
        let client = client.clone();
        tasks.spawn(async move {
            for n in (writer..STRIPES).step_by(16) {
                let body = Bytes::from(vec![n as u8; STRIPE]);
                let put = client
                    .request(request(Method::PUT, n, body))
                    .await
                    .expect("put");
                assert_eq!(put.status(), StatusCode::NO_CONTENT);
                for back in [0, 16 * 20, 16 * 200] {
                    let Some(old) = n.checked_sub(back) else {
                        continue;
                    };
                    let get = client
                        .request(request(Method::GET, old, Bytes::new()))
                        .await
                        .expect("get");
                    let status = get.status();
                    let body = get.into_body().collect().await.expect("body").to_bytes();
                    if status == StatusCode::OK {
                        assert!(body.iter().all(|&b| b == old as u8));
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("writer");
    }
    let stats = running.node().stats();
    let (peak, now) = rss();
    eprintln!(
        "baseline {} MiB, peak {} MiB, now {} MiB; memory tier {} MiB in {} entries, flash {} MiB; \
         hits {}/{}, promotions {}, evictions {}/{}",
        baseline >> 20,
        peak >> 20,
        now >> 20,
        stats.memory.bytes >> 20,
        stats.memory.entries,
        stats.flash.bytes >> 20,
        stats.memory.hits,
        stats.flash.hits,
        stats.promotions,
        stats.memory.evictions,
        stats.flash.evictions,
    );
    assert!(stats.memory.bytes <= MEMORY);
    assert!(stats.memory.evictions > 0 && stats.flash.evictions > 0 && stats.flash.hits > 0);
    assert!(peak <= MEMORY + (64 << 20), "peak RSS {} MiB", peak >> 20);
    running.shutdown().await;
}
