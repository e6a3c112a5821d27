//! Where an image's bytes go.
//!
//! Usually a file. `kindling push` instead hands the writers a sink that
//! cuts the image into chunks while it is being produced, so the image never
//! lands on disk whole; [`Output::settled`] is how the flattener tells such a
//! sink which bytes will not change any more.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// A random-access destination for an image. Bytes never written read as
/// zero.
pub trait Output: Sync {
    /// Writes all of `buf` at `offset`.
    fn write_image_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Sets the image's final length. Called once, after the last write.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// A promise from the writer: no byte in `range` will be written again.
    /// Ranges only grow at the end. A file ignores it; a chunking sink can
    /// seal and ship the chunks the range covers.
    fn settled(&self, _range: Range<u64>) -> io::Result<()> {
        Ok(())
    }
}

impl Output for File {
    fn write_image_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}
