//! Where file data goes inside a layer's data region.
//!
//! Rules (DESIGN.md section 1, "Within a layer"), all functions of the layer
//! alone so a layer's region is identical in every image that contains it:
//!
//! * each layer's region starts on a chunk boundary;
//! * a file with at least two chunks of stored data starts on a chunk
//!   boundary, so an unchanged large file keeps its chunks whatever changes
//!   before it; the small files after it share its last chunk (aligning
//!   files of one to two chunks too cost 4 points of padding on the corpus
//!   and saved no chunk between python-app v1 and v2);
//! * smaller files are packed back to back, block aligned, in tar order; the
//!   stream is cut (padded to a chunk boundary) after a file whose content
//!   hash falls under a threshold proportional to its size, giving segments
//!   of about `segment_target` bytes whose boundaries depend on content, not
//!   position: a changed file disturbs only its own segment;
//! * all-zero 4 KiB blocks are holes: they take no space;
//! * files a start is unlikely to read (`cold`) are placed by the same
//!   rules in a second stream, spilled to a temporary file and copied in
//!   after the rest of the layer, so the files a start reads sit together.

use std::fs::File;
use std::os::unix::fs::FileExt;

use kindling_ext4::{Extent, Output, BLOCK_SIZE};
use xxhash_rust::xxh3::Xxh3;

const BS: usize = BLOCK_SIZE as usize;
/// Output is gathered into runs of this size before each write.
const WRITE_BUFFER: usize = 4 << 20;
/// Runs at least this long are written without going through the buffer.
const DIRECT_WRITE: usize = 64 << 10;
static ZERO_BLOCK: [u8; BS] = [0; BS];
/// Files with at least this many chunks of data start on a chunk boundary.
const BIG_FILE_CHUNKS: u64 = 2;

/// A piece of a file's logical contents, as a sparse map describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub offset: u64,
    pub length: u64,
}

/// Where a placer writes: the image, or its own spill file.
enum Target<'f> {
    Image(&'f dyn Output),
    Spill(File),
}

impl Target<'_> {
    fn output(&self) -> &dyn Output {
        match self {
            Target::Image(out) => *out,
            Target::Spill(file) => file,
        }
    }
}

pub(crate) struct Placer<'f> {
    file: Target<'f>,
    /// First block of the first layer region: the start of what `settled`
    /// reports.
    data_start: u64,
    chunk_blocks: u64,
    segment_target: u64,
    max_blocks: u64,
    /// Next free block.
    cursor: u64,
    /// Bytes placed since the last cut of the small-file stream.
    segment_bytes: u64,
    /// Data blocks written so far (not counting padding and holes).
    written: u64,
    pending: Vec<u8>,
    pending_block: u64,
    /// Read buffer reused across files (a fresh 1 MiB buffer per file cost
    /// a page-faulting mmap each time).
    read_buf: Vec<u8>,
    /// The layer's cold files, placed from block 0 of a spill file; their
    /// extents are shifted when [`Placer::splice_deferred`] copies them in.
    deferred: Option<Box<Placer<'f>>>,
}

/// The placer ran past the image size limit.
#[derive(Debug)]
pub(crate) enum PlaceError {
    Io(std::io::Error),
    /// The spill of cold files failed.
    Spill(std::io::Error),
    Read(crate::error::LayerError),
    TooLarge,
}

impl std::fmt::Debug for Placer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placer")
            .field("cursor", &self.cursor)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl<'f> Placer<'f> {
    pub fn new(
        file: &'f dyn Output,
        first_block: u64,
        chunk_size: u64,
        segment_target: u64,
        max_blocks: u64,
    ) -> Self {
        Self::with_target(
            Target::Image(file),
            first_block,
            chunk_size,
            segment_target,
            max_blocks,
        )
    }

    fn with_target(
        file: Target<'f>,
        first_block: u64,
        chunk_size: u64,
        segment_target: u64,
        max_blocks: u64,
    ) -> Self {
        Placer {
            file,
            data_start: first_block,
            chunk_blocks: chunk_size / BLOCK_SIZE,
            segment_target,
            max_blocks,
            cursor: first_block,
            segment_bytes: 0,
            written: 0,
            pending: Vec::with_capacity(WRITE_BUFFER),
            pending_block: first_block,
            read_buf: vec![0u8; 1 << 20],
            deferred: None,
        }
    }

    /// The placer for this layer's cold files. Extents it returns are
    /// relative to the spill, until [`Placer::splice_deferred`].
    pub fn deferred(&mut self) -> Result<&mut Placer<'f>, PlaceError> {
        if self.deferred.is_none() {
            let spill = tempfile::tempfile().map_err(PlaceError::Spill)?;
            self.deferred = Some(Box::new(Placer::with_target(
                Target::Spill(spill),
                0,
                self.chunk_blocks * BLOCK_SIZE,
                self.segment_target,
                self.max_blocks,
            )));
        }
        Ok(self.deferred.as_mut().expect("just set"))
    }

    /// Copies the layer's cold files in at the next chunk boundary and
    /// returns the block their extents must be shifted by (None if the
    /// layer had none). The spill's padding is all-zero blocks, which stay
    /// holes: no file block is all zero.
    pub fn splice_deferred(&mut self) -> Result<Option<u64>, PlaceError> {
        let Some(mut spill) = self.deferred.take() else {
            return Ok(None);
        };
        spill.flush().map_err(PlaceError::Spill)?;
        let Target::Spill(file) = &spill.file else {
            unreachable!("a deferred placer writes to its spill")
        };
        self.align();
        self.flush().map_err(PlaceError::Io)?;
        let base = self.cursor;
        let len = spill.cursor;
        if base + len > self.max_blocks {
            return Err(PlaceError::TooLarge);
        }
        // Padding at the spill's end was never written: the file stops
        // at its last data block.
        let stored = file.metadata().map_err(PlaceError::Spill)?.len() / BLOCK_SIZE;
        let mut buf = vec![0u8; WRITE_BUFFER];
        let mut at = 0;
        while at < stored.min(len) {
            let n = ((stored.min(len) - at) as usize * BS).min(buf.len());
            file.read_exact_at(&mut buf[..n], at * BLOCK_SIZE)
                .map_err(PlaceError::Spill)?;
            let is_data = |i: usize| buf[i * BS..(i + 1) * BS] != ZERO_BLOCK[..];
            let (blocks, mut i) = (n / BS, 0);
            while i < blocks {
                if !is_data(i) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < blocks && is_data(i) {
                    i += 1;
                }
                let offset = (base + at + start as u64) * BLOCK_SIZE;
                self.file
                    .output()
                    .write_image_at(&buf[start * BS..i * BS], offset)
                    .map_err(PlaceError::Io)?;
            }
            at += (n / BS) as u64;
        }
        self.cursor = base + len;
        self.written += spill.written;
        self.settle().map_err(PlaceError::Io)?;
        Ok(Some(base))
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Pads to the next chunk boundary.
    pub fn align(&mut self) {
        self.cursor = self.cursor.next_multiple_of(self.chunk_blocks);
        self.segment_bytes = 0;
    }

    /// Writes whole blocks at the cursor; returns where they went. Small
    /// runs are gathered in `pending`; large ones are written straight from
    /// the caller's buffer, saving a copy.
    fn emit(&mut self, blocks: &[u8]) -> Result<u64, PlaceError> {
        let n = (blocks.len() / BS) as u64;
        if self.cursor + n > self.max_blocks {
            return Err(PlaceError::TooLarge);
        }
        let at = self.cursor;
        if blocks.len() >= DIRECT_WRITE {
            self.flush().map_err(PlaceError::Io)?;
            self.file
                .output()
                .write_image_at(blocks, at * BLOCK_SIZE)
                .map_err(PlaceError::Io)?;
            self.cursor += n;
            self.written += n;
            self.settle().map_err(PlaceError::Io)?;
            return Ok(at);
        } else {
            let contiguous = self.pending_block + (self.pending.len() / BS) as u64 == at;
            if !contiguous || self.pending.len() + blocks.len() > WRITE_BUFFER {
                self.flush().map_err(PlaceError::Io)?;
                self.pending_block = at;
            }
            self.pending.extend_from_slice(blocks);
        }
        self.cursor += n;
        self.written += n;
        Ok(at)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file
                .output()
                .write_image_at(&self.pending, self.pending_block * BLOCK_SIZE)?;
            self.pending.clear();
        }
        self.settle()
    }

    /// Everything below the cursor is written (nothing is pending) and the
    /// cursor only moves forward, so those bytes are final.
    fn settle(&self) -> std::io::Result<()> {
        self.file
            .output()
            .settled(self.data_start * BLOCK_SIZE..self.cursor * BLOCK_SIZE)
    }

    /// Places one regular file whose stored data (`stored` bytes, laid out
    /// at `segments` of the logical file) is read through `read`.
    pub fn place_file(
        &mut self,
        stored: u64,
        segments: &[Segment],
        read: impl FnMut(&mut [u8]) -> Result<usize, crate::error::LayerError>,
    ) -> Result<Vec<Extent>, PlaceError> {
        let spill = matches!(self.file, Target::Spill(_));
        self.place_data(stored, segments, read)
            .map_err(|e| match e {
                // A deferred placer writes to its spill, not the image.
                PlaceError::Io(io) if spill => PlaceError::Spill(io),
                e => e,
            })
    }

    fn place_data(
        &mut self,
        stored: u64,
        segments: &[Segment],
        mut read: impl FnMut(&mut [u8]) -> Result<usize, crate::error::LayerError>,
    ) -> Result<Vec<Extent>, PlaceError> {
        let big = stored >= BIG_FILE_CHUNKS * self.chunk_blocks * BLOCK_SIZE;
        if big {
            self.align();
        }
        let mut out = Assembler {
            extents: Vec::new(),
            block: vec![0; BS],
            fill: 0,
            index: 0,
            hasher: None,
        };
        if !big {
            out.hasher = Some(Xxh3::new());
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let r = self.place_segments(&mut out, &mut buf, segments, &mut read);
        self.read_buf = buf;
        r?;
        out.finish(self)?;
        let blocks: u64 = out.extents.iter().map(|e| u64::from(e.len)).sum();
        if big {
            // No padding after a large file: the small files that follow
            // share its last chunk. Only that chunk and the next segment
            // change if the large file's length does.
            self.segment_bytes = 0;
        } else if blocks > 0 {
            self.segment_bytes += blocks * BLOCK_SIZE;
            let h = out.hasher.map(|h| h.digest()).unwrap_or(0);
            // Cut with probability min(1, bytes / target): segments average
            // `segment_target` bytes whatever the file sizes are.
            let cut = u128::from(h) * u128::from(self.segment_target)
                < u128::from(blocks * BLOCK_SIZE) << 64;
            if cut || self.segment_bytes >= 4 * self.segment_target {
                self.align();
            }
        }
        Ok(out.extents)
    }

    fn place_segments(
        &mut self,
        out: &mut Assembler,
        buf: &mut [u8],
        segments: &[Segment],
        read: &mut impl FnMut(&mut [u8]) -> Result<usize, crate::error::LayerError>,
    ) -> Result<(), PlaceError> {
        for seg in segments {
            let mut off = seg.offset;
            let mut left = seg.length;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = read(&mut buf[..want]).map_err(PlaceError::Read)?;
                if n == 0 {
                    return Err(PlaceError::Read(crate::error::LayerError::Io(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    )));
                }
                out.put(self, off, &buf[..n])?;
                off += n as u64;
                left -= n as u64;
            }
        }
        Ok(())
    }
}

/// Gathers a file's bytes into logical blocks and hands the non-zero ones
/// to the placer.
struct Assembler {
    extents: Vec<Extent>,
    block: Vec<u8>,
    fill: usize,
    /// Logical block number of `block`.
    index: u64,
    hasher: Option<Xxh3>,
}

impl Assembler {
    fn put(&mut self, p: &mut Placer<'_>, offset: u64, mut data: &[u8]) -> Result<(), PlaceError> {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        let mut offset = offset;
        while !data.is_empty() {
            let bi = offset / BLOCK_SIZE;
            let within = (offset % BLOCK_SIZE) as usize;
            if bi != self.index || (self.fill > within) {
                self.flush_block(p)?;
                self.index = bi;
            }
            if within == 0 && self.fill == 0 && data.len() >= BS {
                // Whole blocks straight from the input.
                let whole = data.len() / BS * BS;
                let mut run_start = 0;
                for (i, b) in data[..whole].chunks_exact(BS).enumerate() {
                    if b == &ZERO_BLOCK[..] {
                        self.run_out(p, bi + run_start as u64, &data[run_start * BS..i * BS])?;
                        run_start = i + 1;
                    }
                }
                self.run_out(p, bi + run_start as u64, &data[run_start * BS..whole])?;
                data = &data[whole..];
                offset += whole as u64;
                self.index = offset / BLOCK_SIZE;
                continue;
            }
            let n = (BS - within).min(data.len());
            if within > self.fill {
                self.block[self.fill..within].fill(0);
            }
            self.block[within..within + n].copy_from_slice(&data[..n]);
            self.fill = within + n;
            data = &data[n..];
            offset += n as u64;
            if self.fill == BS {
                self.flush_block(p)?;
                self.index = offset / BLOCK_SIZE;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self, p: &mut Placer<'_>) -> Result<(), PlaceError> {
        if self.fill == 0 {
            return Ok(());
        }
        self.block[self.fill..].fill(0);
        let block = std::mem::take(&mut self.block);
        let r = self.block_out(p, self.index, &block);
        self.block = block;
        self.fill = 0;
        r
    }

    fn block_out(
        &mut self,
        p: &mut Placer<'_>,
        logical: u64,
        data: &[u8],
    ) -> Result<(), PlaceError> {
        if data == &ZERO_BLOCK[..] {
            return Ok(());
        }
        self.run_out(p, logical, data)
    }

    /// Places a run of non-zero blocks starting at logical block `logical`.
    fn run_out(&mut self, p: &mut Placer<'_>, logical: u64, data: &[u8]) -> Result<(), PlaceError> {
        if data.is_empty() {
            return Ok(());
        }
        let len = (data.len() / BS) as u32;
        let logical = u32::try_from(logical)
            .ok()
            .filter(|l| l.checked_add(len).is_some())
            .ok_or(PlaceError::TooLarge)?;
        let physical = p.emit(data)?;
        match self.extents.last_mut() {
            Some(e)
                if e.logical + e.len == logical && e.physical + u64::from(e.len) == physical =>
            {
                e.len += len
            }
            _ => self.extents.push(Extent {
                logical,
                physical,
                len,
            }),
        }
        Ok(())
    }

    fn finish(&mut self, p: &mut Placer<'_>) -> Result<(), PlaceError> {
        self.flush_block(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    fn place(p: &mut Placer<'_>, data: &[u8], segments: &[Segment]) -> Vec<Extent> {
        let mut at = 0;
        p.place_file(data.len() as u64, segments, |buf| {
            let n = buf.len().min(data.len() - at).min(3000); // odd read sizes
            buf[..n].copy_from_slice(&data[at..at + n]);
            at += n;
            Ok(n)
        })
        .unwrap()
    }

    /// The one segment of a file without holes.
    fn whole(data: &[u8]) -> [Segment; 1] {
        [Segment {
            offset: 0,
            length: data.len() as u64,
        }]
    }

    fn read_back(file: &File, size: u64, extents: &[Extent]) -> Vec<u8> {
        let mut out = vec![0u8; size as usize];
        for e in extents {
            let mut buf = vec![0u8; e.len as usize * BS];
            file.read_exact_at(&mut buf, e.physical * BLOCK_SIZE)
                .unwrap();
            let start = u64::from(e.logical) * BLOCK_SIZE;
            let end = (start + buf.len() as u64).min(size);
            out[start as usize..end as usize].copy_from_slice(&buf[..(end - start) as usize]);
        }
        out
    }

    #[test]
    fn dense_and_sparse_files_round_trip() {
        let file = tempfile::tempfile().unwrap();
        let mut p = Placer::new(&file, 128, 512 * 1024, 2 << 20, 1 << 30);
        let mut dense: Vec<u8> = (0..1_100_000u32).map(|i| (i % 251) as u8).collect();
        dense[8192..16384].fill(0); // two hole blocks
        let e = place(
            &mut p,
            &dense,
            &[Segment {
                offset: 0,
                length: dense.len() as u64,
            }],
        );
        assert_eq!(e[0].physical, 128, "a big file starts on a chunk boundary");
        // Sparse: 100 bytes at 5000, 4096 at 1 MiB + 7.
        let stored: Vec<u8> = (0..4196u32).map(|i| (i % 7 + 1) as u8).collect();
        let segs = [
            Segment {
                offset: 5000,
                length: 100,
            },
            Segment {
                offset: (1 << 20) + 7,
                length: 4096,
            },
        ];
        let e2 = place(&mut p, &stored, &segs);
        p.flush().unwrap();
        assert_eq!(read_back(&file, dense.len() as u64, &e), dense);
        let mut want = vec![0u8; (1 << 20) + 7 + 4096];
        want[5000..5100].copy_from_slice(&stored[..100]);
        want[(1 << 20) + 7..].copy_from_slice(&stored[100..]);
        assert_eq!(read_back(&file, want.len() as u64, &e2), want);
        assert_eq!(e2.iter().map(|e| e.len).sum::<u32>(), 3);
    }

    #[test]
    fn deferred_files_follow_the_rest_and_keep_their_bytes() {
        let file = tempfile::tempfile().unwrap();
        let cs = 512 * 1024;
        let mut p = Placer::new(&file, 128, cs, 64 << 20, 1 << 30);
        let hot1: Vec<u8> = (0..20_000u32).map(|i| (i % 13 + 1) as u8).collect();
        let cold: Vec<u8> = (0..1_300_000u32).map(|i| (i % 11 + 1) as u8).collect();
        let hot2: Vec<u8> = (0..9_000u32).map(|i| (i % 5 + 1) as u8).collect();
        let e1 = place(&mut p, &hot1, &whole(&hot1));
        let mut ec = place(p.deferred().unwrap(), &cold, &whole(&cold));
        let e2 = place(&mut p, &hot2, &whole(&hot2));
        let end_of_hot = e2[0].physical + u64::from(e2[0].len);
        assert_eq!(
            e1[0].physical + u64::from(e1[0].len),
            e2[0].physical,
            "the cold file does not sit between the hot ones"
        );
        let base = p
            .splice_deferred()
            .unwrap()
            .expect("a cold file was deferred");
        assert_eq!(
            base % (cs / BLOCK_SIZE),
            0,
            "the cold files start on a chunk"
        );
        assert!(base >= end_of_hot);
        for e in &mut ec {
            e.physical += base;
        }
        assert_eq!(p.splice_deferred().unwrap(), None, "the spill is used once");
        p.flush().unwrap();
        assert_eq!(read_back(&file, hot1.len() as u64, &e1), hot1);
        assert_eq!(read_back(&file, cold.len() as u64, &ec), cold);
        assert_eq!(read_back(&file, hot2.len() as u64, &e2), hot2);
        assert_eq!(p.written(), 5 + 318 + 3, "blocks of data written");
    }

    #[test]
    fn a_spill_ending_in_padding_splices() {
        let file = tempfile::tempfile().unwrap();
        // A 4 KiB segment target: every file ends its segment, so the
        // spill's cursor ends past its last written block.
        let mut p = Placer::new(&file, 128, 512 * 1024, 4096, 1 << 30);
        let cold: Vec<u8> = (0..20_000u32).map(|i| (i % 11 + 1) as u8).collect();
        let mut e = place(p.deferred().unwrap(), &cold, &whole(&cold));
        let base = p.splice_deferred().unwrap().unwrap();
        assert_eq!(p.cursor(), base + 128, "the spill's padding is kept");
        e[0].physical += base;
        p.flush().unwrap();
        assert_eq!(read_back(&file, cold.len() as u64, &e), cold);
    }
}
