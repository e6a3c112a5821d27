//! `kindling inspect` and `kindling ls`: what a store holds.

use anyhow::{Context, Result};
use kindling_chunk::ChunkEntry;

use crate::origin::{runtime, KeyArgs, StoreArgs};
use crate::size::human;

/// Show an image's manifest: sizes, chunk counts and the run config.
///
/// The run config and chunk keys are sealed: reading them needs the tenant
/// key. With --public, only what the store itself can read is shown (sizes,
/// chunk names, key id), and no key is needed.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The image's name in the store.
    name: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    key: KeyArgs,
    /// Show only the unsealed part; needs no key.
    #[arg(long)]
    public: bool,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    args.store.check_readable()?;
    let repo = args.store.repo()?;
    let rt = runtime()?;
    // One read of the reference and one of the manifest serve both the
    // public part and, with the key, the sealed part.
    let (r, bytes) = rt
        .block_on(async {
            let r = repo.image(&args.name).await?;
            let bytes = repo.manifest_bytes(&r.manifest).await?;
            Ok::<_, kindling_repo::RepoError>((r, bytes))
        })
        .with_context(|| format!("reading {} from {}", args.name, args.store.url()))?;
    let manifest_bytes = bytes.len();
    let public = kindling_chunk::Manifest::public(&bytes)
        .with_context(|| format!("reading {} ({})", args.name, r.manifest))?;
    let opened = if args.public {
        None
    } else {
        let key = args.key.key()?;
        Some(
            kindling_chunk::Manifest::open(&bytes, &key)
                .with_context(|| format!("opening {} ({})", args.name, r.manifest))?,
        )
    };
    let chunks = public.names.len();
    let stored = public.names.iter().flatten().count();
    let mut unique: Vec<_> = public.names.iter().flatten().collect();
    unique.sort();
    unique.dedup();
    let config = opened.as_ref().map(|m| &m.config);
    if args.json {
        let mut v = serde_json::json!({
            "name": r.name, "manifest": r.manifest, "manifest_bytes": manifest_bytes,
            "image_bytes": public.image_bytes, "chunk_size": public.chunk_size,
            "chunks": chunks, "zero_chunks": chunks - stored, "unique_chunks": unique.len(),
            "salt_id": hex::encode(public.salt_id), "key_id": hex::encode(public.key_id),
        });
        if let Some(c) = config {
            v["config"] = serde_json::to_value(c)?;
        }
        println!("{v}");
        return Ok(());
    }
    println!("name        {}", r.name);
    println!("manifest    {} ({} bytes)", r.manifest, manifest_bytes);
    println!(
        "image       {} in {} chunks of {}",
        human(public.image_bytes),
        chunks,
        human(public.chunk_size)
    );
    println!(
        "chunks      {} stored ({} unique), {} zero",
        stored,
        unique.len(),
        chunks - stored
    );
    println!("salt id     {}", hex::encode(public.salt_id));
    println!("key id      {}", hex::encode(public.key_id));
    if let Some(m) = &opened {
        let c = &m.config;
        debug_assert_eq!(
            m.chunks
                .iter()
                .filter(|e| matches!(e, ChunkEntry::Zero))
                .count(),
            chunks - stored
        );
        println!("source      {}", c.source);
        println!("platform    {}/{}", c.os, c.architecture);
        println!("entrypoint  {:?}", c.entrypoint);
        println!("cmd         {:?}", c.cmd);
        println!("workdir     {:?}", c.working_dir);
        println!("user        {:?}", c.user);
        for e in &c.env {
            println!("env         {e}");
        }
    }
    Ok(())
}

/// List the images in a store.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

pub fn ls(args: LsArgs) -> Result<()> {
    if !args.store.exists()? {
        eprintln!(
            "kindling: store {} does not exist (yet): no images",
            args.store.url()
        );
        return Ok(());
    }
    let repo = args.store.repo()?;
    let rt = runtime()?;
    rt.block_on(async {
        let images = repo
            .images()
            .await
            .with_context(|| format!("listing {}", args.store.url()))?;
        // One image that cannot be read (a corrupt manifest) is reported
        // and the listing goes on; the exit status still says so.
        let mut unreadable = 0;
        for r in images {
            let public = match repo.public_of(&r).await {
                Ok((public, _)) => public,
                Err(e) => {
                    unreadable += 1;
                    eprintln!("kindling: warning: {}: {:#}", r.name, anyhow::Error::new(e));
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "name": r.name, "manifest": r.manifest, "error": "unreadable",
                            })
                        );
                    } else {
                        println!(
                            "{:<32} {}  {:>10}  unreadable (see the warning)",
                            r.name,
                            &r.manifest[..19.min(r.manifest.len())],
                            "-"
                        );
                    }
                    continue;
                }
            };
            let stored = public.names.iter().flatten().count();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": r.name, "manifest": r.manifest, "image_bytes": public.image_bytes,
                        "chunks": public.names.len(), "stored_chunks": stored,
                    })
                );
            } else {
                println!(
                    "{:<32} {}  {:>10}  {} stored chunks",
                    r.name,
                    &r.manifest[..19.min(r.manifest.len())],
                    human(public.image_bytes),
                    stored
                );
            }
        }
        if unreadable > 0 {
            anyhow::bail!(
                "{unreadable} image(s) in {} could not be read",
                args.store.url()
            );
        }
        Ok(())
    })
}
