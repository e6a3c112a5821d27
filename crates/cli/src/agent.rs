//! `kindling mount`: the agent in the foreground, and the setup it shares
//! with `kindling run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kindling_agent::{
    AzCached, ChunkSource, Disk, ImageReader, Origin, Overlay, ReaderOptions, Stats, WorkerCached,
};
use kindling_cache::{CacheOptions, WorkerCache};
use kindling_chunk::RunConfig;
use kindling_repo::TraceKind;

use crate::az::AzArgs;
use crate::origin::{agent_runtime, KeyArgs, StoreArgs};
use crate::size::human;

/// Flags of the agent, shared by `mount` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub az: AzArgs,
    /// Serve the disk read-only (no copy-on-write overlay); for `run`, the
    /// container's root is read-only too. A read-only disk gets the
    /// kernel's page cache filled ahead of reads.
    #[arg(long)]
    pub read_only: bool,
    /// Where the copy-on-write overlay lives: the block overlay's
    /// (unlinked, sparse) file, or `run`'s overlayfs upper directory
    /// [default: $TMPDIR].
    #[arg(long, value_name = "DIR")]
    pub overlay_dir: Option<PathBuf>,
    /// The worker cache: one directory shared by every agent on the
    /// machine (ciphertext chunks) [default: $XDG_CACHE_HOME/kindling/chunks,
    /// else ~/.cache/kindling/chunks].
    #[arg(long, env = "KINDLING_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Bound of the worker cache's disk tier.
    #[arg(long, default_value = "10GiB", value_parser = crate::size::parse_size)]
    pub cache_size: u64,
    /// This agent's in-memory tier of hot chunks (part of its memory
    /// budget).
    #[arg(long, default_value = "8MiB", value_parser = crate::size::parse_size)]
    pub cache_memory: u64,
    /// Read from the origin directly, without the worker cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Write statistics (bytes read and fetched, chunks per tier, and for
    /// `run` the cold start) as one JSON object to FILE at the end.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Neither use nor record a startup trace (the chunks an earlier start
    /// read, prefetched in parallel; stored sealed beside the manifest).
    #[arg(long)]
    pub no_trace: bool,
    /// For `run`: neither read the pages of files an earlier start read
    /// ahead of the program (the file trace: which pages of which files,
    /// stored sealed beside the manifest) nor record them.
    #[arg(long)]
    pub no_warm: bool,
}

/// `$XDG_CACHE_HOME/kindling/chunks`, else `~/.cache/kindling/chunks`.
fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kindling/chunks");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache/kindling/chunks")
}

/// An opened image, ready to serve.
#[derive(Debug)]
pub struct Opened {
    pub disk: Arc<Disk>,
    pub reader: Arc<ImageReader>,
    pub config: RunConfig,
    pub manifest: String,
    pub repo: kindling_repo::Repo,
    pub key: kindling_chunk::TenantKey,
    /// Record this start's trace when it ends (none was stored).
    pub record_trace: Arc<std::sync::atomic::AtomicBool>,
    /// The AZ cache cluster's client, if there is a cluster.
    pub az: Option<Arc<kindling_azcache::AzClient>>,
    /// The stored chunk trace, once the lookup found one.
    pub chunk_trace: Arc<std::sync::OnceLock<Vec<u32>>>,
    /// What the lookup of the image's file trace found (for `run`, which
    /// warms the page cache with it or records one).
    pub file_trace: tokio::sync::watch::Receiver<FileTraceLookup>,
    /// A file trace `run` recorded, saved at the end with the chunk trace.
    pub recorded_files: std::sync::Mutex<Option<kindling_chunk::FileTrace>>,
}

/// Where the lookup of an image's file trace stands.
#[derive(Debug, Clone)]
pub enum FileTraceLookup {
    /// Not looked up (`--no-trace`, or not a `run`), or the lookup failed.
    Off,
    Pending,
    Found(Arc<kindling_chunk::FileTrace>),
    /// None stored: this start records one.
    Absent,
}

/// How long the end of a start waits for background fills of the AZ cache
/// to land: they are what spares the next worker the origin.
const FILL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

impl Opened {
    /// What ends a start: the trace saved, the AZ cache's fills landed
    /// (for at most [`FILL_PATIENCE`]).
    pub async fn finish(&self) {
        self.save_trace().await;
        self.save_file_trace().await;
        self.drain_fills().await;
    }

    /// Waits (at most [`FILL_PATIENCE`]) for the AZ cache's background
    /// fills: they are what spares the next worker the origin.
    pub async fn drain_fills(&self) {
        if let Some(az) = &self.az {
            let deadline = tokio::time::Instant::now() + FILL_PATIENCE;
            while az.fills_in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// Stores this start's trace if the image had none. Best effort: a
    /// failure costs later starts their prefetch, nothing else.
    pub async fn save_trace(&self) {
        if !self.record_trace.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let trace = self.reader.trace();
        if trace.is_empty() {
            return;
        }
        if let Ok(sealed) = kindling_chunk::seal_trace(&trace, &self.key) {
            if let Err(e) = self
                .repo
                .put_trace(&self.manifest, TraceKind::Chunks, sealed)
                .await
            {
                eprintln!("kindling: warning: storing the startup trace: {e:#}");
            }
        }
    }

    /// Stores the file trace `run` recorded, if it did. Best effort, like
    /// [`Opened::save_trace`].
    pub async fn save_file_trace(&self) {
        let Some(files) = self
            .recorded_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        if files.ranges.is_empty() {
            return;
        }
        match kindling_chunk::seal_file_trace(&files, &self.key) {
            Ok(sealed) => {
                if let Err(e) = self
                    .repo
                    .put_trace(&self.manifest, TraceKind::Files, sealed)
                    .await
                {
                    eprintln!("kindling: warning: storing the file trace: {e:#}");
                }
            }
            Err(e) => eprintln!("kindling: warning: sealing the file trace: {e}"),
        }
    }
}

/// Looks up `name`, opens its manifest and builds the disk.
pub async fn open(args: &AgentArgs, name: &str) -> Result<Opened> {
    open_over(args, name, None).await
}

/// [`open`], with chunk reads from the origin crossing `link` (the
/// benchmarks' emulated network).
pub async fn open_over(
    args: &AgentArgs,
    name: &str,
    link: Option<Arc<kindling_store::Link>>,
) -> Result<Opened> {
    args.store.check_readable()?;
    let repo = args.store.repo()?;
    let key = args.key.key()?;
    let (image, manifest) = repo
        .open_image(name, &key)
        .await
        .with_context(|| format!("opening {name} in {}", args.store.url()))?;
    let config = manifest.config.clone();
    let store = match link {
        Some(link) => Arc::new(kindling_store::Throttled::new(repo.store().clone(), link))
            as Arc<dyn kindling_store::Store>,
        None => repo.store().clone(),
    };
    let trace_repo = kindling_repo::Repo::new(store.clone());
    // The chain is built from the bottom: origin, AZ cluster, worker cache.
    let mut below: Arc<dyn ChunkSource> = Arc::new(Origin::new(store));
    let cluster = args.az.cluster()?;
    let az = match &cluster {
        Some(cluster) => {
            let client = cluster.client()?;
            client.connect_all();
            Some(client)
        }
        None => None,
    };
    if let (Some(client), Some(cluster)) = (&az, &cluster) {
        below = Arc::new(AzCached::new(client.clone(), below, cluster.hedge_after));
    }
    let source = if args.no_cache {
        below
    } else {
        let dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
        let opts = CacheOptions {
            disk_bytes: args.cache_size,
            memory_bytes: args.cache_memory,
            // The origin and the AZ cache both hand over verified chunks.
            verify_fills: false,
            ..CacheOptions::default()
        };
        let cache = WorkerCache::open(&dir, opts)
            .with_context(|| format!("opening the worker cache {}", dir.display()))?;
        Arc::new(WorkerCached::new(cache, below)) as Arc<dyn ChunkSource>
    };
    let size = manifest.image_bytes;
    let hot = manifest.config.hot_ranges.clone();
    let reader = ImageReader::new(
        Arc::new(manifest),
        source,
        Arc::new(Stats::default()),
        ReaderOptions {
            preload: args.read_only,
            ..ReaderOptions::default()
        },
    );
    let overlay = if args.read_only {
        None
    } else {
        let dir = args.overlay_dir.clone().unwrap_or_else(std::env::temp_dir);
        Some(
            Overlay::new(&dir, size)
                .with_context(|| format!("creating the overlay file in {}", dir.display()))?,
        )
    };
    let reader = Arc::new(reader);
    let record_trace = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let chunk_trace = Arc::new(std::sync::OnceLock::new());
    let (files_tx, file_trace) = tokio::sync::watch::channel(FileTraceLookup::Off);
    if !args.no_trace && !args.no_warm {
        files_tx.send_replace(FileTraceLookup::Pending);
        let (repo, key, manifest) = (trace_repo.clone(), key.clone(), image.manifest.clone());
        tokio::spawn(async move {
            let found = match repo.trace(&manifest, TraceKind::Files).await {
                Ok(Some(b)) => match kindling_chunk::open_file_trace(&b, &key) {
                    Ok(t) => FileTraceLookup::Found(Arc::new(t)),
                    Err(e) => {
                        eprintln!("kindling: warning: ignoring the file trace: {e}");
                        FileTraceLookup::Off
                    }
                },
                Ok(None) => FileTraceLookup::Absent,
                Err(e) => {
                    eprintln!("kindling: warning: reading the file trace: {e:#}");
                    FileTraceLookup::Off
                }
            };
            files_tx.send_replace(found);
        });
    }
    if !args.no_cache {
        // Without the worker cache there is nowhere to keep prefetched
        // chunks.
        reader.prefetch(&hot, 16);
        if !args.no_trace {
            // The trace is looked up in the background: the start does
            // not wait for it.
            let (reader, record, key, repo, loaded) = (
                reader.clone(),
                record_trace.clone(),
                key.clone(),
                trace_repo.clone(),
                chunk_trace.clone(),
            );
            let manifest = image.manifest.clone();
            tokio::spawn(async move {
                match repo.trace(&manifest, TraceKind::Chunks).await {
                    Ok(Some(b)) => match kindling_chunk::open_trace(&b, &key) {
                        Ok(t) => {
                            reader.prefetch_chunks(t.iter().map(|&i| i as usize).collect(), 16);
                            let _ = loaded.set(t);
                        }
                        Err(e) => eprintln!("kindling: warning: ignoring the startup trace: {e}"),
                    },
                    Ok(None) => record.store(true, std::sync::atomic::Ordering::SeqCst),
                    Err(e) => eprintln!("kindling: warning: reading the startup trace: {e:#}"),
                }
            });
        }
    }
    Ok(Opened {
        disk: Arc::new(Disk::new(reader.clone(), overlay)),
        reader,
        repo,
        key,
        record_trace,
        config,
        manifest: image.manifest,
        az,
        chunk_trace,
        file_trace,
        recorded_files: Default::default(),
    })
}

impl Opened {
    /// Writes `--stats-json`, if asked: the agent's counters, with `extra`
    /// (an object) merged in.
    pub fn write_stats(
        &self,
        path: Option<&Path>,
        name: &str,
        extra: serde_json::Value,
    ) -> Result<()> {
        let Some(path) = path else {
            return Ok(());
        };
        let s = self.disk.stats().snapshot();
        let mut v = serde_json::json!({
            "name": name, "manifest": self.manifest, "image_bytes": self.disk.size(),
            "bytes_read": s.bytes_read, "bytes_written": s.bytes_written,
            "bytes_preloaded": s.bytes_preloaded,
            "bytes_fetched": s.bytes_fetched, "chunks_origin": s.chunks_origin,
            "chunks_az": s.chunks_az, "chunks_worker_cache": s.chunks_worker_cache,
            "chunks_zero": s.chunks_zero, "chunks_memory": s.chunks_memory,
            "chunk_errors": s.chunk_errors,
            "first_chunk_error": self.disk.stats().first_error(),
        });
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        if let (Some(v), Some(az)) = (v.as_object_mut(), &self.az) {
            let a = az.stats();
            v.insert(
                "az".into(),
                serde_json::json!({
                    "gets": a.gets, "hits": a.hits, "misses": a.misses,
                    "rebuilds_with_parity": a.rebuilds_with_parity, "rebuilds_bad": a.rebuilds_bad,
                    "stripes_corrupt": a.stripes_corrupt, "stripes_timed_out": a.stripes_timed_out,
                    "node_errors": a.node_errors, "fills_started": a.fills_started,
                    "fills_done": a.fills_done, "fills_dropped": a.fills_dropped,
                    "fills_failed": a.fills_failed,
                }),
            );
        }
        let mut f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut f, format!("{v}\n").as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Serve an image as one file, MOUNTPOINT/disk.img, fetching chunks on demand.
///
/// Runs in the foreground until Ctrl-C, SIGTERM or SIGHUP, then unmounts;
/// if disk.img is still in use then (a loop device, a VM), it stays
/// served until released, or until a second signal. Writes
/// to disk.img go to a private copy-on-write overlay that disappears with
/// the agent; the store and caches never change. The file is a valid
/// ext4 filesystem and works as a loop device, a Firecracker or a QEMU
/// drive.
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// The image's name in the store.
    name: String,
    /// An existing empty directory to mount on.
    mountpoint: PathBuf,
    #[command(flatten)]
    agent: AgentArgs,
}

/// MOUNTPOINT must be an empty directory: mounting over one with files
/// would hide them, and over a regular file would give no `disk.img`.
fn check_mountpoint(path: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(path) {
        // A FUSE mount whose server died (a `kill -9`ed agent): nothing
        // can use it, so it is taken away.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            eprintln!(
                "kindling: {} held a dead FUSE mount (an agent that was killed); unmounting it",
                path.display()
            );
            kindling_agent::fuse::clear_dead_mount(path)
                .with_context(|| format!("unmounting the dead FUSE mount on {}", path.display()))?;
            std::fs::read_dir(path)
        }
        r => r,
    };
    let mut entries =
        entries.with_context(|| format!("{} is not a directory to mount on", path.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} is not empty: mounting there would hide what it holds",
            path.display()
        );
    }
    Ok(())
}

pub fn mount(args: MountArgs) -> Result<()> {
    check_mountpoint(&args.mountpoint)?;
    let rt = agent_runtime()?;
    let mut stop = rt.block_on(async { crate::origin::StopSignals::new() })?;
    let opened = rt.block_on(open(&args.agent, &args.name))?;
    let disk = opened.disk.clone();
    let mounted = kindling_agent::fuse::mount(disk.clone(), &args.mountpoint, rt.handle().clone())
        .with_context(|| format!("mounting on {}", args.mountpoint.display()))?;
    eprintln!(
        "serving {} ({}, {}) at {}; Ctrl-C to unmount",
        args.name,
        human(disk.size()),
        if disk.read_only() {
            "read-only"
        } else {
            "copy-on-write"
        },
        Path::new(&args.mountpoint)
            .join(kindling_agent::fuse::DISK_FILE)
            .display()
    );
    rt.block_on(stop.recv());
    let mut abandoned = false;
    if let Some(users) = mounted.unmount_or_detach().context("unmounting")? {
        eprintln!(
            "kindling: {} is still in use (a loop device, a mount or a VM holds it): unmounted, and served until it is released; signal again to stop now (its users then get I/O errors)",
            Path::new(&args.mountpoint)
                .join(kindling_agent::fuse::DISK_FILE)
                .display()
        );
        abandoned = rt.block_on(async {
            tokio::select! {
                () = async {
                    while !users.released() {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                } => false,
                _ = stop.recv() => true,
            }
        });
    }
    // No trace: what a mount serves is not a container's start (a copy of
    // the whole disk would make every later start prefetch all of it).
    rt.block_on(opened.drain_fills());
    let s = disk.stats().snapshot();
    eprintln!(
        "unmounted: read {}, fetched {} ({} chunks from the origin, {} from the AZ cache, {} from the worker cache, {} zero)",
        human(s.bytes_read),
        human(s.bytes_fetched),
        s.chunks_origin,
        s.chunks_az,
        s.chunks_worker_cache,
        s.chunks_zero
    );
    opened.write_stats(
        args.agent.stats_json.as_deref(),
        &args.name,
        serde_json::json!({}),
    )?;
    if abandoned {
        bail!("stopped while disk.img was still in use: its users now get I/O errors");
    }
    Ok(())
}
