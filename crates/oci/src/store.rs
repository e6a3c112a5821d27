//! Where an image's blobs are: a directory, or a tar archive read in place.
//!
//! An archive is scanned once with [`TarReader`], seeking over member data,
//! to index `name -> (data offset, size)`; a blob is then opened as the
//! archive `File`, seeked to its offset and limited with `take`, so a
//! multi-GB layer streams from disk and is never copied or held in memory.
//! Docker-archives link shared layers (`<id>/layer.tar -> ../<other>/layer.tar`);
//! symlinks and hard links between members are resolved in the index.
//!
//! Names looked up here are built by this crate from validated digests or
//! checked docker-archive paths, never from raw strings.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};

use crate::error::OciError;
use crate::layer::{read_up_to, Compression};
use crate::tar::{EntryKind, TarReader};

/// Read buffer for the archive scan (headers only; data is seeked over).
const SCAN_BUFFER_SIZE: usize = 64 * 1024;
/// Symlink chains longer than this between archive members are ignored.
const MAX_LINK_DEPTH: usize = 8;

#[derive(Clone)]
pub(crate) enum BlobStore {
    Dir(PathBuf),
    Archive {
        path: PathBuf,
        members: BTreeMap<Vec<u8>, Member>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member {
    File {
        offset: u64,
        size: u64,
    },
    /// A sparse member cannot be read in place.
    Sparse,
}

impl BlobStore {
    /// Indexes the regular files of a tar archive.
    pub(crate) fn scan_archive(path: &Path) -> Result<BlobStore, OciError> {
        let io_err = |source| OciError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
        if Compression::detect(&magic[..n]) != Compression::None {
            return Err(OciError::CompressedArchive {
                path: path.to_owned(),
            });
        }
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let archive_err = |source| OciError::Archive {
            path: path.to_owned(),
            source,
        };
        let mut tar = TarReader::new(BufReader::with_capacity(SCAN_BUFFER_SIZE, file));
        let mut members = BTreeMap::new();
        let mut symlinks = Vec::new();
        while let Some(entry) = tar.next_entry().map_err(archive_err)? {
            if let Some(name) = normalize(&entry.path) {
                match entry.kind {
                    EntryKind::Regular => {
                        let member = match entry.sparse {
                            Some(_) => Member::Sparse,
                            None => Member::File {
                                offset: tar.position(),
                                size: entry.stored_size,
                            },
                        };
                        members.insert(name, member);
                    }
                    // Hard link targets are archive paths of earlier members.
                    EntryKind::HardLink => {
                        if let Some(target) =
                            normalize(&entry.link_target).and_then(|t| members.get(&t).copied())
                        {
                            members.insert(name, target);
                        }
                    }
                    EntryKind::Symlink => symlinks.push((name, entry.link_target)),
                    _ => {}
                }
            }
            tar.skip_data_seeking().map_err(archive_err)?;
        }
        // Symlinks may point at members that come later, or at each other.
        for _ in 0..MAX_LINK_DEPTH {
            let mut changed = false;
            for (name, target) in &symlinks {
                if members.contains_key(name) {
                    continue;
                }
                let resolved = resolve_symlink(name, target).and_then(|t| members.get(&t).copied());
                if let Some(member) = resolved {
                    members.insert(name.clone(), member);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(BlobStore::Archive {
            path: path.to_owned(),
            members,
        })
    }

    /// The directory or archive file.
    pub(crate) fn location(&self) -> &Path {
        match self {
            BlobStore::Dir(path) | BlobStore::Archive { path, .. } => path,
        }
    }

    pub(crate) fn is_archive(&self) -> bool {
        matches!(self, BlobStore::Archive { .. })
    }

    fn dir_path(dir: &Path, name: &str) -> PathBuf {
        let mut path = dir.to_owned();
        path.extend(name.split('/'));
        path
    }

    /// True if `name` is a regular file (or a link to one).
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            BlobStore::Dir(dir) => Self::dir_path(dir, name).is_file(),
            BlobStore::Archive { members, .. } => members.contains_key(name.as_bytes()),
        }
    }

    /// Opens blob `name` (`what` names it in errors); returns a reader
    /// limited to the blob and its size.
    pub(crate) fn open(&self, name: &str, what: &str) -> Result<(Take<File>, u64), OciError> {
        let missing = || OciError::MissingBlob {
            what: what.to_owned(),
        };
        match self {
            BlobStore::Dir(dir) => {
                let path = Self::dir_path(dir, name);
                let file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(source) => return Err(OciError::Io { path, source }),
                };
                let meta = file.metadata().map_err(|source| OciError::Io {
                    path: path.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(missing());
                }
                Ok((file.take(meta.len()), meta.len()))
            }
            BlobStore::Archive { path, members } => {
                let (offset, size) = match members.get(name.as_bytes()) {
                    None => return Err(missing()),
                    Some(Member::Sparse) => {
                        return Err(OciError::Malformed {
                            what: what.to_owned(),
                            reason: format!("stored as a sparse file in {}", path.display()),
                        })
                    }
                    Some(&Member::File { offset, size }) => (offset, size),
                };
                let io_err = |source| OciError::Io {
                    path: path.clone(),
                    source,
                };
                let mut file = File::open(path).map_err(io_err)?;
                file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
                Ok((file.take(size), size))
            }
        }
    }

    /// Reads a small document whole, failing above `limit` bytes.
    pub(crate) fn read_small(
        &self,
        name: &str,
        what: &str,
        limit: u64,
    ) -> Result<Vec<u8>, OciError> {
        let (mut reader, size) = self.open(name, what)?;
        if size > limit {
            return Err(OciError::TooLarge {
                what: what.to_owned(),
                size,
                limit,
            });
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader
            .read_to_end(&mut data)
            .map_err(|source| OciError::Io {
                path: self.location().join(name),
                source,
            })?;
        if data.len() as u64 != size {
            return Err(OciError::Io {
                path: self.location().join(name),
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Ok(data)
    }
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobStore::Dir(path) => f.debug_tuple("Dir").field(path).finish(),
            BlobStore::Archive { path, members } => f
                .debug_struct("Archive")
                .field("path", path)
                .field("members", &members.len())
                .finish(),
        }
    }
}

/// A member path with empty and "." components removed and ".." applied
/// lexically; `None` if it is empty or climbs above the archive root.
pub(crate) fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join(&b'/'))
}

/// The member a symlink at `name` points to: relative targets are taken
/// from the link's directory, absolute ones from the archive root.
fn resolve_symlink(name: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    if target.starts_with(b"/") {
        return normalize(target);
    }
    let dir = match name.iter().rposition(|&b| b == b'/') {
        Some(slash) => &name[..slash + 1],
        None => &[][..],
    };
    let mut joined = dir.to_vec();
    joined.extend_from_slice(target);
    normalize(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_member_names() {
        assert_eq!(
            normalize(b"./blobs//sha256/ab"),
            Some(b"blobs/sha256/ab".to_vec())
        );
        assert_eq!(normalize(b"/index.json"), Some(b"index.json".to_vec()));
        assert_eq!(normalize(b"a/../b"), Some(b"b".to_vec()));
        assert_eq!(normalize(b"../b"), None);
        assert_eq!(normalize(b"./"), None);
    }

    #[test]
    fn resolves_symlinks() {
        assert_eq!(
            resolve_symlink(b"a/layer.tar", b"../b/layer.tar"),
            Some(b"b/layer.tar".to_vec())
        );
        assert_eq!(resolve_symlink(b"layer.tar", b"x"), Some(b"x".to_vec()));
        assert_eq!(resolve_symlink(b"a/l", b"/c/d"), Some(b"c/d".to_vec()));
        assert_eq!(resolve_symlink(b"a/l", b"../../x"), None);
    }
}
