//! `kindling bench`: benchmarks that run their baseline side by side, in
//! the same process, so that a noisy shared machine skews both alike.

mod cache;
mod coldstart;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kindling_cachenode::{CacheNode, NodeConfig, RunningNode};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    Coldstart(Box<coldstart::ColdstartArgs>),
    Cache(cache::CacheArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Coldstart(a) => coldstart::run(*a),
        BenchCommand::Cache(a) => cache::run(a),
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "ms"), |i| s.split_at(i));
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        _ => return Err(format!("bad duration unit in {s:?} (us, ms or s)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The benchmarks' AZ cache cluster: cache nodes of 4 GiB each on
/// loopback ports, their flash tiers under a directory, served by a tokio
/// runtime of their own. Nodes are other hosts in an AZ: on the agent's
/// runtime their tasks would queue the agent's reads behind them, which no
/// worker sees (they still share this machine's cores).
pub(crate) struct LocalCluster {
    pub nodes: Vec<RunningNode>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LocalCluster {
    pub async fn shutdown(mut self) {
        for n in std::mem::take(&mut self.nodes) {
            n.shutdown().await;
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Also called inside the benchmarks' runtime, where only a
        // background shutdown is allowed.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Starts `n` nodes (see [`LocalCluster`]) with their flash tiers under `dir`.
pub(crate) async fn local_cluster(n: usize, dir: &Path) -> Result<LocalCluster> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kindling-az-node")
        .enable_all()
        .build()?;
    let dir = dir.to_owned();
    let nodes = runtime
        .spawn(async move {
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                let node = CacheNode::open(NodeConfig::with_capacity(
                    dir.join(format!("node{i}")),
                    4 << 30,
                ))?;
                let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
                nodes.push(RunningNode::start(Arc::new(node), any).await?);
            }
            anyhow::Ok(nodes)
        })
        .await??;
    Ok(LocalCluster {
        nodes,
        runtime: Some(runtime),
    })
}
