//! Linear directory blocks ("." and ".." first, then entries by name).
//!
//! No htree index: a linear directory is correct at any size and keeps the
//! writer simple; the kernel reads large ones more slowly on lookups.

use crate::BLOCK_SIZE;

pub(crate) const FT_REG: u8 = 1;
pub(crate) const FT_DIR: u8 = 2;
pub(crate) const FT_CHR: u8 = 3;
pub(crate) const FT_BLK: u8 = 4;
pub(crate) const FT_FIFO: u8 = 5;
pub(crate) const FT_SOCK: u8 = 6;
pub(crate) const FT_SYMLINK: u8 = 7;

fn rec_len(name_len: usize) -> usize {
    (8 + name_len).div_ceil(4) * 4
}

/// Encodes a directory; `entries` are (name, inode, file type), sorted.
pub(crate) fn encode(self_ino: u32, parent_ino: u32, entries: &[(&[u8], u32, u8)]) -> Vec<u8> {
    let bs = BLOCK_SIZE as usize;
    let mut out = vec![0u8; bs];
    let mut block_start = 0;
    let mut last: Option<usize> = None;
    let mut at = 0;
    let mut put = |out: &mut Vec<u8>, name: &[u8], ino: u32, ft: u8| {
        let len = rec_len(name.len());
        if at + len > block_start + bs {
            // Stretch the previous entry to the end of its block.
            if let Some(l) = last {
                let stretched = (block_start + bs - l) as u16;
                out[l + 4..l + 6].copy_from_slice(&stretched.to_le_bytes());
            }
            block_start += bs;
            at = block_start;
            out.resize(block_start + bs, 0);
        }
        out[at..at + 4].copy_from_slice(&ino.to_le_bytes());
        out[at + 4..at + 6].copy_from_slice(&(len as u16).to_le_bytes());
        out[at + 6] = name.len() as u8;
        out[at + 7] = ft;
        out[at + 8..at + 8 + name.len()].copy_from_slice(name);
        last = Some(at);
        at += len;
    };
    put(&mut out, b".", self_ino, FT_DIR);
    put(&mut out, b"..", parent_ino, FT_DIR);
    for (name, ino, ft) in entries {
        put(&mut out, name, *ino, *ft);
    }
    if let Some(l) = last {
        let stretched = (block_start + bs - l) as u16;
        out[l + 4..l + 6].copy_from_slice(&stretched.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks rec_len chains: every block must be covered exactly.
    fn names(buf: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for block in buf.chunks(BLOCK_SIZE as usize) {
            let mut at = 0;
            while at < block.len() {
                let len = u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
                let nl = block[at + 6] as usize;
                out.push(block[at + 8..at + 8 + nl].to_vec());
                assert!(len >= 8 + nl && len.is_multiple_of(4));
                at += len;
            }
            assert_eq!(at, block.len());
        }
        out
    }

    #[test]
    fn many_entries_span_blocks() {
        let names_in: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("file-{i:05}-{}", "x".repeat(i % 200)).into_bytes())
            .collect();
        let entries: Vec<(&[u8], u32, u8)> = names_in
            .iter()
            .map(|n| (n.as_slice(), 12, FT_REG))
            .collect();
        let buf = encode(2, 2, &entries);
        let got = names(&buf);
        assert_eq!(got.len(), 1002);
        assert_eq!(&got[2..], &names_in[..]);
    }
}
