//! Warming a mounted image's page cache from a file trace.
//!
//! With a warm worker cache the agent answers at once, yet every page the
//! program misses is a round trip through the loop device (about 50 us on
//! the machines we measure), and a start misses thousands, one after
//! another. Reading those pages ahead of the program, on threads of our
//! own, turns its misses into page-cache hits and overlaps the round
//! trips with its work. Which pages, and in what order, comes from the
//! first start:
//!
//! * [`record`] takes the files the start opened (see
//!   [`crate::OpenWatch`]) and asks the kernel (mincore) which of their
//!   pages are in the page cache: what the start read, read-ahead
//!   included. mincore says nothing of order, so each run of pages is
//!   ranked by where it lies in the image (FIEMAP) and the rank the
//!   caller gives that place: the agent's chunk trace says when the start
//!   first read each chunk.
//! * [`warm`] reads those runs in that order.
//!
//! The image is untrusted and so is a trace (its tenant wrote it):
//! recording and warming open a path with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`, non-blocking, and read it only if it is a
//! regular file.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::rootfs::{no_openat2, openat2};
use kindling_chunk::{FileRange, FileTrace, MAX_TRACE_FILES, MAX_TRACE_PATH, MAX_TRACE_RANGES};

const PAGE: u64 = 4096;
/// Runs are cut into pieces this long (1 MiB), each ranked by where it
/// lies: a big library's pages are read in pieces, in the order the start
/// needed them, not all at once.
const PIECE_PAGES: u32 = 256;
/// What one read of a warming thread asks for.
const READ_BYTES: usize = 256 << 10;

/// Which pages of `files` (paths relative to `root`, a mounted image, in
/// the order the start opened them) are in the page cache, ordered by
/// `rank(offset in the image)` of each piece's first page, then by that
/// offset; pieces whose place is unknown go last.
///
/// Files are opened as [`warm`] opens them (inside the root, no symlinks,
/// regular files only); one that cannot be is left out, and so are files
/// past [`MAX_TRACE_RANGES`] pieces.
pub fn record(root: &Path, files: &[Vec<u8>], rank: &dyn Fn(u64) -> u64) -> io::Result<FileTrace> {
    let rootfd = open_root(root)?;
    let mut pieces: Vec<(u64, u64, FileRange)> = Vec::new();
    let mut trace = FileTrace::default();
    for path in files.iter().take(MAX_TRACE_FILES) {
        if path.is_empty() || path.len() > MAX_TRACE_PATH || path.contains(&0) {
            continue;
        }
        let file = match open_regular(rootfd.as_raw_fd(), path) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) if no_openat2(&e) => return Err(e),
            Err(_) => continue,
        };
        let runs = match resident_runs(&file) {
            Ok(runs) if !runs.is_empty() => runs,
            _ => continue,
        };
        if pieces.len() + runs.len() > MAX_TRACE_RANGES {
            break;
        }
        let index = trace.paths.len() as u32;
        trace.paths.push(path.clone());
        for (page, pages, offset) in runs {
            let range = FileRange {
                path: index,
                page,
                pages,
            };
            pieces.push((
                offset.map_or(u64::MAX, rank),
                offset.unwrap_or(u64::MAX),
                range,
            ));
        }
    }
    pieces.sort_by_key(|&(rank, offset, r)| (rank, offset, r.path, r.page));
    trace.ranges = pieces.into_iter().map(|(_, _, r)| r).collect();
    Ok(trace)
}

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)?
        .into())
}

/// A run of resident pages: (first page, pages, where the first page lies
/// in the filesystem's device, if FIEMAP says).
type Run = (u32, u32, Option<u64>);

/// The runs of `file`'s pages in the page cache, cut into pieces of at
/// most [`PIECE_PAGES`].
fn resident_runs(file: &File) -> io::Result<Vec<Run>> {
    // A trace counts pages in u32; bigger files are left out.
    let len = file.metadata()?.len();
    if len == 0 || len.div_ceil(PAGE) > u64::from(u32::MAX) {
        return Ok(Vec::new());
    }
    let resident = mincore(file, len)?;
    let extents = fiemap(file).unwrap_or_default();
    let mut runs = Vec::new();
    let mut page = 0usize;
    while page < resident.len() {
        if resident[page] & 1 == 0 {
            page += 1;
            continue;
        }
        let start = page;
        while page < resident.len()
            && resident[page] & 1 != 0
            && page - start < PIECE_PAGES as usize
        {
            page += 1;
        }
        let logical = start as u64 * PAGE;
        let physical = extents
            .iter()
            .find(|e| (e.logical..e.logical.saturating_add(e.length)).contains(&logical))
            .map(|e| e.physical.saturating_add(logical - e.logical));
        runs.push((start as u32, (page - start) as u32, physical));
    }
    Ok(runs)
}

/// One byte per page of `file` (`len` bytes long), bit 0 set if the page
/// is in the page cache. Maps the file without touching it.
fn mincore(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // SAFETY: a fresh shared read-only mapping of an open file; never
    // dereferenced, only passed to mincore and unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut vec = vec![0u8; len.div_ceil(PAGE as usize)];
    // SAFETY: addr..addr+len is the mapping made above; vec has one byte
    // per page of it.
    let r = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above, which nothing uses.
    unsafe { libc::munmap(addr, len) };
    if r < 0 {
        return Err(err);
    }
    Ok(vec)
}

/// A file's extent: `length` bytes at `logical` in the file lie at
/// `physical` in the device.
#[derive(Debug, Clone, Copy)]
struct Extent {
    logical: u64,
    physical: u64,
    length: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

const FIEMAP_EXTENTS: usize = 64;

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; FIEMAP_EXTENTS],
}

/// `_IOWR('f', 11, struct fiemap)`, the header being 32 bytes.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Data not at a block of its own (inline, packed, or not yet placed):
/// no physical offset to rank by.
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;

/// The file's extents, in file order (FS_IOC_FIEMAP).
fn fiemap(file: &File) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped_extents: 0,
            extent_count: FIEMAP_EXTENTS as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); FIEMAP_EXTENTS],
        };
        // SAFETY: map is a struct fiemap followed by room for
        // extent_count extents, as the ioctl expects.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map as *mut Fiemap) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (map.mapped_extents as usize).min(FIEMAP_EXTENTS);
        for e in &map.extents[..n] {
            if e.flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_NOT_ALIGNED) == 0 {
                out.push(Extent {
                    logical: e.logical,
                    physical: e.physical,
                    length: e.length,
                });
            }
        }
        match map.extents[..n].last() {
            Some(last) if last.flags & FIEMAP_EXTENT_LAST == 0 && n == FIEMAP_EXTENTS => {
                start = last.logical.saturating_add(last.length);
            }
            _ => return Ok(out),
        }
    }
}

/// What [`warm`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Warmed {
    /// Bytes read (pages already in the page cache count too: reading them
    /// costs a copy, not a round trip).
    pub bytes: u64,
    /// Ranges skipped: their file is gone, not a regular file, or
    /// unreadable.
    pub skipped: u64,
}

/// Reads `trace`'s ranges of the files under `root` into the page cache,
/// in order, on `threads` threads (range i on thread i mod `threads`, so
/// the threads move through the trace side by side). Returns when done or
/// soon after `stop` is set.
///
/// Errors other than a file's own (the root cannot be opened, openat2 is
/// missing) end warming: it is an optimisation and the program reads what
/// it needs anyway.
pub fn warm(
    root: &Path,
    trace: &FileTrace,
    threads: usize,
    stop: &AtomicBool,
) -> io::Result<Warmed> {
    let rootfd = open_root(root)?;
    let bytes = AtomicU64::new(0);
    let skipped = AtomicU64::new(0);
    let threads = threads.max(1);
    let failed = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (rootfd, bytes, skipped) = (&rootfd, &bytes, &skipped);
                s.spawn(move || -> io::Result<()> {
                    let mut buf = vec![0u8; READ_BYTES];
                    let mut open: Option<(u32, File)> = None;
                    for range in trace.ranges.iter().skip(t).step_by(threads) {
                        if stop.load(Relaxed) {
                            break;
                        }
                        if open.as_ref().is_none_or(|(p, _)| *p != range.path) {
                            let path = &trace.paths[range.path as usize];
                            open = match open_regular(rootfd.as_raw_fd(), path) {
                                Ok(Some(f)) => Some((range.path, f)),
                                Ok(None) => None,
                                Err(e) if no_openat2(&e) => return Err(e),
                                Err(_) => None,
                            };
                        }
                        let Some((_, file)) = &open else {
                            skipped.fetch_add(1, Relaxed);
                            continue;
                        };
                        let mut at = u64::from(range.page) * PAGE;
                        let end = (u64::from(range.page) + u64::from(range.pages)) * PAGE;
                        while at < end && !stop.load(Relaxed) {
                            let want = (end - at).min(READ_BYTES as u64) as usize;
                            match file.read_at(&mut buf[..want], at) {
                                Ok(0) => break,
                                Ok(n) => {
                                    at += n as u64;
                                    bytes.fetch_add(n as u64, Relaxed);
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => {
                                    skipped.fetch_add(1, Relaxed);
                                    break;
                                }
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .filter_map(|w| w.join().unwrap_or(Ok(())).err())
            .next()
    });
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Warmed {
        bytes: bytes.into_inner(),
        skipped: skipped.into_inner(),
    })
}

/// `path` under `root`, opened for reading if it is a regular file,
/// resolved inside the root without following any symlink; `None` if it is
/// missing or something else.
fn open_regular(root: RawFd, path: &[u8]) -> io::Result<Option<File>> {
    // O_NONBLOCK: a FIFO put where a file was must not hang us.
    let opened = openat2(
        root,
        path,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    );
    let file = match opened {
        Ok(fd) => File::from(fd),
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EACCES | libc::ENXIO) => {
                    Ok(None)
                }
                _ => Err(e),
            }
        }
    };
    if !file.metadata()?.is_file() {
        return Ok(None);
    }
    // Exactly the recorded pages: they already hold what the kernel read
    // ahead for the first start, and reading further ahead here fetches
    // chunks that start never needed.
    // SAFETY: fadvise on an fd we own; it only sets a flag on the file.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn record_then_warm_reads_what_was_read_in_rank_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for (name, pages) in [("a/b/one", 3), ("two", 600), ("three", 40)] {
            let mut f = File::create(root.join(name)).unwrap();
            std::io::Write::write_all(&mut f, &vec![1u8; pages * PAGE as usize]).unwrap();
            // Allocated, so FIEMAP knows where (ext4 delays allocation).
            f.sync_all().unwrap();
        }
        std::fs::write(root.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let files: Vec<Vec<u8>> = ["a/b/one", "two", "three", "empty", "link", "gone", "a"]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        // Ranked backwards: the trace must list pieces by falling offset.
        let trace = record(root, &files, &|offset| u64::MAX - offset).unwrap();
        let names: Vec<&[u8]> = trace.paths.iter().map(|p| p.as_slice()).collect();
        assert_eq!(names, [&b"a/b/one"[..], b"two", b"three"]);
        assert!(trace.ranges.iter().all(|r| r.pages <= PIECE_PAGES));
        let offsets: Vec<u64> = trace
            .ranges
            .iter()
            .map(|r| {
                let p = root.join(std::ffi::OsStr::from_bytes(&trace.paths[r.path as usize]));
                let logical = u64::from(r.page) * PAGE;
                fiemap(&File::open(p).unwrap())
                    .unwrap()
                    .iter()
                    .find(|e| (e.logical..e.logical + e.length).contains(&logical))
                    .map_or(0, |e| e.physical + logical - e.logical)
            })
            .collect();
        assert!(offsets.iter().all(|&o| o > 0), "FIEMAP placed every piece");
        assert!(offsets.windows(2).all(|w| w[0] > w[1]), "{offsets:?}");
        // "two" (600 pages, resident after writing) comes in 3 pieces.
        let pieces: Vec<u32> = trace
            .ranges
            .iter()
            .filter(|r| r.path == 1)
            .map(|r| r.pages)
            .collect();
        assert_eq!(pieces.iter().sum::<u32>(), 600);
        assert_eq!(pieces.len(), 3);
        // Sealing accepts what recording makes.
        let key = kindling_chunk::TenantKey::from_bytes([1; 32]);
        kindling_chunk::seal_file_trace(&trace, &key).unwrap();

        let made = FileTrace {
            paths: vec![b"two".to_vec(), b"a/b/one".to_vec(), b"gone".to_vec()],
            ranges: vec![
                FileRange {
                    path: 0,
                    page: 10,
                    pages: 100,
                },
                FileRange {
                    path: 1,
                    page: 0,
                    pages: 8,
                },
                FileRange {
                    path: 2,
                    page: 0,
                    pages: 1,
                },
            ],
        };
        let stop = AtomicBool::new(false);
        let w = warm(root, &made, 2, &stop).unwrap();
        // "one" is 3 pages long: the read of 8 stops at its end.
        assert_eq!(w.bytes, (100 + 3) * PAGE);
        assert_eq!(w.skipped, 1);
    }

    #[test]
    fn warming_stays_inside_the_root_and_skips_what_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, vec![7u8; 4096]).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("/", root.join("d/up")).unwrap();
        // SAFETY: a valid C string path.
        let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let paths: Vec<Vec<u8>> = [
            &b"abs"[..],
            b"rel",
            b"../outside",
            b"d/up/etc/passwd",
            b"fifo",
            b"d",
        ]
        .iter()
        .map(|p| p.to_vec())
        .collect();
        let ranges = (0..paths.len() as u32)
            .map(|path| FileRange {
                path,
                page: 0,
                pages: 1,
            })
            .collect();
        let trace = FileTrace { paths, ranges };
        let w = warm(&root, &trace, 3, &AtomicBool::new(false)).unwrap();
        assert_eq!(
            w,
            Warmed {
                bytes: 0,
                skipped: 6
            }
        );
    }

    /// Warming reads the recorded pages and no more: the kernel's own
    /// read-ahead would fetch chunks the first start never needed.
    #[test]
    fn warming_reads_exactly_the_recorded_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &vec![1u8; 512 * PAGE as usize]).unwrap();
        f.sync_all().unwrap();
        // SAFETY: fadvise on an open fd.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let before = mincore(&f, 512 * PAGE).unwrap();
        if before.iter().any(|p| p & 1 != 0) {
            eprintln!("skipped: this filesystem keeps pages DONTNEED should drop");
            return;
        }
        let trace = FileTrace {
            paths: vec![b"f".to_vec()],
            ranges: vec![
                // From the start of the file, where the kernel reads ahead most.
                FileRange {
                    path: 0,
                    page: 0,
                    pages: 10,
                },
                FileRange {
                    path: 0,
                    page: 100,
                    pages: 1,
                },
            ],
        };
        let w = warm(dir.path(), &trace, 1, &AtomicBool::new(false)).unwrap();
        assert_eq!(w.bytes, 11 * PAGE);
        let resident: Vec<usize> = mincore(&f, 512 * PAGE)
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, p)| *p & 1 != 0)
            .map(|(i, _)| i)
            .collect();
        let expected: Vec<usize> = (0..10).chain([100]).collect();
        assert_eq!(resident, expected);
    }

    #[test]
    fn a_stopped_warmer_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![1u8; 4096]).unwrap();
        let trace = FileTrace {
            paths: vec![b"f".to_vec()],
            ranges: vec![FileRange {
                path: 0,
                page: 0,
                pages: 1,
            }],
        };
        let w = warm(dir.path(), &trace, 2, &AtomicBool::new(true)).unwrap();
        assert_eq!(w.bytes, 0);
    }
}
