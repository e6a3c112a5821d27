//! The disk tier: one directory shared by every agent process on a machine.
//!
//! # Layout (version 1)
//!
//! ```text
//! DIR/v1/VERSION              "kindling worker chunk cache, layout 1"
//! DIR/v1/usage                16 bytes: "KCUSAGE1", then the total size of
//!                             all chunk files (u64 little endian); also the
//!                             cache-wide lock (flock) for every change to
//!                             the set of chunk files
//! DIR/v1/locks/fill           the fill locks: byte i is stripe i's (of
//!                             1024, striped by name), held with an
//!                             open-file-description record lock
//! DIR/v1/tmp/.tmp.PID.N       chunks being written
//! DIR/v1/chunks/ab/abcd...    one file per chunk: its ciphertext, named by
//!                             its 64-digit hex name, under its first 2 digits
//! ```
//!
//! A later layout goes in `DIR/v2`, so an old and a new build never read
//! each other's files. Files are created 0644 and directories 0755 (less
//! the umask); every process sharing a directory is expected to run as one
//! user.
//!
//! # Access history, shared across processes
//!
//! Each chunk file carries the stamps of its last K accesses (the write
//! that filled it, then disk reads) in the extended attribute
//! `user.kindling.lruk`: K little-endian u64s, newest first. A stamp is
//! wall-clock nanoseconds, kept strictly increasing within a process: the
//! one clock processes share without coordination. A disk hit merges a new
//! stamp into the attribute (a read-modify-write without a lock: two
//! processes racing lose one stamp, which only blurs the order a little).
//! A file without the attribute (its writer died between creating and
//! stamping it, or the file system takes no user xattrs) counts as one
//! access at its mtime; on such a file system a read bumps the mtime
//! instead, which makes the disk tier plain LRU.
//!
//! Only disk accesses count: a process's memory tier absorbs its repeated
//! reads of one chunk, so a chunk shows K accesses on disk when K
//! processes (or one, after its memory tier dropped the chunk) needed it.
//! That is LRU-K's "correlated reference period" with a process as the
//! period, and it is what the disk tier should learn: which chunks many
//! function instances start with.
//!
//! # Bound and eviction
//!
//! The usage counter is changed only under the `usage` flock, together
//! with the change it accounts for (a rename into place, a deletion), so
//! it is exact up to crashes and outside interference: a process killed
//! between its rename and its count leaves it one chunk short, and a chunk
//! file cut or grown from outside is taken off with its new size, not the
//! one it was counted with. When a commit takes the counter over the
//! bound, the committing process scans the whole tree under the same lock
//! (recounting the total, which repairs any drift), builds an [`LruK`]
//! from the files' histories and deletes victims until the total is at
//! most 90 % of the bound. The chunk just written is never its own victim.
//! A reader that opened a file before it was deleted reads it whole (Linux
//! keeps the inode); one that comes later finds no file, which is a miss.
//!
//! # Fills across processes
//!
//! A process that misses on disk takes the fill lock of the chunk's stripe
//! (a record lock on one byte of `locks/fill`, owned by the open file, so
//! a process that dies releases it), checks the disk again, and only then
//! fills. Chunks are written to `tmp/` (around the page cache where the
//! file system allows it, see `direct.rs`) and renamed into place, so no
//! reader ever sees part of one. Two chunks on one stripe just fill one
//! after the other. (Builds before this one locked a file per stripe,
//! `locks/0000` .. `locks/03ff`: sharing a directory with one, fills are
//! not single-flighted across the two builds; everything else holds.)
//!
//! Lock order: a fill lock, then the usage lock; nothing takes a fill lock
//! while holding the usage lock.
//!
//! Everything here is blocking file work; the cache runs it on tokio's
//! blocking pool. Nothing read from disk is trusted: chunks are verified
//! against their names, and malformed counters, attributes and names are
//! treated as absent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kindling_chunk::ChunkName;
use xattr::FileExt as _;

use crate::direct::DirectWrites;
use crate::error::CacheError;
use crate::LruK;

/// The layout directory inside the cache directory.
pub(crate) const LAYOUT_DIR: &str = "v1";
const VERSION_TEXT: &str = "kindling worker chunk cache, layout 1\n";
const VERSION_PREFIX: &str = "kindling worker chunk cache, layout ";
const USAGE_MAGIC: &[u8; 8] = b"KCUSAGE1";
/// Fill lock stripes: with a few dozen fills in flight on a machine, two
/// of them share a stripe rarely, and then only wait for each other.
pub(crate) const STRIPES: usize = 1024;
const HISTORY_XATTR: &str = "user.kindling.lruk";
/// The most stamps read from an attribute; more is malformed.
const MAX_HISTORY: usize = 64;
/// The largest chunk file the cache reads or writes: 16 times the largest
/// chunk size the format allows (4 MiB). Anything bigger on disk is junk.
pub(crate) const MAX_CHUNK_BYTES: usize = 64 << 20;
/// A temporary file this old belongs to a writer that died: writing a
/// chunk takes milliseconds.
pub(crate) const STALE_TEMP: Duration = Duration::from_secs(600);
/// Eviction frees down to this share of the bound (per mille), so that the
/// full scan it needs runs once per tenth of the capacity written, not on
/// every write.
const EVICT_TARGET_PER_MILLE: u64 = 900;
const TEMP_PREFIX: &str = ".tmp.";
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// Source of unique temporary file names within this process; the pid in
/// the name separates processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub(crate) struct DiskTier {
    /// `DIR/v1`
    root: PathBuf,
    chunks: PathBuf,
    tmp: PathBuf,
    /// `locks/fill`, open once per tier: its record locks belong to this
    /// open file description, so they exclude other processes (and other
    /// tiers opened on the directory), never this tier's own callers.
    fill_locks: Arc<File>,
    bound: u64,
    k: usize,
    /// `DIR/v1/usage`. The mutex excludes this process's threads (they
    /// share the open file, and flock does not exclude holders of one open
    /// file from each other); the flock excludes other processes.
    usage: Mutex<File>,
    /// The usage counter as this process last saw it.
    last_usage: AtomicU64,
    /// The last stamp handed out.
    clock: AtomicU64,
    /// Whether the file system takes user xattrs (cleared on the first
    /// refusal).
    xattrs: AtomicBool,
    corrupt_dropped: AtomicU64,
    evictions: AtomicU64,
    write_errors: AtomicU64,
    /// Chunk files are written around the page cache where possible.
    direct: DirectWrites,
}

/// What a disk read found.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// The chunk, verified.
    Hit(Bytes),
    Miss,
    /// A file was there but corrupt or unreadable; it was deleted.
    Dropped,
}

impl ReadOutcome {
    /// The chunk, if the read found a good one.
    pub(crate) fn hit(self) -> Option<Bytes> {
        match self {
            ReadOutcome::Hit(bytes) => Some(bytes),
            ReadOutcome::Miss | ReadOutcome::Dropped => None,
        }
    }
}

/// A chunk file opened and read, before its bytes are checked.
struct Found {
    file: File,
    meta: fs::Metadata,
    data: Vec<u8>,
}

enum Raw {
    Found(Found),
    /// Nothing to check: a miss, or a file already dropped.
    Done(ReadOutcome),
}

/// The fill-lock stripe of `name`: the last two bytes (the first one
/// already picks the subdirectory).
pub(crate) fn stripe(name: &ChunkName) -> usize {
    usize::from(u16::from_le_bytes([name.0[30], name.0[31]])) % STRIPES
}

/// A held fill lock; released when dropped.
#[derive(Debug)]
pub(crate) struct FillLock {
    file: Arc<File>,
    stripe: usize,
}

impl Drop for FillLock {
    fn drop(&mut self) {
        // Cannot fail for a lock this description holds; and were it to,
        // closing the file (at exit at the latest) releases it.
        let _ = record_lock(&self.file, self.stripe, libc::F_UNLCK as libc::c_short);
    }
}

/// Sets byte `at` of `file` to `kind` (write-locked or unlocked) with an
/// open-file-description record lock, waiting while another description
/// holds it.
fn record_lock(file: &File, at: usize, kind: libc::c_short) -> io::Result<()> {
    // SAFETY: an all-zero `flock` is a valid value of a plain C struct.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = at as libc::off_t;
    lock.l_len = 1;
    loop {
        // SAFETY: fcntl reads `lock`, which lives across the call, and the
        // descriptor, which `file` keeps open.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &lock) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The usage lock and counter, held.
struct UsageGuard<'a> {
    file: MutexGuard<'a, File>,
}

impl Drop for UsageGuard<'_> {
    fn drop(&mut self) {
        // Errors cannot happen on a valid descriptor; if one did, closing
        // the file at exit would still release the lock.
        let _ = flock(&self.file, libc::LOCK_UN);
    }
}

impl UsageGuard<'_> {
    /// The counter, or None if the file does not hold a valid one.
    fn read(&self) -> io::Result<Option<u64>> {
        let mut buf = [0u8; 16];
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], got as u64) {
                Ok(0) => return Ok(None),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let (magic, value) = buf.split_at(8);
        if magic != USAGE_MAGIC {
            return Ok(None);
        }
        let mut le = [0u8; 8];
        le.copy_from_slice(value);
        Ok(Some(u64::from_le_bytes(le)))
    }

    fn write(&self, value: u64) -> io::Result<()> {
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(USAGE_MAGIC);
        buf[8..].copy_from_slice(&value.to_le_bytes());
        self.file.write_all_at(&buf, 0)
    }
}

impl DiskTier {
    /// Opens (creating as needed) the layout under `dir`, removes stale
    /// temporary files, and brings the tree within `bound` if it is over
    /// (after a restart with a smaller bound) or its counter is missing.
    pub(crate) fn open(dir: &Path, bound: u64, k: usize) -> Result<DiskTier, CacheError> {
        let root = dir.join(LAYOUT_DIR);
        let chunks = root.join("chunks");
        let tmp = root.join("tmp");
        let locks = root.join("locks");
        for d in [&chunks, &tmp, &locks] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(d)
                .map_err(|e| CacheError::io("create the cache directory", d, e))?;
        }
        check_version(&root, &tmp)?;
        let fill_path = locks.join("fill");
        let fill_locks = open_shared(&fill_path)
            .map_err(|e| CacheError::io("open the fill locks", &fill_path, e))?;
        let usage_path = root.join("usage");
        let usage = open_shared(&usage_path)
            .map_err(|e| CacheError::io("open the usage counter", &usage_path, e))?;
        let tier = DiskTier {
            root,
            chunks,
            tmp,
            fill_locks: Arc::new(fill_locks),
            bound,
            k: k.max(1),
            usage: Mutex::new(usage),
            last_usage: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            xattrs: AtomicBool::new(true),
            corrupt_dropped: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            direct: DirectWrites::new(true),
        };
        tier.remove_stale_temps();
        let usage_err = |e| CacheError::io("update the usage counter", &usage_path, e);
        {
            let guard = tier.lock_usage().map_err(usage_err)?;
            match guard.read().map_err(usage_err)? {
                Some(total) if total <= bound => tier.last_usage.store(total, Ordering::Relaxed),
                _ => {
                    tier.scan_and_evict(&guard, None)
                        .map_err(|e| CacheError::io("scan the cache", &tier.chunks, e))?;
                }
            }
        }
        Ok(tier)
    }

    /// `DIR/v1`.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn chunk_path(&self, name: &ChunkName) -> PathBuf {
        let hex = name.to_hex();
        self.chunks.join(&hex[..2]).join(hex)
    }

    pub(crate) fn last_usage(&self) -> u64 {
        self.last_usage.load(Ordering::Relaxed)
    }

    pub(crate) fn corrupt_dropped(&self) -> u64 {
        self.corrupt_dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub(crate) fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Reads and verifies a chunk, recording the access. A corrupt,
    /// oversized or unreadable file is deleted and reported as
    /// [`ReadOutcome::Dropped`]; a missing one is a miss.
    pub(crate) fn read(&self, name: &ChunkName) -> ReadOutcome {
        self.finish(name, self.read_raw(name))
    }

    /// [`DiskTier::read`] of two chunks, hashed together when both are
    /// there: a preload verifies two chunks for about the price of one.
    pub(crate) fn read_pair(&self, a: &ChunkName, b: &ChunkName) -> [ReadOutcome; 2] {
        match (self.read_raw(a), self.read_raw(b)) {
            (Raw::Found(fa), Raw::Found(fb)) => {
                let [va, vb] = kindling_chunk::cipher::verify_pair((a, &fa.data), (b, &fb.data));
                [
                    self.settle(a, fa, va.is_ok()),
                    self.settle(b, fb, vb.is_ok()),
                ]
            }
            (ra, rb) => [self.finish(a, ra), self.finish(b, rb)],
        }
    }

    /// Verifies what [`DiskTier::read_raw`] found, alone.
    fn finish(&self, name: &ChunkName, raw: Raw) -> ReadOutcome {
        match raw {
            Raw::Found(found) => {
                let verified = kindling_chunk::cipher::verify(name, &found.data);
                self.settle(name, found, verified.is_ok())
            }
            Raw::Done(outcome) => outcome,
        }
    }

    /// A chunk file's bytes, not yet verified.
    fn read_raw(&self, name: &ChunkName) -> Raw {
        let path = self.chunk_path(name);
        // Not through a symlink, and not blocking on a FIFO: whatever is
        // there that is not a plain file gets dropped below.
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        let mut file = match opened {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Raw::Done(ReadOutcome::Miss),
            Err(e) => {
                tracing::warn!(chunk = %name, error = %e, "cannot open cached chunk; dropping it");
                return Raw::Done(self.drop_unreadable(name, &path, None));
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                tracing::warn!(chunk = %name, error = %e, "cannot stat cached chunk; dropping it");
                return Raw::Done(self.drop_unreadable(name, &path, None));
            }
        };
        if !meta.is_file() || meta.len() > MAX_CHUNK_BYTES as u64 {
            tracing::warn!(chunk = %name, bytes = meta.len(), "cached chunk is not a chunk file; dropping it");
            return Raw::Done(self.drop_unreadable(name, &path, Some(&meta)));
        }
        // The length is below MAX_CHUNK_BYTES, so it fits in usize.
        let mut data = Vec::with_capacity(meta.len() as usize);
        if let Err(e) = (&mut file)
            .take(MAX_CHUNK_BYTES as u64 + 1)
            .read_to_end(&mut data)
        {
            tracing::warn!(chunk = %name, error = %e, "cannot read cached chunk; dropping it");
            return Raw::Done(self.drop_unreadable(name, &path, Some(&meta)));
        }
        Raw::Found(Found { file, meta, data })
    }

    /// What a read found, once its bytes are checked: a hit (the access
    /// recorded), or a corrupt file, deleted.
    fn settle(&self, name: &ChunkName, found: Found, verified: bool) -> ReadOutcome {
        if !verified {
            tracing::warn!(chunk = %name, "cached chunk is corrupt; dropping it");
            let path = self.chunk_path(name);
            return self.drop_unreadable(name, &path, Some(&found.meta));
        }
        self.record_access(&found.file);
        ReadOutcome::Hit(Bytes::from(found.data))
    }

    /// Deletes the chunk file at `path` if it is still the file described
    /// by `seen` (another process may have replaced it with a good copy
    /// since), and takes it off the usage counter.
    fn drop_unreadable(
        &self,
        name: &ChunkName,
        path: &Path,
        seen: Option<&fs::Metadata>,
    ) -> ReadOutcome {
        self.corrupt_dropped.fetch_add(1, Ordering::Relaxed);
        let result = (|| -> io::Result<()> {
            let guard = self.lock_usage()?;
            let now = match fs::symlink_metadata(path) {
                Ok(meta) => meta,
                Err(e) if is_missing(&e) => return Ok(()),
                Err(e) => return Err(e),
            };
            if seen.is_some_and(|s| (s.dev(), s.ino()) != (now.dev(), now.ino())) {
                return Ok(());
            }
            if now.is_dir() {
                fs::remove_dir_all(path)?;
            } else {
                fs::remove_file(path)?;
            }
            if now.is_file() {
                // What the file was counted with is unknown if it was
                // changed from outside; it was at most MAX_CHUNK_BYTES.
                let counted = now.len().min(MAX_CHUNK_BYTES as u64);
                let total = guard.read()?.unwrap_or(0).saturating_sub(counted);
                guard.write(total)?;
                self.last_usage.store(total, Ordering::Relaxed);
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(chunk = %name, error = %e, "cannot delete a bad cached chunk");
        }
        ReadOutcome::Dropped
    }

    /// Takes the fill lock of `name`'s stripe, waiting for it if another
    /// process holds it. A record lock, not a lock file per stripe: a
    /// fresh cache would otherwise create hundreds of files on a start's
    /// path, and after deletions ext4 makes every file creation scan past
    /// the recently freed inodes (`recently_deleted`: 700 ms of CPU in one
    /// cold start of python-ds here, lock and chunk files together).
    ///
    /// Within one tier the same stripe must not be taken twice at once:
    /// the lock belongs to the tier's open file, so a second taker would
    /// not wait (`WorkerCache` serializes its own fills per stripe).
    pub(crate) fn lock_fill(&self, name: &ChunkName) -> Result<FillLock, CacheError> {
        let stripe = stripe(name);
        record_lock(&self.fill_locks, stripe, libc::F_WRLCK as libc::c_short).map_err(|e| {
            CacheError::io(
                format!("take the fill lock of chunk {name}"),
                self.root.join("locks/fill"),
                e,
            )
        })?;
        Ok(FillLock {
            file: Arc::clone(&self.fill_locks),
            stripe,
        })
    }

    /// Stores a verified chunk: writes a temporary file, renames it into
    /// place under the usage lock, and evicts if that takes the tier over
    /// its bound. `fill_lock` is released only once the chunk is in place.
    /// Returns whether the chunk was stored (one larger than the whole
    /// tier is not).
    pub(crate) fn write(
        &self,
        name: &ChunkName,
        data: &[u8],
        fill_lock: FillLock,
    ) -> Result<bool, CacheError> {
        let stored = self.write_inner(name, data);
        drop(fill_lock);
        if stored.is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        stored
    }

    fn write_inner(&self, name: &ChunkName, data: &[u8]) -> Result<bool, CacheError> {
        let size = data.len() as u64;
        if size > self.bound {
            return Ok(false);
        }
        let target = self.chunk_path(name);
        let temp = self.tmp.join(format!(
            "{TEMP_PREFIX}{}.{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let write_err = |e| CacheError::io(format!("write chunk {name}"), &temp, e);
        let temp_guard = RemoveOnDrop(&temp);
        let file = self
            .direct
            .create(&temp, FILE_MODE, data)
            .map_err(write_err)?;
        self.stamp_new(&file);
        drop(file);
        if let Some(parent) = target.parent() {
            match fs::DirBuilder::new().mode(DIR_MODE).create(parent) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CacheError::io(format!("store chunk {name}"), parent, e)),
            }
        }

        let usage_err = |e| CacheError::io("update the usage counter", self.root.join("usage"), e);
        let guard = self.lock_usage().map_err(usage_err)?;
        let replaced = match fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        };
        fs::rename(&temp, &target)
            .map_err(|e| CacheError::io(format!("store chunk {name}"), &target, e))?;
        temp_guard.keep();
        // A missing or malformed counter is repaired by the scan that an
        // unknown total forces.
        let total = guard
            .read()
            .map_err(usage_err)?
            .map(|t| t.saturating_sub(replaced).saturating_add(size));
        match total {
            Some(total) if total <= self.bound => {
                guard.write(total).map_err(usage_err)?;
                self.last_usage.store(total, Ordering::Relaxed);
            }
            _ => {
                self.scan_and_evict(&guard, Some(name))
                    .map_err(|e| CacheError::io("evict from the cache", &self.chunks, e))?;
            }
        }
        Ok(true)
    }

    /// Recounts every chunk file and, if the total is over the bound,
    /// deletes LRU-K victims (never `protect`) down to 90 % of it. Writes
    /// the new total to the counter. Caller holds the usage lock.
    fn scan_and_evict(
        &self,
        guard: &UsageGuard<'_>,
        protect: Option<&ChunkName>,
    ) -> io::Result<()> {
        let mut lru = LruK::new(self.k);
        let mut sizes = std::collections::HashMap::new();
        let mut total = 0u64;
        let now = SystemTime::now();
        for sub in fs::read_dir(&self.chunks)? {
            let sub = sub?;
            let Some(prefix) = sub.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let files = match fs::read_dir(sub.path()) {
                Ok(files) => files,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(e),
            };
            for entry in files {
                let entry = entry?;
                let path = entry.path();
                let file_name = entry.file_name();
                let Some(file_name) = file_name.to_str() else {
                    continue;
                };
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    // Gone since the listing (removed from outside: the
                    // cache deletes only under the lock this scan holds).
                    continue;
                };
                if file_name.starts_with(TEMP_PREFIX) {
                    remove_if_stale(&path, &meta, now);
                    continue;
                }
                let Some(name) = ChunkName::from_hex(file_name) else {
                    continue;
                };
                // Only files the cache could have written: lower-case
                // names, in their own subdirectory.
                if name.to_hex() != file_name || !file_name.starts_with(&prefix) || !meta.is_file()
                {
                    continue;
                }
                for stamp in self.history_of(&path, &meta) {
                    lru.record_access(name, stamp);
                }
                sizes.insert(name, meta.len());
                total = total.saturating_add(meta.len());
            }
        }
        if total > self.bound {
            let target = self.bound / 1000 * EVICT_TARGET_PER_MILLE
                + self.bound % 1000 * EVICT_TARGET_PER_MILLE / 1000;
            if let Some(keep) = protect {
                lru.remove(keep);
            }
            while total > target {
                let Some(victim) = lru.pop_victim() else {
                    break;
                };
                let size = sizes.get(&victim).copied().unwrap_or(0);
                match fs::remove_file(self.chunk_path(&victim)) {
                    Ok(()) => {
                        total = total.saturating_sub(size);
                        self.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if is_missing(&e) => total = total.saturating_sub(size),
                    Err(e) => {
                        tracing::warn!(chunk = %victim, error = %e, "cannot evict cached chunk");
                    }
                }
            }
        }
        guard.write(total)?;
        self.last_usage.store(total, Ordering::Relaxed);
        Ok(())
    }

    /// The stamps of a chunk file's last reads, newest first: its history
    /// attribute, or its mtime if the attribute is missing or malformed.
    fn history_of(&self, path: &Path, meta: &fs::Metadata) -> Vec<u64> {
        let attr = if self.xattrs.load(Ordering::Relaxed) {
            xattr::get(path, HISTORY_XATTR).ok().flatten()
        } else {
            None
        };
        match attr.as_deref().and_then(parse_history) {
            Some(stamps) => stamps,
            None => vec![mtime_stamp(meta)],
        }
    }

    /// Merges a read, now, into an open chunk file's history. Failures
    /// only cost eviction accuracy, so they are not errors.
    fn record_access(&self, file: &File) {
        let stamp = self.stamp();
        if self.xattrs.load(Ordering::Relaxed) {
            let mut stamps = match file.get_xattr(HISTORY_XATTR) {
                Ok(Some(value)) => parse_history(&value).unwrap_or_default(),
                _ => Vec::new(),
            };
            if stamps.is_empty() {
                // First read since the fill (or the attribute was lost):
                // the fill itself counts, at the file's mtime.
                if let Ok(meta) = file.metadata() {
                    stamps.push(mtime_stamp(&meta));
                }
            }
            stamps.push(stamp);
            stamps.sort_unstable_by(|a, b| b.cmp(a));
            stamps.truncate(self.k);
            if self.set_history(file, &stamps) {
                return;
            }
        }
        let _ = file.set_modified(UNIX_EPOCH + Duration::from_nanos(stamp));
    }

    /// Stamps a new chunk file with one access, now.
    fn stamp_new(&self, file: &File) {
        let stamp = self.stamp();
        if !self.xattrs.load(Ordering::Relaxed) || !self.set_history(file, &[stamp]) {
            let _ = file.set_modified(UNIX_EPOCH + Duration::from_nanos(stamp));
        }
    }

    /// Writes a history attribute; false if the file system refuses user
    /// xattrs (then they are not tried again) or the write failed.
    fn set_history(&self, file: &File, stamps: &[u64]) -> bool {
        let value: Vec<u8> = stamps.iter().flat_map(|s| s.to_le_bytes()).collect();
        match file.set_xattr(HISTORY_XATTR, &value) {
            Ok(()) => true,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    tracing::info!("the cache directory takes no user xattrs; its disk tier falls back to LRU by mtime");
                    self.xattrs.store(false, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// A disk stamp: wall-clock nanoseconds, strictly increasing within
    /// this process.
    fn stamp(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut prev = self.clock.load(Ordering::Relaxed);
        loop {
            let next = wall.max(prev.saturating_add(1));
            match self
                .clock
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    fn lock_usage(&self) -> io::Result<UsageGuard<'_>> {
        let file = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        flock(&file, libc::LOCK_EX)?;
        Ok(UsageGuard { file })
    }

    /// Removes temporary files left by writers that died.
    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(meta) = fs::symlink_metadata(&path) {
                remove_if_stale(&path, &meta, now);
            }
        }
    }
}

fn check_version(root: &Path, tmp: &Path) -> Result<(), CacheError> {
    let path = root.join("VERSION");
    let layout = |reason: String| CacheError::Layout {
        dir: root.to_path_buf(),
        reason,
    };
    match fs::read(&path) {
        Ok(text) => {
            let text = String::from_utf8_lossy(&text);
            match text.strip_prefix(VERSION_PREFIX).map(str::trim) {
                Some("1") => Ok(()),
                Some(other) => Err(layout(format!(
                    "it holds layout {other:?}, this build reads layout 1"
                ))),
                None => Err(layout("its VERSION file is not a kindling cache's".into())),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Racing openers all write the same text; the renames are atomic.
            let temp = tmp.join(format!(
                "{TEMP_PREFIX}{}.{}",
                std::process::id(),
                TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let result = (|| {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(FILE_MODE)
                    .open(&temp)?;
                f.write_all(VERSION_TEXT.as_bytes())?;
                fs::rename(&temp, &path)
            })();
            if result.is_err() {
                let _ = fs::remove_file(&temp);
            }
            result.map_err(|e| CacheError::io("write the cache's VERSION", &path, e))
        }
        Err(e) => Err(CacheError::io("read the cache's VERSION", &path, e)),
    }
}

/// Stamps from a history attribute, newest first; None if malformed.
fn parse_history(value: &[u8]) -> Option<Vec<u64>> {
    if value.is_empty() || !value.len().is_multiple_of(8) || value.len() / 8 > MAX_HISTORY {
        return None;
    }
    let mut stamps: Vec<u64> = value
        .chunks_exact(8)
        .map(|c| {
            let mut le = [0u8; 8];
            le.copy_from_slice(c);
            u64::from_le_bytes(le)
        })
        .collect();
    stamps.sort_unstable_by(|a, b| b.cmp(a));
    Some(stamps)
}

fn mtime_stamp(meta: &fs::Metadata) -> u64 {
    let secs = u64::try_from(meta.mtime()).unwrap_or(0);
    let nanos = u64::try_from(meta.mtime_nsec()).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn remove_if_stale(path: &Path, meta: &fs::Metadata, now: SystemTime) {
    let age = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .unwrap_or_default();
    if meta.is_file() && age >= STALE_TEMP {
        let _ = fs::remove_file(path);
    }
}

/// Opens (creating if needed) a file every process sharing the
/// directory reads and writes in place: the usage counter, the fill locks.
fn open_shared(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
}

/// Errors that mean "no file there".
fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// flock(2), retried on EINTR.
fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number and the operation
        // flags; `file` keeps the descriptor open for the whole call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Deletes a temporary file unless kept.
struct RemoveOnDrop<'a>(&'a Path);

impl RemoveOnDrop<'_> {
    fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(i: u32, len: usize) -> (ChunkName, Vec<u8>) {
        let mut data: Vec<u8> = (0..len).map(|j| (j as u32 * 7 + i * 13) as u8).collect();
        data.extend_from_slice(&i.to_le_bytes());
        (ChunkName::of(&data), data)
    }

    fn put(tier: &DiskTier, i: u32, len: usize) -> ChunkName {
        let (name, data) = chunk(i, len);
        let lock = tier.lock_fill(&name).unwrap();
        assert!(tier.write(&name, &data, lock).unwrap());
        name
    }

    fn tree_bytes(tier: &DiskTier) -> u64 {
        let mut total = 0;
        for sub in fs::read_dir(&tier.chunks).unwrap() {
            for f in fs::read_dir(sub.unwrap().path()).unwrap() {
                total += f.unwrap().metadata().unwrap().len();
            }
        }
        total
    }

    proptest! {
        #[test]
        fn history_parsing_never_panics(value in prop::collection::vec(any::<u8>(), 0..600)) {
            if let Some(stamps) = parse_history(&value) {
                prop_assert_eq!(stamps.len() * 8, value.len());
                prop_assert!(stamps.windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    #[test]
    fn history_is_kept_in_an_xattr_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 3).unwrap();
        let name = put(&tier, 1, 100);
        let path = tier.chunk_path(&name);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(tier.history_of(&path, &meta).len(), 1);
        for _ in 0..5 {
            assert!(matches!(tier.read(&name), ReadOutcome::Hit(_)));
        }
        let history = tier.history_of(&path, &meta);
        assert_eq!(history.len(), 3);
        assert!(history[0] > history[1] && history[1] > history[2]);
        // Without the attribute a file counts as one read at its mtime.
        xattr::remove(&path, HISTORY_XATTR).unwrap();
        assert_eq!(tier.history_of(&path, &meta), vec![mtime_stamp(&meta)]);
        // A malformed attribute is ignored, and repaired by the next read.
        xattr::set(&path, HISTORY_XATTR, b"garbage").unwrap();
        assert_eq!(tier.history_of(&path, &meta), vec![mtime_stamp(&meta)]);
        assert!(matches!(tier.read(&name), ReadOutcome::Hit(_)));
        assert_eq!(tier.history_of(&path, &meta).len(), 2);
    }

    #[test]
    fn without_xattrs_the_mtime_carries_the_last_read() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        tier.xattrs.store(false, Ordering::Relaxed);
        let name = put(&tier, 1, 100);
        let path = tier.chunk_path(&name);
        let before = mtime_stamp(&fs::metadata(&path).unwrap());
        assert!(matches!(tier.read(&name), ReadOutcome::Hit(_)));
        let meta = fs::metadata(&path).unwrap();
        assert!(mtime_stamp(&meta) > before);
        assert_eq!(tier.history_of(&path, &meta), vec![mtime_stamp(&meta)]);
    }

    #[test]
    fn the_counter_tracks_the_tree_and_is_rebuilt_when_lost() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        for i in 0..10 {
            put(&tier, i, 1000 + i as usize);
        }
        assert_eq!(tier.last_usage(), tree_bytes(&tier));
        // Rewriting a chunk that is there does not count it twice.
        put(&tier, 3, 1003);
        assert_eq!(tier.last_usage(), tree_bytes(&tier));
        let expected = tree_bytes(&tier);
        drop(tier);
        let usage = dir.path().join(LAYOUT_DIR).join("usage");
        fs::write(&usage, b"junk").unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        assert_eq!(tier.last_usage(), expected);
        assert_eq!(fs::read(&usage).unwrap().len(), 16);
    }

    #[test]
    fn eviction_reads_history_written_by_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        // Room for 10 chunks of 1004 bytes.
        let bound = 10 * 1004;
        let a = DiskTier::open(dir.path(), bound, 2).unwrap();
        let b = DiskTier::open(dir.path(), bound, 2).unwrap();
        let hot = put(&a, 0, 1000);
        let early = put(&a, 1, 1000);
        // Another "process" reads hot: it now has two accesses.
        assert!(matches!(b.read(&hot), ReadOutcome::Hit(_)));
        for i in 2..100 {
            let writer = if i % 2 == 0 { &a } else { &b };
            put(writer, i, 1000);
            assert!(tree_bytes(writer) <= bound);
        }
        assert!(matches!(a.read(&hot), ReadOutcome::Hit(_)));
        assert!(matches!(a.read(&early), ReadOutcome::Miss));
        assert!(a.evictions() + b.evictions() >= 90);
    }

    /// A fill lock held through one tier makes another tier on the same
    /// directory (another process, in real life) wait for that stripe,
    /// and only that stripe.
    #[test]
    fn fill_locks_exclude_other_tiers_per_stripe() {
        let dir = tempfile::tempdir().unwrap();
        let a = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        let b = Arc::new(DiskTier::open(dir.path(), 1 << 20, 2).unwrap());
        let names: Vec<ChunkName> = (0..64).map(|i| chunk(i, 10).0).collect();
        let x = names[0];
        let other = *names.iter().find(|n| stripe(n) != stripe(&x)).unwrap();
        let held = a.lock_fill(&x).unwrap();
        drop(b.lock_fill(&other).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                let lock = b.lock_fill(&x).unwrap();
                tx.send(()).unwrap();
                drop(lock);
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second tier took a held stripe"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the stripe was never released");
        waiter.join().unwrap();
    }

    #[test]
    fn a_chunk_larger_than_the_tier_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 100, 2).unwrap();
        let (name, data) = chunk(1, 200);
        let lock = tier.lock_fill(&name).unwrap();
        assert!(!tier.write(&name, &data, lock).unwrap());
        assert!(matches!(tier.read(&name), ReadOutcome::Miss));
        assert_eq!(fs::read_dir(&tier.tmp).unwrap().count(), 0);
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        let name = put(&tier, 1, 100);
        let stale = tier.tmp.join(".tmp.999999.1");
        let fresh = tier.tmp.join(".tmp.999999.2");
        let stale_in_chunks = tier.chunk_path(&name).with_file_name(".tmp.999999.3");
        for path in [&stale, &fresh, &stale_in_chunks] {
            fs::write(path, b"partial").unwrap();
        }
        let old = SystemTime::now() - STALE_TEMP - Duration::from_secs(1);
        for path in [&stale, &stale_in_chunks] {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        drop(tier);
        let tier = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());
        // Temporary files among the chunks are skipped by reads and the
        // count, and removed by the next scan once stale.
        assert_eq!(tier.last_usage(), 100 + 4);
        let guard = tier.lock_usage().unwrap();
        tier.scan_and_evict(&guard, None).unwrap();
        assert!(!stale_in_chunks.exists());
        assert_eq!(tier.last_usage(), 100 + 4);
    }

    #[test]
    fn layout_version_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskTier::open(dir.path(), 1 << 20, 2).unwrap());
        let version = dir.path().join(LAYOUT_DIR).join("VERSION");
        assert_eq!(fs::read_to_string(&version).unwrap(), VERSION_TEXT);
        fs::write(&version, "kindling worker chunk cache, layout 7\n").unwrap();
        let err = DiskTier::open(dir.path(), 1 << 20, 2).unwrap_err();
        assert!(matches!(err, CacheError::Layout { .. }), "{err}");
        fs::write(&version, [0xff, 0xfe, 0]).unwrap();
        let err = DiskTier::open(dir.path(), 1 << 20, 2).unwrap_err();
        assert!(matches!(err, CacheError::Layout { .. }), "{err}");
    }

    #[test]
    fn junk_in_the_tree_is_ignored_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20, 2).unwrap();
        let name = put(&tier, 1, 100);
        let sub = tier.chunk_path(&name).parent().unwrap().to_path_buf();
        fs::write(sub.join("not-a-chunk"), b"x").unwrap();
        fs::write(tier.chunks.join("stray-file"), b"x").unwrap();
        // A directory where a chunk should be is dropped, not read.
        let (other, _) = chunk(2, 100);
        fs::create_dir_all(tier.chunk_path(&other)).unwrap();
        assert!(matches!(tier.read(&other), ReadOutcome::Dropped));
        assert!(!tier.chunk_path(&other).exists());
        // A FIFO: reading it must not block.
        let (fifo, _) = chunk(3, 100);
        let fifo_path = tier.chunk_path(&fifo);
        fs::create_dir_all(fifo_path.parent().unwrap()).unwrap();
        let c_path = std::ffi::CString::new(fifo_path.to_str().unwrap()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated string for the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        assert!(matches!(tier.read(&fifo), ReadOutcome::Dropped));
        assert!(!fifo_path.exists());
        // A symlink to a good copy is not followed.
        let (linked, linked_data) = chunk(4, 100);
        let outside = dir.path().join("outside");
        fs::write(&outside, &linked_data).unwrap();
        let link_path = tier.chunk_path(&linked);
        fs::create_dir_all(link_path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&outside, &link_path).unwrap();
        assert!(matches!(tier.read(&linked), ReadOutcome::Dropped));
        assert!(outside.exists() && fs::symlink_metadata(&link_path).is_err());
        // A huge sparse file is dropped without being read.
        let (huge, _) = chunk(5, 100);
        let huge_path = tier.chunk_path(&huge);
        fs::create_dir_all(huge_path.parent().unwrap()).unwrap();
        File::create(&huge_path).unwrap().set_len(1 << 40).unwrap();
        assert!(matches!(tier.read(&huge), ReadOutcome::Dropped));
        assert!(!huge_path.exists());
        // An upper-case name is not one the cache wrote: not counted.
        let upper = tier
            .chunk_path(&name)
            .with_file_name(name.to_hex().to_uppercase());
        fs::write(upper, b"x").unwrap();

        let guard = tier.lock_usage().unwrap();
        tier.scan_and_evict(&guard, None).unwrap();
        drop(guard);
        assert_eq!(tier.last_usage(), 104);
        assert!(matches!(tier.read(&name), ReadOutcome::Hit(_)));
    }
}
