//! `kindling run`: agent + loop device + ext4 mount + runc, the container
//! started before its image is downloaded.
//!
//! Setup and teardown are a stack of guards, declared in setup order so
//! they drop in reverse: FUSE mount, loop device, ext4 mount (runc's
//! container is removed inside `Container::run`). Every path out - the
//! container's exit, an error at any step, Ctrl-C - unwinds the stack.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use kindling_runtime::{
    forward_signals, mount_ext4, mount_overlay, process_from_image, Container, LoopDevice,
    RunOptions, Warmed,
};

use crate::agent::{open, AgentArgs, Opened};
use crate::origin::agent_runtime;
use crate::warming::{record_if_absent, watch_if_recording, Warming};

/// Start a container from an image in the store, loading it on demand.
///
/// Serves the image over FUSE (as `kindling mount` does), attaches it to a
/// loop device, mounts its ext4 filesystem, gives the container a
/// writable root over it (see --cow; unless --read-only) and runs the image's
/// entrypoint and cmd - or CMD ARGS... if given, which replace both - with
/// the image's env, working directory and user, in a runc container with
/// /proc, /dev, /sys, /tmp and /etc/resolv.conf set up. The container's
/// stdout and stderr pass through and its exit code is kindling's; as with
/// `docker run`, 127 means the command was not found, 126 that it could not
/// be executed, 125 that kindling itself failed. SIGINT, SIGTERM, SIGHUP and
/// SIGQUIT go to the container; one still running 10 s after the first is
/// killed (a third signal kills it at once). Everything is torn down on
/// exit, on error and on Ctrl-C. Containers' runc state lives in
/// /run/kindling/runc (`runc --root /run/kindling/runc list`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image's name in the store.
    name: String,
    #[command(flatten)]
    agent: AgentArgs,
    /// Where the container's writes go. Either way they are private to
    /// this run, dropped at its end, and never reach a cache or the store.
    #[arg(long, value_enum, default_value_t = Cow::Files)]
    cow: Cow,
    /// The command to run instead of the image's entrypoint and cmd.
    #[arg(last = true, value_name = "CMD ARGS")]
    command: Vec<String>,
}

/// The copy-on-write layer under a writable container root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cow {
    /// overlayfs: the image's ext4 mounted read-only, writes to files in a
    /// private upper directory (in --overlay-dir). The disk stays
    /// read-only, so the agent fills the kernel's page cache ahead of
    /// reads with the chunks the start will read - the faster start.
    Files,
    /// The agent's block overlay: ext4 mounted read-write, written 4 KiB
    /// pages kept in a private sparse file (what `kindling mount` serves
    /// to a microVM). No page cache preload: a store racing a write could
    /// put old bytes over new ones.
    Blocks,
}

/// What the container's root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    ReadOnly,
    /// overlayfs, its upper directory made inside this directory.
    Files(PathBuf),
    Blocks,
}

impl Root {
    /// The root that `agent`'s flags and `cow` ask for. `agent.read_only`
    /// then says what the disk must be (read-only unless the block overlay
    /// takes writes), ready for [`crate::agent::open`].
    pub fn for_agent(agent: &mut AgentArgs, cow: Cow) -> Root {
        let root = match (agent.read_only, cow) {
            (true, _) => Root::ReadOnly,
            (false, Cow::Files) => {
                Root::Files(agent.overlay_dir.clone().unwrap_or_else(std::env::temp_dir))
            }
            (false, Cow::Blocks) => Root::Blocks,
        };
        agent.read_only = root.disk_read_only();
        root
    }

    /// Where a run keeps its scratch directory (mount points, and the
    /// overlayfs upper directory).
    pub fn scratch_dir(&self) -> PathBuf {
        match self {
            Root::Files(dir) => dir.clone(),
            _ => std::env::temp_dir(),
        }
    }

    /// Whether the agent serves the disk read-only.
    pub fn disk_read_only(&self) -> bool {
        *self != Root::Blocks
    }
}

/// A run's scratch directory: `kindling-run-XXXXXX`, claimed by its
/// process, so the next run removes it if it was killed.
const RUN_DIR_PREFIX: &str = "kindling-run-";

/// The signal that stopped a run before its container ran (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// A run stopped by a signal before its container ran; it exits as a
/// process killed by that signal would (128 + n).
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by signal {} before the container started",
            self.0
        )
    }
}

impl std::error::Error for Interrupted {}

fn check_interrupted() -> Result<()> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(Interrupted(signal).into()),
    }
}

/// How a container run ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub first_output: Option<Instant>,
    pub exited: Instant,
    /// When each step of the setup ended, in order: where a start's time
    /// went, for `--stats-json`.
    pub phases: Vec<(&'static str, Instant)>,
    /// What warming the page cache from the file trace did, if it ran.
    pub warmed: Option<Warmed>,
    /// Ranges of the file trace this run recorded, and how long recording
    /// took (after the container's exit), if it recorded one.
    pub recorded: Option<(usize, std::time::Duration)>,
}

/// Serves `opened` over FUSE in `work`, mounts it through a loop device and
/// runs `command` (or the image's own) in a container; tears it all down.
/// This machine's architecture as OCI names it.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The image's platform as OCI names it (`linux/arm64`), if this machine
/// cannot run it. An image that names no OS or architecture (some older
/// builders leave them out) is given the benefit of the doubt.
fn foreign_platform(os: &str, architecture: &str) -> Option<String> {
    let os_ok = os.is_empty() || os == "linux";
    let arch_ok = architecture.is_empty() || architecture == host_architecture();
    (!os_ok || !arch_ok).then(|| format!("{os}/{architecture}"))
}

pub fn run_opened(
    opened: &Opened,
    rt: &tokio::runtime::Runtime,
    root_mode: &Root,
    command: &[String],
    stdout: Option<Box<dyn Write + Send>>,
) -> Result<Ran> {
    // Refused before anything is set up: the container would otherwise die
    // with "exec format error" (or worse, half start under emulation).
    if let Some(platform) = foreign_platform(&opened.config.os, &opened.config.architecture) {
        anyhow::bail!(
            "the image is for {platform} and this machine runs linux/{}: its programs cannot \
             run here (`kindling mount` still serves its disk, to a VM that can)",
            host_architecture()
        );
    }
    let swept = Container::sweep_orphans(&RunOptions::default());
    if !swept.is_empty() {
        eprintln!(
            "kindling: removed {} container(s) left by killed runs: {}",
            swept.len(),
            swept.join(", ")
        );
    }
    let scratch = root_mode.scratch_dir();
    let swept = kindling_runtime::sweep_dirs(&scratch, RUN_DIR_PREFIX);
    if !swept.is_empty() {
        eprintln!(
            "kindling: removed {} run director(ies) left by killed runs",
            swept.len()
        );
    }
    let work = tempfile::Builder::new()
        .prefix(RUN_DIR_PREFIX)
        .tempdir_in(&scratch)
        .with_context(|| format!("creating the run directory in {}", scratch.display()))?;
    kindling_runtime::claim_dir(work.path()).context("claiming the run directory")?;
    let id = format!(
        "kindling-{}-{}",
        std::process::id(),
        work.path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("run")
            .trim_start_matches("kindling-run-")
    );
    anyhow::ensure!(
        opened.disk.read_only() == root_mode.disk_read_only(),
        "internal: the disk is {} but the root needs it {}",
        if opened.disk.read_only() {
            "read-only"
        } else {
            "writable"
        },
        if root_mode.disk_read_only() {
            "read-only"
        } else {
            "writable"
        },
    );
    let fuse_dir = work.path().join("agent");
    let image_dir = work.path().join("image");
    let root_dir = work.path().join("root");
    for dir in [&fuse_dir, &image_dir, &root_dir] {
        std::fs::create_dir_all(dir)?;
    }
    // overlayfs wants its upper and work directories on one filesystem.
    let upper = matches!(root_mode, Root::Files(_))
        .then(|| (work.path().join("upper"), work.path().join("work")));
    let mut phases = vec![("run_dir", Instant::now())];
    let fuse = kindling_agent::fuse::mount(opened.disk.clone(), &fuse_dir, rt.handle().clone())
        .with_context(|| format!("mounting the agent on {}", fuse_dir.display()))?;
    phases.push(("fuse_mounted", Instant::now()));
    let image = fuse_dir.join(kindling_agent::fuse::DISK_FILE);
    let result = (|| -> Result<Ran> {
        check_interrupted()?;
        let disk_ro = root_mode.disk_read_only();
        let dev = LoopDevice::attach(&image, disk_ro).context("attaching a loop device")?;
        phases.push(("loop_attached", Instant::now()));
        let ext4_dir = if upper.is_some() {
            &image_dir
        } else {
            &root_dir
        };
        let ext4 = mount_ext4(dev.path(), ext4_dir, disk_ro).context("mounting the image")?;
        phases.push(("ext4_mounted", Instant::now()));
        let overlay = match &upper {
            Some((up, wk)) => {
                std::fs::create_dir_all(up)?;
                std::fs::create_dir_all(wk)?;
                Some(mount_overlay(ext4.target(), up, wk, &root_dir).context(
                    "mounting the writable root (overlayfs): --overlay-dir must be on a \
                         local filesystem such as ext4, xfs or tmpfs (or use --cow blocks)",
                )?)
            }
            None => None,
        };
        phases.push(("root_ready", Instant::now()));
        // Declared after the mounts: dropped (stopped) before they are.
        let warming = Warming::start(opened, ext4.target(), rt.handle().clone());
        let watch = watch_if_recording(opened, ext4.target());
        check_interrupted()?;
        let c = &opened.config;
        let spec = if command.is_empty() {
            process_from_image(&c.entrypoint, &c.cmd, &c.env, &c.working_dir, &c.user, None)
        } else {
            process_from_image(&[], &[], &c.env, &c.working_dir, &c.user, Some(command))
        };
        let opts = RunOptions {
            read_only_root: *root_mode == Root::ReadOnly,
            stdout,
            interrupted: Some(&INTERRUPTED),
            ..RunOptions::default()
        };
        let status = Container::run(&id, &root_dir, &spec, opts)
            .with_context(|| format!("running {:?}", spec.args))?;
        // The start is over when the container is; teardown is not in it.
        let exited = Instant::now();
        opened.reader.end_trace();
        let warmed = warming.finish();
        let recorded = record_if_absent(opened, ext4.target(), watch);
        if let Some(o) = overlay {
            o.unmount().context("unmounting the writable root")?;
        }
        ext4.unmount().context("unmounting the image")?;
        dev.detach().context("detaching the loop device")?;
        Ok(Ran {
            code: status.code(),
            first_output: status.first_output(),
            exited,
            phases: std::mem::take(&mut phases),
            warmed,
            recorded,
        })
    })();
    let unmounted = fuse.unmount().context("unmounting the agent");
    let ran = result?;
    unmounted?;
    drop(work);
    rt.block_on(opened.finish());
    Ok(ran)
}

/// Sets up what `run_opened` expects; call before starting threads.
///
/// * A mount namespace of our own: no other container holds copies of our
///   mounts (which made teardown fail with EBUSY), and if we are killed
///   the kernel unmounts everything we mounted.
/// * Signals reach the container while one runs; otherwise they only set
///   a flag, so every guard still unwinds.
pub fn prepare_to_run() -> Result<()> {
    kindling_runtime::private_mount_namespace()?;
    forward_signals(|signal| {
        let _ = INTERRUPTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    })
    .context("installing signal handlers")
}

pub fn run(args: Args) -> Result<i32> {
    let start = Instant::now();
    if let Some(path) = &args.agent.stats_json {
        check_stats_path(path)?;
    }
    prepare_to_run()?;
    let rt = agent_runtime()?;
    let mut agent = args.agent.clone();
    let root = Root::for_agent(&mut agent, args.cow);
    let opened = rt
        .block_on(open(&agent, &args.name))
        .with_context(|| format!("running {}", args.name))?;
    let opened_at = Instant::now();
    check_interrupted()?;
    let ran = run_opened(&opened, &rt, &root, &args.command, None);
    let stats = opened.disk.stats();
    if let Some(first) = stats.first_error() {
        eprintln!(
            "kindling: {} chunk read(s) failed, so the image's reader saw I/O errors; the first: {first}",
            stats.snapshot().chunk_errors
        );
    }
    let ran = ran.with_context(|| format!("running {}", args.name))?;
    let (code, first_output, exited) = (ran.code, ran.first_output, ran.exited);
    let ms = |t: Instant| t.duration_since(start).as_secs_f64() * 1e3;
    let phases: serde_json::Map<String, serde_json::Value> = std::iter::once(("opened", opened_at))
        .chain(ran.phases.iter().copied())
        .chain(first_output.map(|t| ("first_output", t)))
        .chain([("exited", exited)])
        .map(|(k, t)| (k.to_string(), ms(t).into()))
        .collect();
    let written = opened.write_stats(
        args.agent.stats_json.as_deref(),
        &args.name,
        serde_json::json!({
            "cold_start_ms": ms(exited), "first_output_ms": first_output.map(ms),
            "exit_code": code, "phases_ms": phases,
            "file_trace": match (ran.warmed, ran.recorded) {
                (Some(_), _) => "warmed",
                (None, Some(_)) => "recorded",
                (None, None) => "none",
            },
            "warmed_bytes": ran.warmed.map_or(0, |w| w.bytes),
            "file_trace_ranges": ran.recorded.map(|r| r.0),
            "file_trace_record_ms": ran.recorded.map(|r| r.1.as_secs_f64() * 1e3),
        }),
    );
    // The container ran: its exit code is the answer, stats or not.
    if let Err(e) = written {
        eprintln!("kindling: warning: --stats-json: {e:#}");
    }
    Ok(code)
}

/// `--stats-json FILE` must be writable where it is, checked before the
/// container runs rather than found out after.
fn check_stats_path(path: &std::path::Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!(
            "--stats-json {}: {} is not a directory",
            path.display(),
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| {
            format!(
                "--stats-json {}: directory {}",
                path.display(),
                dir.display()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_linux_images_of_this_architecture_run_here() {
        let here = host_architecture();
        assert_eq!(foreign_platform("linux", here), None);
        // Left out by some builders: not held against the image.
        assert_eq!(foreign_platform("", ""), None);
        assert_eq!(foreign_platform("linux", ""), None);
        assert_eq!(
            foreign_platform("windows", here),
            Some(format!("windows/{here}"))
        );
        let other = if here == "arm64" { "amd64" } else { "arm64" };
        assert_eq!(
            foreign_platform("linux", other),
            Some(format!("linux/{other}"))
        );
    }
}
