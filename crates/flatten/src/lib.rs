//! Flattening: an OCI image's layers applied, in order and deterministically,
//! onto one ext4 image whose data blocks stay identical wherever images share
//! layers (DESIGN.md, section 1).
//!
//! * [`flatten`] drives it: layers stream through decompression threads
//!   ([`pipeline`]), their entries are applied to an in-memory tree with OCI
//!   semantics (`tree`), file data is written at once into the layer's data
//!   region (`placer`), and at the end the ext4 writer lays out all metadata
//!   after the last region.
//! * [`FlattenOptions`] holds the chunk size, free space and size limit.
//!
//! ```no_run
//! let image = kindling_oci::Image::open("/path/to/oci-layout").unwrap();
//! let out = std::fs::File::create("/tmp/image.img").unwrap();
//! let summary = kindling_flatten::flatten(&image, &out, &kindling_flatten::FlattenOptions::default()).unwrap();
//! println!("{} bytes", summary.image_bytes);
//! ```

mod apply;
mod cold;
mod error;
mod pipeline;
mod placer;
mod pyc;
mod tree;

use kindling_ext4::{first_data_block, write_filesystem, FsOptions, Output, BLOCK_SIZE};
use kindling_oci::Image;
use sha2::{Digest as _, Sha256};

pub use error::{FlattenError, LayerError};

/// Default chunk size: the paper's 512 KiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 512 << 10;
/// Default size limit: the paper's (and Lambda's) 10 GiB image limit.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;
/// Default free space for writes from the running container. Free blocks are
/// zero chunks: they cost nothing to store or fetch.
pub const DEFAULT_FREE_SPACE: u64 = 256 << 20;
/// Default free inodes, for the same reason.
pub const DEFAULT_FREE_INODES: u64 = 16384;

/// How to flatten.
#[derive(Debug, Clone)]
pub struct FlattenOptions {
    /// Chunk size: a power of two from 64 KiB to 4 MiB. Default 512 KiB.
    pub chunk_size: u64,
    /// Free space to leave in the filesystem. Default 256 MiB.
    pub free_space: u64,
    /// Free inodes to leave. Default 16384.
    pub free_inodes: u64,
    /// Largest image to produce. Default 10 GiB.
    pub max_size: u64,
    /// Average length of a small-file segment. Default 32 chunks (16 MiB
    /// at 512 KiB): on the corpus, python-app v1 -> v2 gets 11 new chunks
    /// with 8 or 16 MiB and 13 with 4 MiB, and python-ds's start touches 10
    /// fewer chunks with 16 MiB than with 4 MiB (less padding between the
    /// files it reads).
    pub segment_target: Option<u64>,
    /// Layers decompressed ahead of the one being applied. Default 2; the
    /// output does not depend on it.
    pub lookahead: usize,
}

impl Default for FlattenOptions {
    fn default() -> Self {
        FlattenOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            free_space: DEFAULT_FREE_SPACE,
            free_inodes: DEFAULT_FREE_INODES,
            max_size: DEFAULT_MAX_SIZE,
            segment_target: None,
            lookahead: 2,
        }
    }
}

/// One layer's place in the image.
#[derive(Debug, Clone)]
pub struct LayerSummary {
    pub digest: String,
    /// First byte of the layer's data region (a chunk boundary).
    pub region_offset: u64,
    /// Bytes of the region, padded to the chunk size.
    pub region_bytes: u64,
    /// Bytes of file data blocks in the region (the rest is padding).
    pub data_bytes: u64,
    /// Uncompressed tar bytes read.
    pub tar_bytes: u64,
    pub entries: u64,
}

/// What was produced.
#[derive(Debug, Clone)]
pub struct FlattenSummary {
    pub image_bytes: u64,
    pub chunk_size: u64,
    pub layers: Vec<LayerSummary>,
    pub inodes_used: u64,
    pub metadata_offset: u64,
    pub metadata_bytes: u64,
    /// The metadata a start is likely to read, as a byte range (offset,
    /// length): the directories and inodes of everything but test suites,
    /// documentation and build inputs, and the bitmaps.
    pub hot_metadata: [u64; 2],
    /// Things dropped on the way (e.g. xattrs in namespaces ext4 lacks).
    pub warnings: Vec<String>,
}

fn derive16(label: &str, image: &Image) -> [u8; 16] {
    let seed = match &image.manifest_digest {
        Some(d) => d.to_string(),
        None => image.config_digest.to_string(),
    };
    let h = Sha256::digest(format!("kindling/{label}/{seed}").as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h[..16]);
    out
}

/// Flattens `image` into `out`, which must be a new, empty file (or any
/// [`Output`] whose unwritten bytes read as zero).
pub fn flatten(
    image: &Image,
    out: &dyn Output,
    opts: &FlattenOptions,
) -> Result<FlattenSummary, FlattenError> {
    let cs = opts.chunk_size;
    if !cs.is_power_of_two() || !(64 << 10..=4 << 20).contains(&cs) {
        return Err(FlattenError::Options(format!(
            "chunk size {cs} is not a power of two from 64 KiB to 4 MiB"
        )));
    }
    let chunk_blocks = cs / BLOCK_SIZE;
    let max_blocks = (opts.max_size / BLOCK_SIZE).min(u64::from(u32::MAX));
    let first = first_data_block(max_blocks, chunk_blocks);
    let mut placer = placer::Placer::new(
        out,
        first,
        cs,
        opts.segment_target.unwrap_or(32 * cs),
        max_blocks,
    );
    let mut tree = tree::Tree::new();
    let mut layers = Vec::with_capacity(image.layers.len());
    let mut warnings = Vec::new();
    std::thread::scope(|scope| -> Result<(), FlattenError> {
        let mut readers = std::collections::VecDeque::new();
        let mut next = 0;
        for (index, info) in image.layers.iter().enumerate() {
            while next < (index + opts.lookahead.max(1)).min(image.layers.len()) {
                readers.push_back(pipeline::spawn(scope, image.open_layer(next)?));
                next += 1;
            }
            let Some(reader) = readers.pop_front() else {
                break;
            };
            placer.align();
            let start = placer.cursor();
            let written = placer.written();
            let wrap = |source| match source {
                LayerError::TooLarge => FlattenError::TooLarge { max: opts.max_size },
                source => FlattenError::Layer {
                    index,
                    digest: info.digest.to_string(),
                    source,
                },
            };
            let stats =
                apply::apply_layer(&mut tree, &mut placer, reader, &mut warnings).map_err(wrap)?;
            if let Some(base) = placer
                .splice_deferred()
                .map_err(|e| wrap(LayerError::from(e)))?
            {
                tree.shift_extents(&stats.deferred, base);
            }
            placer.align();
            layers.push(LayerSummary {
                digest: info.digest.to_string(),
                region_offset: start * BLOCK_SIZE,
                region_bytes: (placer.cursor() - start) * BLOCK_SIZE,
                data_bytes: (placer.written() - written) * BLOCK_SIZE,
                tar_bytes: stats.tar_bytes,
                entries: stats.entries,
            });
        }
        Ok(())
    })?;
    placer.flush()?;
    let data_end = placer.cursor();
    let nodes = tree.into_ext4();
    let mut fs = FsOptions::new(data_end);
    fs.align_blocks = chunk_blocks;
    fs.free_blocks = opts.free_space.div_ceil(BLOCK_SIZE);
    fs.free_inodes = opts.free_inodes;
    fs.max_blocks = max_blocks;
    fs.uuid = derive16("uuid", image);
    // RFC 4122 version 4 / variant bits, so tools show a well-formed UUID.
    fs.uuid[6] = (fs.uuid[6] & 0x0f) | 0x40;
    fs.uuid[8] = (fs.uuid[8] & 0x3f) | 0x80;
    fs.hash_seed = derive16("hash-seed", image);
    fs.volume_name[..8].copy_from_slice(b"kindling");
    fs.cold = Some(cold::cold_inode);
    let s = write_filesystem(out, &nodes, tree::ROOT, &fs).map_err(|e| match e {
        kindling_ext4::Ext4Error::TooLarge { .. } => FlattenError::TooLarge { max: opts.max_size },
        e => FlattenError::Ext4(e),
    })?;
    Ok(FlattenSummary {
        image_bytes: s.blocks * BLOCK_SIZE,
        chunk_size: cs,
        layers,
        inodes_used: s.used_inodes,
        metadata_offset: s.metadata_start * BLOCK_SIZE,
        metadata_bytes: s.metadata_blocks * BLOCK_SIZE,
        hot_metadata: [s.hot_metadata.0 * BLOCK_SIZE, s.hot_metadata.1 * BLOCK_SIZE],
        warnings,
    })
}
