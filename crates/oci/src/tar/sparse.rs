//! Sparse file maps: GNU's PAX formats 0.0, 0.1 and 1.0 and their
//! validation (GNU tar manual, "Storing Sparse Files").
//!
//! Old GNU 'S' headers are decoded in `header.rs`; all formats end in
//! [`validate`], which turns raw (offset, length) pairs into segments that
//! are sorted, non-overlapping, inside the file and add up to the stored
//! data, so consumers can trust them.

use super::pax::SparseRecords;
use super::{SparseSegment, MAX_SPARSE_SEGMENTS};

/// The sparse layout a PAX header announces.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PaxSparse {
    /// 0.0 / 0.1: the map is in the PAX records.
    V0 {
        realsize: u64,
        pairs: Vec<(u64, u64)>,
    },
    /// 1.0: the map is at the start of the entry's data.
    V1 { realsize: u64 },
}

impl SparseRecords {
    /// `None` when the records do not describe a sparse file.
    pub(crate) fn resolve(&mut self) -> Result<Option<PaxSparse>, String> {
        let v1 = match (self.major, self.minor) {
            (Some(1), Some(0)) => true,
            (Some(0), Some(0 | 1)) => false,
            (None, None)
                if self.map.is_some() || !self.pairs.is_empty() || self.numblocks.is_some() =>
            {
                false
            }
            (None, None) => return Ok(None),
            (major, minor) => {
                let show = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
                return Err(format!(
                    "unsupported GNU sparse version {}.{}",
                    show(major),
                    show(minor)
                ));
            }
        };
        let realsize = self
            .realsize
            .or(self.size)
            .ok_or("missing GNU.sparse.realsize / GNU.sparse.size")?;
        if v1 {
            return Ok(Some(PaxSparse::V1 { realsize }));
        }
        let numbers = match self.map.take() {
            Some(map) => map,
            None => std::mem::take(&mut self.pairs),
        };
        if numbers.len() % 2 != 0 {
            return Err("odd number of values in the sparse map".to_owned());
        }
        let pairs: Vec<(u64, u64)> = numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        if let Some(n) = self.numblocks {
            if n != pairs.len() as u64 {
                return Err(format!(
                    "GNU.sparse.numblocks is {n} but the map has {} entries",
                    pairs.len()
                ));
            }
        }
        Ok(Some(PaxSparse::V0 { realsize, pairs }))
    }
}

/// Incremental parser for the 1.0 map: decimal numbers, one per line — the
/// entry count, then offset/length pairs — fed block by block.
#[derive(Debug, Default)]
pub(crate) struct MapParser {
    count: Option<u64>,
    numbers: Vec<u64>,
    current: Option<u64>,
    digits: u32,
}

impl MapParser {
    /// Consumes one block; returns true once the map is complete (the rest
    /// of that block is padding).
    pub(crate) fn feed(&mut self, block: &[u8]) -> Result<bool, String> {
        for &b in block {
            match b {
                b'0'..=b'9' => {
                    self.digits += 1;
                    let v = self
                        .current
                        .unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        .filter(|_| self.digits <= 20)
                        .ok_or("number overflows")?;
                    self.current = Some(v);
                }
                b'\n' => {
                    let v = self.current.take().ok_or("empty line")?;
                    self.digits = 0;
                    match self.count {
                        None => {
                            if v > MAX_SPARSE_SEGMENTS as u64 {
                                return Err(format!(
                                    "{v} segments, more than {MAX_SPARSE_SEGMENTS}"
                                ));
                            }
                            self.count = Some(v);
                        }
                        Some(_) => self.numbers.push(v),
                    }
                    if self.is_complete() {
                        return Ok(true);
                    }
                }
                other => return Err(format!("unexpected byte 0x{other:02x}")),
            }
        }
        Ok(false)
    }

    fn is_complete(&self) -> bool {
        self.count
            .is_some_and(|c| self.numbers.len() as u64 == 2 * c)
    }

    pub(crate) fn into_pairs(self) -> Vec<(u64, u64)> {
        self.numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect()
    }
}

/// Checks a map against the file's logical size and the stored data size;
/// zero-length segments (GNU tar ends a file with a trailing hole with one)
/// are dropped.
pub(crate) fn validate(
    pairs: &[(u64, u64)],
    realsize: u64,
    stored_size: u64,
) -> Result<Vec<SparseSegment>, String> {
    if pairs.len() > MAX_SPARSE_SEGMENTS {
        return Err(format!("more than {MAX_SPARSE_SEGMENTS} segments"));
    }
    let mut segments = Vec::with_capacity(pairs.len());
    let mut end = 0u64;
    let mut total = 0u64;
    for &(offset, length) in pairs {
        if offset < end {
            return Err(format!("segment at {offset} overlaps or is out of order"));
        }
        let seg_end = offset
            .checked_add(length)
            .filter(|&e| e <= realsize)
            .ok_or_else(|| format!("segment {offset}+{length} beyond the file size {realsize}"))?;
        end = seg_end;
        total += length;
        if length > 0 {
            segments.push(SparseSegment { offset, length });
        }
    }
    if total != stored_size {
        return Err(format!(
            "segments hold {total} bytes but {stored_size} are stored"
        ));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_parser_reads_across_blocks() {
        let mut p = MapParser::default();
        assert_eq!(p.feed(b"2\n0\n5"), Ok(false));
        assert_eq!(p.feed(b"\n100\n10\n\0\0padding"), Ok(true));
        assert_eq!(p.into_pairs(), vec![(0, 5), (100, 10)]);
        assert!(MapParser::default().feed(b"\n").is_err());
        assert!(MapParser::default().feed(b"1x\n").is_err());
        assert!(MapParser::default().feed(b"99999999999\n").is_err());
        assert_eq!(MapParser::default().feed(b"0\n"), Ok(true));
    }

    #[test]
    fn validation() {
        let seg = |offset, length| SparseSegment { offset, length };
        assert_eq!(
            validate(&[(0, 5), (10, 5), (20, 0)], 20, 10),
            Ok(vec![seg(0, 5), seg(10, 5)])
        );
        assert!(
            validate(&[(10, 5), (0, 5)], 20, 10).is_err(),
            "out of order"
        );
        assert!(validate(&[(0, 10), (5, 5)], 20, 15).is_err(), "overlap");
        assert!(validate(&[(0, 5), (18, 5)], 20, 10).is_err(), "beyond size");
        assert!(validate(&[(0, 5)], 20, 6).is_err(), "stored size");
        assert!(validate(&[(u64::MAX, 2)], u64::MAX, 2).is_err(), "overflow");
    }
}
