//! The local agent (DESIGN.md, sections 5 and 6): one image served as one
//! file, its chunks fetched on demand.
//!
//! * [`ImageReader`]: the async core. A read of (offset, length) maps to
//!   chunks; each chunk comes from a small cache of verified chunks, or through the
//!   [`ChunkSource`] tier chain (worker cache, AZ cache cluster, origin), is verified
//!   against its name and kept; a read decrypts only what it returns. Zero
//!   chunks cost no I/O; concurrent reads of one chunk share one fetch; a
//!   read whose chunks are all in memory is answered on the caller's
//!   thread. Prefetches (hot ranges, then a startup trace jumping ahead)
//!   share one queue.
//! * [`Overlay`]: the copy-on-write layer. Writes land in a private sparse
//!   file, page by page (4 KiB), tracked by a bitmap; nothing written ever
//!   reaches a cache or the store.
//! * [`Disk`]: reader + overlay = the file the kernel sees.
//! * [`fuse`]: the thin FUSE adapter: a directory holding `disk.img`. It
//!   knows nothing of chunks; every callback hands off to [`Disk`].
//!
//! The core never sees FUSE types, so it is tested without a kernel.

mod disk;
mod error;
pub mod fuse;
mod overlay;
mod reader;
mod source;
mod stats;

pub use disk::Disk;
pub use error::AgentError;
pub use overlay::{Overlay, PAGE_SIZE};
pub use reader::{ImageReader, PageSink, ReaderOptions, PENDING_STORES};
pub use source::{AzCached, ChunkSource, Fetched, Origin, SourceError, Tier, WorkerCached};
pub use stats::{Stats, StatsSnapshot};
