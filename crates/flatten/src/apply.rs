//! Applying one layer's tar entries to the tree.

use std::collections::BTreeMap;
use std::io::Read;

use kindling_ext4::{Metadata, Timestamp};
use kindling_oci::tar::{Entry, EntryKind, TarReader};

use crate::cold;
use crate::error::LayerError;
use crate::placer::{PlaceError, Placer, Segment};
use crate::tree::{components, Kind, Node, NodeId, Tree, ROOT};

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
    let mut stats = LayerStats::default();
    while let Some(entry) = tar.next_entry()? {
        stats.entries += 1;
        apply_entry(
            tree,
            placer,
            &mut tar,
            &entry,
            warnings,
            &mut stats.deferred,
        )?;
    }
    // Read to the end so the digest of the whole blob is checked.
    tar.drain()?;
    stats.tar_bytes = tar.into_inner().n;
    Ok(stats)
}

fn apply_entry<R: Read>(
    tree: &mut Tree,
    placer: &mut Placer<'_>,
    tar: &mut TarReader<R>,
    e: &Entry,
    warnings: &mut Vec<String>,
    deferred: &mut Vec<NodeId>,
) -> Result<(), LayerError> {
    let bad = |reason: String| LayerError::entry(&e.path, reason);
    let comps = components(&e.path).map_err(|r| bad(r.to_string()))?;
    if let Some(c) = comps.iter().find(|c| c.len() > 255) {
        return Err(bad(format!("name of {} bytes (ext4 allows 255)", c.len())));
    }
    let Some((name, parents)) = comps.split_last() else {
        // The root itself ("./"): only its metadata can change.
        if e.kind == EntryKind::Directory {
            tree.nodes[ROOT].meta = metadata(e, warnings)?;
        }
        return Ok(());
    };
    if let Some(victim) = name.strip_prefix(WHITEOUT) {
        if let Some(dir) = tree
            .resolve_dir(parents, false)
            .map_err(|r| bad(r.to_string()))?
        {
            if name == OPAQUE {
                tree.opaque(dir);
            } else if !victim.starts_with(WHITEOUT) {
                tree.whiteout(dir, victim);
            }
        }
        return Ok(());
    }
    let dir = tree
        .resolve_dir(parents, true)
        .map_err(|r| bad(r.to_string()))?
        .unwrap_or(ROOT);
    let existing = tree.lookup(dir, name);
    let node = match e.kind {
        EntryKind::HardLink => {
            let target =
                components(&e.link_target).map_err(|r| bad(format!("hard link target: {r}")))?;
            let Some((tname, tparents)) = target.split_last() else {
                return Err(bad("hard link to the root".into()));
            };
            let tdir = tree
                .resolve_dir(tparents, false)
                .map_err(|r| bad(format!("hard link target: {r}")))?;
            let Some(t) = tdir.and_then(|d| tree.lookup(d, tname)) else {
                return Err(bad(format!(
                    "hard link target {:?} does not exist",
                    String::from_utf8_lossy(&e.link_target)
                )));
            };
            if matches!(tree.nodes[t].kind, Kind::Dir(_)) {
                return Err(bad("hard link to a directory".into()));
            }
            t
        }
        EntryKind::Directory => {
            let meta = metadata(e, warnings)?;
            if let Some(d) = existing.filter(|&d| matches!(tree.nodes[d].kind, Kind::Dir(_))) {
                tree.nodes[d].meta = meta;
                tree.touch(dir, name.clone());
                return Ok(());
            }
            tree.push(Node {
                meta,
                kind: Kind::Dir(BTreeMap::new()),
            })
        }
        EntryKind::Regular => {
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
            let cold = e.stored_size > 0 && cold::likely_cold(&comps);
            let target = if cold { placer.deferred()? } else { placer };
            let extents = target.place_file(e.stored_size, &segments, |buf| {
                tar.read_data(buf).map_err(LayerError::from)
            })?;
            let node = tree.push(Node {
                meta,
                kind: Kind::File {
                    size: e.size,
                    extents,
                },
            });
            if cold {
                deferred.push(node);
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
            tree.push(Node {
                meta: metadata(e, warnings)?,
                kind: Kind::Symlink(e.link_target.clone()),
            })
        }
        EntryKind::CharDevice => tree.push(Node {
            meta: metadata(e, warnings)?,
            kind: Kind::Char(e.dev_major, e.dev_minor),
        }),
        EntryKind::BlockDevice => tree.push(Node {
            meta: metadata(e, warnings)?,
            kind: Kind::Block(e.dev_major, e.dev_minor),
        }),
        EntryKind::Fifo => tree.push(Node {
            meta: metadata(e, warnings)?,
            kind: Kind::Fifo,
        }),
    };
    tree.insert(dir, name.clone(), node);
    Ok(())
}
