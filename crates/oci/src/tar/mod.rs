//! A streaming tar reader for layer archives.
//!
//! Layers arrive as a decompressing, digest-verifying byte stream, so the
//! reader needs nothing but [`Read`]: it never seeks, skips unread data by
//! reading it into one reusable buffer, and passes [`TarReader::read_data`]
//! calls straight through to the inner reader (no per-byte work on file
//! contents). It is our own rather than the `tar` crate so that every
//! format detail a flattener depends on is explicit and tested here: PAX
//! (including `SCHILY.xattr` / `LIBARCHIVE.xattr`), GNU long names, old GNU
//! and PAX sparse files, base-256 numbers, and hard limits on everything an
//! archive can make us allocate.
//!
//! Entries are reported raw: paths are not normalized and may be absolute or
//! contain `..`; deciding what is safe is the consumer's job.
//!
//! The reader does not buffer; give it a buffered stream (layer streams from
//! [`Image::open_layer`](crate::source::Image::open_layer) are).

mod header;
mod pax;
mod sparse;

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use crate::error::TarError;
use header::{Format, HeaderBlock, BLOCK};
use pax::PaxHeader;
use sparse::{MapParser, PaxSparse};

/// Largest PAX header, GNU long name or GNU long link payload accepted.
/// Real ones are a few KiB; the cap bounds what a hostile archive can make
/// us allocate per entry.
pub const MAX_EXTENSION_SIZE: u64 = 8 << 20;

/// Most segments accepted in one sparse map (16 MiB of segment structs).
pub const MAX_SPARSE_SEGMENTS: usize = 1 << 20;

/// Size of the buffer used to read and discard skipped data.
const SKIP_BUFFER_SIZE: usize = 64 * 1024;

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// '0', '\0', '7', 'S', and unknown typeflags (POSIX: read as regular).
    Regular,
    /// '1': `link_target` names an earlier entry.
    HardLink,
    /// '2': `link_target` is the symlink's content.
    Symlink,
    /// '3'
    CharDevice,
    /// '4'
    BlockDevice,
    /// '5', GNU dumpdir 'D', or '\0' with a trailing '/' (pre-POSIX).
    Directory,
    /// '6'
    Fifo,
}

/// Seconds and nanoseconds since the Unix epoch; `nanos` is always in
/// `0..1_000_000_000`, so -1.5 s is `{ secs: -2, nanos: 500_000_000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Whole seconds (floor).
    pub secs: i64,
    /// Nanoseconds added to `secs`.
    pub nanos: u32,
}

/// A run of data in a sparse file; everything between segments is a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SparseSegment {
    /// Offset in the logical file.
    pub offset: u64,
    /// Number of data bytes.
    pub length: u64,
}

/// One archive member, with all extension headers applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Raw path bytes (PAX `path`, GNU long name, or ustar prefix + name;
    /// `GNU.sparse.name` for PAX sparse files). Not normalized.
    pub path: Vec<u8>,
    /// Hard link or symlink target (PAX `linkpath`, GNU long link, or the
    /// header's linkname); empty for other kinds.
    pub link_target: Vec<u8>,
    /// The kind of file.
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    /// Owner (PAX `uid` overrides the header).
    pub uid: u64,
    /// Group (PAX `gid` overrides the header).
    pub gid: u64,
    /// Modification time (PAX `mtime` overrides the header).
    pub mtime: Timestamp,
    /// Device major number, for character and block devices (else 0).
    pub dev_major: u32,
    /// Device minor number, for character and block devices (else 0).
    pub dev_minor: u32,
    /// Extended attributes with full names (`user.x`,
    /// `security.capability`, ...), in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Logical file size (the real size for sparse files; 0 for kinds that
    /// carry no data).
    pub size: u64,
    /// Total number of bytes [`TarReader::read_data`] returns.
    pub stored_size: u64,
    /// For sparse files, the data segments: sorted, non-overlapping, inside
    /// `size`, none empty; the stored data is their contents in order.
    pub sparse: Option<Vec<SparseSegment>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    End,
    Failed,
}

/// Extension headers seen since the last entry.
#[derive(Default)]
struct Pending {
    pax: Option<PaxHeader>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// The first pending extension header, for "not followed by an entry".
    first: Option<(&'static str, u64)>,
}

impl Pending {
    fn note(&mut self, what: &'static str, offset: u64) {
        self.first.get_or_insert((what, offset));
    }
}

/// Reads tar entries one after the other from a [`Read`]er.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kindling_oci::tar::TarReader;
/// # let archive: &[u8] = &[0u8; 1024];
/// let mut tar = TarReader::new(archive);
/// while let Some(entry) = tar.next_entry()? {
///     let mut data = Vec::new();
///     std::io::copy(&mut tar.data(), &mut data)?;
///     println!("{} {} bytes", String::from_utf8_lossy(&entry.path), data.len());
/// }
/// tar.drain()?;
/// # Ok(())
/// # }
/// ```
pub struct TarReader<R: Read> {
    inner: R,
    /// Bytes consumed from `inner`.
    pos: u64,
    state: State,
    /// Bytes of the current entry that `read_data` may still return.
    data_left: u64,
    /// Bytes of the current entry's block-padded region still unread
    /// (`data_left` included).
    region_left: u64,
    skip_buf: Vec<u8>,
}

impl<R: Read> TarReader<R> {
    /// A reader positioned at the first header.
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            state: State::Reading,
            data_left: 0,
            region_left: 0,
            skip_buf: Vec::new(),
        }
    }

    /// Next entry header; skips any unread data of the previous entry.
    /// `None` at the end-of-archive marker (two zero blocks, or one zero
    /// block followed by EOF) or at EOF exactly at a header boundary.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        match self.state {
            State::Reading => {}
            State::End => return Ok(None),
            State::Failed => return Err(TarError::Poisoned),
        }
        let result = self.advance();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Reads the current entry's stored data (for sparse files: the stored
    /// segments concatenated). Returns 0 at the end of the entry's data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        match self.state {
            State::Reading => {}
            State::End => return Ok(0),
            State::Failed => return Err(TarError::Poisoned),
        }
        if self.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
        match read_retrying(&mut self.inner, &mut buf[..want]) {
            Ok(0) => {
                self.state = State::Failed;
                Err(TarError::Truncated {
                    context: "entry data",
                    offset: self.pos,
                })
            }
            Ok(n) => {
                self.pos += n as u64;
                self.data_left -= n as u64;
                self.region_left -= n as u64;
                Ok(n)
            }
            Err(source) => {
                self.state = State::Failed;
                Err(TarError::Io {
                    offset: self.pos,
                    source,
                })
            }
        }
    }

    /// The current entry's data as an [`io::Read`] (errors converted with
    /// `From<TarError> for io::Error`), e.g. for `io::copy`.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { tar: self }
    }

    /// Reads the underlying stream to EOF and returns the number of bytes
    /// that were left, so that a verifying reader below sees every byte.
    /// Meant for after the end marker; called earlier it discards the rest
    /// of the archive. Afterwards `next_entry` returns `None`.
    pub fn drain(&mut self) -> Result<u64, TarError> {
        if self.state == State::Failed {
            return Err(TarError::Poisoned);
        }
        let mut drained = 0u64;
        let buf = skip_buffer(&mut self.skip_buf);
        loop {
            match read_retrying(&mut self.inner, buf) {
                Ok(0) => break,
                Ok(n) => {
                    drained += n as u64;
                    self.pos += n as u64;
                }
                Err(source) => {
                    self.state = State::Failed;
                    return Err(TarError::Io {
                        offset: self.pos,
                        source,
                    });
                }
            }
        }
        self.state = State::End;
        self.data_left = 0;
        self.region_left = 0;
        Ok(drained)
    }

    /// Bytes consumed from the inner reader so far. Right after
    /// `next_entry` returns an entry this is the offset of its data (for a
    /// PAX 1.0 sparse entry, of the data after the map).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn advance(&mut self) -> Result<Option<Entry>, TarError> {
        self.skip(self.region_left, "entry data")?;
        self.region_left = 0;
        self.data_left = 0;
        let mut pending = Pending::default();
        loop {
            let offset = self.pos;
            let Some(block) = self.read_block("header")? else {
                return self.end(pending);
            };
            if block.iter().all(|&b| b == 0) {
                self.second_zero_block()?;
                return self.end(pending);
            }
            let header = HeaderBlock::new(&block, offset);
            header.verify_checksum()?;
            match header.typeflag() {
                // 'X' is the Solaris spelling of the same header.
                b'x' | b'X' => {
                    let data = self.read_extension(&header, "pax header")?;
                    let pax = PaxHeader::parse(&data)
                        .map_err(|reason| TarError::InvalidPax { offset, reason })?;
                    pending.pax = Some(pax);
                    pending.note("pax", offset);
                }
                b'g' => {
                    // Global headers apply to later entries in principle;
                    // layer tars do not use them for anything we read.
                    let data = self.read_extension(&header, "pax global header")?;
                    pax::for_each_record(&data, |_, _| Ok(()))
                        .map_err(|reason| TarError::InvalidPax { offset, reason })?;
                }
                b'L' => {
                    let data = self.read_extension(&header, "gnu long name")?;
                    pending.long_name = Some(header::cstr(&data).to_vec());
                    pending.note("gnu long name", offset);
                }
                b'K' => {
                    let data = self.read_extension(&header, "gnu long link")?;
                    pending.long_link = Some(header::cstr(&data).to_vec());
                    pending.note("gnu long link", offset);
                }
                b'V' => {
                    // Volume label: not a file.
                    let region = padded(header.size()?, offset)?;
                    self.skip(region, "volume label")?;
                }
                b'M' => {
                    return Err(TarError::Unsupported {
                        typeflag: b'M',
                        what: "gnu multi-volume continuation",
                        offset,
                    })
                }
                b'N' => {
                    return Err(TarError::Unsupported {
                        typeflag: b'N',
                        what: "old gnu long name",
                        offset,
                    })
                }
                _ => return self.entry(&header, pending).map(Some),
            }
        }
    }

    fn end(&mut self, pending: Pending) -> Result<Option<Entry>, TarError> {
        if let Some((what, offset)) = pending.first {
            return Err(TarError::DanglingExtension { what, offset });
        }
        self.state = State::End;
        Ok(None)
    }

    /// Builds the entry for a file header and sets up its data region.
    fn entry(&mut self, header: &HeaderBlock<'_>, pending: Pending) -> Result<Entry, TarError> {
        let offset = self.pos - BLOCK as u64;
        let typeflag = header.typeflag();
        let mut path = match pending.long_name {
            Some(name) => name,
            None => header.name(),
        };
        let mut link_target = match pending.long_link {
            Some(link) => link,
            None => header.linkname(),
        };
        let mut size = header.size()?;
        let mut uid = header.uid()?;
        let mut gid = header.gid()?;
        let mut mtime = Timestamp {
            secs: header.mtime()?,
            nanos: 0,
        };
        let mode = header.mode()?;
        let mut xattrs = Vec::new();
        let has_pax = pending.pax.is_some();
        let mut pax_sparse = None;
        let mut pax_dev = (None, None);
        if let Some(mut pax) = pending.pax {
            if let Some(p) = pax.path {
                path = p;
            }
            if let Some(l) = pax.linkpath {
                link_target = l;
            }
            size = pax.size.unwrap_or(size);
            uid = pax.uid.unwrap_or(uid);
            gid = pax.gid.unwrap_or(gid);
            mtime = pax.mtime.unwrap_or(mtime);
            pax_dev = (pax.dev_major, pax.dev_minor);
            xattrs = pax.xattrs;
            pax_sparse = pax
                .sparse
                .resolve()
                .map_err(|reason| TarError::InvalidSparse { offset, reason })?
                .map(|s| (s, pax.sparse.name.take()));
        }
        let kind = match typeflag {
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' | b'D' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'\0' if path.ends_with(b"/") => EntryKind::Directory,
            _ => EntryKind::Regular,
        };
        let (dev_major, dev_minor) = match kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => (
                pax_dev.0.map_or_else(|| header.dev_major(), Ok)?,
                pax_dev.1.map_or_else(|| header.dev_minor(), Ok)?,
            ),
            _ => (0, 0),
        };
        if !matches!(kind, EntryKind::HardLink | EntryKind::Symlink) {
            link_target.clear();
        }

        // Symlinks, devices, FIFOs and directories carry no data whatever
        // their size field says (POSIX; Go's archive/tar does the same).
        // Hard links carry data only in pax interchange format (`pax -o
        // linkdata`); older writers put the target's size in the field with
        // no data after it, so without a PAX header the size is ignored, as
        // libarchive does.
        let header_only = matches!(typeflag, b'2' | b'3' | b'4' | b'5' | b'6')
            || (typeflag == b'1' && !has_pax)
            || (typeflag == b'\0' && kind == EntryKind::Directory);
        let region_size = if header_only { 0 } else { size };
        let mut logical_size = region_size;
        let mut stored_size = region_size;
        let mut sparse = None;
        if typeflag == b'D' {
            // GNU dumpdir: the data lists directory contents; skip it.
            logical_size = 0;
            stored_size = 0;
        }
        let invalid_sparse = |reason: String| TarError::InvalidSparse { offset, reason };
        if typeflag == b'S' {
            if header.format() != Format::Gnu {
                return Err(TarError::InvalidHeader {
                    offset,
                    reason: "sparse 'S' entry in a non-GNU header".to_owned(),
                });
            }
            let pairs = self.old_gnu_sparse_map(header.bytes(), offset)?;
            logical_size = header.gnu_realsize()?;
            sparse =
                Some(sparse::validate(&pairs, logical_size, stored_size).map_err(invalid_sparse)?);
        }
        self.region_left = padded(region_size, offset)?;
        if let (Some((layout, name)), EntryKind::Regular, None) = (pax_sparse, kind, &sparse) {
            if let Some(name) = name {
                path = name;
            }
            let (realsize, pairs) = match layout {
                PaxSparse::V0 { realsize, pairs } => (realsize, pairs),
                PaxSparse::V1 { realsize } => {
                    let (pairs, consumed) = self.pax1_sparse_map(region_size, offset)?;
                    stored_size = region_size - consumed;
                    (realsize, pairs)
                }
            };
            logical_size = realsize;
            sparse = Some(sparse::validate(&pairs, realsize, stored_size).map_err(invalid_sparse)?);
        }
        self.data_left = stored_size;
        Ok(Entry {
            path,
            link_target,
            kind,
            mode,
            uid,
            gid,
            mtime,
            dev_major,
            dev_minor,
            xattrs,
            size: logical_size,
            stored_size,
            sparse,
        })
    }

    /// The old GNU map: four slots in the header, then 21 per extension
    /// block for as long as the previous block is marked "isextended".
    fn old_gnu_sparse_map(
        &mut self,
        block: &[u8; BLOCK],
        offset: u64,
    ) -> Result<Vec<(u64, u64)>, TarError> {
        let invalid = |reason: String| TarError::InvalidSparse { offset, reason };
        let mut pairs = Vec::new();
        let mut extended = header::gnu_sparse_pairs(
            block,
            header::GNU_SPARSE,
            header::GNU_SPARSE_COUNT,
            header::GNU_ISEXTENDED,
            &mut pairs,
        )
        .map_err(invalid)?;
        while extended {
            if pairs.len() > MAX_SPARSE_SEGMENTS {
                return Err(invalid(format!("more than {MAX_SPARSE_SEGMENTS} segments")));
            }
            let ext = self
                .read_block("sparse extension header")?
                .ok_or(TarError::Truncated {
                    context: "sparse extension header",
                    offset: self.pos,
                })?;
            extended = header::gnu_sparse_pairs(
                &ext,
                0,
                header::EXT_SPARSE_COUNT,
                header::EXT_ISEXTENDED,
                &mut pairs,
            )
            .map_err(invalid)?;
        }
        Ok(pairs)
    }

    /// Reads the PAX 1.0 map at the start of the data region. Returns the
    /// pairs and the number of bytes (whole blocks) the map took.
    fn pax1_sparse_map(
        &mut self,
        size: u64,
        offset: u64,
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let mut parser = MapParser::default();
        let mut consumed = 0u64;
        loop {
            if consumed.saturating_add(BLOCK as u64) > size {
                return Err(TarError::InvalidSparse {
                    offset,
                    reason: "sparse map runs past the entry data".to_owned(),
                });
            }
            let block = self.read_block("sparse map")?.ok_or(TarError::Truncated {
                context: "sparse map",
                offset: self.pos,
            })?;
            consumed += BLOCK as u64;
            self.region_left -= BLOCK as u64;
            let done = parser
                .feed(&block)
                .map_err(|reason| TarError::InvalidSparse { offset, reason })?;
            if done {
                return Ok((parser.into_pairs(), consumed));
            }
        }
    }

    /// Reads the payload of an extension header ('x', 'g', 'L', 'K') and the
    /// padding after it.
    fn read_extension(
        &mut self,
        header: &HeaderBlock<'_>,
        what: &'static str,
    ) -> Result<Vec<u8>, TarError> {
        let offset = self.pos - BLOCK as u64;
        let size = header.size()?;
        if size > MAX_EXTENSION_SIZE {
            return Err(TarError::TooLarge {
                what,
                size,
                limit: MAX_EXTENSION_SIZE,
                offset,
            });
        }
        // Grow with the data actually read, not with the claimed size.
        let mut data = Vec::new();
        let got = (&mut self.inner)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|source| TarError::Io {
                offset: self.pos,
                source,
            })?;
        self.pos += got as u64;
        if (got as u64) < size {
            return Err(TarError::Truncated {
                context: what,
                offset: self.pos,
            });
        }
        self.skip(padded(size, offset)? - size, what)?;
        Ok(data)
    }

    /// After a zero block: the second block of the end marker must be
    /// zeros too, or missing, or cut short (zeros only).
    fn second_zero_block(&mut self) -> Result<(), TarError> {
        let offset = self.pos;
        let mut block = [0u8; BLOCK];
        let filled = self.fill(&mut block)?;
        if block[..filled].iter().any(|&b| b != 0) {
            return Err(TarError::InvalidHeader {
                offset,
                reason: "header after a single zero block".to_owned(),
            });
        }
        Ok(())
    }

    /// Reads until `block` is full or the stream ends; returns the bytes read.
    fn fill(&mut self, block: &mut [u8]) -> Result<usize, TarError> {
        let mut filled = 0;
        while filled < block.len() {
            match read_retrying(&mut self.inner, &mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(source) => {
                    return Err(TarError::Io {
                        offset: self.pos,
                        source,
                    })
                }
            }
        }
        Ok(filled)
    }

    /// Reads one block. `None` at EOF before its first byte; a partial
    /// block is `Truncated`.
    fn read_block(&mut self, context: &'static str) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        match self.fill(&mut block)? {
            0 => return Ok(None),
            BLOCK => {}
            _ => {
                return Err(TarError::Truncated {
                    context,
                    offset: self.pos,
                })
            }
        }
        Ok(Some(block))
    }

    /// Reads and discards `n` bytes.
    fn skip(&mut self, mut n: u64, context: &'static str) -> Result<(), TarError> {
        if n == 0 {
            return Ok(());
        }
        let buf = skip_buffer(&mut self.skip_buf);
        while n > 0 {
            let want = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            match read_retrying(&mut self.inner, &mut buf[..want]) {
                Ok(0) => {
                    return Err(TarError::Truncated {
                        context,
                        offset: self.pos,
                    })
                }
                Ok(got) => {
                    n -= got as u64;
                    self.pos += got as u64;
                }
                Err(source) => {
                    return Err(TarError::Io {
                        offset: self.pos,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

impl<R: Read + Seek> TarReader<R> {
    /// Skips the rest of the current entry by seeking instead of reading,
    /// for archives read in place from a file. A region that would end past
    /// the end of the stream is `Truncated`.
    pub fn skip_data_seeking(&mut self) -> Result<(), TarError> {
        match self.state {
            State::Reading => {}
            State::End => return Ok(()),
            State::Failed => return Err(TarError::Poisoned),
        }
        let n = self.region_left;
        if n == 0 {
            return Ok(());
        }
        if n <= SKIP_BUFFER_SIZE as u64 {
            // Small regions are likely in the reader's buffer already: a
            // seek would throw that away.
            let result = self.skip(n, "entry data");
            self.region_left = 0;
            self.data_left = 0;
            if result.is_err() {
                self.state = State::Failed;
            }
            return result;
        }
        let pos = self.pos;
        let io_err = |source| TarError::Io {
            offset: pos,
            source,
        };
        let result = (|| {
            let here = self.inner.stream_position().map_err(io_err)?;
            let end = self.inner.seek(SeekFrom::End(0)).map_err(io_err)?;
            match here.checked_add(n) {
                Some(target) if target <= end => {
                    self.inner.seek(SeekFrom::Start(target)).map_err(io_err)?;
                    Ok(())
                }
                _ => Err(TarError::Truncated {
                    context: "entry data",
                    offset: pos + end.saturating_sub(here),
                }),
            }
        })();
        match result {
            Ok(()) => {
                self.pos += n;
                self.region_left = 0;
                self.data_left = 0;
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }
}

impl<R: Read> fmt::Debug for TarReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarReader")
            .field("position", &self.pos)
            .field("state", &self.state)
            .field("data_left", &self.data_left)
            .finish_non_exhaustive()
    }
}

/// The current entry's data as an [`io::Read`]; see [`TarReader::data`].
pub struct EntryData<'a, R: Read> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tar.read_data(buf).map_err(io::Error::from)
    }
}

impl<R: Read> fmt::Debug for EntryData<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryData")
            .field("left", &self.tar.data_left)
            .finish()
    }
}

/// `size` rounded up to whole blocks.
fn padded(size: u64, offset: u64) -> Result<u64, TarError> {
    size.checked_next_multiple_of(BLOCK as u64)
        .ok_or_else(|| TarError::InvalidHeader {
            offset,
            reason: format!("size {size} out of range"),
        })
}

fn skip_buffer(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(SKIP_BUFFER_SIZE, 0);
    }
    buf
}

fn read_retrying<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
