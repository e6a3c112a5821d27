//! The private copy-on-write overlay: written pages of the disk, in a
//! sparse local file, with a bitmap saying which pages it holds.
//!
//! The file is created already unlinked (`O_TMPFILE`, falling back to
//! create-then-unlink), so it disappears with the agent whatever way the
//! agent ends. It only ever holds whole pages: a partial write of a page
//! not yet in the overlay first copies the page from the image (the
//! caller does that, see [`crate::Disk`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::RwLock;

/// Overlay page size: the ext4 block size and the kernel's page.
pub const PAGE_SIZE: u64 = 4096;

#[derive(Debug)]
pub struct Overlay {
    file: File,
    bits: RwLock<Vec<u64>>,
    size: u64,
}

impl Overlay {
    /// A new, empty overlay for a disk of `size` bytes, in directory `dir`.
    pub fn new(dir: &Path, size: u64) -> std::io::Result<Overlay> {
        let file = tempfile::tempfile_in(dir)?;
        file.set_len(size)?;
        let pages = size.div_ceil(PAGE_SIZE);
        Ok(Overlay {
            file,
            bits: RwLock::new(vec![0; pages.div_ceil(64) as usize]),
            size,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn bits(&self) -> std::sync::RwLockReadGuard<'_, Vec<u64>> {
        self.bits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether page `page` has been written.
    pub fn has(&self, page: u64) -> bool {
        let b = self.bits();
        b.get((page / 64) as usize)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Whether any page in `[first, last]` has been written.
    pub fn any(&self, first: u64, last: u64) -> bool {
        (first..=last).any(|p| self.has(p))
    }

    /// Pages written so far.
    pub fn pages(&self) -> u64 {
        self.bits().iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Writes whole pages starting at page `first`; marks them present once
    /// the data is in the file.
    pub fn write_pages(&self, first: u64, data: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(data.len() as u64 % PAGE_SIZE, 0);
        self.file.write_all_at(data, first * PAGE_SIZE)?;
        let n = data.len() as u64 / PAGE_SIZE;
        let mut b = self.bits.write().unwrap_or_else(|p| p.into_inner());
        for p in first..first + n {
            if let Some(w) = b.get_mut((p / 64) as usize) {
                *w |= 1 << (p % 64);
            }
        }
        Ok(())
    }

    /// Reads page `page` (which must be present) into `out`.
    pub fn read_page(&self, page: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(out, page * PAGE_SIZE)
    }
}
