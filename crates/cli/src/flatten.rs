//! `kindling flatten`: OCI image -> ext4 image.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kindling_flatten::{FlattenOptions, FlattenSummary};

use crate::size::{human, parse_size};

/// Flatten an OCI image into one deterministic ext4 image.
///
/// SOURCE is an OCI image layout directory (DIR, or DIR:REF to pick a ref
/// from index.json), an OCI archive (a tar of a layout, FILE[:REF]) or a
/// docker-archive (`docker save` output, FILE[:REPO:TAG]). Layers may be
/// gzip, zstd or uncompressed; every blob's digest is verified. The output
/// appears only when complete: on any error nothing is left at OUT.
///
/// Files a container start is unlikely to read (test suites, docs, headers,
/// licences, Python sources their bytecode caches stand for) are placed
/// after the rest of their layer; until the layer ends they wait in a
/// temporary file under TMPDIR.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to flatten.
    source: String,
    /// Where to write the ext4 image.
    #[arg(short, long, value_name = "OUT.img")]
    output: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// The layout flags `flatten` and `push` share.
#[derive(Debug, Clone, clap::Args)]
pub struct LayoutArgs {
    /// Chunk size the layout aligns to (power of two, 64KiB to 4MiB).
    #[arg(long, default_value = "512KiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Free space left in the filesystem for the container's writes.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    free_space: u64,
    /// Free inodes left in the filesystem.
    #[arg(long, default_value_t = kindling_flatten::DEFAULT_FREE_INODES)]
    free_inodes: u64,
    /// Refuse to produce an image larger than this.
    #[arg(long, default_value = "10GiB", value_parser = parse_size)]
    max_size: u64,
    /// Average length of the segments small files are packed into (default
    /// 32 chunks). Longer: less padding; shorter: fewer new chunks per change.
    #[arg(long, value_parser = parse_size)]
    segment_size: Option<u64>,
    /// Layers decompressed ahead in parallel (the output does not depend on it).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

impl LayoutArgs {
    pub fn options(&self) -> FlattenOptions {
        FlattenOptions {
            chunk_size: self.chunk_size,
            free_space: self.free_space,
            free_inodes: self.free_inodes,
            max_size: self.max_size,
            lookahead: self.threads.max(1),
            segment_target: self.segment_size,
        }
    }
}

/// Flattens into a temporary file beside `output` and renames it into place.
pub fn flatten_to(source: &str, output: &Path, opts: &FlattenOptions) -> Result<FlattenSummary> {
    check_output(output)?;
    let image =
        kindling_oci::Image::open(source).with_context(|| format!("opening image {source}"))?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".kindling-flatten-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let _cleanup = crate::interrupt::RemoveOnSignal::new(tmp.path());
    let summary = kindling_flatten::flatten(&image, tmp.as_file(), opts)
        .with_context(|| format!("flattening {source}"))?;
    make_readable(tmp.as_file())?;
    tmp.as_file().sync_all().context("syncing the image")?;
    persist(tmp, output)?;
    Ok(summary)
}

/// Refuses, before any work, an output path that renaming a new file into
/// place would wrongly replace: a directory, a device, a FIFO, a socket or
/// a symlink (`-o /dev/sdX` must not swap the device node for a file).
pub fn check_output(output: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(output) else {
        return Ok(());
    };
    let what = match meta.file_type() {
        t if t.is_file() => return Ok(()),
        t if t.is_dir() => "a directory",
        t if t.is_symlink() => "a symbolic link (give the path it points to)",
        _ => "not a regular file (a device, FIFO or socket)",
    };
    bail!(
        "{} is {what}: the image is written to a new file and renamed into place, which would replace it",
        output.display()
    )
}

/// Renames the finished image into place. On failure the temporary file
/// is removed now: the error outlives it otherwise (`main` exits without
/// unwinding), and a full-size file would be left behind.
pub fn persist(tmp: tempfile::NamedTempFile, output: &Path) -> Result<()> {
    tmp.persist(output)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the image to {}", output.display()))?;
    Ok(())
}

/// tempfile creates 0600; an image is as readable as any file we write.
pub fn make_readable(file: &std::fs::File) -> Result<()> {
    let mode = 0o644 & !current_umask();
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .context("setting the image's permissions")
}

/// The process umask (read by setting it and putting it back).
fn current_umask() -> u32 {
    // SAFETY: umask has no preconditions; the value is restored at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    }
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    if tty && !args.json {
        eprintln!("flattening {} ...", args.source);
    }
    let s = flatten_to(&args.source, &args.output, &args.layout.options())?;
    let secs = start.elapsed().as_secs_f64();
    for w in &s.warnings {
        eprintln!("kindling: warning: {w}");
    }
    let tar_bytes: u64 = s.layers.iter().map(|l| l.tar_bytes).sum();
    if args.json {
        let layers: Vec<_> = s
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "digest": l.digest, "region_offset": l.region_offset,
                    "region_bytes": l.region_bytes, "data_bytes": l.data_bytes, "tar_bytes": l.tar_bytes, "entries": l.entries,
                })
            })
            .collect();
        let v = serde_json::json!({
            "output": args.output, "image_bytes": s.image_bytes, "chunk_size": s.chunk_size,
            "inodes_used": s.inodes_used, "metadata_offset": s.metadata_offset,
            "metadata_bytes": s.metadata_bytes, "hot_metadata_offset": s.hot_metadata[0],
            "hot_metadata_bytes": s.hot_metadata[1], "tar_bytes": tar_bytes, "seconds": secs,
            "layers": layers, "warnings": s.warnings,
        });
        println!("{v}");
    } else {
        for (i, l) in s.layers.iter().enumerate() {
            println!(
                "layer {i}: {}  region at {} ({}), {} entries",
                l.digest,
                human(l.region_offset),
                human(l.region_bytes),
                l.entries
            );
        }
        println!(
            "wrote {}: {} image, {} inodes, metadata {} at {}; {} of layers in {:.2}s ({:.0} MB/s)",
            args.output.display(),
            human(s.image_bytes),
            s.inodes_used,
            human(s.metadata_bytes),
            human(s.metadata_offset),
            human(tar_bytes),
            secs,
            tar_bytes as f64 / secs / 1e6
        );
    }
    Ok(())
}
