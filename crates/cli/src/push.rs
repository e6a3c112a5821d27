//! `kindling push`: an OCI image (local or from a registry) into a store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use kindling_repo::{PushCounters, PushOptions, PushSummary};

use crate::flatten::LayoutArgs;
use crate::origin::{interruptible, runtime, KeyArgs, StoreArgs};
use crate::size::human;

/// Flatten an image, encrypt its chunks and upload the ones the store lacks.
///
/// SOURCE is anything `kindling flatten` reads (an OCI layout DIR[:REF], an
/// oci-archive or a docker-archive) or a registry image,
/// docker://HOST[:PORT]/REPO[:TAG] or docker://HOST/REPO@sha256:DIGEST.
/// The image is flattened straight into chunks (no image file on disk);
/// each chunk is encrypted with a key derived from its content, so chunks
/// shared with images already in the store are not uploaded again. The
/// manifest (chunk names, and the chunk keys sealed with the tenant key)
/// and then NAME are written only once every chunk is stored: an
/// interrupted push leaves NAME as it was.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to push.
    source: String,
    /// The name to store it under, e.g. python-app:v1.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Concurrent store requests.
    #[arg(long, default_value_t = 16)]
    uploads: usize,
    /// Use plain HTTP for the registry (local test registries).
    #[arg(long)]
    insecure: bool,
    /// Registry credentials as USER:PASSWORD [default: $KINDLING_REGISTRY_AUTH,
    /// else the registry's entry in $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json].
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "KINDLING_REGISTRY_AUTH",
        hide_env_values = true
    )]
    creds: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn docker_config() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Pulls a registry image into `dir`; returns the source string for
/// `Image::open`.
async fn pull(
    args: &Args,
    reference: &str,
    dir: &std::path::Path,
    bar: &ProgressBar,
) -> Result<String> {
    let r: kindling_registry::Reference = reference
        .parse()
        .with_context(|| format!("parsing image reference {reference}"))?;
    let credentials = match &args.creds {
        Some(c) => {
            let (u, p) = c.split_once(':').context("--creds must be USER:PASSWORD")?;
            Some(kindling_registry::Credentials::new(u, p))
        }
        None => docker_config()
            .and_then(|p| kindling_registry::credentials_from_docker_config(&p, &r.registry)),
    };
    let progress_bar = bar.clone();
    let opts = kindling_registry::PullOptions {
        insecure: args.insecure,
        credentials,
        progress: Some(Arc::new(move |p: kindling_registry::Progress| {
            progress_bar.set_message(format!(
                "pulling: {} of {}",
                human(p.pull_downloaded),
                human(p.pull_total)
            ));
        })),
        ..Default::default()
    };
    let pulled = kindling_registry::pull(&r, dir, &opts)
        .await
        .with_context(|| format!("pulling {reference}"))?;
    Ok(format!("{}:{}", pulled.layout.display(), pulled.reference))
}

async fn push(args: &Args, bar: &ProgressBar, counters: Arc<PushCounters>) -> Result<PushSummary> {
    let repo = args.store.repo()?;
    let key = args.key.key()?;
    // Kept until the push ends: the layers are read from it while flattening.
    let mut _pulled_dir = None;
    let source = match args.source.strip_prefix("docker://") {
        Some(reference) => {
            let dir = tempfile::Builder::new()
                .prefix("kindling-pull-")
                .tempdir()
                .context("creating a temporary directory for the pull")?;
            let s = pull(args, reference, dir.path(), bar).await?;
            _pulled_dir = Some(dir);
            s
        }
        None => args.source.clone(),
    };
    let image = kindling_oci::Image::open(&source)
        .with_context(|| format!("opening image {}", args.source))?;
    let opts = PushOptions {
        flatten: args.layout.options(),
        uploads: args.uploads,
        counters: Some(counters),
        ..Default::default()
    };
    kindling_repo::push(&repo, image, &args.name, &key, &opts)
        .await
        .with_context(|| {
            format!(
                "pushing {} to {} as {}",
                args.source,
                args.store.url(),
                args.name
            )
        })
}

pub fn run(args: Args) -> Result<()> {
    let show = std::io::stderr().is_terminal() && !args.json;
    let bar = if show {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(100));
        b
    } else {
        ProgressBar::hidden()
    };
    let counters = Arc::new(PushCounters::default());
    let rt = runtime()?;
    let ticker = {
        let (bar, c) = (bar.clone(), counters.clone());
        rt.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = c.chunks.load(Relaxed);
                if n > 0 {
                    bar.set_message(format!(
                        "{n} chunks: {} uploaded ({}), {} present, {} zero",
                        c.uploaded_chunks.load(Relaxed),
                        human(c.uploaded_bytes.load(Relaxed)),
                        c.present_chunks.load(Relaxed),
                        c.zero_chunks.load(Relaxed),
                    ));
                }
            }
        })
    };
    let result = rt.block_on(interruptible(push(&args, &bar, counters)));
    ticker.abort();
    bar.finish_and_clear();
    // Blocking threads (the flattener) may still be winding down after an
    // error; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(200));
    let s = result?;
    for w in &s.flatten.warnings {
        eprintln!("kindling: warning: {w}");
    }
    if args.json {
        let v = serde_json::json!({
            "name": s.name, "manifest": s.manifest, "manifest_bytes": s.manifest_bytes,
            "store": args.store.url(), "image_bytes": s.image_bytes, "chunk_size": s.chunk_size,
            "chunks": s.chunks, "zero_chunks": s.zero_chunks, "present_chunks": s.present_chunks,
            "uploaded_chunks": s.uploaded_chunks, "uploaded_bytes": s.uploaded_bytes,
            "dedup_ratio": s.dedup_ratio(), "seconds": s.seconds,
        });
        println!("{v}");
    } else {
        println!(
            "pushed {} as {} ({})\n  image {}: {} chunks of {}, {} zero\n  \
             {} already present, {} uploaded ({}); dedup {:.1} %\n  {:.2}s",
            args.source,
            s.name,
            s.manifest,
            human(s.image_bytes),
            s.chunks,
            human(s.chunk_size),
            s.zero_chunks,
            s.present_chunks,
            s.uploaded_chunks,
            human(s.uploaded_bytes),
            100.0 * s.dedup_ratio(),
            s.seconds,
        );
    }
    Ok(())
}
