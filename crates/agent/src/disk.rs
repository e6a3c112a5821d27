//! The disk the kernel sees: the image, with the overlay's pages on top.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::error::AgentError;
use crate::overlay::{Overlay, PAGE_SIZE};
use crate::reader::ImageReader;

#[derive(Debug)]
pub struct Disk {
    reader: Arc<ImageReader>,
    /// `None`: a read-only disk.
    overlay: Option<Overlay>,
    /// Serialises writes: a partial-page write reads the page, merges and
    /// writes it back, and two of those on one page must not interleave.
    /// Writes are rare next to reads, so one lock is enough.
    write_lock: tokio::sync::Mutex<()>,
}

impl Disk {
    pub fn new(reader: impl Into<Arc<ImageReader>>, overlay: Option<Overlay>) -> Disk {
        let reader = reader.into();
        Disk {
            reader,
            overlay,
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn size(&self) -> u64 {
        self.reader.size()
    }

    pub fn read_only(&self) -> bool {
        self.overlay.is_none()
    }

    pub fn reader(&self) -> &ImageReader {
        &self.reader
    }

    pub fn stats(&self) -> &Arc<crate::Stats> {
        self.reader.stats()
    }

    /// Pages written by the container so far.
    pub fn overlay_pages(&self) -> u64 {
        self.overlay.as_ref().map_or(0, Overlay::pages)
    }

    /// Reads `len` bytes at `offset` (short only at the end of the disk).
    pub async fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, AgentError> {
        let out = self.reader.read(offset, len).await?;
        self.written_over(offset, out)
    }

    /// [`Disk::read`] if the image's chunks it needs are in memory now
    /// (see [`ImageReader::read_cached`]); `None` if one must be fetched.
    pub fn read_cached(&self, offset: u64, len: usize) -> Option<Result<Vec<u8>, AgentError>> {
        let out = self.reader.read_cached(offset, len)?;
        Some(self.written_over(offset, out))
    }

    /// `out`, the image's bytes at `offset`, with the overlay's pages on top.
    fn written_over(&self, offset: u64, mut out: Vec<u8>) -> Result<Vec<u8>, AgentError> {
        if out.is_empty() {
            return Ok(out);
        }
        let end = offset + out.len() as u64;
        let first = offset / PAGE_SIZE;
        let last = (end - 1) / PAGE_SIZE;
        if let Some(o) = self.overlay.as_ref().filter(|o| o.any(first, last)) {
            let mut page = vec![0u8; PAGE_SIZE as usize];
            for p in first..=last {
                if !o.has(p) {
                    continue;
                }
                o.read_page(p, &mut page)?;
                let ps = p * PAGE_SIZE;
                let from = offset.max(ps);
                let to = end.min(ps + PAGE_SIZE);
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&page[(from - ps) as usize..(to - ps) as usize]);
            }
        }
        self.stats().bytes_read.fetch_add(out.len() as u64, Relaxed);
        Ok(out)
    }

    /// Writes `data` at `offset`, into the overlay only.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), AgentError> {
        let overlay = self.overlay.as_ref().ok_or(AgentError::ReadOnly)?;
        let size = self.size();
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= size)
            .ok_or(AgentError::OutOfRange { size })?;
        if data.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock().await;
        let first = offset / PAGE_SIZE;
        let last = (end - 1) / PAGE_SIZE;
        let start = first * PAGE_SIZE;
        let stop = ((last + 1) * PAGE_SIZE).min(overlay.size().next_multiple_of(PAGE_SIZE));
        let mut buf = vec![0u8; (stop - start) as usize];
        // Edge pages only partly covered by the write keep their old bytes:
        // from the overlay if written before, else from the image.
        for p in [first, last] {
            let ps = p * PAGE_SIZE;
            let covered = offset <= ps && end >= ps + PAGE_SIZE;
            if covered {
                continue;
            }
            let at = (ps - start) as usize;
            let dst = &mut buf[at..at + PAGE_SIZE as usize];
            if overlay.has(p) {
                overlay.read_page(p, dst)?;
            } else {
                let old = self.reader.read(ps, PAGE_SIZE as usize).await?;
                dst[..old.len()].copy_from_slice(&old);
            }
        }
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        overlay.write_pages(first, &buf)?;
        self.stats()
            .bytes_written
            .fetch_add(data.len() as u64, Relaxed);
        Ok(())
    }
}
