//! Images from the writer must pass `e2fsck -fn` and, as root, mount and read
//! back as written.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use kindling_ext4::*;

fn meta(mode: u16) -> Metadata {
    Metadata {
        mode,
        uid: 1000,
        gid: 100,
        mtime: Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        },
        xattrs: vec![],
    }
}

fn fsck(path: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .expect("e2fsck runs");
    assert!(
        out.status.success(),
        "e2fsck failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree with every kind of node, data at the given blocks.
fn sample(data_start: u64, file: &File) -> Vec<Node> {
    let payload = vec![0xabu8; 3 * 4096 + 17];
    file.write_all_at(&payload, data_start * BLOCK_SIZE)
        .unwrap();
    let mut nodes = vec![Node::dir(meta(0o755), vec![])];
    let add = |nodes: &mut Vec<Node>, name: &str, n: Node| {
        nodes.push(n);
        let id = nodes.len() - 1;
        if let Content::Dir { entries } = &mut nodes[0].content {
            entries.push((name.as_bytes().to_vec(), id));
        }
        id
    };
    let f = add(
        &mut nodes,
        "file",
        Node {
            meta: Metadata {
                xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
                ..meta(0o4755)
            },
            content: Content::File {
                size: payload.len() as u64 + 8192 * 10,
                extents: vec![Extent {
                    logical: 0,
                    physical: data_start,
                    len: 4,
                }],
            },
        },
    );
    if let Content::Dir { entries } = &mut nodes[0].content {
        entries.push((b"hardlink".to_vec(), f));
    }
    add(
        &mut nodes,
        "fast",
        Node {
            meta: meta(0o777),
            content: Content::Symlink {
                target: b"file".to_vec(),
            },
        },
    );
    add(
        &mut nodes,
        "slow",
        Node {
            meta: meta(0o777),
            content: Content::Symlink {
                target: vec![b'x'; 300],
            },
        },
    );
    add(
        &mut nodes,
        "chr",
        Node {
            meta: meta(0o600),
            content: Content::CharDevice { major: 1, minor: 3 },
        },
    );
    add(
        &mut nodes,
        "blk",
        Node {
            meta: meta(0o600),
            content: Content::BlockDevice {
                major: 259,
                minor: 70000,
            },
        },
    );
    add(
        &mut nodes,
        "fifo",
        Node {
            meta: meta(0o600),
            content: Content::Fifo,
        },
    );
    let big = Metadata {
        xattrs: vec![(b"user.big".to_vec(), vec![7; 2000])],
        ..meta(0o700)
    };
    let sub = add(&mut nodes, "sub", Node::dir(big, vec![]));
    for i in 0..500 {
        nodes.push(Node {
            meta: meta(0o644),
            content: Content::File {
                size: 0,
                extents: vec![],
            },
        });
        let id = nodes.len() - 1;
        if let Content::Dir { entries } = &mut nodes[sub].content {
            entries.push((
                format!("entry-{i:04}-{}", "n".repeat(i % 100)).into_bytes(),
                id,
            ));
        }
    }
    nodes
}

/// Writes the sample tree to `t.img` in a new directory with the options
/// `configure` sets; returns the directory (kept for the image's life),
/// the image's path and the summary.
fn write_sample(
    configure: impl FnOnce(&mut FsOptions),
) -> (tempfile::TempDir, std::path::PathBuf, FsSummary) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let file = File::create(&path).unwrap();
    let start = first_data_block(1 << 20, 128);
    let nodes = sample(start, &file);
    let mut opts = FsOptions::new(start + 4);
    configure(&mut opts);
    let s = write_filesystem(&file, &nodes, 0, &opts).unwrap();
    (dir, path, s)
}

#[test]
fn sample_tree_passes_e2fsck() {
    let (_dir, path, s) = write_sample(|opts| {
        opts.align_blocks = 128;
        opts.free_blocks = 1000;
        opts.free_inodes = 100;
    });
    assert_eq!(s.blocks % 128, 0);
    fsck(&path);
}

#[test]
fn many_groups_and_fragmented_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let file = File::create(&path).unwrap();
    let start = first_data_block(1 << 20, 128);
    // 3000 one-block extents every other block: a two-level extent tree.
    let n = 3000u32;
    let extents: Vec<Extent> = (0..n)
        .map(|i| Extent {
            logical: i * 2,
            physical: start + u64::from(i) * 2,
            len: 1,
        })
        .collect();
    for e in &extents {
        file.write_all_at(&[1u8; 4096], e.physical * BLOCK_SIZE)
            .unwrap();
    }
    let nodes = vec![
        Node::dir(meta(0o755), vec![(b"frag".to_vec(), 1)]),
        Node {
            meta: meta(0o644),
            content: Content::File {
                size: u64::from(n) * 2 * 4096,
                extents,
            },
        },
    ];
    let mut opts = FsOptions::new(start + u64::from(n) * 2);
    opts.free_blocks = 100_000; // several groups
    opts.free_inodes = 70_000; // more than one group's worth of inodes
    let s = write_filesystem(&file, &nodes, 0, &opts).unwrap();
    assert!(s.groups >= 3, "{s:?}");
    drop(file);
    fsck(&path);
}

#[test]
fn rejects_bad_trees() {
    let dir = tempfile::tempdir().unwrap();
    let file = File::create(dir.path().join("t.img")).unwrap();
    let opts = FsOptions::new(first_data_block(1 << 20, 1));
    let dup = vec![
        Node::dir(meta(0o755), vec![(b"a".to_vec(), 1), (b"a".to_vec(), 1)]),
        Node::dir(meta(0o755), vec![]),
    ];
    assert!(matches!(
        write_filesystem(&file, &dup, 0, &opts),
        Err(Ext4Error::DuplicateName { .. })
    ));
    let dirlink = vec![
        Node::dir(meta(0o755), vec![(b"a".to_vec(), 1), (b"b".to_vec(), 1)]),
        Node::dir(meta(0o755), vec![]),
    ];
    assert!(matches!(
        write_filesystem(&file, &dirlink, 0, &opts),
        Err(Ext4Error::DirectoryHardLink { .. })
    ));
    let long = vec![Node::dir(meta(0o755), vec![(vec![b'x'; 256], 0)])];
    assert!(matches!(
        write_filesystem(&file, &long, 0, &opts),
        Err(Ext4Error::InvalidName { .. })
    ));
    let overlap = vec![
        Node::dir(meta(0o755), vec![(b"f".to_vec(), 1)]),
        Node {
            meta: meta(0o644),
            content: Content::File {
                size: 4096,
                extents: vec![Extent {
                    logical: 0,
                    physical: 0,
                    len: 1,
                }],
            },
        },
    ];
    assert!(matches!(
        write_filesystem(&file, &overlap, 0, &opts),
        Err(Ext4Error::BlockConflict { .. })
    ));
}

#[test]
fn ten_gib_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    let file = File::create(&path).unwrap();
    let start = first_data_block(11 << 18, 128);
    file.write_all_at(&[7u8; 8192], start * BLOCK_SIZE).unwrap();
    let size = 10u64 << 30;
    let last = (size / BLOCK_SIZE - 1) as u32;
    let nodes = vec![
        Node::dir(meta(0o755), vec![(b"huge".to_vec(), 1)]),
        Node {
            meta: meta(0o644),
            content: Content::File {
                size,
                extents: vec![
                    Extent {
                        logical: 0,
                        physical: start,
                        len: 1,
                    },
                    Extent {
                        logical: last,
                        physical: start + 1,
                        len: 1,
                    },
                ],
            },
        },
    ];
    let mut opts = FsOptions::new(start + 2);
    opts.align_blocks = 128;
    write_filesystem(&file, &nodes, 0, &opts).unwrap();
    drop(file);
    fsck(&path);
}

fn debugfs(path: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(path)
        .output()
        .expect("debugfs runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `debugfs ls -l DIR`: (name, inode number) of each entry.
fn inode_numbers(path: &Path, dir: &str) -> Vec<(String, u64)> {
    debugfs(path, &format!("ls -l {dir}"))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.last()?.to_string(), f.first()?.parse().ok()?))
        })
        .filter(|(n, _)| n != "." && n != "..")
        .collect()
}

/// The block holding inode `ino`, from `debugfs imap`.
fn inode_block(path: &Path, ino: u64) -> u64 {
    let out = debugfs(path, &format!("imap <{ino}>"));
    let at = out.find("located at block ").expect("imap output") + 17;
    out[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a block number")
}

#[test]
fn cold_inodes_are_numbered_and_placed_after_the_hot_ones() {
    let (_dir, path, s) = write_sample(|opts| {
        opts.align_blocks = 128;
        // The sub directory (its 500 entries with it) and the slow symlink.
        opts.cold = Some(|c, _| c.first() == Some(&&b"sub"[..]) || c == [b"slow"]);
    });
    fsck(&path);

    let root = inode_numbers(&path, "/");
    let sub = inode_numbers(&path, "/sub");
    assert_eq!(sub.len(), 500);
    let is_cold = |n: &str| n == "sub" || n == "slow";
    let last_hot = root
        .iter()
        .filter(|(n, _)| !is_cold(n))
        .map(|e| e.1)
        .max()
        .unwrap();
    let first_cold = root
        .iter()
        .filter(|(n, _)| is_cold(n))
        .chain(&sub)
        .map(|e| e.1)
        .min()
        .unwrap();
    assert!(last_hot < first_cold, "{root:?}");

    // The hot range holds the root's directory block and the hot inodes,
    // not /sub's directory blocks or the cold inodes.
    let (from, len) = s.hot_metadata;
    let hot = from..from + len;
    let blocks = |p: &str| -> Vec<u64> {
        debugfs(&path, &format!("blocks {p}"))
            .split_whitespace()
            .filter_map(|b| b.parse().ok())
            .collect()
    };
    assert!(blocks("/").iter().all(|b| hot.contains(b)));
    assert!(blocks("/sub").iter().all(|b| !hot.contains(b)));
    assert!(hot.contains(&inode_block(&path, last_hot)));
    let last_cold = sub.iter().map(|e| e.1).max().unwrap();
    assert!(!hot.contains(&inode_block(&path, last_cold)));
    assert!(s.metadata_start <= from && from + len <= s.metadata_start + s.metadata_blocks);
}

#[test]
fn without_a_cold_test_all_metadata_is_hot() {
    let (_dir, path, s) = write_sample(|opts| opts.free_inodes = 5000);
    // Everything up to the last used inode's block; the free inodes after
    // it are zeros nobody needs to fetch.
    let last = inode_numbers(&path, "/sub")
        .into_iter()
        .chain(inode_numbers(&path, "/"))
        .map(|e| e.1)
        .max()
        .unwrap();
    let (from, len) = s.hot_metadata;
    assert_eq!(from, s.metadata_start);
    assert_eq!(from + len, inode_block(&path, last) + 1);
    assert!(len < s.metadata_blocks, "{s:?}");
}
