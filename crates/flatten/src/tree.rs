//! The merged file tree that layers are applied to, with OCI semantics:
//! whiteouts, opaque directories, hard links, replacement of any type by any
//! other, and parent paths resolved through symlinks without leaving the root.

use std::collections::{BTreeMap, HashSet};

pub(crate) use kindling_ext4::NodeId;
use kindling_ext4::{Content, Extent, Metadata, Node as ExtNode};

/// Symlinks followed while resolving one path before giving up (Linux: 40).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    File { size: u64, extents: Vec<Extent> },
    Dir(BTreeMap<Vec<u8>, NodeId>),
    Symlink(Vec<u8>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub meta: Metadata,
    pub kind: Kind,
}

/// Why a path could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathError {
    Escapes,
    NotADirectory(Vec<u8>),
    SymlinkLoop,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Escapes => write!(f, "path escapes the image root"),
            PathError::NotADirectory(c) => write!(
                f,
                "parent component {:?} is not a directory",
                String::from_utf8_lossy(c)
            ),
            PathError::SymlinkLoop => write!(f, "too many levels of symbolic links"),
        }
    }
}

/// Splits a tar path into components: drops empty and "." components,
/// resolves ".." lexically. `Err` if ".." climbs above the root.
pub(crate) fn components(path: &[u8]) -> Result<Vec<Vec<u8>>, PathError> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(PathError::Escapes);
                }
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

#[derive(Debug)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    /// (directory, name) entries added by the layer being applied: a
    /// whiteout or opaque marker only hides what lower layers put there.
    created: HashSet<(NodeId, Vec<u8>)>,
}

pub(crate) const ROOT: NodeId = 0;

impl Tree {
    pub fn new() -> Self {
        Tree {
            nodes: vec![Node {
                meta: Metadata::default(),
                kind: Kind::Dir(BTreeMap::new()),
            }],
            created: HashSet::new(),
        }
    }

    pub fn begin_layer(&mut self) {
        self.created.clear();
    }

    fn children(&self, dir: NodeId) -> Option<&BTreeMap<Vec<u8>, NodeId>> {
        match &self.nodes[dir].kind {
            Kind::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn children_mut(&mut self, dir: NodeId) -> &mut BTreeMap<Vec<u8>, NodeId> {
        match &mut self.nodes[dir].kind {
            Kind::Dir(c) => c,
            _ => unreachable!("children_mut on a directory only"),
        }
    }

    pub fn lookup(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.children(dir).and_then(|c| c.get(name).copied())
    }

    pub fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Moves the data of `files` (placed relative to a spill) to where the
    /// spill was copied: `base` blocks further.
    pub fn shift_extents(&mut self, files: &[NodeId], base: u64) {
        for &id in files {
            if let Kind::File { extents, .. } = &mut self.nodes[id].kind {
                for e in extents {
                    e.physical += base;
                }
            }
        }
    }

    /// Resolves a directory path, following symlinks in every component
    /// (scoped to the root: absolute targets start at the image root, and a
    /// ".." above it is an error). With `create`, missing directories are
    /// created with default metadata; without, a missing one gives `None`.
    pub fn resolve_dir(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
    ) -> Result<Option<NodeId>, PathError> {
        let mut stack = vec![ROOT];
        let mut pending: Vec<Vec<u8>> = comps.iter().rev().cloned().collect();
        let mut followed = 0;
        while let Some(c) = pending.pop() {
            let cur = *stack.last().unwrap_or(&ROOT);
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() == 1 {
                    return Err(PathError::Escapes);
                }
                stack.pop();
                continue;
            }
            match self.lookup(cur, &c) {
                None => {
                    if !create {
                        return Ok(None);
                    }
                    let id = self.push(Node {
                        meta: Metadata::default(),
                        kind: Kind::Dir(BTreeMap::new()),
                    });
                    self.children_mut(cur).insert(c, id);
                    stack.push(id);
                }
                Some(id) => match &self.nodes[id].kind {
                    Kind::Dir(_) => stack.push(id),
                    Kind::Symlink(target) => {
                        followed += 1;
                        if followed > MAX_SYMLINKS {
                            return Err(PathError::SymlinkLoop);
                        }
                        if target.first() == Some(&b'/') {
                            stack.truncate(1);
                        }
                        pending.extend(target.split(|&b| b == b'/').rev().map(|s| s.to_vec()));
                    }
                    _ => return Err(PathError::NotADirectory(c)),
                },
            }
        }
        Ok(stack.last().copied())
    }

    /// Puts `node` at `dir/name`, replacing whatever was there.
    pub fn insert(&mut self, dir: NodeId, name: Vec<u8>, node: NodeId) {
        self.created.insert((dir, name.clone()));
        self.children_mut(dir).insert(name, node);
    }

    /// Marks `dir/name` as touched by this layer without changing it.
    pub fn touch(&mut self, dir: NodeId, name: Vec<u8>) {
        self.created.insert((dir, name));
    }

    /// `.wh.NAME`: removes `dir/name` unless this layer created it.
    pub fn whiteout(&mut self, dir: NodeId, name: &[u8]) {
        if self.created.contains(&(dir, name.to_vec())) || self.children(dir).is_none() {
            return;
        }
        self.children_mut(dir).remove(name);
    }

    /// `.wh..wh..opq`: removes every child of `dir` this layer did not create.
    pub fn opaque(&mut self, dir: NodeId) {
        let Some(children) = self.children(dir) else {
            return;
        };
        let doomed: Vec<Vec<u8>> = children
            .keys()
            .filter(|n| !self.created.contains(&(dir, (*n).clone())))
            .cloned()
            .collect();
        let c = self.children_mut(dir);
        for n in doomed {
            c.remove(&n);
        }
    }

    /// The tree as the ext4 writer takes it (node ids unchanged; unreachable
    /// nodes are ignored by the writer).
    pub fn into_ext4(self) -> Vec<ExtNode> {
        self.nodes
            .into_iter()
            .map(|n| {
                let content = match n.kind {
                    Kind::File { size, extents } => Content::File { size, extents },
                    Kind::Dir(c) => Content::Dir {
                        entries: c.into_iter().collect(),
                    },
                    Kind::Symlink(t) => Content::Symlink { target: t },
                    Kind::Char(major, minor) => Content::CharDevice { major, minor },
                    Kind::Block(major, minor) => Content::BlockDevice { major, minor },
                    Kind::Fifo => Content::Fifo,
                };
                ExtNode {
                    meta: n.meta,
                    content,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Node {
        Node {
            meta: Metadata::default(),
            kind: Kind::Dir(BTreeMap::new()),
        }
    }

    #[test]
    fn components_normalize() {
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(components(b"/a/../b").unwrap(), vec![b"b".to_vec()]);
        assert_eq!(components(b"a/../../b"), Err(PathError::Escapes));
        assert!(components(b"").unwrap().is_empty());
    }

    #[test]
    fn symlinked_parents_resolve_inside_root() {
        let mut t = Tree::new();
        let usr = t.push(dir());
        t.insert(ROOT, b"usr".to_vec(), usr);
        let lib = t.push(Node {
            meta: Metadata::default(),
            kind: Kind::Symlink(b"usr".to_vec()),
        });
        t.insert(ROOT, b"lib".to_vec(), lib);
        let abs = t.push(Node {
            meta: Metadata::default(),
            kind: Kind::Symlink(b"/usr/../usr".to_vec()),
        });
        t.insert(ROOT, b"abs".to_vec(), abs);
        assert_eq!(t.resolve_dir(&[b"lib".to_vec()], false), Ok(Some(usr)));
        assert_eq!(t.resolve_dir(&[b"abs".to_vec()], false), Ok(Some(usr)));
        let out = t.push(Node {
            meta: Metadata::default(),
            kind: Kind::Symlink(b"../../etc".to_vec()),
        });
        t.insert(usr, b"out".to_vec(), out);
        assert_eq!(
            t.resolve_dir(&[b"usr".to_vec(), b"out".to_vec()], true),
            Err(PathError::Escapes)
        );
        let lp = t.push(Node {
            meta: Metadata::default(),
            kind: Kind::Symlink(b"loop".to_vec()),
        });
        t.insert(ROOT, b"loop".to_vec(), lp);
        assert_eq!(
            t.resolve_dir(&[b"loop".to_vec()], true),
            Err(PathError::SymlinkLoop)
        );
    }

    #[test]
    fn whiteouts_spare_this_layers_entries() {
        let mut t = Tree::new();
        let a = t.push(dir());
        t.insert(ROOT, b"a".to_vec(), a);
        t.begin_layer();
        let b = t.push(dir());
        t.insert(ROOT, b"b".to_vec(), b);
        t.opaque(ROOT);
        assert_eq!(t.lookup(ROOT, b"a"), None);
        assert_eq!(t.lookup(ROOT, b"b"), Some(b));
        t.whiteout(ROOT, b"b");
        assert_eq!(t.lookup(ROOT, b"b"), Some(b));
    }
}
