//! Applying one layer's tar entries to the tree.

use std::collections::BTreeMap;
use std::io::Read;

use kindling_ext4::{Metadata, Timestamp};
use kindling_oci::tar::{Entry, EntryKind, TarReader};

use crate::error::LayerError;
use crate::placer::{PlaceError, Placer, Segment};
use crate::tree::{components, Kind, Node, NodeId, PathError, Tree, ROOT};
use crate::{cold, pyc};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

#[derive(Debug, Default)]
pub(crate) struct LayerStats {
    pub tar_bytes: u64,
    pub entries: u64,
    /// Files placed by the deferred (cold) placer: their extents point
    /// into its spill until the layer's end shifts them.
    pub deferred: Vec<NodeId>,
}

impl From<PlaceError> for LayerError {
    fn from(err: PlaceError) -> Self {
        match err {
            PlaceError::Io(io) => LayerError::Io(io),
            PlaceError::Spill(source) => LayerError::Spill {
                dir: std::env::temp_dir().display().to_string(),
                source,
            },
            PlaceError::Read(r) => r,
            PlaceError::TooLarge => LayerError::TooLarge,
        }
    }
}

/// Counts bytes read, for the summary.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// xattr namespaces ext4 stores; others (e.g. macOS `com.apple.*`) are
/// dropped with a warning, as container runtimes do when setxattr fails.
fn storable_xattr(name: &[u8]) -> bool {
    [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

fn metadata(e: &Entry, warnings: &mut Vec<String>) -> Result<Metadata, LayerError> {
    let uid = u32::try_from(e.uid)
        .map_err(|_| LayerError::entry(&e.path, format!("uid {} over 2^32", e.uid)))?;
    let gid = u32::try_from(e.gid)
        .map_err(|_| LayerError::entry(&e.path, format!("gid {} over 2^32", e.gid)))?;
    let mut xattrs = Vec::with_capacity(e.xattrs.len());
    for (k, v) in &e.xattrs {
        if storable_xattr(k) {
            xattrs.push((k.clone(), v.clone()));
        } else {
            warnings.push(format!(
                "{}: dropped xattr {:?} (namespace ext4 does not store)",
                String::from_utf8_lossy(&e.path),
                String::from_utf8_lossy(k)
            ));
        }
    }
    Ok(Metadata {
        mode: (e.mode & 0o7777) as u16,
        uid,
        gid,
        mtime: Timestamp {
            secs: e.mtime.secs,
            nanos: e.mtime.nanos,
        },
        xattrs,
    })
}

/// Bytecode caches held in memory for their sources, at most (see `pyc`).
const HOLD_BYTES: usize = 16 << 20;

/// A bytecode cache read before its source, placed when the source is.
struct Held {
    node: NodeId,
    module: pyc::Module,
    cold: bool,
    size: u64,
    data: Vec<u8>,
}

/// What applying one layer works on.
struct Layer<'a, 'f> {
    tree: &'a mut Tree,
    placer: &'a mut Placer<'f>,
    deferred: Vec<NodeId>,
    /// Caches of one directory waiting for their sources.
    held: Vec<Held>,
    held_bytes: usize,
}

impl Layer<'_, '_> {
    /// Places file data for `node`, in the layer's cold stream if `cold`.
    fn place(
        &mut self,
        node: NodeId,
        cold: bool,
        stored: u64,
        segments: &[Segment],
        read: impl FnMut(&mut [u8]) -> Result<usize, LayerError>,
    ) -> Result<(), LayerError> {
        let target = if cold {
            self.placer.deferred()?
        } else {
            &mut *self.placer
        };
        let placed = target.place_file(stored, segments, read)?;
        if let Kind::File { extents, .. } = &mut self.tree.nodes[node].kind {
            *extents = placed;
        }
        if cold {
            self.deferred.push(node);
        }
        Ok(())
    }

    fn place_held(&mut self, h: Held) -> Result<(), LayerError> {
        let mut at = 0;
        let segments = [Segment {
            offset: 0,
            length: h.size,
        }];
        self.place(h.node, h.cold, h.size, &segments, |buf| {
            let n = buf.len().min(h.data.len() - at);
            buf[..n].copy_from_slice(&h.data[at..at + n]);
            at += n;
            Ok(n)
        })
    }

    /// Places every held cache, in the order they came.
    fn release(&mut self) -> Result<(), LayerError> {
        self.held_bytes = 0;
        for h in std::mem::take(&mut self.held) {
            self.place_held(h)?;
        }
        Ok(())
    }

    /// The held cache of `module`, if any.
    fn take_held(&mut self, module: &pyc::Module) -> Option<Held> {
        let i = self.held.iter().position(|h| &h.module == module)?;
        let h = self.held.remove(i);
        self.held_bytes -= h.data.len();
        Some(h)
    }

    /// Whether an entry under `parents` can still meet a held cache's
    /// source: only in the caches' directory or its `__pycache__`.
    fn near_held(&self, parents: &[Vec<u8>]) -> bool {
        self.held.first().is_none_or(|h| {
            let d = &h.module.dir;
            parents == d.as_slice()
                || (parents.len() == d.len() + 1
                    && parents.starts_with(d)
                    && parents[d.len()] == b"__pycache__")
        })
    }
}

pub(crate) fn apply_layer<R: Read>(
    tree: &mut Tree,
    placer: &mut Placer<'_>,
    reader: R,
    warnings: &mut Vec<String>,
) -> Result<LayerStats, LayerError> {
    tree.begin_layer();
    let mut tar = TarReader::new(Counting {
        inner: reader,
        n: 0,
    });
    let mut layer = Layer {
        tree,
        placer,
        deferred: Vec::new(),
        held: Vec::new(),
        held_bytes: 0,
    };
    let mut stats = LayerStats::default();
    while let Some(entry) = tar.next_entry()? {
        stats.entries += 1;
        apply_entry(&mut layer, &mut tar, &entry, warnings)?;
    }
    layer.release()?;
    // Read to the end so the digest of the whole blob is checked.
    tar.drain()?;
    stats.tar_bytes = tar.into_inner().n;
    stats.deferred = layer.deferred;
    Ok(stats)
}

/// Reads a small file's data into memory.
fn read_all<R: Read>(tar: &mut TarReader<R>, len: u64) -> Result<Vec<u8>, LayerError> {
    let mut data = vec![0u8; len as usize];
    let mut at = 0;
    while at < data.len() {
        match tar.read_data(&mut data[at..])? {
            0 => return Err(LayerError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            n => at += n,
        }
    }
    Ok(data)
}

fn apply_entry<R: Read>(
    layer: &mut Layer<'_, '_>,
    tar: &mut TarReader<R>,
    e: &Entry,
    warnings: &mut Vec<String>,
) -> Result<(), LayerError> {
    let bad = |reason: String| LayerError::entry(&e.path, reason);
    let comps = components(&e.path).map_err(|r| bad(r.to_string()))?;
    if !layer.near_held(&comps[..comps.len().saturating_sub(1)]) {
        layer.release()?;
    }
    if let Some(c) = comps.iter().find(|c| c.len() > 255) {
        return Err(bad(format!("name of {} bytes (ext4 allows 255)", c.len())));
    }
    let Some((name, parents)) = comps.split_last() else {
        // The root itself ("./"): only its metadata can change.
        if e.kind == EntryKind::Directory {
            layer.tree.nodes[ROOT].meta = metadata(e, warnings)?;
        }
        return Ok(());
    };
    if let Some(victim) = name.strip_prefix(WHITEOUT) {
        // A whiteout under something that is not a directory (a file, a
        // missing path) has nothing to hide: a no-op, as in umoci and
        // containerd. A symlink loop is still an error.
        let dir = match layer.tree.resolve_dir(parents, false) {
            Err(PathError::NotADirectory(_)) => None,
            r => r.map_err(|r| bad(r.to_string()))?,
        };
        if let Some(dir) = dir {
            if name == OPAQUE {
                layer.tree.opaque(dir);
            } else if !victim.starts_with(WHITEOUT) {
                layer.tree.whiteout(dir, victim);
            }
        }
        return Ok(());
    }
    let dir = layer
        .tree
        .resolve_dir(parents, true)
        .map_err(|r| bad(r.to_string()))?
        .unwrap_or(ROOT);
    let existing = layer.tree.lookup(dir, name);
    let node = match e.kind {
        EntryKind::HardLink => {
            let target =
                components(&e.link_target).map_err(|r| bad(format!("hard link target: {r}")))?;
            let Some((tname, tparents)) = target.split_last() else {
                return Err(bad("hard link to the root".into()));
            };
            let tdir = layer
                .tree
                .resolve_dir(tparents, false)
                .map_err(|r| bad(format!("hard link target: {r}")))?;
            let Some(t) = tdir.and_then(|d| layer.tree.lookup(d, tname)) else {
                return Err(bad(format!(
                    "hard link target {:?} does not exist",
                    String::from_utf8_lossy(&e.link_target)
                )));
            };
            if matches!(layer.tree.nodes[t].kind, Kind::Dir(_)) {
                return Err(bad("hard link to a directory".into()));
            }
            t
        }
        EntryKind::Directory => {
            let meta = metadata(e, warnings)?;
            if let Some(d) = existing.filter(|&d| matches!(layer.tree.nodes[d].kind, Kind::Dir(_)))
            {
                layer.tree.nodes[d].meta = meta;
                layer.tree.touch(dir, name.clone());
                return Ok(());
            }
            layer.tree.push(Node {
                meta,
                kind: Kind::Dir(BTreeMap::new()),
            })
        }
        EntryKind::Regular => {
            if e.size > kindling_ext4::MAX_FILE_BYTES {
                return Err(LayerError::entry(
                    &e.path,
                    format!(
                        "a file of {} bytes: ext4 takes at most {} (2 TiB less 4 KiB)",
                        e.size,
                        kindling_ext4::MAX_FILE_BYTES
                    ),
                ));
            }
            let meta = metadata(e, warnings)?;
            let segments: Vec<Segment> = match &e.sparse {
                Some(s) => s
                    .iter()
                    .map(|s| Segment {
                        offset: s.offset,
                        length: s.length,
                    })
                    .collect(),
                None => vec![Segment {
                    offset: 0,
                    length: e.size,
                }],
            };
            let node = layer.tree.push(Node {
                meta,
                kind: Kind::File {
                    size: e.size,
                    extents: Vec::new(),
                },
            });
            let cold = e.stored_size > 0 && cold::likely_cold(&comps);
            let cache = (e.sparse.is_none() && e.size <= HOLD_BYTES as u64 / 16)
                .then(|| pyc::cache_of(&comps))
                .flatten();
            if let Some(module) = cache {
                let data = read_all(tar, e.size)?;
                layer.held_bytes += data.len();
                layer.held.push(Held {
                    node,
                    module,
                    cold,
                    size: e.size,
                    data,
                });
                if layer.held_bytes > HOLD_BYTES {
                    layer.release()?;
                }
            } else {
                let cache = pyc::source_of(&comps).and_then(|m| layer.take_held(&m));
                // A source that importing does not read goes with the cold
                // files; one it reads goes right before its cache.
                let read_at_import = cache
                    .as_ref()
                    .is_none_or(|h| pyc::source_read_at_import(&h.data, e.mtime.secs, e.size));
                layer.place(
                    node,
                    cold || !read_at_import,
                    e.stored_size,
                    &segments,
                    |buf| tar.read_data(buf).map_err(LayerError::from),
                )?;
                if let Some(h) = cache {
                    layer.place_held(h)?;
                }
            }
            node
        }
        EntryKind::Symlink => {
            if e.link_target.is_empty() || e.link_target.len() >= 4096 {
                return Err(bad(format!(
                    "symlink target of {} bytes (1 to 4095 allowed)",
                    e.link_target.len()
                )));
            }
            layer.tree.push(Node {
                meta: metadata(e, warnings)?,
                kind: Kind::Symlink(e.link_target.clone()),
            })
        }
        EntryKind::CharDevice => layer.tree.push(Node {
            meta: metadata(e, warnings)?,
            kind: Kind::Char(e.dev_major, e.dev_minor),
        }),
        EntryKind::BlockDevice => layer.tree.push(Node {
            meta: metadata(e, warnings)?,
            kind: Kind::Block(e.dev_major, e.dev_minor),
        }),
        EntryKind::Fifo => layer.tree.push(Node {
            meta: metadata(e, warnings)?,
            kind: Kind::Fifo,
        }),
    };
    layer.tree.insert(dir, name.clone(), node);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_ext4::{Extent, BLOCK_SIZE};

    /// A header for a bytecode cache of a source with this mtime and size.
    fn pyc(flags: u32, mtime: u32, size: u32) -> Vec<u8> {
        let mut h = b"\xa7\x0d\x0d\x0a".to_vec();
        for w in [flags, mtime, size] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h.resize(6000, 7);
        h
    }

    /// Applies one layer of (path, data, mtime) files and returns each
    /// file's extents once the layer's cold files are spliced in.
    fn layout(files: &[(&str, Vec<u8>, u64)]) -> Vec<(String, Vec<Extent>)> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, mtime) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(*mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let out = tempfile::tempfile().unwrap();
        let mut placer = Placer::new(&out, 128, 512 << 10, 16 << 20, 1 << 30);
        let mut tree = Tree::new();
        let stats = apply_layer(&mut tree, &mut placer, &tar[..], &mut Vec::new()).unwrap();
        if let Some(base) = placer.splice_deferred().unwrap() {
            tree.shift_extents(&stats.deferred, base);
        }
        files
            .iter()
            .map(|(path, ..)| {
                let comps = components(path.as_bytes()).unwrap();
                let (name, parents) = comps.split_last().unwrap();
                let dir = tree.resolve_dir(parents, false).unwrap().unwrap();
                let node = tree.lookup(dir, name).unwrap();
                let Kind::File { extents, .. } = &tree.nodes[node].kind else {
                    panic!("{path} is not a file")
                };
                (path.to_string(), extents.clone())
            })
            .collect()
    }

    fn start(e: &[Extent]) -> u64 {
        e[0].physical
    }

    fn end(e: &[Extent]) -> u64 {
        let last = e.last().unwrap();
        last.physical + u64::from(last.len)
    }

    #[test]
    fn sources_read_at_import_sit_right_before_their_caches() {
        let src = vec![b'#'; 5000];
        let files = [
            ("a/__pycache__/m.cpython-311.pyc", pyc(3, 0, 0), 100),
            ("a/__pycache__/n.cpython-311.pyc", pyc(0, 99, 5000), 100),
            ("a/__pycache__/z.cpython-311.pyc", pyc(3, 0, 0), 100),
            ("a/m.py", src.clone(), 100),
            ("a/n.py", src.clone(), 100),
            ("b/lib.so", vec![9u8; 70_000], 100),
        ];
        let l = layout(&files);
        let (m_pyc, n_pyc, z_pyc, m_py, n_py, so) =
            (&l[0].1, &l[1].1, &l[2].1, &l[3].1, &l[4].1, &l[5].1);
        // Checked hash: m.py is read at every import, so it comes first.
        assert_eq!(end(m_py), start(m_pyc));
        // A timestamp that does not match n.py (mtime 100, not 99): read too.
        assert_eq!(end(n_py), start(n_pyc));
        // z has no source: placed when the directory is left, before b/.
        assert!(end(z_pyc) <= start(so));
        assert!(end(n_pyc) <= start(z_pyc));
    }

    #[test]
    fn sources_their_caches_stand_for_go_with_the_cold_files() {
        let src = vec![b'#'; 5000];
        let files = [
            ("a/__pycache__/m.cpython-311.pyc", pyc(0, 100, 5000), 100),
            ("a/__pycache__/u.cpython-311.pyc", pyc(1, 0, 0), 100),
            ("a/m.py", src.clone(), 100),
            ("a/u.py", src.clone(), 100),
            ("b/lib.so", vec![9u8; 70_000], 100),
        ];
        let l = layout(&files);
        let chunk = (512 << 10) / BLOCK_SIZE;
        let so = &l[4].1;
        for (path, extents) in [&l[2], &l[3]] {
            assert!(
                start(extents) >= end(so).next_multiple_of(chunk),
                "{path} should be placed after the layer's other files"
            );
        }
        assert!(end(&l[0].1) <= start(so) && end(&l[1].1) <= start(so));
    }
}
