//! An [`Output`] that cuts the image into chunks while it is written.
//!
//! The flattener writes each layer's data region front to back and reports
//! the settled range ([`Output::settled`]); every chunk wholly inside it is
//! final and goes to the encryptors at once, so only the chunks around the
//! write cursor are held in memory. Chunk 0 (superblock, group descriptors)
//! and the metadata region are written last and shipped by [`ChunkSink::finish`].
//! A chunk nobody wrote is a zero chunk and is shipped without a buffer.
//!
//! Backpressure: the channel to the encryptors is bounded, so a slow store
//! slows the flattener instead of filling memory. If the receiving side is
//! gone (an upload failed), writes fail and the flatten stops.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::Mutex;

use crossbeam_channel::Sender;
use kindling_ext4::Output;

/// A chunk ready for encryption: its index and bytes (`None`: never
/// written, so all zeros).
pub(crate) type SealedChunk = (u64, Option<Box<[u8]>>);

#[derive(Debug)]
pub(crate) struct ChunkSink {
    chunk_size: u64,
    state: Mutex<State>,
    tx: Sender<SealedChunk>,
}

#[derive(Debug, Default)]
struct State {
    open: BTreeMap<u64, Box<[u8]>>,
    /// Chunks `[settled_from, settled_to)` have been shipped.
    settled_from: Option<u64>,
    settled_to: u64,
    len: Option<u64>,
}

impl State {
    fn shipped(&self, index: u64) -> bool {
        self.settled_from
            .is_some_and(|from| (from..self.settled_to).contains(&index))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "push aborted")
}

impl ChunkSink {
    pub fn new(chunk_size: u64, tx: Sender<SealedChunk>) -> ChunkSink {
        ChunkSink {
            chunk_size,
            state: Mutex::new(State::default()),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ship(&self, chunks: Vec<SealedChunk>) -> io::Result<()> {
        for c in chunks {
            self.tx.send(c).map_err(|_| gone())?;
        }
        Ok(())
    }

    /// Ships every chunk not shipped yet, up to the image's length; returns
    /// the number of chunks in the image.
    pub fn finish(&self) -> io::Result<u64> {
        let (chunks, out) = {
            let mut s = self.lock();
            let len = s
                .len
                .ok_or_else(|| io::Error::other("image length was never set"))?;
            let n = len.div_ceil(self.chunk_size);
            let mut out = Vec::new();
            for i in 0..n {
                if s.shipped(i) {
                    continue;
                }
                let buf = s.open.remove(&i).map(|mut b| {
                    let end = (len - i * self.chunk_size).min(self.chunk_size) as usize;
                    if end < b.len() {
                        b = b[..end].into();
                    }
                    b
                });
                out.push((i, buf));
            }
            if let Some(&i) = s.open.keys().next() {
                return Err(io::Error::other(format!(
                    "chunk {i} written beyond the image's end"
                )));
            }
            (n, out)
        };
        self.ship(out)?;
        Ok(chunks)
    }
}

impl Output for ChunkSink {
    fn write_image_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        let cs = self.chunk_size;
        let mut s = self.lock();
        while !buf.is_empty() {
            let index = offset / cs;
            if s.shipped(index) {
                return Err(io::Error::other(format!(
                    "write at {offset} into chunk {index}, which was already settled"
                )));
            }
            let within = (offset % cs) as usize;
            let n = buf.len().min(cs as usize - within);
            let chunk = s
                .open
                .entry(index)
                .or_insert_with(|| vec![0u8; cs as usize].into_boxed_slice());
            chunk[within..within + n].copy_from_slice(&buf[..n]);
            buf = &buf[n..];
            offset += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.lock().len = Some(len);
        Ok(())
    }

    fn settled(&self, range: Range<u64>) -> io::Result<()> {
        let cs = self.chunk_size;
        let out = {
            let mut s = self.lock();
            let from = *s.settled_from.get_or_insert(range.start.div_ceil(cs));
            let to = range.end / cs;
            let mut out = Vec::new();
            for i in s.settled_to.max(from)..to {
                out.push((i, s.open.remove(&i)));
            }
            s.settled_to = s.settled_to.max(to).max(from);
            out
        };
        // Sent outside the lock: sending blocks when the encryptors are
        // behind, and only the flatten thread ever writes.
        self.ship(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever order of writes and settles a writer uses (within the
        /// contract), the chunks shipped are exactly the image written.
        #[test]
        fn ships_every_chunk_once_with_the_written_bytes(
            writes in proptest::collection::vec((0u64..40, 1usize..9000, any::<u8>()), 0..40),
            shift in 12u32..15,
        ) {
            let cs = 1u64 << shift;
            let (tx, rx) = crossbeam_channel::unbounded();
            let sink = ChunkSink::new(cs, tx);
            let start = cs; // chunk 0 is written last, as the flattener does
            let mut model = vec![0u8; 0];
            let mut cursor = start;
            for (gap, len, v) in writes {
                cursor += gap * 512;
                let buf = vec![v.max(1); len];
                sink.write_image_at(&buf, cursor).unwrap();
                if model.len() < (cursor as usize + len) { model.resize(cursor as usize + len, 0); }
                model[cursor as usize..cursor as usize + len].copy_from_slice(&buf);
                cursor += len as u64;
                sink.settled(start..cursor).unwrap();
            }
            // Metadata after the data, then chunk 0.
            let meta = cursor.next_multiple_of(cs);
            sink.write_image_at(&[7; 100], meta).unwrap();
            sink.write_image_at(&[9; 10], 1024).unwrap();
            let len = meta + cs;
            model.resize(len as usize, 0);
            model[meta as usize..meta as usize + 100].fill(7);
            model[1024..1034].fill(9);
            sink.set_len(len).unwrap();
            let n = sink.finish().unwrap();
            drop(sink);
            let mut got = vec![0u8; len as usize];
            let mut seen = std::collections::BTreeSet::new();
            for (i, buf) in rx.iter() {
                prop_assert!(seen.insert(i), "chunk {} shipped twice", i);
                if let Some(b) = buf {
                    got[(i * cs) as usize..(i * cs) as usize + b.len()].copy_from_slice(&b);
                }
            }
            prop_assert_eq!(seen.len() as u64, n);
            prop_assert_eq!(got, model);
        }
    }

    #[test]
    fn a_write_into_a_settled_chunk_is_an_error() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let sink = ChunkSink::new(4096, tx);
        sink.write_image_at(&[1; 8192], 4096).unwrap();
        sink.settled(4096..12288).unwrap();
        assert!(sink.write_image_at(&[1], 5000).is_err());
    }

    #[test]
    fn a_gone_receiver_stops_the_writer() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(rx);
        let sink = ChunkSink::new(4096, tx);
        sink.write_image_at(&[1; 4096], 4096).unwrap();
        assert_eq!(
            sink.settled(4096..8192).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
