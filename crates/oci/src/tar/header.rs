//! One 512-byte tar header block: field positions, checksum and numbers.
//!
//! Fields are parsed on demand, so an extension header ('x', 'L', ...) is
//! not rejected for garbage in fields nobody reads. Field positions are those
//! of POSIX ustar (IEEE Std 1003.1, `pax` "ustar Interchange Format"), the
//! old GNU header (GNU tar manual, "Basic Tar Format") and star.

use crate::error::TarError;

/// Tar block size; every header and data region is a multiple of it.
pub(crate) const BLOCK: usize = 512;

/// Which header layout the magic bytes announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Pre-POSIX: no magic, no prefix, no device numbers.
    V7,
    /// POSIX ustar: 155-byte prefix at 345.
    Ustar,
    /// star: ustar magic plus "tar\0" at 508, 131-byte prefix.
    Star,
    /// Old GNU ("ustar  \0"): atime/ctime/sparse map where ustar has the prefix.
    Gnu,
}

// Field (offset, length) pairs.
const NAME: (usize, usize) = (0, 100);
const MODE: (usize, usize) = (100, 8);
const UID: (usize, usize) = (108, 8);
const GID: (usize, usize) = (116, 8);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 6);
const VERSION: (usize, usize) = (263, 2);
const DEVMAJOR: (usize, usize) = (329, 8);
const DEVMINOR: (usize, usize) = (337, 8);
const PREFIX: (usize, usize) = (345, 155);
const STAR_PREFIX: (usize, usize) = (345, 131);
const STAR_TRAILER: (usize, usize) = (508, 4);
/// Old GNU: four (offset, numbytes) pairs of 12 bytes each.
pub(crate) const GNU_SPARSE: usize = 386;
pub(crate) const GNU_SPARSE_COUNT: usize = 4;
pub(crate) const GNU_ISEXTENDED: usize = 482;
const GNU_REALSIZE: (usize, usize) = (483, 12);
/// Old GNU sparse extension block: 21 pairs, then the isextended flag.
pub(crate) const EXT_SPARSE_COUNT: usize = 21;
pub(crate) const EXT_ISEXTENDED: usize = 504;

/// A header block and where it was in the stream (for error messages).
pub(crate) struct HeaderBlock<'a> {
    block: &'a [u8; BLOCK],
    offset: u64,
}

impl<'a> HeaderBlock<'a> {
    pub(crate) fn new(block: &'a [u8; BLOCK], offset: u64) -> Self {
        HeaderBlock { block, offset }
    }

    pub(crate) fn bytes(&self) -> &'a [u8; BLOCK] {
        self.block
    }

    fn field(&self, (start, len): (usize, usize)) -> &'a [u8] {
        &self.block[start..start + len]
    }

    fn invalid(&self, reason: String) -> TarError {
        TarError::InvalidHeader {
            offset: self.offset,
            reason,
        }
    }

    /// Checks the header checksum. Writers disagree on whether bytes are
    /// summed signed or unsigned; both are accepted, as GNU tar does.
    pub(crate) fn verify_checksum(&self) -> Result<(), TarError> {
        let bad = TarError::BadChecksum {
            offset: self.offset,
        };
        let stored = match parse_octal(self.field(CHKSUM)) {
            Ok(Some(v)) => v,
            Ok(None) | Err(_) => return Err(bad),
        };
        let (start, len) = CHKSUM;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in self.block.iter().enumerate() {
            let b = if (start..start + len).contains(&i) {
                b' '
            } else {
                b
            };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
            Ok(())
        } else {
            Err(bad)
        }
    }

    pub(crate) fn typeflag(&self) -> u8 {
        self.block[TYPEFLAG]
    }

    pub(crate) fn format(&self) -> Format {
        let magic = self.field(MAGIC);
        if magic == b"ustar\0" {
            if self.field(STAR_TRAILER) == b"tar\0" {
                Format::Star
            } else {
                Format::Ustar
            }
        } else if magic == b"ustar " && self.field(VERSION) == b" \0" {
            Format::Gnu
        } else {
            Format::V7
        }
    }

    /// The name, joined with the ustar/star prefix where the format has one.
    pub(crate) fn name(&self) -> Vec<u8> {
        let name = cstr(self.field(NAME));
        let prefix = match self.format() {
            Format::Ustar => cstr(self.field(PREFIX)),
            Format::Star => cstr(self.field(STAR_PREFIX)),
            Format::V7 | Format::Gnu => &[],
        };
        if prefix.is_empty() {
            name.to_vec()
        } else {
            let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
            path.extend_from_slice(prefix);
            path.push(b'/');
            path.extend_from_slice(name);
            path
        }
    }

    pub(crate) fn linkname(&self) -> Vec<u8> {
        cstr(self.field(LINKNAME)).to_vec()
    }

    fn number(&self, field: (usize, usize), what: &str) -> Result<i128, TarError> {
        parse_numeric(self.field(field)).map_err(|e| self.invalid(format!("{what} field: {e}")))
    }

    fn unsigned(&self, field: (usize, usize), what: &str) -> Result<u64, TarError> {
        let v = self.number(field, what)?;
        u64::try_from(v).map_err(|_| self.invalid(format!("{what} field out of range: {v}")))
    }

    pub(crate) fn size(&self) -> Result<u64, TarError> {
        self.unsigned(SIZE, "size")
    }

    pub(crate) fn mode(&self) -> Result<u32, TarError> {
        // Some writers keep the file type bits (S_IFREG...) in the mode;
        // only the permission bits are the entry's mode.
        Ok((self.unsigned(MODE, "mode")? & 0o7777) as u32)
    }

    pub(crate) fn uid(&self) -> Result<u64, TarError> {
        self.unsigned(UID, "uid")
    }

    pub(crate) fn gid(&self) -> Result<u64, TarError> {
        self.unsigned(GID, "gid")
    }

    pub(crate) fn mtime(&self) -> Result<i64, TarError> {
        let v = self.number(MTIME, "mtime")?;
        i64::try_from(v).map_err(|_| self.invalid(format!("mtime field out of range: {v}")))
    }

    fn device(&self, field: (usize, usize), what: &str) -> Result<u32, TarError> {
        if self.format() == Format::V7 {
            return Ok(0);
        }
        let v = self.unsigned(field, what)?;
        u32::try_from(v).map_err(|_| self.invalid(format!("{what} field out of range: {v}")))
    }

    pub(crate) fn dev_major(&self) -> Result<u32, TarError> {
        self.device(DEVMAJOR, "devmajor")
    }

    pub(crate) fn dev_minor(&self) -> Result<u32, TarError> {
        self.device(DEVMINOR, "devminor")
    }

    /// Old GNU sparse header: the logical file size.
    pub(crate) fn gnu_realsize(&self) -> Result<u64, TarError> {
        self.unsigned(GNU_REALSIZE, "realsize")
    }
}

/// Appends the (offset, length) pairs of an old GNU sparse map found in
/// `block` (a header or an extension block) to `out`, stopping at the first
/// empty slot, and returns the block's "isextended" flag.
pub(crate) fn gnu_sparse_pairs(
    block: &[u8; BLOCK],
    start: usize,
    count: usize,
    isextended: usize,
    out: &mut Vec<(u64, u64)>,
) -> Result<bool, String> {
    for i in 0..count {
        let at = start + 24 * i;
        let offset = &block[at..at + 12];
        // Same end test as GNU and BSD tar: an empty offset field.
        if offset[0] == 0 {
            break;
        }
        let length = &block[at + 12..at + 24];
        let offset = parse_numeric(offset).map_err(|e| format!("offset: {e}"))?;
        let length = parse_numeric(length).map_err(|e| format!("length: {e}"))?;
        let offset = u64::try_from(offset).map_err(|_| format!("offset out of range: {offset}"))?;
        let length = u64::try_from(length).map_err(|_| format!("length out of range: {length}"))?;
        out.push((offset, length));
    }
    Ok(block[isextended] != 0)
}

/// The bytes of `field` up to the first NUL.
pub(crate) fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// Parses a numeric field: octal text, or GNU base-256 when the high bit of
/// the first byte is set (bit 0x40 then gives the sign, two's complement).
/// An empty field is 0. The result is wide enough for a 12-byte base-256
/// field (95 bits); callers narrow it with a range check.
pub(crate) fn parse_numeric(field: &[u8]) -> Result<i128, String> {
    let Some(&first) = field.first() else {
        return Ok(0);
    };
    if first & 0x80 == 0 {
        return Ok(parse_octal(field)?.map_or(0, i128::from));
    }
    if field.len() > 15 {
        return Err("base-256 field too long".to_owned());
    }
    let invert = if first & 0x40 != 0 { 0xff } else { 0x00 };
    let mut x: i128 = 0;
    for (i, &b) in field.iter().enumerate() {
        let mut b = b ^ invert;
        if i == 0 {
            b &= 0x7f;
        }
        x = (x << 8) | i128::from(b);
    }
    // -a-1 == !a: an inverted magnitude gives the negative value.
    Ok(if invert == 0xff { -x - 1 } else { x })
}

/// Parses an octal field: leading spaces and NULs are skipped, the digits
/// end at a NUL or space, and only spaces and NULs may follow. `None` for a
/// field without digits.
pub(crate) fn parse_octal(field: &[u8]) -> Result<Option<u64>, String> {
    let start = field
        .iter()
        .position(|&b| b != b' ' && b != 0)
        .unwrap_or(field.len());
    let rest = cstr(&field[start..]);
    let digits_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let (digits, tail) = rest.split_at(digits_end);
    if tail.iter().any(|&b| b != b' ') {
        return Err(format!(
            "not an octal number: {:?}",
            String::from_utf8_lossy(field)
        ));
    }
    if digits.is_empty() {
        return Ok(None);
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err(format!(
                "not an octal number: {:?}",
                String::from_utf8_lossy(field)
            ));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| "octal number overflows".to_owned())?;
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(parse_octal(b"0000644\0"), Ok(Some(0o644)));
        assert_eq!(parse_octal(b"   644 \0"), Ok(Some(0o644)));
        assert_eq!(parse_octal(b"\0\0\x00644\0"), Ok(Some(0o644)));
        assert_eq!(parse_octal(b"644\0junk"), Ok(Some(0o644)));
        assert_eq!(parse_octal(b"        "), Ok(None));
        assert_eq!(parse_octal(b"\0\0\0\0"), Ok(None));
        assert_eq!(parse_octal(b"77777777777\0"), Ok(Some(0o77777777777)));
        assert_eq!(parse_octal(b"777777777777"), Ok(Some(0o777777777777)));
        assert!(parse_octal(b"0008\0").is_err());
        assert!(parse_octal(b"12 34\0").is_err());
        assert!(parse_octal(b"-1\0").is_err());
        assert!(parse_octal(b"7777777777777777777777").is_err());
    }

    #[test]
    fn base256_fields() {
        let mut f = [0u8; 8];
        f[0] = 0x80;
        f[7] = 0x2a;
        assert_eq!(parse_numeric(&f), Ok(42));
        // -1 in a 12-byte field: all 0xff.
        assert_eq!(parse_numeric(&[0xff; 12]), Ok(-1));
        // -2: 0xff.. 0xfe
        let mut g = [0xffu8; 12];
        g[11] = 0xfe;
        assert_eq!(parse_numeric(&g), Ok(-2));
        // The largest 12-byte positive value does not fit in u64.
        let mut big = [0xffu8; 12];
        big[0] = 0x80 | 0x3f;
        let v = parse_numeric(&big).expect("parses wide");
        assert!(u64::try_from(v).is_err());
    }
}
