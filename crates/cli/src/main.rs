//! `kindling`: the command line. The only crate that knows clap; it turns
//! flags into library options and reports errors with context.

mod chunks;
mod demo;
mod flatten;
mod interrupt;
mod size;

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
    Demo(demo::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Flatten(a) => flatten::run(a),
        Command::Chunks(a) => chunks::run(a),
        Command::Demo(a) => demo::run(a),
    };
    if let Err(e) = result {
        eprintln!("kindling: error: {e:#}");
        std::process::exit(1);
    }
}
