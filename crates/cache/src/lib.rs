//! The worker-local chunk cache (DESIGN.md, section 5): what every agent on
//! a machine reads chunks through before it asks the AZ cache or the
//! origin.
//!
//! * [`WorkerCache`]: a memory tier (per process, [`bytes::Bytes`], so a
//!   hit is a reference count) over a disk tier (one directory shared by
//!   every agent process on the machine). Both are bounded in bytes and
//!   evict by [`LruK`]. It holds ciphertext only and verifies every chunk
//!   against its name when it enters the cache and whenever it is read
//!   from disk. [`WorkerCache::get_or_fill`] runs one fill per missing
//!   chunk across all tasks and all processes sharing the directory.
//! * [`LruK`]: the eviction policy, pure and in memory.
//!
//! The disk layout, how the processes share LRU-K history and the lock
//! protocol are described in the `disk` module's source.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use kindling_cache::{CacheOptions, Hit, WorkerCache};
//! use kindling_chunk::ChunkName;
//!
//! let dir = tempfile::tempdir()?;
//! let cache = WorkerCache::open(dir.path(), CacheOptions::default())?;
//! let chunk = Bytes::from_static(b"some ciphertext");
//! let name = ChunkName::of(&chunk);
//! let fetch = || async { Ok::<_, std::io::Error>(chunk.clone()) };
//! assert_eq!(cache.get_or_fill(&name, fetch).await?, (chunk.clone(), Hit::Filled));
//! assert_eq!(cache.get_or_fill(&name, fetch).await?, (chunk.clone(), Hit::Memory));
//! # Ok(())
//! # }
//! ```

mod cache;
mod direct;
mod disk;
mod error;
mod lruk;
mod memory;

pub use cache::WorkerCache;
pub use error::{CacheError, FillSource};
pub use lruk::LruK;

/// How big the tiers are and how they evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Bound of the disk tier: the total size of the chunk files, shared by
    /// every process using the directory. Default 10 GiB: the largest
    /// image Kindling takes (DESIGN.md), so one image fits whole.
    pub disk_bytes: u64,
    /// Bound of this process's memory tier. Default 256 MiB: 512 chunks of
    /// the default 512 KiB, several times what a start touches (6 % of a
    /// typical image, DESIGN.md), while one agent per function keeps the
    /// sum small. 0 turns the tier off.
    pub memory_bytes: u64,
    /// K of LRU-K in both tiers. Default 2, the paper's choice and the
    /// smallest K that resists scans.
    pub k: usize,
    /// Check every filled chunk against its name before storing it.
    /// Default true. A caller whose fills are verified already (the
    /// agent's tiers all verify) turns it off to hash each chunk once:
    /// SHA-256 of 512 KiB is ~0.37 ms of CPU.
    pub verify_fills: bool,
}

impl CacheOptions {
    /// Default [`CacheOptions::disk_bytes`].
    pub const DEFAULT_DISK_BYTES: u64 = 10 << 30;
    /// Default [`CacheOptions::memory_bytes`].
    pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 20;
    /// Default [`CacheOptions::k`].
    pub const DEFAULT_K: usize = 2;
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            disk_bytes: Self::DEFAULT_DISK_BYTES,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            k: Self::DEFAULT_K,
            verify_fills: true,
        }
    }
}

/// Where [`WorkerCache::get_or_fill`] found a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hit {
    /// In this process's memory tier.
    Memory,
    /// In the disk tier.
    Disk,
    /// Nowhere: this call ran the fill.
    Filled,
    /// Another task of this process, or another process, was filling it;
    /// this call waited and took its result.
    Joined,
}

/// Counters of one [`WorkerCache`] handle (shared by its clones) since it
/// was opened, and the tiers' current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Calls answered from the memory tier.
    pub memory_hits: u64,
    /// Calls answered from the disk tier (including waiters of a task
    /// that read the disk for them).
    pub disk_hits: u64,
    /// Fills run by this handle.
    pub fills: u64,
    /// Calls that waited for another task's or process's fill.
    pub fill_waits: u64,
    /// Chunk files found corrupt, oversized or unreadable and deleted.
    pub corrupt_dropped: u64,
    /// Chunk files this handle deleted to keep the disk tier in bounds.
    pub evictions: u64,
    /// Chunks this handle dropped from its memory tier.
    pub memory_evictions: u64,
    /// Filled chunks that could not be written to disk (they were still
    /// returned).
    pub write_errors: u64,
    /// Size of the disk tier (all processes) as of this handle's last
    /// write, deletion or eviction.
    pub disk_bytes: u64,
    /// Size of this process's memory tier.
    pub memory_bytes: u64,
}
