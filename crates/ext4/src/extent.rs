//! Extent trees: up to four extents in the inode itself, otherwise leaf
//! blocks of 340 entries under as many index levels as needed.

use crate::tree::Extent;
use crate::{BLOCK_SIZE, MAX_EXTENT_LEN};

const MAGIC: u16 = 0xF30A;
const ENTRY: usize = 12;
const IN_INODE_MAX: usize = 4;
const PER_BLOCK: usize = (BLOCK_SIZE as usize - ENTRY) / ENTRY;

/// Splits runs longer than ext4's maximum extent, sorted by logical block.
pub(crate) fn normalize(extents: &[Extent]) -> Vec<Extent> {
    let mut sorted: Vec<Extent> = extents.iter().copied().filter(|e| e.len > 0).collect();
    sorted.sort_by_key(|e| e.logical);
    let mut out = Vec::with_capacity(sorted.len());
    for e in sorted {
        let mut done = 0;
        while done < e.len {
            let len = (e.len - done).min(MAX_EXTENT_LEN);
            out.push(Extent {
                logical: e.logical + done,
                physical: e.physical + u64::from(done),
                len,
            });
            done += len;
        }
    }
    out
}

/// How many tree blocks (leaves and index blocks) `n` extents need.
pub(crate) fn tree_blocks(n: usize) -> u64 {
    let mut blocks = 0;
    let mut level = n;
    while level > IN_INODE_MAX {
        level = level.div_ceil(PER_BLOCK);
        blocks += level as u64;
    }
    blocks
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
}

fn leaf_entry(buf: &mut [u8], e: &Extent) {
    buf[0..4].copy_from_slice(&e.logical.to_le_bytes());
    buf[4..6].copy_from_slice(&(e.len as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&((e.physical >> 32) as u16).to_le_bytes());
    buf[8..12].copy_from_slice(&(e.physical as u32).to_le_bytes());
}

fn index_entry(buf: &mut [u8], logical: u32, block: u64) {
    buf[0..4].copy_from_slice(&logical.to_le_bytes());
    buf[4..8].copy_from_slice(&(block as u32).to_le_bytes());
    buf[8..10].copy_from_slice(&((block >> 32) as u16).to_le_bytes());
}

/// The inode's i_block and the tree blocks to write at `blocks` (exactly
/// `tree_blocks(extents.len())` of them, in the order given).
pub(crate) fn build(extents: &[Extent], blocks: &[u64]) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let mut written = Vec::new();
    let mut free = blocks.iter().copied();
    // Each level is a list of (first logical block, encoded entry writer).
    let mut level: Vec<(u32, Option<u64>, Option<Extent>)> = extents
        .iter()
        .map(|e| (e.logical, None, Some(*e)))
        .collect();
    let mut depth = 0u16;
    while level.len() > IN_INODE_MAX {
        let mut next = Vec::new();
        for group in level.chunks(PER_BLOCK) {
            let block = free.next().unwrap_or_default();
            let mut buf = vec![0u8; BLOCK_SIZE as usize];
            header(&mut buf, group.len(), PER_BLOCK, depth);
            for (i, entry) in group.iter().enumerate() {
                write_entry(&mut buf[ENTRY * (i + 1)..ENTRY * (i + 2)], entry);
            }
            written.push((block, buf));
            next.push((group[0].0, Some(block), None));
        }
        level = next;
        depth += 1;
    }
    let mut ib = [0u8; 60];
    header(&mut ib, level.len(), IN_INODE_MAX, depth);
    for (i, entry) in level.iter().enumerate() {
        write_entry(&mut ib[ENTRY * (i + 1)..ENTRY * (i + 2)], entry);
    }
    (ib, written)
}

fn write_entry(buf: &mut [u8], entry: &(u32, Option<u64>, Option<Extent>)) {
    match entry {
        (_, None, Some(e)) => leaf_entry(buf, e),
        (logical, Some(block), _) => index_entry(buf, *logical, *block),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sizes() {
        assert_eq!(tree_blocks(0), 0);
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1);
    }

    #[test]
    fn split_long_runs() {
        let e = normalize(&[Extent {
            logical: 0,
            physical: 100,
            len: 70000,
        }]);
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[2],
            Extent {
                logical: 65536,
                physical: 65636,
                len: 70000 - 65536
            }
        );
    }

    #[test]
    fn build_uses_every_block() {
        let ex: Vec<Extent> = (0..1300)
            .map(|i| Extent {
                logical: i * 2,
                physical: 1000 + u64::from(i) * 2,
                len: 1,
            })
            .collect();
        let n = tree_blocks(ex.len()) as usize;
        let blocks: Vec<u64> = (0..n as u64).map(|i| 10 + i).collect();
        let (ib, written) = build(&ex, &blocks);
        assert_eq!(written.len(), n);
        assert_eq!(u16::from_le_bytes([ib[6], ib[7]]), 1); // depth
        assert_eq!(u16::from_le_bytes([ib[2], ib[3]]), 1300u16.div_ceil(340)); // entries
    }
}
