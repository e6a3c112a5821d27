//! A plain bitset over all blocks of the image, used to build the per-group
//! block bitmaps and to catch two owners of one block.

#[derive(Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    len: u64,
}

impl Bitset {
    pub fn new(len: u64) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// Marks `[start, start + count)`; returns the first block already set
    /// or out of range, if any (nothing is marked beyond it).
    pub fn mark(&mut self, start: u64, count: u64) -> Result<(), u64> {
        for b in start..start + count {
            if b >= self.len {
                return Err(b);
            }
            let (w, bit) = ((b / 64) as usize, b % 64);
            if self.words[w] & (1 << bit) != 0 {
                return Err(b);
            }
            self.words[w] |= 1 << bit;
        }
        Ok(())
    }

    pub fn get(&self, b: u64) -> bool {
        b < self.len && self.words[(b / 64) as usize] & (1 << (b % 64)) != 0
    }

    /// Counts set bits in `[start, end)`.
    pub fn count(&self, start: u64, end: u64) -> u64 {
        (start..end.min(self.len)).filter(|&b| self.get(b)).count() as u64
    }

    /// One group's on-disk bitmap block: bits past the end of the
    /// filesystem or past the group's size are set, as e2fsck expects of
    /// the padding.
    pub fn group_block(&self, first: u64, per_group: u64, block_size: usize) -> Vec<u8> {
        let mut out = vec![0u8; block_size];
        for i in 0..block_size as u64 * 8 {
            let b = first + i;
            if i >= per_group || b >= self.len || self.get(b) {
                out[(i / 8) as usize] |= 1 << (i % 8);
            }
        }
        out
    }
}
