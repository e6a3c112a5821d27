//! GET latency of a 128 KiB memory hit: in process ([`CacheNode::get`])
//! and over HTTP/2 on loopback with 1 and 16 requests in flight, plus the
//! node's own handler-time histogram.
//!
//! ```text
//! cargo run --release -p kindling-cachenode --example node_get_latency [GETS]
//! ```
//!
//! Client and node share the process and its cores, so the loopback
//! figures include the client's own work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kindling_cachenode::{CacheNode, NodeConfig, RunningNode};
use kindling_chunk::ChunkName;

const STRIPE: usize = 128 << 10;

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{label:<32} n={:<7} p50 {:>8.1?}  p90 {:>8.1?}  p99 {:>8.1?}  p99.9 {:>8.1?}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gets: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let dir = tempfile::tempdir()?;
    let node = Arc::new(CacheNode::open(NodeConfig::with_capacity(
        dir.path(),
        1 << 30,
    ))?);
    let names: Vec<ChunkName> = (0..16u8).map(|n| ChunkName([n; 32])).collect();
    for (n, name) in names.iter().enumerate() {
        node.put(name, 0, Bytes::from(vec![n as u8; STRIPE]))
            .await?;
    }

    let mut samples = Vec::with_capacity(gets);
    for i in 0..gets {
        let start = Instant::now();
        let hit = node.get(&names[i % names.len()], 0).await;
        samples.push(start.elapsed());
        assert!(hit.is_some());
    }
    summary("CacheNode::get (in process)", samples);

    let running = RunningNode::start(node.clone(), "127.0.0.1:0".parse()?).await?;
    let addr = running.addr();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(2 << 20)
        .http2_initial_connection_window_size(8 << 20)
        .http2_max_frame_size(512 << 10)
        .build(connector);
    let uris: Arc<Vec<hyper::Uri>> = Arc::new(
        names
            .iter()
            .map(|name| format!("http://{addr}/v1/stripes/{}/0", name.to_hex()).parse())
            .collect::<Result<_, _>>()?,
    );
    let get = |client: Client<HttpConnector, Full<Bytes>>, uri: hyper::Uri| async move {
        let start = Instant::now();
        let response = client
            .request(Request::get(uri).body(Full::default())?)
            .await?;
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await?.to_bytes();
        assert_eq!(body.len(), STRIPE);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(start.elapsed())
    };

    for in_flight in [1usize, 16] {
        // Warm the connection.
        for uri in uris.iter() {
            get(client.clone(), uri.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        let before = node.stats().get_latency;
        let wall = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..in_flight {
            let (client, uris) = (client.clone(), uris.clone());
            tasks.spawn(async move {
                let mut samples = Vec::with_capacity(gets / in_flight);
                for i in 0..gets / in_flight {
                    samples
                        .push(get(client.clone(), uris[(worker + i) % uris.len()].clone()).await?);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(samples)
            });
        }
        let mut samples = Vec::with_capacity(gets);
        while let Some(done) = tasks.join_next().await {
            samples.extend(done?.map_err(|e| e.to_string())?);
        }
        let wall = wall.elapsed();
        let count = samples.len();
        summary(&format!("HTTP/2 loopback, {in_flight} in flight"), samples);
        let after = node.stats().get_latency;
        let mut handler = after;
        for (bucket, was) in handler.buckets.iter_mut().zip(before.buckets) {
            *bucket -= was;
        }
        handler.count -= before.count;
        handler.sum -= before.sum;
        println!(
            "{:<32} {:.0} GET/s, {:.0} MiB/s; node handler time mean {:.1?}, p50 <= {} us, p99 <= {} us",
            "",
            count as f64 / wall.as_secs_f64(),
            (count * STRIPE) as f64 / wall.as_secs_f64() / (1 << 20) as f64,
            handler.sum / handler.count.max(1) as u32,
            handler.quantile_bound(0.5).map_or(f64::NAN, |s| s * 1e6),
            handler.quantile_bound(0.99).map_or(f64::NAN, |s| s * 1e6),
        );
    }
    running.shutdown().await;
    Ok(())
}
