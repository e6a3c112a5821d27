//! `kindling chunks`: per-chunk hashes of an image, to measure dedup.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::size::parse_size;

/// Print one line per chunk of an image: its index and the SHA-256 of its
/// plaintext, or `zero` for an all-zero chunk. Comparing two images' lists
/// shows how many chunks they share.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image file.
    image: PathBuf,
    /// Chunk size (power of two, 64KiB to 4MiB).
    #[arg(long, default_value = "512KiB", value_parser = parse_size)]
    chunk_size: u64,
    /// One JSON object per line: {"index": N, "sha256": "..."|null}.
    #[arg(long)]
    json: bool,
}

/// SHA-256 of each chunk, `None` for zero chunks. The last chunk is padded
/// with zeros to the chunk size.
pub fn chunk_hashes(mut r: impl Read, chunk_size: usize) -> std::io::Result<Vec<Option<[u8; 32]>>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk_size];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = r.read(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            return Ok(out);
        }
        buf[filled..].fill(0);
        if buf.iter().all(|&b| b == 0) {
            out.push(None);
        } else {
            out.push(Some(Sha256::digest(&buf).into()));
        }
        if filled < buf.len() {
            return Ok(out);
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if !args.chunk_size.is_power_of_two() || !(64 << 10..=4 << 20).contains(&args.chunk_size) {
        anyhow::bail!("--chunk-size must be a power of two from 64KiB to 4MiB");
    }
    let f = File::open(&args.image).with_context(|| format!("opening {}", args.image.display()))?;
    let hashes = chunk_hashes(f, args.chunk_size as usize)
        .with_context(|| format!("reading {}", args.image.display()))?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (i, h) in hashes.iter().enumerate() {
        let r = match (h, args.json) {
            (Some(h), false) => writeln!(out, "{i} {}", hex::encode(h)),
            (None, false) => writeln!(out, "{i} zero"),
            (Some(h), true) => writeln!(out, "{{\"index\":{i},\"sha256\":\"{}\"}}", hex::encode(h)),
            (None, true) => writeln!(out, "{{\"index\":{i},\"sha256\":null}}"),
        };
        if let Err(e) = r {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    out.flush().ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_padded_chunks() {
        let mut data = vec![0u8; 3 * 65536 + 10];
        data[65536] = 1;
        data[3 * 65536 + 9] = 2;
        let h = chunk_hashes(&data[..], 65536).unwrap();
        assert_eq!(h.len(), 4);
        assert!(h[0].is_none() && h[1].is_some() && h[2].is_none() && h[3].is_some());
    }
}
