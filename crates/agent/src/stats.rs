//! Counters for `--stats-json`: what the kernel read and where the chunks
//! came from.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes the kernel read from the disk file.
    pub bytes_read: AtomicU64,
    /// Bytes the kernel wrote (all to the overlay).
    pub bytes_written: AtomicU64,
    /// Bytes pushed into the kernel's page cache before it asked (reads
    /// of them never reach the agent, so they are not in `bytes_read`).
    pub bytes_preloaded: AtomicU64,
    /// Chunk bytes that came from tiers below the worker cache.
    pub bytes_fetched: AtomicU64,
    pub chunks_origin: AtomicU64,
    /// Chunks rebuilt from the AZ cache cluster's stripes.
    pub chunks_az: AtomicU64,
    pub chunks_worker_cache: AtomicU64,
    /// Zero chunks read (no I/O at all).
    pub chunks_zero: AtomicU64,
    /// Chunk reads served by the agent's own plaintext cache.
    pub chunks_memory: AtomicU64,
    /// Failed chunk fetches.
    pub chunk_errors: AtomicU64,
    /// The first of them, with its causes: what `run` reports.
    pub first_error: std::sync::Mutex<Option<String>>,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub bytes_preloaded: u64,
    pub bytes_fetched: u64,
    pub chunks_origin: u64,
    pub chunks_az: u64,
    pub chunks_worker_cache: u64,
    pub chunks_zero: u64,
    pub chunks_memory: u64,
    pub chunk_errors: u64,
}

impl Stats {
    /// Counts a failed chunk fetch and keeps the first one's story.
    pub fn chunk_failed(&self, e: &dyn std::error::Error) {
        self.chunk_errors.fetch_add(1, Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(crate::fuse::chain(e));
        }
    }

    /// The first failed chunk fetch, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes_read: self.bytes_read.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            bytes_preloaded: self.bytes_preloaded.load(Relaxed),
            bytes_fetched: self.bytes_fetched.load(Relaxed),
            chunks_origin: self.chunks_origin.load(Relaxed),
            chunks_az: self.chunks_az.load(Relaxed),
            chunks_worker_cache: self.chunks_worker_cache.load(Relaxed),
            chunks_zero: self.chunks_zero.load(Relaxed),
            chunks_memory: self.chunks_memory.load(Relaxed),
            chunk_errors: self.chunk_errors.load(Relaxed),
        }
    }
}
