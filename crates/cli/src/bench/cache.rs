//! `kindling bench cache`: chunk-fetch latency from the AZ cache cluster
//! (K+M stripes, and K+0 without parity) against the origin (the
//! in-process S3 server), all on loopback, interleaved in rounds.
//!
//! Each variant gets its own set of random chunks (4+1 and 4+0 stripes of
//! one chunk would share node keys). A fetch is timed from the request to
//! verified ciphertext: a cluster fetch rebuilds from the first K stripes
//! and checks the chunk against its name; an origin fetch is a GET plus
//! the same check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use kindling_azcache::{AzClient, ClientConfig, Stripes};
use kindling_cachenode::GetHistogram;
use kindling_chunk::ChunkName;
use kindling_store::{S3Server, Store};

/// AZ cache vs origin: chunk-fetch latency at 1, 4 and 16 in flight.
///
/// Starts the cache nodes and an S3 server in this process on loopback,
/// stores random 512 KiB chunks in each, then fetches them at each
/// concurrency, variants interleaved round by round. Prints one JSON
/// object: p50, p99 and p99.9 per variant and concurrency (microseconds;
/// misses - stripes later than --az-timeout - are counted and timed too),
/// the nodes' own GET handling time and the cost of hashing one chunk.
#[derive(Debug, clap::Args)]
pub struct CacheArgs {
    /// Cache nodes to start.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// The striped variant; K+0 with the same K runs beside it.
    #[arg(long, default_value = "4+1", value_parser = crate::az::parse_stripes)]
    stripes: Stripes,
    /// Distinct chunks per variant.
    #[arg(long, default_value_t = 64)]
    chunks: usize,
    /// Fetches per variant and concurrency, over all rounds.
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Rounds; each runs every variant once per concurrency.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests in flight.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    in_flight: Vec<usize>,
    /// Time limit of one stripe request (the agent gives its stripes 8x
    /// its --az-timeout, the delay before it also asks the origin).
    #[arg(long, default_value = "30ms", value_parser = super::parse_duration)]
    az_timeout: std::time::Duration,
}

const CHUNK: usize = 512 << 10;

/// A deterministic random chunk (xorshift; content does not matter, only
/// that chunks differ and do not compress).
fn chunk(seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(CHUNK);
    while v.len() < CHUNK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

enum Variant {
    Az(Arc<AzClient>),
    Origin(Arc<dyn Store>),
}

impl Variant {
    /// Whether the chunk came back (a cluster miss - stripes late or
    /// lost - is what sends a reader to the origin).
    async fn fetch(&self, name: &ChunkName) -> Result<bool> {
        match self {
            Variant::Az(c) => Ok(c.get(name).await?.is_some()),
            Variant::Origin(s) => {
                kindling_repo::read_chunk(s.as_ref(), name).await?;
                Ok(true)
            }
        }
    }
}

fn quantiles(mut v: Vec<f64>, misses: usize) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    serde_json::json!({
        "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": q(1.0), "n": v.len(),
        "misses": misses,
    })
}

pub fn run(args: CacheArgs) -> Result<()> {
    anyhow::ensure!(
        args.nodes >= args.stripes.total(),
        "{} stripes need at least {} nodes",
        args.stripes,
        args.stripes.total()
    );
    anyhow::ensure!(
        args.chunks > 0 && args.rounds > 0 && args.requests >= args.rounds,
        "--chunks, --rounds and --requests must be positive (requests >= rounds)"
    );
    let rt = crate::origin::runtime()?;
    let work = tempfile::Builder::new()
        .prefix("kindling-bench-cache-")
        .tempdir()?;
    rt.block_on(async {
        let nodes = super::local_cluster(args.nodes, work.path()).await?;
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr()).collect();
        let s3 = S3Server::start(&work.path().join("s3"))?;
        let origin = kindling_store::open(&s3.url(""), &s3.options())?;
        let parity = args.stripes;
        let plain = Stripes::new(parity.k(), 0)?;
        let striped = Arc::new(AzClient::new(
            addrs.clone(),
            parity,
            ClientConfig::default(),
        )?);
        let unstriped = Arc::new(AzClient::new(addrs, plain, ClientConfig::default())?);
        let variants: Vec<(String, Variant, Vec<ChunkName>)> = vec![
            (format!("az_{parity}"), Variant::Az(striped), Vec::new()),
            (format!("az_{plain}"), Variant::Az(unstriped), Vec::new()),
            ("origin_s3".to_owned(), Variant::Origin(origin), Vec::new()),
        ];
        let mut variants = variants;
        eprintln!("storing {} chunks of 512 KiB per variant...", args.chunks);
        for (v, (_, variant, names)) in variants.iter_mut().enumerate() {
            for i in 0..args.chunks {
                let bytes = chunk((v * 1_000_003 + i) as u64);
                let name = ChunkName::of(&bytes);
                match variant {
                    Variant::Az(c) => c.put(&name, bytes).await?,
                    Variant::Origin(s) => s.put(&kindling_repo::chunk_key(&name), bytes).await?,
                }
                names.push(name);
            }
            // Connections up, first-touch costs paid, before timing.
            for name in names.iter() {
                anyhow::ensure!(variant.fetch(name).await?, "chunk {name} did not come back");
            }
        }
        let base: Vec<GetHistogram> = nodes.iter().map(|n| n.node().stats().get_latency).collect();
        let per_round = args.requests / args.rounds;
        let mut results = serde_json::Map::new();
        for &c in &args.in_flight {
            let mut lat: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
            let mut misses = vec![0; variants.len()];
            for r in 0..args.rounds {
                eprintln!("{c} in flight, round {}/{}", r + 1, args.rounds);
                for (v, (_, variant, names)) in variants.iter().enumerate() {
                    let times: Vec<Result<(f64, bool)>> = stream::iter(0..per_round)
                        .map(|i| {
                            let name = names[(i * 7919 + r) % names.len()];
                            async move {
                                let t = Instant::now();
                                let hit = variant.fetch(&name).await?;
                                Ok((t.elapsed().as_secs_f64() * 1e6, hit))
                            }
                        })
                        .buffer_unordered(c.max(1))
                        .collect()
                        .await;
                    for t in times {
                        let (us, hit) = t?;
                        lat[v].push(us);
                        misses[v] += usize::from(!hit);
                    }
                }
            }
            let mut row = serde_json::Map::new();
            for (((label, _, _), l), m) in variants.iter().zip(lat).zip(misses) {
                row.insert(label.clone(), quantiles(l, m));
            }
            results.insert(format!("in_flight_{c}"), row.into());
        }
        // The nodes' own handling time of the timed GETs (bucket bounds).
        let mut h = GetHistogram::default();
        for (n, b) in nodes.iter().zip(base) {
            let now = n.node().stats().get_latency;
            for (i, slot) in h.buckets.iter_mut().enumerate() {
                *slot += now.buckets[i] - b.buckets[i];
            }
            h.count += now.count - b.count;
        }
        let bound = |q| h.quantile_bound(q).map(|s| s * 1e6);
        // The floor under every verified fetch: hashing the chunk once.
        let sample = chunk(7);
        let t = Instant::now();
        for _ in 0..20 {
            std::hint::black_box(ChunkName::of(&sample));
        }
        let sha256_us = t.elapsed().as_secs_f64() * 1e6 / 20.0;
        let v = serde_json::json!({
            "nodes": args.nodes, "stripes": parity.to_string(), "chunk_bytes": CHUNK,
            "chunks_per_variant": args.chunks, "results": results,
            "node_get_p50_at_most_us": bound(0.5), "node_get_p99_at_most_us": bound(0.99),
            "node_gets": h.count, "sha256_of_a_chunk_us": sha256_us,
        });
        println!("{v}");
        for n in nodes {
            n.shutdown().await;
        }
        drop(s3);
        Ok(())
    })
}
