//! Chunk files written around the page cache (`O_DIRECT`).
//!
//! A chunk a start fetches is held by the kernel already, decrypted, in
//! the page cache of the image it serves; a buffered write of its
//! ciphertext into the worker cache costs a second copy in memory, in
//! pages the kernel must find and fill first. On this project's test
//! machine (a Firecracker guest whose free pages go back to the host) that
//! was the largest single cost of a start with a cold worker cache. A
//! direct write goes from the process's buffer to the disk; a later read
//! brings the chunk into the page cache only if someone reads it.
//!
//! File systems without `O_DIRECT` (tmpfs) and lengths the device cannot
//! take directly get a buffered write.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of the buffer, the length and the offset: the largest
/// logical block size in use (4 KiB sectors).
const ALIGN: usize = 4096;

/// A reusable buffer aligned for `O_DIRECT`, one per thread: the writes
/// run on a blocking pool whose threads live long, and a fresh buffer per
/// chunk would cost the very page faults direct writes avoid.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
}

impl Aligned {
    const fn empty() -> Aligned {
        Aligned {
            ptr: std::ptr::NonNull::dangling(),
            cap: 0,
        }
    }

    fn layout(cap: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(cap, ALIGN).expect("ALIGN is a power of two")
    }

    /// A slice of `len` bytes (a multiple of ALIGN, non-zero).
    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.cap < len {
            self.release();
            // Zeroed, so the slice below is initialised bytes; it happens
            // once per thread and size, not per chunk.
            // SAFETY: len > 0, so the layout has a non-zero size.
            let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
            let Some(ptr) = std::ptr::NonNull::new(ptr) else {
                std::alloc::handle_alloc_error(Self::layout(len));
            };
            self.ptr = ptr;
            self.cap = len;
        }
        // SAFETY: ptr holds cap >= len initialised (zeroed, then written)
        // bytes, borrowed mutably through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), len) }
    }

    fn release(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) };
            // Not `*self = ..`: that would drop (and free) the old value.
            self.ptr = std::ptr::NonNull::dangling();
            self.cap = 0;
        }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    static BUFFER: RefCell<Aligned> = const { RefCell::new(Aligned::empty()) };
}

/// Cleared the first time the cache's file system refuses `O_DIRECT`.
#[derive(Debug)]
pub(crate) struct DirectWrites {
    supported: AtomicBool,
}

impl DirectWrites {
    pub fn new(enabled: bool) -> DirectWrites {
        DirectWrites {
            supported: AtomicBool::new(enabled),
        }
    }

    /// Creates `path` (which must not exist) with `mode` and writes `data`
    /// to it, directly when it can.
    pub fn create(&self, path: &Path, mode: u32, data: &[u8]) -> io::Result<File> {
        let direct = self.supported.load(Ordering::Relaxed)
            && !data.is_empty()
            && data.len().is_multiple_of(ALIGN);
        if direct {
            match write_direct(path, mode, data) {
                Ok(file) => return Ok(file),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The file system or the device refuses: the open (or
                    // the write) may have created the file all the same.
                    let _ = std::fs::remove_file(path);
                    self.supported.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        let mut file = open(path, mode, 0)?;
        file.write_all(data)?;
        Ok(file)
    }
}

fn write_direct(path: &Path, mode: u32, data: &[u8]) -> io::Result<File> {
    let mut file = open(path, mode, libc::O_DIRECT)?;
    BUFFER.with_borrow_mut(|b| {
        let buf = b.get(data.len());
        buf.copy_from_slice(data);
        file.write_all(buf)
    })?;
    Ok(file)
}

fn open(path: &Path, mode: u32, flags: i32) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(flags)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_direct_where_the_file_system_allows_it() {
        let dir = tempfile::tempdir().unwrap();
        let probe = open(&dir.path().join("probe"), 0o644, libc::O_DIRECT);
        let w = DirectWrites::new(true);
        drop(w.create(&dir.path().join("c"), 0o644, &[5; 8192]).unwrap());
        assert_eq!(w.supported.load(Ordering::Relaxed), probe.is_ok());
    }

    #[test]
    fn writes_what_it_is_given_directly_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [4096usize, 3 * 4096, 100, 4097].into_iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            for enabled in [true, false] {
                let w = DirectWrites::new(enabled);
                let path = dir.path().join(format!("{i}-{enabled}"));
                drop(w.create(&path, 0o644, &data).unwrap());
                assert_eq!(std::fs::read(&path).unwrap(), data, "{len} bytes");
                assert!(w.create(&path, 0o644, &data).is_err(), "create_new");
            }
        }
    }
}
