//! `kindling demo`: the quick start. Builds a small sample OCI image (three
//! layers exercising whiteouts, hard links, symlinks, xattrs and a large
//! file), flattens it, checks the result, pushes it to the embedded local
//! store, fetches it back and prints what it measured.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::chunks::chunk_hashes;
use crate::size::human;

/// Build the sample image, flatten, check, push and fetch it; print stats.
///
/// Uses the embedded local store and the default tenant key (both under
/// $XDG_DATA_HOME/kindling, created on first use) unless --store or
/// --key-file say otherwise. A second run finds every chunk present.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working directory (default: $XDG_DATA_HOME/kindling/demo or ~/.local/share/kindling/demo).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    store: crate::origin::StoreArgs,
    #[command(flatten)]
    key: crate::origin::KeyArgs,
}

use crate::origin::data_dir;

/// Deterministic pseudo-random bytes (SHA-256 in counter mode).
fn prng(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(&Sha256::digest(format!("{seed}/{i}").as_bytes()));
        i += 1;
    }
    out.truncate(len);
    out
}

struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_747_699_200);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        Ok(self.b.append_data(&mut h, path, &[][..])?)
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        Ok(self.b.append_data(&mut h, path, data)?)
    }

    fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(kind, 0o777, 0);
        Ok(self.b.append_link(&mut h, path, target)?)
    }

    fn xattr_file(&mut self, path: &str, data: &[u8], name: &str, value: &[u8]) -> Result<()> {
        self.b
            .append_pax_extensions([(format!("SCHILY.xattr.{name}").as_str(), value)])?;
        self.file(path, 0o644, data)
    }

    fn finish(self) -> Result<Vec<u8>> {
        Ok(self.b.into_inner()?)
    }
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn put_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let d = sha(data);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    Ok(d)
}

/// The host's dash and its loader and libc, as (path in the image, bytes).
fn host_shell() -> Option<Vec<(&'static str, Vec<u8>)>> {
    let read = |p: &str| fs::canonicalize(p).and_then(fs::read).ok();
    Some(vec![
        ("usr/bin/sh", read("/usr/bin/dash")?),
        (
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            read("/lib/x86_64-linux-gnu/libc.so.6")?,
        ),
        (
            "lib64/ld-linux-x86-64.so.2",
            read("/lib64/ld-linux-x86-64.so.2")?,
        ),
    ])
}

/// Whether the sample holds a shell to run.
pub fn sample_runs() -> bool {
    host_shell().is_some()
}

/// Writes the sample image as an OCI layout at `dir` (replacing it).
pub fn build_sample(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let mut l0 = Layer::new();
    for d in [
        "etc",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/share",
        "usr/share/doc",
    ] {
        l0.dir(d)?;
    }
    l0.link(tar::EntryType::Symlink, "bin", "usr/bin")?;
    // A shell for the container to run: the host's dash and the two
    // libraries it needs (Debian's paths). Without them the sample still
    // flattens and pushes; `demo` then skips the run.
    if let Some(files) = host_shell() {
        l0.dir("usr/lib/x86_64-linux-gnu")?;
        l0.link(tar::EntryType::Symlink, "lib", "usr/lib")?;
        l0.dir("lib64")?;
        for (path, data) in files {
            l0.file(path, 0o755, &data)?;
        }
    }
    l0.file(
        "etc/os-release",
        0o644,
        b"NAME=\"Kindling sample\"\nID=kindling\n",
    )?;
    l0.file("etc/motd", 0o644, b"welcome to the kindling sample image\n")?;
    l0.file(
        "usr/bin/hello",
        0o755,
        b"#!/bin/sh\necho hello from kindling\n",
    )?;
    l0.link(tar::EntryType::Link, "usr/bin/hello-again", "usr/bin/hello")?;
    l0.file("usr/lib/big.bin", 0o644, &prng("big", 3 << 20))?;
    for i in 0..200 {
        l0.file(
            &format!("usr/share/doc/file-{i:03}.txt"),
            0o644,
            &prng(&format!("doc{i}"), 100 + i * 97),
        )?;
    }
    let mut l1 = Layer::new();
    l1.dir("usr")?;
    l1.dir("usr/share")?;
    l1.file("usr/share/.wh.doc", 0o644, b"")?;
    l1.dir("app")?;
    l1.xattr_file(
        "app/config.json",
        b"{\"answer\": 42}\n",
        "user.kindling",
        b"sample",
    )?;
    l1.file("app/model.bin", 0o644, &prng("model", 1 << 20))?;
    let mut l2 = Layer::new();
    l2.dir("etc")?;
    l2.file("etc/motd", 0o644, b"motd replaced by the top layer\n")?;
    l2.dir("app")?;
    l2.file("app/.wh..wh..opq", 0o644, b"")?;
    l2.file(
        "app/main.sh",
        0o755,
        b"#!/bin/sh\nread -r motd < /etc/motd\necho \"$motd\"\necho hello from a lazily loaded container\n",
    )?;

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for l in [l0, l1, l2] {
        let raw = l.finish()?;
        diff_ids.push(sha(&raw));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw)?;
        let gz = gz.finish()?;
        let digest = put_blob(dir, &gz)?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": gz.len(),
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/app/main.sh"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let config_digest = put_blob(dir, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))?;
    let manifest_digest = put_blob(dir, &manifest)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
        }))?,
    )?;
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| data_dir().join("demo"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let layout = dir.join("sample-oci");
    build_sample(&layout).context("building the sample image")?;
    println!("sample image: OCI layout at {}", layout.display());
    let img = dir.join("sample.img");
    let start = Instant::now();
    let s = crate::flatten::flatten_to(
        layout.to_str().context("non-UTF-8 path")?,
        &img,
        &kindling_flatten::FlattenOptions::default(),
    )?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "flattened {} layers into {} ({}) in {:.3}s",
        s.layers.len(),
        img.display(),
        human(s.image_bytes),
        secs
    );
    let hashes = chunk_hashes(fs::File::open(&img)?, s.chunk_size as usize)?;
    let zero = hashes.iter().filter(|h| h.is_none()).count();
    let mut unique: Vec<_> = hashes.iter().flatten().collect();
    unique.sort();
    unique.dedup();
    println!(
        "chunks of {}: {} total, {} zero (never stored), {} unique non-zero",
        human(s.chunk_size),
        hashes.len(),
        zero,
        unique.len()
    );
    match Command::new("e2fsck").arg("-fn").arg(&img).output() {
        Ok(out) if out.status.success() => println!("e2fsck -fn: clean"),
        Ok(out) => anyhow::bail!(
            "e2fsck -fn reports problems:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => println!("e2fsck not found: skipped the filesystem check"),
    }
    push_and_fetch(&args.store, &args.key, &layout, &img, &dir)?;
    run_lazily(&args)
}

/// Starts the sample from the store, lazily, and prints the run's stats.
fn run_lazily(args: &Args) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("lazy run: skipped (needs root for FUSE, loop devices and runc)");
        return Ok(());
    }
    if !sample_runs() {
        println!("lazy run: skipped (no /usr/bin/dash on this host to put in the sample)");
        return Ok(());
    }
    let runc = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("runc").is_file()));
    if !runc || !Path::new("/dev/fuse").exists() {
        println!("lazy run: skipped (needs runc and /dev/fuse: apt install runc)");
        return Ok(());
    }
    let mut agent = crate::agent::AgentArgs {
        store: args.store.clone(),
        key: args.key.clone(),
        read_only: false,
        overlay_dir: None,
        cache_dir: Some(data_dir().join("demo/cache")),
        cache_size: 1 << 30,
        cache_memory: 8 << 20,
        no_cache: false,
        no_trace: false,
        no_warm: false,
        az: Default::default(),
        stats_json: None,
    };
    let root = crate::run::Root::for_agent(&mut agent, crate::run::Cow::Files);
    crate::run::prepare_to_run()?;
    let rt = crate::origin::agent_runtime()?;
    let start = Instant::now();
    let opened = rt.block_on(crate::agent::open(&agent, "kindling-demo:latest"))?;
    println!("lazy run of kindling-demo:latest (container output follows):");
    std::io::stdout().flush().ok();
    let ran = crate::run::run_opened(&opened, &rt, &root, &[], None)?;
    let s = opened.disk.stats().snapshot();
    println!(
        "container exited {} after {:.0} ms (first output at {:.0} ms): read {} of the {} image \
         through FUSE and {} preloaded into the page cache, {} from the origin and the AZ cache ({} and {} chunks), {} chunks from the worker cache, \
         {} reads of zero chunks (no I/O)",
        ran.code,
        ran.exited.duration_since(start).as_secs_f64() * 1e3,
        ran.first_output
            .map_or(f64::NAN, |t| t.duration_since(start).as_secs_f64() * 1e3),
        human(s.bytes_read),
        human(opened.disk.size()),
        human(s.bytes_preloaded),
        human(s.bytes_fetched),
        s.chunks_origin,
        s.chunks_az,
        s.chunks_worker_cache,
        s.chunks_zero
    );
    anyhow::ensure!(
        ran.code == 0,
        "the sample container exited with {}",
        ran.code
    );
    Ok(())
}

/// Pushes the sample to the store, fetches it back and compares.
fn push_and_fetch(
    store: &crate::origin::StoreArgs,
    key: &crate::origin::KeyArgs,
    layout: &Path,
    img: &Path,
    dir: &Path,
) -> Result<()> {
    let repo = store.repo()?;
    let tenant = key.key()?;
    let rt = crate::origin::runtime()?;
    let image = kindling_oci::Image::open(layout.to_str().context("non-UTF-8 path")?)?;
    let name = "kindling-demo:latest";
    let p = rt
        .block_on(kindling_repo::push(
            &repo,
            image,
            name,
            &tenant,
            &Default::default(),
        ))
        .with_context(|| format!("pushing the sample to {}", store.url()))?;
    println!(
        "pushed as {name} to {}: {} chunks, {} zero, {} already present, {} uploaded ({}), manifest {} bytes, {:.3}s",
        store.url(),
        p.chunks,
        p.zero_chunks,
        p.present_chunks,
        p.uploaded_chunks,
        human(p.uploaded_bytes),
        p.manifest_bytes,
        p.seconds
    );
    let fetched = dir.join("fetched.img");
    let _ = fs::remove_file(&fetched);
    let out =
        fs::File::create(&fetched).with_context(|| format!("creating {}", fetched.display()))?;
    let f = rt
        .block_on(kindling_repo::fetch(
            &repo,
            name,
            &tenant,
            &out,
            &Default::default(),
        ))
        .context("fetching the sample back")?;
    drop(out);
    let same = fs::read(&fetched)? == fs::read(img)?;
    let _ = fs::remove_file(&fetched);
    anyhow::ensure!(same, "the fetched image differs from the flattened one");
    println!(
        "fetched it back: {} verified chunks ({}) in {:.3}s, identical to the flattened image",
        f.chunks - f.zero_chunks,
        human(f.fetched_bytes),
        f.seconds
    );
    Ok(())
}
