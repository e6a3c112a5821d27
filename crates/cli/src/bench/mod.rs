//! `kindling bench`: benchmarks that run their baseline side by side, in
//! the same process, so that a noisy shared machine skews both alike.

mod cache;
mod coldstart;

use std::time::Duration;

use anyhow::Result;

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
