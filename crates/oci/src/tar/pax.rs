//! PAX extended headers: `"LEN KEY=VALUE\n"` records (POSIX `pax`,
//! "pax Extended Header") and the keys this reader understands.
//!
//! Record lengths are validated exactly (each record must end with `\n` at
//! the position its length says). Values stay raw bytes: paths need not be
//! UTF-8 and `SCHILY.xattr.*` values are binary. Unknown keys are ignored.

use super::{Timestamp, MAX_SPARSE_SEGMENTS};

/// What one 'x' header says about the entry that follows it.
#[derive(Debug, Default)]
pub(crate) struct PaxHeader {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<Timestamp>,
    pub dev_major: Option<u32>,
    pub dev_minor: Option<u32>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: SparseRecords,
}

/// The `GNU.sparse.*` records of a PAX header (formats 0.0, 0.1 and 1.0).
#[derive(Debug, Default)]
pub(crate) struct SparseRecords {
    pub major: Option<u64>,
    pub minor: Option<u64>,
    pub name: Option<Vec<u8>>,
    pub realsize: Option<u64>,
    pub size: Option<u64>,
    pub numblocks: Option<u64>,
    /// Format 0.1: `GNU.sparse.map`, flattened offset/length numbers.
    pub map: Option<Vec<u64>>,
    /// Format 0.0: repeated `GNU.sparse.offset` / `GNU.sparse.numbytes`,
    /// flattened in archive order.
    pub pairs: Vec<u64>,
}

const SCHILY_XATTR: &[u8] = b"SCHILY.xattr.";
const LIBARCHIVE_XATTR: &[u8] = b"LIBARCHIVE.xattr.";

impl PaxHeader {
    /// Parses the payload of an 'x' header.
    pub(crate) fn parse(data: &[u8]) -> Result<PaxHeader, String> {
        let mut pax = PaxHeader::default();
        for_each_record(data, |key, value| pax.apply(key, value))?;
        Ok(pax)
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let name = || String::from_utf8_lossy(key).into_owned();
        match key {
            b"path" => self.path = path_value(value, "path")?,
            b"linkpath" => self.linkpath = path_value(value, "linkpath")?,
            b"size" => {
                self.size = optional(value, parse_decimal).map_err(|e| format!("size: {e}"))?
            }
            b"uid" => self.uid = optional(value, parse_decimal).map_err(|e| format!("uid: {e}"))?,
            b"gid" => self.gid = optional(value, parse_decimal).map_err(|e| format!("gid: {e}"))?,
            b"mtime" => {
                self.mtime = optional(value, parse_timestamp).map_err(|e| format!("mtime: {e}"))?
            }
            b"SCHILY.devmajor" => {
                self.dev_major =
                    optional(value, parse_u32).map_err(|e| format!("{}: {e}", name()))?
            }
            b"SCHILY.devminor" => {
                self.dev_minor =
                    optional(value, parse_u32).map_err(|e| format!("{}: {e}", name()))?
            }
            b"GNU.sparse.major" => {
                self.sparse.major =
                    Some(parse_decimal(value).map_err(|e| format!("{}: {e}", name()))?)
            }
            b"GNU.sparse.minor" => {
                self.sparse.minor =
                    Some(parse_decimal(value).map_err(|e| format!("{}: {e}", name()))?)
            }
            b"GNU.sparse.name" => self.sparse.name = path_value(value, "GNU.sparse.name")?,
            b"GNU.sparse.realsize" => {
                self.sparse.realsize =
                    Some(parse_decimal(value).map_err(|e| format!("{}: {e}", name()))?)
            }
            b"GNU.sparse.size" => {
                self.sparse.size =
                    Some(parse_decimal(value).map_err(|e| format!("{}: {e}", name()))?)
            }
            b"GNU.sparse.numblocks" => {
                self.sparse.numblocks =
                    Some(parse_decimal(value).map_err(|e| format!("{}: {e}", name()))?)
            }
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                // 0.0 records alternate, offset first.
                let want_offset = self.sparse.pairs.len().is_multiple_of(2);
                if want_offset != (key == b"GNU.sparse.offset") {
                    return Err(format!("{} out of order", name()));
                }
                if self.sparse.pairs.len() >= 2 * MAX_SPARSE_SEGMENTS {
                    return Err(format!("more than {MAX_SPARSE_SEGMENTS} sparse segments"));
                }
                let v = parse_decimal(value).map_err(|e| format!("{}: {e}", name()))?;
                self.sparse.pairs.push(v);
            }
            b"GNU.sparse.map" => self.sparse.map = Some(parse_map(value)?),
            _ if key.starts_with(SCHILY_XATTR) => {
                let xname = &key[SCHILY_XATTR.len()..];
                self.push_xattr(xname.to_vec(), value.to_vec())?;
            }
            _ if key.starts_with(LIBARCHIVE_XATTR) => {
                let xname = url_decode(&key[LIBARCHIVE_XATTR.len()..])
                    .ok_or_else(|| format!("bad %-escape in {}", name()))?;
                let xvalue =
                    base64_decode(value).ok_or_else(|| format!("bad base64 in {}", name()))?;
                self.push_xattr(xname, xvalue)?;
            }
            // atime, ctime, uname, gname, comment, charset, ...: not needed.
            _ => {}
        }
        Ok(())
    }

    /// Keeps archive order; a later record for the same name replaces the
    /// value in place (libarchive writes both LIBARCHIVE.xattr and
    /// SCHILY.xattr for one attribute).
    fn push_xattr(&mut self, name: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        if name.is_empty() {
            return Err("empty xattr name".to_owned());
        }
        if name.contains(&0) {
            return Err("NUL in xattr name".to_owned());
        }
        match self.xattrs.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.xattrs.push((name, value)),
        }
        Ok(())
    }
}

/// Calls `f(key, value)` for every record of a PAX payload, validating the
/// framing. Trailing NUL padding after the last record is tolerated.
pub(crate) fn for_each_record(
    data: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut rest = data;
    while let Some(&first) = rest.first() {
        if first == 0 && rest.iter().all(|&b| b == 0) {
            break;
        }
        // LEN is the decimal length of the whole record, itself included.
        let space = rest
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len_text = &rest[..space];
        if len_text.is_empty() || !len_text.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "bad record length {:?}",
                String::from_utf8_lossy(len_text)
            ));
        }
        let len: usize = std::str::from_utf8(len_text)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("record length overflows")?;
        if len > rest.len() {
            return Err(format!(
                "record length {len} runs past the header ({} bytes left)",
                rest.len()
            ));
        }
        // Smallest record: "LEN k=\n".
        if len < space + 4 {
            return Err(format!("record length {len} too small"));
        }
        let record = &rest[space + 1..len];
        let Some((&b'\n', kv)) = record.split_last() else {
            return Err(format!("record length {len} does not end at a newline"));
        };
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without '='")?;
        let (key, value) = (&kv[..eq], &kv[eq + 1..]);
        if key.is_empty() {
            return Err("record with an empty key".to_owned());
        }
        f(key, value)?;
        rest = &rest[len..];
    }
    Ok(())
}

/// An empty value unsets the key (POSIX: it reverts to the header field).
fn optional<T>(
    value: &[u8],
    parse: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn path_value(value: &[u8], key: &str) -> Result<Option<Vec<u8>>, String> {
    if value.contains(&0) {
        return Err(format!("NUL in {key}"));
    }
    Ok((!value.is_empty()).then(|| value.to_vec()))
}

pub(crate) fn parse_decimal(value: &[u8]) -> Result<u64, String> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "not a decimal number: {:?}",
            String::from_utf8_lossy(value)
        ));
    }
    value.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(d - b'0')))
            .ok_or_else(|| "number overflows".to_owned())
    })
}

fn parse_u32(value: &[u8]) -> Result<u32, String> {
    let v = parse_decimal(value)?;
    u32::try_from(v).map_err(|_| format!("{v} out of range"))
}

/// `[-]SECONDS[.FRACTION]`; the fraction is truncated to nanoseconds.
pub(crate) fn parse_timestamp(value: &[u8]) -> Result<Timestamp, String> {
    let (negative, rest) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let (int, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &[][..]),
    };
    let secs = parse_decimal(int)?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad fraction {:?}", String::from_utf8_lossy(frac)));
    }
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let d = frac.get(i).map_or(0, |&d| u32::from(d - b'0'));
        nanos = nanos * 10 + d;
    }
    let secs = i64::try_from(secs).map_err(|_| "seconds overflow".to_owned())?;
    if !negative {
        return Ok(Timestamp { secs, nanos });
    }
    // -S.F = -(S+1) + (1 - 0.F)
    if nanos == 0 {
        Ok(Timestamp {
            secs: -secs,
            nanos: 0,
        })
    } else {
        Ok(Timestamp {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        })
    }
}

/// `GNU.sparse.map`: "offset,length,offset,length,...".
fn parse_map(value: &[u8]) -> Result<Vec<u64>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut numbers = Vec::new();
    for part in value.split(|&b| b == b',') {
        if numbers.len() >= 2 * MAX_SPARSE_SEGMENTS {
            return Err(format!("more than {MAX_SPARSE_SEGMENTS} sparse segments"));
        }
        numbers.push(parse_decimal(part).map_err(|e| format!("GNU.sparse.map: {e}"))?);
    }
    Ok(numbers)
}

/// libarchive %-escapes bytes outside '!'..='~' and '%' '=' in xattr names.
fn url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex_value(*s.get(i + 1)?)?;
            let lo = hex_value(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Standard base64, '=' padding optional (libarchive writes none).
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let trimmed = match s.iter().position(|&b| b == b'=') {
        Some(pad) => {
            if pad + 2 < s.len() || !s[pad..].iter().all(|&b| b == b'=') {
                return None;
            }
            &s[..pad]
        }
        None => s,
    };
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in trimmed {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        assert_eq!(r.len(), len);
        r
    }

    #[test]
    fn parses_records() {
        let mut data = record("path", b"a/\xffb");
        data.extend(record("uid", b"4294967296"));
        data.extend(record("mtime", b"-1.25"));
        data.extend(record("SCHILY.xattr.user.bin", b"\0\x01=\n"));
        data.extend(record("SCHILY.xattr.user.empty", b""));
        data.extend(record("LIBARCHIVE.xattr.user%20sp", b"aGk"));
        data.extend(record("SCHILY.xattr.user.bin", b"v2"));
        data.extend(record("atime", b"whatever"));
        data.extend([0u8; 7]);
        let pax = PaxHeader::parse(&data).expect("parses");
        assert_eq!(pax.path.as_deref(), Some(&b"a/\xffb"[..]));
        assert_eq!(pax.uid, Some(1 << 32));
        assert_eq!(
            pax.mtime,
            Some(Timestamp {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(
            pax.xattrs,
            vec![
                (b"user.bin".to_vec(), b"v2".to_vec()),
                (b"user.empty".to_vec(), Vec::new()),
                (b"user sp".to_vec(), b"hi".to_vec()),
            ]
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(PaxHeader::parse(b"11 path=ab\n").is_ok());
        assert!(PaxHeader::parse(b"12 path=ab\n").is_err());
        assert!(PaxHeader::parse(b"10 path=ab\n").is_err());
        assert!(PaxHeader::parse(b"x path=ab\n").is_err());
        assert!(PaxHeader::parse(b"11path=ab\n\n").is_err());
        assert!(PaxHeader::parse(b"11 pathxab\n").is_err());
        assert!(PaxHeader::parse(b"99999999999999999999999 a=b\n").is_err());
        assert!(PaxHeader::parse(b"3 \n").is_err());
    }

    #[test]
    fn timestamps() {
        let t = |s: &str| parse_timestamp(s.as_bytes());
        assert_eq!(
            t("1700000000.123456789"),
            Ok(Timestamp {
                secs: 1_700_000_000,
                nanos: 123_456_789
            })
        );
        assert_eq!(
            t("1.1234567891"),
            Ok(Timestamp {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(t("-1"), Ok(Timestamp { secs: -1, nanos: 0 }));
        assert_eq!(
            t("-0.5"),
            Ok(Timestamp {
                secs: -1,
                nanos: 500_000_000
            })
        );
        assert_eq!(t("5."), Ok(Timestamp { secs: 5, nanos: 0 }));
        assert!(t("").is_err());
        assert!(t(".5").is_err());
        assert!(t("1.5x").is_err());
        assert!(t("99999999999999999999").is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode(b"").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode(b"aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode(b"aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(
            base64_decode(b"AAEC/w==").as_deref(),
            Some(&[0u8, 1, 2, 255][..])
        );
        assert_eq!(base64_decode(b"a"), None);
        assert_eq!(base64_decode(b"a=b="), None);
        assert_eq!(base64_decode(b"a*bc"), None);
    }
}
