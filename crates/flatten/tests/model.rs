//! Random layer stacks, flattened, checked with e2fsck and (as root) mounted
//! and compared with a plain model of OCI layer semantics.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    File {
        path: String,
        len: usize,
        seed: u8,
        mode: u32,
        uid: u64,
        mtime: u64,
        xattr: Option<Vec<u8>>,
    },
    Dir {
        path: String,
        mode: u32,
        uid: u64,
        mtime: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        pick: usize,
    },
    Whiteout {
        path: String,
    },
    Opaque {
        path: String,
    },
    Fifo {
        path: String,
    },
    Char {
        path: String,
        major: u32,
        minor: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Fifo,
    Char(u32, u32),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    mtime: u64,
    xattr: Option<Vec<u8>>,
    id: usize,
}

#[derive(Default)]
struct Model {
    entries: BTreeMap<String, Entry>,
    created: HashSet<String>,
    next_id: usize,
}

fn parent(p: &str) -> Option<&str> {
    p.rfind('/').map(|i| &p[..i])
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    // Mix zero runs (holes) and data, sometimes over a chunk (64 KiB here).
    (0..len)
        .map(|i| {
            if (i / 4096) % 3 == 1 {
                0
            } else {
                (i as u8).wrapping_mul(31).wrapping_add(seed) | 1
            }
        })
        .collect()
}

impl Model {
    fn remove_tree(&mut self, p: &str) {
        self.entries.remove(p);
        let prefix = format!("{p}/");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }

    /// All ancestors must be directories or missing (then implied).
    fn parents_ok(&self, p: &str) -> bool {
        let mut cur = parent(p);
        while let Some(a) = cur {
            if let Some(e) = self.entries.get(a) {
                if e.kind != Kind::Dir {
                    return false;
                }
            }
            cur = parent(a);
        }
        true
    }

    fn imply_parents(&mut self, p: &str) {
        let mut cur = parent(p);
        while let Some(a) = cur {
            if !self.entries.contains_key(a) {
                self.next_id += 1;
                let e = Entry {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    mtime: 0,
                    xattr: None,
                    id: self.next_id,
                };
                self.entries.insert(a.to_string(), e);
            }
            cur = parent(a);
        }
    }

    /// Applies `op`; false if the op would be invalid input (then it is not emitted).
    fn apply(&mut self, op: &Op, layer: &mut Layer) -> bool {
        let path = match op {
            Op::File { path, .. }
            | Op::Dir { path, .. }
            | Op::Symlink { path, .. }
            | Op::Hardlink { path, .. }
            | Op::Whiteout { path }
            | Op::Opaque { path }
            | Op::Fifo { path }
            | Op::Char { path, .. } => path.clone(),
        };
        if !self.parents_ok(&path) {
            return false;
        }
        match op {
            Op::Whiteout { path } => {
                let name = path.rsplit('/').next().unwrap_or(path);
                let wh = match parent(path) {
                    Some(d) => format!("{d}/.wh.{name}"),
                    None => format!(".wh.{name}"),
                };
                if !self.created.contains(path) {
                    self.remove_tree(path);
                }
                layer.file(&wh, b"", &Meta::default());
                return true;
            }
            Op::Opaque { path } => {
                if self.entries.get(path).is_some_and(|e| e.kind != Kind::Dir) {
                    return false;
                }
                if self.entries.contains_key(path) {
                    let prefix = format!("{path}/");
                    let children: Vec<String> = self
                        .entries
                        .keys()
                        .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                        .cloned()
                        .collect();
                    for c in children {
                        if !self.created.contains(&c) {
                            self.remove_tree(&c);
                        }
                    }
                }
                layer.file(&format!("{path}/.wh..wh..opq"), b"", &Meta::default());
                return true;
            }
            _ => {}
        }
        let existing = self.entries.get(&path).cloned();
        let new = match op {
            Op::Hardlink { pick, .. } => {
                let files: Vec<(String, Entry)> = self
                    .entries
                    .iter()
                    .filter(|(k, e)| matches!(e.kind, Kind::File(_)) && **k != path)
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                if files.is_empty() {
                    return false;
                }
                let (target, e) = &files[pick % files.len()];
                layer.hardlink(&path, target);
                e.clone()
            }
            Op::Dir {
                mode, uid, mtime, ..
            } => {
                layer.dir(
                    &path,
                    &Meta {
                        mode: *mode,
                        uid: *uid,
                        gid: *uid,
                        mtime: *mtime,
                        xattrs: vec![],
                    },
                );
                if let Some(mut e) = existing.clone().filter(|e| e.kind == Kind::Dir) {
                    e.mode = *mode;
                    e.uid = *uid;
                    e.mtime = *mtime;
                    self.imply_parents(&path);
                    self.entries.insert(path.clone(), e);
                    self.created.insert(path);
                    return true;
                }
                self.next_id += 1;
                Entry {
                    kind: Kind::Dir,
                    mode: *mode,
                    uid: *uid,
                    mtime: *mtime,
                    xattr: None,
                    id: self.next_id,
                }
            }
            Op::File {
                len,
                seed,
                mode,
                uid,
                mtime,
                xattr,
                ..
            } => {
                let data = content(*len, *seed);
                let xattrs = xattr
                    .iter()
                    .map(|v| ("user.test".to_string(), v.clone()))
                    .collect();
                layer.file(
                    &path,
                    &data,
                    &Meta {
                        mode: *mode,
                        uid: *uid,
                        gid: *uid,
                        mtime: *mtime,
                        xattrs,
                    },
                );
                self.next_id += 1;
                Entry {
                    kind: Kind::File(data),
                    mode: *mode,
                    uid: *uid,
                    mtime: *mtime,
                    xattr: xattr.clone(),
                    id: self.next_id,
                }
            }
            Op::Symlink { target, .. } => {
                layer.symlink(&path, target);
                self.next_id += 1;
                Entry {
                    kind: Kind::Symlink(target.clone()),
                    mode: 0o777,
                    uid: 0,
                    mtime: 1_700_000_000,
                    xattr: None,
                    id: self.next_id,
                }
            }
            Op::Fifo { .. } => {
                layer.special(
                    &path,
                    tar::EntryType::Fifo,
                    0,
                    0,
                    &Meta {
                        mode: 0o600,
                        ..Meta::default()
                    },
                );
                self.next_id += 1;
                Entry {
                    kind: Kind::Fifo,
                    mode: 0o600,
                    uid: 0,
                    mtime: 1_700_000_000,
                    xattr: None,
                    id: self.next_id,
                }
            }
            Op::Char { major, minor, .. } => {
                layer.special(
                    &path,
                    tar::EntryType::Char,
                    *major,
                    *minor,
                    &Meta {
                        mode: 0o640,
                        ..Meta::default()
                    },
                );
                self.next_id += 1;
                Entry {
                    kind: Kind::Char(*major, *minor),
                    mode: 0o640,
                    uid: 0,
                    mtime: 1_700_000_000,
                    xattr: None,
                    id: self.next_id,
                }
            }
            Op::Whiteout { .. } | Op::Opaque { .. } => unreachable!(),
        };
        if existing.is_some() {
            self.remove_tree(&path);
        }
        self.imply_parents(&path);
        self.entries.insert(path.clone(), new);
        self.created.insert(path);
        true
    }
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        // "tests" and "r.h" are cold names: their files go through the
        // placer's deferred stream.
        prop::sample::select(vec![
            "a",
            "b",
            "c",
            "x",
            "tests",
            "r.h",
            "long-name-".repeat(20).leak(),
        ]),
        1..4,
    )
    .prop_map(|v| v.join("/"))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path_strategy(), prop_oneof![0usize..5000, 60_000usize..200_000], any::<u8>(), prop::sample::select(vec![0o644u32, 0o755, 0o4755, 0o600, 0o1777]),
            prop::sample::select(vec![0u64, 1000, 65534, 2_000_000]), 0u64..5_000_000_000, prop::option::of(prop::collection::vec(any::<u8>(), 0..40)))
            .prop_map(|(path, len, seed, mode, uid, mtime, xattr)| Op::File { path, len, seed, mode, uid, mtime, xattr }),
        2 => (path_strategy(), prop::sample::select(vec![0o755u32, 0o700, 0o2775]), prop::sample::select(vec![0u64, 1000]), 0u64..3_000_000_000)
            .prop_map(|(path, mode, uid, mtime)| Op::Dir { path, mode, uid, mtime }),
        1 => (path_strategy(), "(/|\\.\\./)?[a-z]{1,12}(/[a-z]{1,12}){0,5}").prop_map(|(path, target)| Op::Symlink { path, target }),
        1 => (path_strategy(), any::<usize>()).prop_map(|(path, pick)| Op::Hardlink { path, pick }),
        1 => path_strategy().prop_map(|path| Op::Whiteout { path }),
        1 => path_strategy().prop_map(|path| Op::Opaque { path }),
        1 => path_strategy().prop_map(|path| Op::Fifo { path }),
        1 => (path_strategy(), 0u32..4096, 0u32..1_000_000).prop_map(|(path, major, minor)| Op::Char { path, major, minor }),
    ]
}

#[derive(Debug, PartialEq)]
struct Seen {
    kind: Kind,
    mode: u32,
    uid: u64,
    mtime: u64,
    nlink: u64,
    xattr: Option<Vec<u8>>,
}

fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, (Seen, u64)>) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if rel.is_empty() && name == "lost+found" {
            continue;
        }
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let p = root.join(&r);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File(std::fs::read(&p).unwrap())
        } else if ft.is_symlink() {
            Kind::Symlink(
                std::fs::read_link(&p)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string(),
            )
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            let rdev = m.rdev();
            Kind::Char(libc::major(rdev), libc::minor(rdev))
        } else {
            panic!("unexpected type at {r}")
        };
        let xattr = if ft.is_symlink() {
            None
        } else {
            xattr::get(&p, "user.test").unwrap()
        };
        let nlink = if ft.is_dir() { 0 } else { m.nlink() };
        let seen = Seen {
            kind,
            mode: m.mode() & 0o7777,
            uid: u64::from(m.uid()),
            mtime: m.mtime() as u64,
            nlink,
            xattr,
        };
        let is_dir = ft.is_dir();
        out.insert(r.clone(), (seen, m.ino()));
        if is_dir {
            walk(root, &r, out);
        }
    }
}

fn check(layers: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let mut tars = Vec::new();
    for ops in &layers {
        model.created.clear();
        let mut layer = Layer::default();
        for op in ops {
            model.apply(op, &mut layer);
        }
        tars.push(layer.finish());
    }
    let layout = tmp.path().join("layout");
    write_layout(&layout, &tars);
    let img = tmp.path().join("img");
    flatten(&layout, &img, 2).map_err(|e| TestCaseError::fail(format!("flatten: {e}")))?;
    e2fsck(&img);
    if !is_root() {
        return Ok(());
    }
    let mnt = Mount::new(&img, &tmp.path().join("mnt"));
    let mut seen = BTreeMap::new();
    walk(&mnt.dir, "", &mut seen);
    let mut links: HashMap<usize, usize> = HashMap::new();
    for e in model.entries.values() {
        *links.entry(e.id).or_default() += 1;
    }
    let want: BTreeMap<String, Seen> = model
        .entries
        .iter()
        .map(|(k, e)| {
            let nlink = if e.kind == Kind::Dir {
                0
            } else {
                links[&e.id] as u64
            };
            let mode = if matches!(e.kind, Kind::Symlink(_)) {
                0o777
            } else {
                e.mode
            };
            (
                k.clone(),
                Seen {
                    kind: e.kind.clone(),
                    mode,
                    uid: e.uid,
                    mtime: e.mtime,
                    nlink,
                    xattr: e.xattr.clone(),
                },
            )
        })
        .collect();
    let got_keys: Vec<&String> = seen.keys().collect();
    let want_keys: Vec<&String> = want.keys().collect();
    prop_assert_eq!(got_keys, want_keys);
    for (k, w) in &want {
        prop_assert_eq!(&seen[k].0, w, "at {}", k);
    }
    // Hard-link identity: same model id <=> same inode.
    let mut by_id: HashMap<usize, u64> = HashMap::new();
    for (k, e) in &model.entries {
        if e.kind == Kind::Dir {
            continue;
        }
        let ino = seen[k].1;
        if let Some(prev) = by_id.insert(e.id, ino) {
            prop_assert_eq!(prev, ino, "hard link identity at {}", k);
        }
    }
    let distinct: HashSet<u64> = by_id.values().copied().collect();
    prop_assert_eq!(distinct.len(), by_id.len(), "distinct files share an inode");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_layer_stacks_match_the_model(layers in prop::collection::vec(prop::collection::vec(op_strategy(), 0..25), 1..5)) {
        check(layers)?;
    }
}
