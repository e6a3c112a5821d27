//! Layer bytes are decompressed and verified on their own threads, running
//! up to `lookahead` layers ahead of the applier; the applier sees a plain
//! `Read`. Output order never depends on thread timing: the applier consumes
//! layers strictly in order.

use std::io::{self, Read};

use crossbeam_channel::{bounded, Receiver, Sender};

/// Buffers in flight per layer (1 MiB each).
const DEPTH: usize = 32;
const BUF: usize = 1 << 20;

/// Starts a thread that reads `src` to the end into a channel.
pub(crate) fn spawn<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    mut src: Box<dyn Read + Send>,
) -> ChannelReader {
    let (tx, rx) = bounded::<io::Result<Vec<u8>>>(DEPTH);
    // Emptied buffers come back for reuse: a fresh 1 MiB buffer per message
    // costs a page-faulting mmap.
    let (spare_tx, spare_rx) = bounded::<Vec<u8>>(DEPTH);
    scope.spawn(move || loop {
        let mut buf = spare_rx.try_recv().unwrap_or_default();
        buf.resize(BUF, 0);
        let mut filled = 0;
        // Fill whole buffers: fewer, larger messages.
        let res = loop {
            match src.read(&mut buf[filled..]) {
                Ok(0) => break Ok(true),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match res {
            Ok(eof) => {
                buf.truncate(filled);
                if (!buf.is_empty() && tx.send(Ok(buf)).is_err()) || eof {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    });
    ChannelReader {
        rx,
        spare: spare_tx,
        cur: Vec::new(),
        pos: 0,
    }
}

/// The applier's end of a layer stream.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    spare: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let used = std::mem::replace(&mut self.cur, buf);
                    let _ = self.spare.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
