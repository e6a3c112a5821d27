//! `kindling run`: agent + loop device + ext4 mount + runc, the container
//! started before its image is downloaded.
//!
//! Setup and teardown are a stack of guards, declared in setup order so
//! they drop in reverse: FUSE mount, loop device, ext4 mount (runc's
//! container is removed inside `Container::run`). Every path out - the
//! container's exit, an error at any step, Ctrl-C - unwinds the stack.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use kindling_runtime::{
    forward_signals, mount_ext4, process_from_image, Container, LoopDevice, RunOptions,
};

use crate::agent::{open, AgentArgs, Opened};
use crate::origin::runtime;

/// Start a container from an image in the store, loading it on demand.
///
/// Serves the image over FUSE (as `kindling mount` does), attaches it to a
/// loop device, mounts its ext4 filesystem (read-write through the private
/// copy-on-write overlay, unless --read-only) and runs the image's
/// entrypoint and cmd - or CMD ARGS... if given, which replace both - with
/// the image's env, working directory and user, in a runc container with
/// /proc, /dev, /sys, /tmp and /etc/resolv.conf set up. The container's
/// stdout and stderr pass through and its exit code is kindling's.
/// Everything is torn down on exit, on error and on Ctrl-C.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image's name in the store.
    name: String,
    #[command(flatten)]
    agent: AgentArgs,
    /// The command to run instead of the image's entrypoint and cmd.
    #[arg(last = true, value_name = "CMD ARGS")]
    command: Vec<String>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn check_interrupted() -> Result<()> {
    anyhow::ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
    Ok(())
}

/// How a container run ended.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub first_output: Option<Instant>,
    pub exited: Instant,
}

/// Serves `opened` over FUSE in `work`, mounts it through a loop device and
/// runs `command` (or the image's own) in a container; tears it all down.
pub fn run_opened(
    opened: &Opened,
    rt: &tokio::runtime::Runtime,
    read_only: bool,
    command: &[String],
    stdout: Option<Box<dyn Write + Send>>,
) -> Result<Ran> {
    let swept = Container::sweep_orphans(&RunOptions::default());
    if !swept.is_empty() {
        eprintln!(
            "kindling: removed {} container(s) left by killed runs: {}",
            swept.len(),
            swept.join(", ")
        );
    }
    let work = tempfile::Builder::new()
        .prefix("kindling-run-")
        .tempdir()
        .context("creating the run directory")?;
    let id = format!(
        "kindling-{}-{}",
        std::process::id(),
        work.path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("run")
            .trim_start_matches("kindling-run-")
    );
    let fuse_dir = work.path().join("agent");
    let root_dir = work.path().join("root");
    std::fs::create_dir_all(&fuse_dir)?;
    std::fs::create_dir_all(&root_dir)?;
    let fuse = kindling_agent::fuse::mount(opened.disk.clone(), &fuse_dir, rt.handle().clone())
        .with_context(|| format!("mounting the agent on {}", fuse_dir.display()))?;
    let image = fuse_dir.join(kindling_agent::fuse::DISK_FILE);
    let result = (|| -> Result<(i32, Option<Instant>)> {
        check_interrupted()?;
        let dev = LoopDevice::attach(&image, read_only).context("attaching a loop device")?;
        let root = mount_ext4(dev.path(), &root_dir, read_only).context("mounting the image")?;
        check_interrupted()?;
        let c = &opened.config;
        let spec = if command.is_empty() {
            process_from_image(&c.entrypoint, &c.cmd, &c.env, &c.working_dir, &c.user, None)
        } else {
            process_from_image(&[], &[], &c.env, &c.working_dir, &c.user, Some(command))
        };
        let opts = RunOptions {
            read_only_root: read_only,
            stdout,
            ..RunOptions::default()
        };
        let status = Container::run(&id, root.target(), &spec, opts)
            .with_context(|| format!("running {:?}", spec.args))?;
        root.unmount().context("unmounting the image")?;
        dev.detach().context("detaching the loop device")?;
        Ok((status.code(), status.first_output()))
    })();
    let exited = Instant::now();
    let unmounted = fuse.unmount().context("unmounting the agent");
    let (code, first_output) = result?;
    unmounted?;
    drop(work);
    rt.block_on(opened.finish());
    Ok(Ran {
        code,
        first_output,
        exited,
    })
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
    forward_signals(|_| INTERRUPTED.store(true, Ordering::SeqCst))
        .context("installing signal handlers")
}

pub fn run(args: Args) -> Result<i32> {
    let start = Instant::now();
    prepare_to_run()?;
    let rt = runtime()?;
    let opened = rt
        .block_on(open(&args.agent, &args.name))
        .with_context(|| format!("running {}", args.name))?;
    check_interrupted()?;
    let ran = run_opened(&opened, &rt, args.agent.read_only, &args.command, None);
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
    opened.write_stats(
        args.agent.stats_json.as_deref(),
        &args.name,
        serde_json::json!({
            "cold_start_ms": ms(exited), "first_output_ms": first_output.map(ms),
            "exit_code": code,
        }),
    )?;
    Ok(code)
}
