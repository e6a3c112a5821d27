//! `kindling`: the command line. The only crate that knows clap; it turns
//! flags into library options and reports errors with context.

mod agent;
mod az;
mod bench;
mod cache_node;
mod chunks;
mod demo;
mod fetch;
mod flatten;
mod inspect;
mod interrupt;
mod origin;
mod push;
mod run;
mod s3_server;
mod size;
mod warming;

use clap::{Parser, Subcommand};

/// Kindling starts containers from images loaded on demand, block by block.
///
/// Images are flattened into one deterministic ext4 image whose blocks stay
/// identical wherever images share layers, then cut into fixed-size chunks.
#[derive(Debug, Parser)]
#[command(name = "kindling", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Flatten(flatten::Args),
    Chunks(chunks::Args),
    Push(push::Args),
    Fetch(fetch::Args),
    Inspect(inspect::InspectArgs),
    Ls(inspect::LsArgs),
    Mount(agent::MountArgs),
    Run(run::Args),
    /// Benchmarks, each against its baseline in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    Demo(demo::Args),
    S3Server(s3_server::Args),
    CacheNode(cache_node::Args),
}

fn main() {
    let cli = Cli::parse();
    keep_chunk_buffers_on_the_heap();
    if matches!(
        cli.command,
        Command::Mount(_) | Command::Run(_) | Command::Bench(_) | Command::Demo(_)
    ) {
        one_malloc_arena();
    }
    if matches!(
        cli.command,
        Command::Flatten(_)
            | Command::Chunks(_)
            | Command::Push(_)
            | Command::Fetch(_)
            | Command::Inspect(_)
            | Command::Ls(_)
    ) {
        die_quietly_on_a_closed_pipe();
    }
    let result = match cli.command {
        Command::Flatten(a) => flatten::run(a),
        Command::Chunks(a) => chunks::run(a),
        Command::Push(a) => push::run(a),
        Command::Fetch(a) => fetch::run(a),
        Command::Inspect(a) => inspect::inspect(a),
        Command::Ls(a) => inspect::ls(a),
        Command::Mount(a) => agent::mount(a),
        Command::Bench(a) => bench::run(a),
        Command::Run(a) => match run::run(a) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("kindling: error: {e:#}");
                std::process::exit(run_failure_code(&e));
            }
        },
        Command::Demo(a) => demo::run(a),
        Command::S3Server(a) => s3_server::run(a),
        Command::CacheNode(a) => cache_node::run(a),
    };
    if let Err(e) = result {
        eprintln!("kindling: error: {e:#}");
        std::process::exit(1);
    }
}

/// `run`'s exit status when it fails itself, as `docker run`'s: 127 if the
/// command does not exist, 126 if it cannot be executed, 128 + n if signal
/// n stopped it before the container ran, 125 for any other failure - so
/// that a script tells them from the container's own codes.
fn run_failure_code(e: &anyhow::Error) -> i32 {
    e.chain()
        .find_map(|c| match c.downcast_ref::<run::Interrupted>() {
            Some(run::Interrupted(signal)) => Some(128 + signal),
            None => c
                .downcast_ref::<kindling_runtime::RuntimeError>()
                .and_then(kindling_runtime::RuntimeError::exit_code),
        })
        .unwrap_or(125)
}

/// `kindling ls | head` and `push ... | grep -q`: Rust ignores SIGPIPE, so
/// printing to a reader that has gone panics. The commands that only print
/// a listing or a summary end the way Unix tools do instead, by the signal,
/// quietly; their outputs are renamed into place before they print. Not
/// for `run`, `mount` and the servers, which have mounts and processes to
/// tear down first.
fn die_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default disposition of one signal, before any
    // threads start.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Chunk buffers (512 KiB) are allocated and freed thousands of times per
/// image. Above glibc's default mmap threshold each one would be a fresh
/// mmap, 128 page faults and a munmap; a fixed 64 MiB threshold (and trim
/// threshold) keeps them on the heap, where freed buffers are reused.
fn keep_chunk_buffers_on_the_heap() {
    // SAFETY: mallopt only tunes the allocator; called before any threads
    // start. Failure (0) just leaves the defaults.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// An agent runs dozens of threads (tokio's blocking pool does its disk
/// I/O), and glibc gives each its own arena; with chunk buffers kept on
/// the heap, every arena keeps its high-water mark. Serving python-ds that
/// took the agent's peak RSS from 52 to 93 MiB, over its 64 MiB budget.
/// One arena: the agent allocates a few thousand buffers a second, far
/// too few for its lock to matter.
/// An explicit MALLOC_ARENA_MAX wins.
fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: as above; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
