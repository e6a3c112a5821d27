//! The flash tier on disk: one file per stripe in a directory the node
//! owns. Everything here is blocking file I/O; the node calls it from
//! blocking threads and never while holding the index lock.
//!
//! Layout (format version [`FORMAT_VERSION`]):
//!
//! ```text
//! DIR/FORMAT                          "kindling-cachenode flash 1\n"
//! DIR/tmp/GEN.tmp                     a stripe being written; removed at open
//! DIR/stripes/NN/NAME-INDEX-GEN       one stripe: header + body
//! ```
//!
//! `NAME` is the chunk name in 64 lowercase hex digits, `NN` its first
//! two, `INDEX` the stripe index in decimal and `GEN` the write's
//! generation in 16 hex digits. Generations are unique per write, so a
//! replaced or evicted file can be deleted at any time without touching
//! its successor, and at open the highest generation of a key wins.
//!
//! A stripe file is a 56-byte header, all integers little-endian, then the
//! body:
//!
//! ```text
//! 0   4  magic "KCNS"
//! 4   2  format version (1)
//! 6   1  stripe index
//! 7   1  zero
//! 8  32  chunk name
//! 40  8  body length
//! 48  8  xxh3-64 of the body
//! ```
//!
//! Writes go to `tmp/` and are renamed into place, so a reader sees a
//! whole file or none. There is no fsync: this is a cache, and a file torn
//! by a power loss fails its checksum when read and is dropped like any
//! other corrupt entry. Every read checks magic, version, key, length and
//! checksum.
//!
//! The directory's `FORMAT` file guards against reading another format:
//! an unknown version is an error ([`NodeError::Format`]) and nothing is
//! deleted; the operator removes the directory to start empty. A
//! non-empty directory without `FORMAT` is refused too
//! ([`NodeError::NotNodeDir`]), so a mistyped path never loses files.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::{NodeError, StripeKey, MAX_STRIPE_BYTES};

/// Version of the layout above; bump it on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_PREFIX: &str = "kindling-cachenode flash ";
const TMP_DIR: &str = "tmp";
const STRIPES_DIR: &str = "stripes";

const MAGIC: [u8; 4] = *b"KCNS";
/// Size of a stripe file's header.
pub(crate) const HEADER_BYTES: usize = 56;

/// The flash directory's paths.
#[derive(Debug, Clone)]
pub(crate) struct FlashDir {
    root: PathBuf,
}

/// A stripe file found by [`FlashDir::open`].
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) key: StripeKey,
    pub(crate) gen: u64,
    pub(crate) len: u32,
    pub(crate) modified: SystemTime,
}

/// What [`FlashDir::open`] found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Usable entries, one per key (the highest generation).
    pub(crate) found: Vec<Found>,
    /// Files deleted because they cannot be entries (short, oversized,
    /// foreign names).
    pub(crate) bad: u64,
}

/// Why a stripe file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file is gone (evicted or replaced since the lookup).
    Missing,
    /// The file is there but is not the stripe it should be.
    Corrupt(&'static str),
    Io(io::Error),
}

impl FlashDir {
    /// Opens (creating if needed) the flash directory: checks its format,
    /// empties `tmp/` and lists the stripe files. Removes files that
    /// cannot be entries and all but the newest generation of a key.
    pub(crate) fn open(root: &Path) -> Result<(FlashDir, Scan), NodeError> {
        let dir = FlashDir {
            root: root.to_path_buf(),
        };
        fs::create_dir_all(root).map_err(|e| NodeError::io("create flash directory", root, e))?;
        dir.check_format()?;
        dir.clear_tmp()?;
        let stripes = root.join(STRIPES_DIR);
        for byte in 0..=255u8 {
            let sub = stripes.join(format!("{byte:02x}"));
            fs::create_dir_all(&sub)
                .map_err(|e| NodeError::io("create flash directory", &sub, e))?;
        }
        let scan = dir.scan()?;
        Ok((dir, scan))
    }

    fn check_format(&self) -> Result<(), NodeError> {
        let path = self.root.join(FORMAT_FILE);
        match fs::read(&path) {
            Ok(text) => {
                let text = String::from_utf8_lossy(&text);
                let version = text
                    .strip_prefix(FORMAT_PREFIX)
                    .and_then(|v| v.trim_end().parse::<u32>().ok());
                if version == Some(FORMAT_VERSION) {
                    Ok(())
                } else {
                    Err(NodeError::Format {
                        dir: self.root.clone(),
                        found: text.trim_end().chars().take(80).collect(),
                        expected: FORMAT_VERSION,
                    })
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut entries = fs::read_dir(&self.root)
                    .map_err(|e| NodeError::io("list flash directory", &self.root, e))?;
                if entries.next().is_some() {
                    return Err(NodeError::NotNodeDir {
                        dir: self.root.clone(),
                    });
                }
                fs::create_dir_all(self.root.join(TMP_DIR)).map_err(|e| {
                    NodeError::io("create flash directory", self.root.join(TMP_DIR), e)
                })?;
                let tmp = self.root.join(TMP_DIR).join("FORMAT.tmp");
                fs::write(&tmp, format!("{FORMAT_PREFIX}{FORMAT_VERSION}\n"))
                    .map_err(|e| NodeError::io("write format file", &tmp, e))?;
                fs::rename(&tmp, &path).map_err(|e| NodeError::io("write format file", &path, e))
            }
            Err(e) => Err(NodeError::io("read format file", path, e)),
        }
    }

    fn clear_tmp(&self) -> Result<(), NodeError> {
        let tmp = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp).map_err(|e| NodeError::io("create flash directory", &tmp, e))?;
        let entries =
            fs::read_dir(&tmp).map_err(|e| NodeError::io("list flash directory", &tmp, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| NodeError::io("list flash directory", &tmp, e))?;
            let path = entry.path();
            tracing::debug!(path = %path.display(), "removing leftover temporary file");
            remove_quietly(&path);
        }
        Ok(())
    }

    fn scan(&self) -> Result<Scan, NodeError> {
        let mut scan = Scan::default();
        let stripes = self.root.join(STRIPES_DIR);
        for byte in 0..=255u8 {
            let sub = stripes.join(format!("{byte:02x}"));
            let entries =
                fs::read_dir(&sub).map_err(|e| NodeError::io("list flash directory", &sub, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| NodeError::io("list flash directory", &sub, e))?;
                let path = entry.path();
                let parsed = entry.file_name().to_str().and_then(parse_file_name);
                let meta = entry.metadata();
                let usable = match (parsed, &meta) {
                    (Some((key, gen)), Ok(meta))
                        if meta.is_file()
                            && key.name.0[0] == byte
                            && meta.len() >= HEADER_BYTES as u64
                            && meta.len() - HEADER_BYTES as u64 <= MAX_STRIPE_BYTES as u64 =>
                    {
                        Some(Found {
                            key,
                            gen,
                            len: (meta.len() - HEADER_BYTES as u64) as u32,
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        })
                    }
                    _ => None,
                };
                match usable {
                    Some(found) => scan.found.push(found),
                    None => {
                        tracing::warn!(path = %path.display(), "removing a file that is not a stripe entry");
                        scan.bad += 1;
                        if meta.is_ok_and(|m| m.is_dir()) {
                            let _ = fs::remove_dir_all(&path);
                        } else {
                            remove_quietly(&path);
                        }
                    }
                }
            }
        }
        // One entry per key: the highest generation. The others are files
        // a crash left behind between a rename and a delete.
        scan.found
            .sort_by(|a, b| (a.key, b.gen).cmp(&(b.key, a.gen)));
        let mut kept: Vec<Found> = Vec::with_capacity(scan.found.len());
        for found in scan.found.drain(..) {
            if kept.last().is_some_and(|last| last.key == found.key) {
                remove_quietly(&self.path(&found.key, found.gen));
            } else {
                kept.push(found);
            }
        }
        // Oldest first, the order the index is rebuilt in.
        kept.sort_by_key(|f| (f.modified, f.gen));
        scan.found = kept;
        Ok(scan)
    }

    /// The file of generation `gen` of `key`.
    pub(crate) fn path(&self, key: &StripeKey, gen: u64) -> PathBuf {
        let name = key.name.to_hex();
        let mut path = self.root.join(STRIPES_DIR);
        path.push(&name[..2]);
        path.push(format!("{name}-{}-{gen:016x}", key.index));
        path
    }

    /// Writes a stripe as generation `gen`: to `tmp/`, then renamed into
    /// place.
    pub(crate) fn write(&self, key: &StripeKey, gen: u64, body: &[u8]) -> Result<(), NodeError> {
        let tmp = self.root.join(TMP_DIR).join(format!("{gen:016x}.tmp"));
        let header = header(key, body);
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&header)?;
            file.write_all(body)
        });
        if let Err(e) = written {
            remove_quietly(&tmp);
            return Err(NodeError::io("write stripe file", tmp, e));
        }
        let path = self.path(key, gen);
        fs::rename(&tmp, &path).map_err(|e| {
            remove_quietly(&tmp);
            NodeError::io("rename stripe file into place", path, e)
        })
    }

    /// Reads and checks generation `gen` of `key`, expected to hold `len`
    /// bytes.
    pub(crate) fn read(&self, key: &StripeKey, gen: u64, len: u32) -> Result<Bytes, ReadError> {
        let path = self.path(key, gen);
        let mut file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ReadError::Missing,
            _ => ReadError::Io(e),
        })?;
        let size = file.metadata().map_err(ReadError::Io)?.len();
        if size != HEADER_BYTES as u64 + u64::from(len) {
            return Err(ReadError::Corrupt("file size does not match the index"));
        }
        let mut head = [0u8; HEADER_BYTES];
        file.read_exact(&mut head).map_err(short_is_corrupt)?;
        let checksum = check_header(&head, key, len)?;
        let mut body = vec![0u8; len as usize];
        file.read_exact(&mut body).map_err(short_is_corrupt)?;
        if xxh3_64(&body) != checksum {
            return Err(ReadError::Corrupt("checksum mismatch"));
        }
        Ok(Bytes::from(body))
    }

    /// Deletes a stripe file that is no longer indexed.
    pub(crate) fn remove(&self, key: &StripeKey, gen: u64) {
        remove_quietly(&self.path(key, gen));
    }
}

fn short_is_corrupt(e: io::Error) -> ReadError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Corrupt("file is short"),
        _ => ReadError::Io(e),
    }
}

fn header(key: &StripeKey, body: &[u8]) -> [u8; HEADER_BYTES] {
    let mut head = [0u8; HEADER_BYTES];
    head[0..4].copy_from_slice(&MAGIC);
    head[4..6].copy_from_slice(&(FORMAT_VERSION as u16).to_le_bytes());
    head[6] = key.index;
    head[8..40].copy_from_slice(&key.name.0);
    head[40..48].copy_from_slice(&(body.len() as u64).to_le_bytes());
    head[48..56].copy_from_slice(&xxh3_64(body).to_le_bytes());
    head
}

/// Checks a header against the entry it should be; returns the body
/// checksum.
fn check_header(head: &[u8; HEADER_BYTES], key: &StripeKey, len: u32) -> Result<u64, ReadError> {
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(word)
    };
    if head[0..4] != MAGIC {
        return Err(ReadError::Corrupt("bad magic"));
    }
    if u16::from_le_bytes([head[4], head[5]]) != FORMAT_VERSION as u16 {
        return Err(ReadError::Corrupt("unknown entry version"));
    }
    if head[6] != key.index || head[8..40] != key.name.0 {
        return Err(ReadError::Corrupt("header names another stripe"));
    }
    if u64_at(40) != u64::from(len) {
        return Err(ReadError::Corrupt("header length does not match the index"));
    }
    Ok(u64_at(48))
}

/// Parses `NAME-INDEX-GEN`.
fn parse_file_name(file: &str) -> Option<(StripeKey, u64)> {
    let mut parts = file.split('-');
    let name = parts.next()?;
    let index = parts.next()?;
    let gen = parts.next()?;
    if parts.next().is_some() || gen.len() != 16 {
        return None;
    }
    let key = StripeKey::parse(name, index)?;
    let gen = u64::from_str_radix(gen, 16).ok()?;
    Some((key, gen))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove flash file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_chunk::ChunkName;

    fn key() -> StripeKey {
        StripeKey {
            name: ChunkName([7; 32]),
            index: 3,
        }
    }

    #[test]
    fn write_read_round_trip_and_corruption() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, scan) = FlashDir::open(tmp.path()).expect("open");
        assert!(scan.found.is_empty());
        dir.write(&key(), 5, b"stripe bytes").expect("write");
        assert_eq!(
            dir.read(&key(), 5, 12).expect("read"),
            Bytes::from_static(b"stripe bytes")
        );
        assert!(matches!(dir.read(&key(), 6, 12), Err(ReadError::Missing)));
        assert!(matches!(
            dir.read(&key(), 5, 11),
            Err(ReadError::Corrupt(_))
        ));

        let path = dir.path(&key(), 5);
        let mut raw = fs::read(&path).expect("raw");
        raw[HEADER_BYTES + 2] ^= 1;
        fs::write(&path, &raw).expect("rewrite");
        assert!(matches!(
            dir.read(&key(), 5, 12),
            Err(ReadError::Corrupt("checksum mismatch"))
        ));
        raw.truncate(HEADER_BYTES + 4);
        fs::write(&path, &raw).expect("rewrite");
        assert!(matches!(
            dir.read(&key(), 5, 12),
            Err(ReadError::Corrupt(_))
        ));
    }

    #[test]
    fn open_keeps_the_newest_generation_and_drops_junk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, _) = FlashDir::open(tmp.path()).expect("open");
        dir.write(&key(), 1, b"old").expect("write");
        dir.write(&key(), 2, b"newer").expect("write");
        let sub = tmp.path().join("stripes/07");
        fs::write(sub.join("junk"), b"x").expect("junk");
        fs::write(tmp.path().join("tmp/0000000000000009.tmp"), b"half").expect("tmp");
        // A file too short to hold a header.
        fs::write(
            sub.join(format!("{}-4-{:016x}", key().name.to_hex(), 3)),
            b"x",
        )
        .expect("short");

        let (dir, scan) = FlashDir::open(tmp.path()).expect("reopen");
        assert_eq!(scan.bad, 2);
        assert_eq!(scan.found.len(), 1);
        assert_eq!((scan.found[0].gen, scan.found[0].len), (2, 5));
        assert!(!dir.path(&key(), 1).exists());
        assert_eq!(
            fs::read_dir(tmp.path().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn foreign_and_future_directories_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("precious"), b"data").expect("write");
        assert!(matches!(
            FlashDir::open(tmp.path()),
            Err(NodeError::NotNodeDir { .. })
        ));
        assert!(tmp.path().join("precious").exists());

        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(FORMAT_FILE), "kindling-cachenode flash 2\n").expect("write");
        let err = FlashDir::open(tmp.path()).expect_err("future format");
        assert!(
            matches!(err, NodeError::Format { expected: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn file_names() {
        let path = FlashDir {
            root: PathBuf::from("/d"),
        }
        .path(&key(), 0xab);
        let file = path.file_name().and_then(|f| f.to_str()).expect("name");
        assert_eq!(parse_file_name(file), Some((key(), 0xab)));
        assert!(path.starts_with("/d/stripes/07"));
        assert_eq!(parse_file_name("zz-1-0000000000000001"), None);
        assert_eq!(
            parse_file_name(&format!("{}-256-0000000000000001", key().name.to_hex())),
            None
        );
    }
}
