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

/// `n` cache nodes of 4 GiB each, in this process on loopback ports, their
/// flash tiers under `dir`: the benchmarks' AZ cache cluster.
pub(crate) async fn local_cluster(n: usize, dir: &Path) -> Result<Vec<RunningNode>> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let node = CacheNode::open(NodeConfig::with_capacity(
            dir.join(format!("node{i}")),
            4 << 30,
        ))?;
        let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;
        nodes.push(RunningNode::start(Arc::new(node), any).await?);
    }
    Ok(nodes)
}
