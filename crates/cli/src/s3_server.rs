//! `kindling s3-server`: the in-process S3 server of the tests (s3s-fs), as
//! a command, so benchmarks and local experiments can use a real S3 origin
//! on loopback without installing one.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kindling_store::S3Server;

/// Serve a directory over the S3 API on 127.0.0.1 (for tests and benchmarks).
///
/// Prints one line, `endpoint=http://127.0.0.1:PORT bucket=kindling
/// access_key_id=... secret_access_key=...`, then serves until Ctrl-C or
/// SIGTERM. Objects of the bucket are files under ROOT/kindling/.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to serve.
    #[arg(long)]
    root: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let server = S3Server::start(&args.root)
        .with_context(|| format!("starting an S3 server on {}", args.root.display()))?;
    println!(
        "endpoint={} bucket={} access_key_id={} secret_access_key={}",
        server.endpoint(),
        server.bucket(),
        S3Server::ACCESS_KEY_ID,
        S3Server::SECRET_ACCESS_KEY
    );
    std::io::stdout().flush().ok();
    let rt = crate::origin::runtime()?;
    let _ = rt.block_on(crate::origin::interruptible(std::future::pending::<
        Result<()>,
    >()));
    drop(server);
    Ok(())
}
