//! One AZ cache node (DESIGN.md, section 4): an HTTP/2 server keeping
//! opaque stripes, keyed by (chunk name, stripe index), in a memory tier
//! over a flash tier. The node never interprets stripe bytes and never
//! talks to an origin: workers fill it after their own misses.
//!
//! * [`CacheNode`]: the storage, usable without a server. Both tiers are
//!   bounded in bytes and evict by LRU-K (K = [`LRU_K`]).
//! * [`RunningNode`]: the HTTP server over a [`CacheNode`], with
//!   [`Faults`] that tests set at run time, and a stop that drops every
//!   connection so a node can "die" and come back on the same address.
//! * [`serve_metrics`]: the `/metrics` page on a listener of its own.
//!
//! # Protocol
//!
//! HTTP/2 over cleartext with prior knowledge (HTTP/1.1 is served too):
//!
//! | request | answer |
//! | --- | --- |
//! | `PUT /v1/stripes/{name}/{index}` | 204; 400 bad name or index; 413 body over [`MAX_STRIPE_BYTES`] |
//! | `GET /v1/stripes/{name}/{index}` | 200 with the body and `x-kindling-tier: memory` or `flash`; 404 |
//! | `HEAD /v1/stripes/{name}/{index}` | 200 with `content-length` (and the tier); 404 |
//! | `GET /health` | 200 `ok` |
//! | `GET /metrics` | Prometheus text |
//!
//! `name` is a chunk name in 64 lowercase hex digits, `index` a decimal
//! `u8`.
//!
//! # Tiers: the promotion and demotion rule
//!
//! The tiers are *inclusive* and written through: a PUT stores the stripe
//! in memory and on flash (one file, see the `flash` module for the
//! format). So evicting from memory loses nothing that flash still has:
//! that eviction is a *demotion*, and it costs no I/O.
//!
//! * A new stripe enters memory with one recorded access. LRU-K evicts
//!   entries seen fewer than K times first, so a burst of new stripes (a
//!   worker filling the cache) only displaces other once-seen stripes,
//!   never ones that were read K times.
//! * Every GET records an access in each tier holding the stripe; a
//!   memory hit counts on flash too, so flash keeps what memory serves.
//! * A flash hit is *promoted* (copied into memory) when the stripe has
//!   been read at least K times since it was stored, counting reads from
//!   either tier. It enters memory with its flash history, so it ranks
//!   there by its true backward K-distance. A read-once scan therefore
//!   promotes nothing.
//! * Evictions from flash delete the file; a copy in memory stays until
//!   memory evicts it in turn.
//!
//! # Memory
//!
//! `memory_bytes` covers the memory tier's stripes *and* the index of the
//! flash tier: each flash entry costs about 460 bytes of index (hash maps,
//! LRU-K history), so the memory tier's bound is `memory_bytes` less
//! [`FLASH_ENTRY_CHARGE`] per flash entry, and memory evicts as flash
//! grows (a 100 GiB flash tier of 128 KiB stripes: 400 MiB of index).
//! Beyond that the node holds per-entry memory-tier overhead (a few
//! hundred bytes per stripe, not charged), flash reads in flight (at most
//! [`FLASH_IO_SLOTS`] stripes), PUT bodies being received and HTTP/2
//! buffers (per connection at most its receive window). The `rss` test
//! checks the process stays under `memory_bytes` plus 64 MiB while 300
//! MiB pass through a 32 MiB node.
//!
//! # Durability
//!
//! The flash tier survives restarts: [`CacheNode::open`] rebuilds the
//! index from the directory, oldest files first, and evicts down to the
//! bound if it shrank. Files are not fsynced; a torn file fails its
//! checksum on read and is dropped and served as a miss, like any corrupt
//! entry. One node per directory at a time.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use kindling_cachenode::{CacheNode, NodeConfig, TierHit};
//! use kindling_chunk::ChunkName;
//!
//! let dir = tempfile::tempdir()?;
//! let node = CacheNode::open(NodeConfig::with_capacity(dir.path(), 64 << 20))?;
//! let name = ChunkName([1; 32]);
//! node.put_blocking(&name, 0, Bytes::from_static(b"stripe"))?;
//! assert_eq!(node.get_blocking(&name, 0), Some((Bytes::from_static(b"stripe"), TierHit::Memory)));
//! assert_eq!(node.get_blocking(&name, 1), None);
//! # Ok(())
//! # }
//! ```

mod error;
mod flash;
mod index;
mod metrics;
mod node;
mod server;

use std::path::{Path, PathBuf};

use kindling_chunk::ChunkName;

pub use error::NodeError;
pub use flash::FORMAT_VERSION;
pub use metrics::{GetHistogram, NodeStats, TierStats};
pub use node::CacheNode;
pub use server::{serve_metrics, Faults, MetricsServer, RunningNode, MAX_CONNECTIONS, TIER_HEADER};

/// Largest stripe a node stores: 1 MiB, twice the largest stripe of the
/// default layout (a 512 KiB chunk in 1 data stripe) so every layout
/// fits, and small enough to hold a whole body in memory.
pub const MAX_STRIPE_BYTES: usize = 1 << 20;

/// Memory charged to the memory tier per flash entry for the flash
/// index: 512 bytes, the measured ~460 (500 000 entries) rounded up.
pub const FLASH_ENTRY_CHARGE: u64 = 512;

/// K of LRU-K in both tiers: 2, the paper's choice and the smallest K
/// that resists scans (DESIGN.md, section 4).
pub const LRU_K: usize = 2;

/// How many flash reads and writes run at once; more wait. 32 keeps a
/// local NVMe device busy while bounding the memory of reads in flight
/// (32 MiB at the largest stripe).
pub const FLASH_IO_SLOTS: usize = 32;

/// Which tier served a stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierHit {
    Memory,
    Flash,
}

impl TierHit {
    /// The value of the `x-kindling-tier` header: `memory` or `flash`.
    pub fn as_str(self) -> &'static str {
        match self {
            TierHit::Memory => "memory",
            TierHit::Flash => "flash",
        }
    }
}

/// What a node stores under: a chunk and the index of one of its stripes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StripeKey {
    pub name: ChunkName,
    pub index: u8,
}

impl StripeKey {
    /// Parses the two path segments of `/v1/stripes/{name}/{index}`: 64
    /// lowercase hex digits and 1 to 3 decimal digits up to 255.
    pub fn parse(name: &str, index: &str) -> Option<StripeKey> {
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if name.len() != 64 || !name.bytes().all(lower_hex) {
            return None;
        }
        if index.is_empty() || index.len() > 3 || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(StripeKey {
            name: ChunkName::from_hex(name)?,
            index: index.parse().ok()?,
        })
    }
}

/// How big a node's tiers are and where its flash tier lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Memory for stripes and the flash index: the memory tier's bound is
    /// this less [`FLASH_ENTRY_CHARGE`] per flash entry. 0 turns the
    /// memory tier off.
    pub memory_bytes: u64,
    /// The flash tier's directory: created if missing; must be empty or a
    /// cache node's.
    pub disk_dir: PathBuf,
    /// Bound of the flash tier in stripe bytes (file headers of 56 bytes
    /// each are not counted). 0 turns the tier off.
    pub disk_bytes: u64,
}

impl NodeConfig {
    /// A node of `capacity` bytes in the proportions of DESIGN.md: all of
    /// it on flash, and a memory tier of a tenth of it
    /// ([`NodeConfig::memory_share`]) in front.
    pub fn with_capacity(disk_dir: impl AsRef<Path>, capacity: u64) -> NodeConfig {
        NodeConfig {
            memory_bytes: NodeConfig::memory_share(capacity),
            disk_dir: disk_dir.as_ref().to_path_buf(),
            disk_bytes: capacity,
        }
    }

    /// The default memory tier for a node of `capacity` bytes: 10 %, the
    /// share in DESIGN.md section 4 ("about 10 % of capacity").
    pub fn memory_share(capacity: u64) -> u64 {
        capacity / 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_keys_parse_strictly() {
        let hex = "ab".repeat(32);
        assert_eq!(
            StripeKey::parse(&hex, "7"),
            Some(StripeKey {
                name: ChunkName([0xab; 32]),
                index: 7
            })
        );
        assert!(StripeKey::parse(&hex, "255").is_some());
        assert!(StripeKey::parse(&hex, "007").is_some());
        for index in ["256", "", "-1", "+1", "1000", "0x1", " 1"] {
            assert_eq!(StripeKey::parse(&hex, index), None, "{index:?}");
        }
        assert_eq!(StripeKey::parse(&"AB".repeat(32), "1"), None);
        assert_eq!(StripeKey::parse(&"ab".repeat(31), "1"), None);
        assert_eq!(
            StripeKey::parse(&format!("{}zz", "ab".repeat(31)), "1"),
            None
        );
    }
}
