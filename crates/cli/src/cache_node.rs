//! `kindling cache-node`: one node of the AZ cache cluster.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use kindling_cachenode::{serve_metrics, CacheNode, NodeConfig, RunningNode};

use crate::size::human;

/// Serve chunk stripes to agents: one node of the AZ cache cluster.
///
/// An HTTP/2 server (cleartext, prior knowledge) keeping erasure-coded
/// stripes of chunks in a memory tier over a flash tier in DIR, both
/// evicting by LRU-K (K = 2). Agents given this node in --cache-nodes
/// read stripes from it and write back what they had to fetch from the
/// origin; the node itself never talks to the origin. The flash tier
/// survives restarts. GET /health answers "ok"; GET /metrics serves
/// Prometheus metrics (also on --metrics-listen). Runs until Ctrl-C or
/// SIGTERM.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to serve stripes on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Bound of the memory tier [default: a tenth of --disk-size].
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    memory: Option<u64>,
    /// The flash tier's directory (created if missing; a restart with the
    /// same directory keeps its stripes) [default:
    /// $XDG_DATA_HOME/kindling/cache-node-PORT].
    #[arg(long, value_name = "DIR")]
    disk: Option<PathBuf>,
    /// Bound of the flash tier.
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = crate::size::parse_size)]
    disk_size: u64,
    /// Serve /metrics on this address too (plain HTTP/1.1), for a scraper
    /// kept apart from the data path.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

pub fn run(args: Args) -> Result<()> {
    let dir = args.disk.clone().unwrap_or_else(|| {
        crate::origin::data_dir().join(format!("cache-node-{}", args.listen.port()))
    });
    let config = NodeConfig {
        memory_bytes: args
            .memory
            .unwrap_or_else(|| NodeConfig::memory_share(args.disk_size)),
        disk_dir: dir.clone(),
        disk_bytes: args.disk_size,
    };
    let rt = crate::origin::runtime()?;
    rt.block_on(async {
        let node = Arc::new(
            CacheNode::open(config.clone())
                .with_context(|| format!("opening the flash tier {}", dir.display()))?,
        );
        let s = node.stats();
        let server = RunningNode::start(node.clone(), args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let metrics = match args.metrics_listen {
            Some(a) => Some(
                serve_metrics(node.clone(), a)
                    .await
                    .with_context(|| format!("listening on {a} for metrics"))?,
            ),
            None => None,
        };
        println!(
            "cache node on {} (memory {}, flash {} in {}, {} stripes kept){}",
            server.addr(),
            human(config.memory_bytes),
            human(config.disk_bytes),
            dir.display(),
            s.flash.entries,
            metrics
                .as_ref()
                .map(|m| format!(", metrics on http://{}/metrics", m.addr()))
                .unwrap_or_default()
        );
        std::io::stdout().flush().ok();
        let _ = crate::origin::interruptible(std::future::pending::<Result<()>>()).await;
        server.shutdown().await;
        if let Some(m) = metrics {
            m.shutdown().await;
        }
        Ok(())
    })
}
