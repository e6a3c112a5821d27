//! `kindling fetch`: an image back from a store, whole and verified.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kindling_repo::FetchOptions;

use crate::origin::{interruptible, runtime, KeyArgs, StoreArgs};
use crate::size::human;

/// Rebuild an image from its chunks, verifying every one.
///
/// The output equals `kindling flatten` of the same source byte for byte.
/// A missing or corrupt chunk stops the fetch with an error naming the
/// chunk and its offset; the output appears only when complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image's name in the store.
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Where to write the image.
    #[arg(short, long, value_name = "OUT.img")]
    output: PathBuf,
    /// Chunks fetched at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    crate::flatten::check_output(&args.output)?;
    args.store.check_readable()?;
    let repo = args.store.repo()?;
    let key = args.key.key()?;
    let dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".kindling-fetch-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    if std::io::stderr().is_terminal() && !args.json {
        eprintln!("fetching {} from {} ...", args.name, args.store.url());
    }
    let rt = runtime()?;
    let opts = FetchOptions {
        concurrency: args.concurrency,
    };
    let result = rt.block_on(interruptible(async {
        kindling_repo::fetch(&repo, &args.name, &key, tmp.as_file(), &opts)
            .await
            .with_context(|| format!("fetching {} from {}", args.name, args.store.url()))
    }));
    rt.shutdown_timeout(Duration::from_millis(200));
    let s = result?;
    crate::flatten::make_readable(tmp.as_file())?;
    tmp.as_file().sync_all().context("syncing the image")?;
    crate::flatten::persist(tmp, &args.output)?;
    if args.json {
        let v = serde_json::json!({
            "name": args.name, "manifest": s.manifest, "output": args.output,
            "image_bytes": s.image_bytes, "chunks": s.chunks, "zero_chunks": s.zero_chunks,
            "fetched_bytes": s.fetched_bytes, "seconds": s.seconds,
        });
        println!("{v}");
    } else {
        println!(
            "wrote {}: {} image, {} chunks ({} zero), {} fetched and verified in {:.2}s",
            args.output.display(),
            human(s.image_bytes),
            s.chunks,
            s.zero_chunks,
            human(s.fetched_bytes),
            s.seconds
        );
    }
    Ok(())
}
