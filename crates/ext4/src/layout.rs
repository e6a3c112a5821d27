//! Lays out and writes all metadata of the image.
//!
//! Image layout, by block:
//!
//! ```text
//! 0              superblock (at byte 1024)
//! 1..=gdt        group descriptor table (room reserved for the maximum size)
//! ..data_start   free (chunk 0 holds only the above)
//! data_start..   file data placed by the caller (layer regions)
//! meta_start..   directories, extent-tree blocks, xattr blocks, slow
//!                symlinks (the cold inodes', then the hot ones'), then
//!                block bitmaps, inode bitmaps, inode tables
//! ..blocks       free space, then alignment to the chunk size
//! ```
//!
//! `flex_bg` lets group metadata sit outside its group, and `sparse_super2`
//! with no backup groups keeps superblock copies out of the data. Inodes are
//! numbered in a depth-first walk with names sorted bytewise, the hot ones
//! first when the caller says which are cold ([`FsOptions::cold`]), so the
//! metadata a start reads is one run ([`FsSummary::hot_metadata`]).
//! Numbering, like everything else here, depends only on the tree.

use crate::bitmap::Bitset;
use crate::dir;
use crate::error::Ext4Error;
use crate::extent;
use crate::inode::{self, InodeRecord};
use crate::output::Output;
use crate::superblock::{self, GroupDesc, SuperInfo, DESC_SIZE, FIRST_INO, INODE_SIZE, ROOT_INO};
use crate::tree::{Content, Extent, Metadata, Node, NodeId};
use crate::xattr::{self, Placement};
use crate::{BLOCKS_PER_GROUP, BLOCK_SIZE};

/// Inodes per inode-table block.
const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE as u64;
/// ext4's link count limit for files (EXT4_LINK_MAX); directories beyond it
/// count 1 under dir_nlink.
const LINK_MAX: u64 = 65000;

/// How to lay out the image. Build with [`FsOptions::new`].
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// First block after all caller-written data; metadata starts at or after it.
    pub data_end: u64,
    /// The metadata start and the total size are rounded up to this many
    /// blocks (the chunk size). Default 1.
    pub align_blocks: u64,
    /// Free blocks to leave for writes to the mounted image. Default 0.
    pub free_blocks: u64,
    /// Free inodes to leave. Default 0.
    pub free_inodes: u64,
    /// Error out rather than produce more blocks than this. Default 2^32 - 1.
    pub max_blocks: u64,
    /// Default all zero; callers derive it from the image digest.
    pub uuid: [u8; 16],
    /// Directory hash seed. Default all zero.
    pub hash_seed: [u8; 16],
    /// Volume label, NUL padded. Default empty.
    pub volume_name: [u8; 16],
    /// Which inodes a start is unlikely to touch, given the path (root
    /// first) and whether it is a directory. Their inodes are numbered
    /// after the others, and their directory, extent-tree, xattr and
    /// symlink blocks placed before the others', so the metadata a start
    /// reads is one run and fills fewer chunks
    /// ([`FsSummary::hot_metadata`]). Default none.
    pub cold: Option<ColdFn>,
}

/// See [`FsOptions::cold`].
pub type ColdFn = fn(components: &[&[u8]], is_dir: bool) -> bool;

impl FsOptions {
    pub fn new(data_end: u64) -> Self {
        FsOptions {
            data_end,
            align_blocks: 1,
            free_blocks: 0,
            free_inodes: 0,
            max_blocks: u64::from(u32::MAX),
            uuid: [0; 16],
            hash_seed: [0; 16],
            volume_name: [0; 16],
            cold: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSummary {
    /// Total blocks; the image is `blocks * BLOCK_SIZE` bytes.
    pub blocks: u64,
    pub groups: u64,
    pub inodes: u64,
    pub used_inodes: u64,
    /// First block of the metadata region.
    pub metadata_start: u64,
    /// Blocks used by the metadata region (not counting free inode-table space).
    pub metadata_blocks: u64,
    /// The part of the metadata region a start reads, as (first block,
    /// blocks): the directory and other blocks of the hot inodes, the
    /// bitmaps, and the inode tables up to the last hot inode. Without a
    /// `cold` test, the region up to the last inode.
    pub hot_metadata: (u64, u64),
    pub free_blocks: u64,
}

/// Group descriptor blocks needed for an image of up to `max_blocks` blocks.
pub fn gdt_blocks(max_blocks: u64) -> u64 {
    (max_blocks.div_ceil(BLOCKS_PER_GROUP) * DESC_SIZE)
        .div_ceil(BLOCK_SIZE)
        .max(1)
}

/// First block the caller may place data at: after the superblock and the
/// largest group descriptor table, rounded up to `align_blocks`.
pub fn first_data_block(max_blocks: u64, align_blocks: u64) -> u64 {
    (1 + gdt_blocks(max_blocks)).next_multiple_of(align_blocks.max(1))
}

/// Group count, inodes per group and total blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    groups: u64,
    ipg: u64,
    total: u64,
}

/// The three depend on each other (group metadata takes blocks, blocks make
/// groups): raise the group count until everything fits. `fixed` is the
/// block count before group metadata (bitmaps, inode tables).
fn geometry(fixed: u64, inodes_needed: u64, free_blocks: u64, align: u64) -> Geometry {
    let mut groups = (fixed + free_blocks).div_ceil(BLOCKS_PER_GROUP).max(1);
    loop {
        let ipg = inodes_needed
            .div_ceil(groups)
            .next_multiple_of(INODES_PER_BLOCK)
            .max(INODES_PER_BLOCK);
        if ipg > 8 * BLOCK_SIZE {
            groups = inodes_needed.div_ceil(8 * BLOCK_SIZE).max(groups + 1);
            continue;
        }
        let itb = ipg / INODES_PER_BLOCK;
        let total = (fixed + groups * (2 + itb) + free_blocks).next_multiple_of(align);
        let need = total.div_ceil(BLOCKS_PER_GROUP);
        if need <= groups {
            // Every group must hold at least one block.
            let total = total.max(((groups - 1) * BLOCKS_PER_GROUP + 1).next_multiple_of(align));
            return Geometry { groups, ipg, total };
        }
        groups = need;
    }
}

/// One inode to write, in inode-number order.
struct Rec {
    node: Option<NodeId>,
    parent: usize,
    name: Vec<u8>,
    links: u64,
    /// Directory: child records with their names.
    children: Vec<(Vec<u8>, usize)>,
}

fn lost_found_meta() -> Metadata {
    Metadata {
        mode: 0o700,
        ..Metadata::default()
    }
}

struct Walk<'a> {
    nodes: &'a [Node],
    recs: Vec<Rec>,
    rec_of: Vec<usize>,
}

impl Walk<'_> {
    fn path(&self, mut r: usize) -> String {
        let mut parts = Vec::new();
        while r != 0 {
            parts.push(String::from_utf8_lossy(&self.recs[r].name).into_owned());
            r = self.recs[r].parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn meta(&self, r: usize) -> &Metadata {
        static LF: std::sync::OnceLock<Metadata> = std::sync::OnceLock::new();
        match self.recs[r].node {
            Some(n) => &self.nodes[n].meta,
            None => LF.get_or_init(lost_found_meta),
        }
    }

    fn content(&self, r: usize) -> Option<&Content> {
        self.recs[r].node.map(|n| &self.nodes[n].content)
    }
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

/// Depth-first walk from the root: assigns records (inode order), counts links.
fn walk(nodes: &[Node], root: NodeId) -> Result<Walk<'_>, Ext4Error> {
    const NONE: usize = usize::MAX;
    let mut w = Walk {
        nodes,
        recs: Vec::new(),
        rec_of: vec![NONE; nodes.len()],
    };
    if root >= nodes.len() {
        return Err(Ext4Error::BadNode(root));
    }
    if !nodes[root].is_dir() {
        return Err(Ext4Error::DirectoryHardLink {
            path: "/ (root is not a directory)".into(),
        });
    }
    w.recs.push(Rec {
        node: Some(root),
        parent: 0,
        name: Vec::new(),
        links: 0,
        children: Vec::new(),
    });
    w.rec_of[root] = 0;
    let mut stack = vec![0usize];
    while let Some(r) = stack.pop() {
        let Some(n) = w.recs[r].node else { continue };
        let Content::Dir { entries } = &nodes[n].content else {
            continue;
        };
        let mut entries: Vec<&(Vec<u8>, NodeId)> = entries.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let needs_lf = r == 0 && !entries.iter().any(|(n, _)| n == b"lost+found");
        let mut children = Vec::with_capacity(entries.len() + 1);
        if needs_lf {
            w.recs.push(Rec {
                node: None,
                parent: 0,
                name: b"lost+found".to_vec(),
                links: 2,
                children: Vec::new(),
            });
            children.push((b"lost+found".to_vec(), w.recs.len() - 1));
        }
        for pair in entries.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(Ext4Error::DuplicateName {
                    dir: w.path(r),
                    name: String::from_utf8_lossy(&pair[0].0).into_owned(),
                });
            }
        }
        let mut new_dirs = Vec::new();
        for (name, child) in entries {
            if !valid_name(name) {
                return Err(Ext4Error::InvalidName {
                    dir: w.path(r),
                    name: String::from_utf8_lossy(name).into_owned(),
                });
            }
            let child = *child;
            if child >= nodes.len() {
                return Err(Ext4Error::BadNode(child));
            }
            let cr = if w.rec_of[child] != NONE {
                let cr = w.rec_of[child];
                if nodes[child].is_dir() {
                    let mut path = w.path(r);
                    path.push('/');
                    path.push_str(&String::from_utf8_lossy(name));
                    return Err(Ext4Error::DirectoryHardLink { path });
                }
                w.recs[cr].links += 1;
                cr
            } else {
                w.recs.push(Rec {
                    node: Some(child),
                    parent: r,
                    name: name.clone(),
                    links: 1,
                    children: Vec::new(),
                });
                let cr = w.recs.len() - 1;
                w.rec_of[child] = cr;
                if nodes[child].is_dir() {
                    w.recs[cr].links = 2;
                    new_dirs.push(cr);
                }
                cr
            };
            children.push((name.clone(), cr));
        }
        // Reverse so the stack pops (and numbers) subdirectories in name order.
        stack.extend(new_dirs.into_iter().rev());
        w.recs[r].children = children;
    }
    // Directory link counts: 2 + subdirectories ("." and each child's "..").
    w.recs[0].links = 2;
    for r in 0..w.recs.len() {
        let subdirs = w.recs[r]
            .children
            .iter()
            .filter(|(_, c)| {
                w.content(*c)
                    .is_none_or(|c| matches!(c, Content::Dir { .. }))
            })
            .count() as u64;
        if w.content(r)
            .is_none_or(|c| matches!(c, Content::Dir { .. }))
        {
            w.recs[r].links = 2 + subdirs;
        }
    }
    Ok(w)
}

/// Renumbers the records so that the cold ones come last, each class in
/// walk order; returns how many are hot. The root always is.
fn cold_last(w: &mut Walk<'_>, cold: ColdFn) -> usize {
    let n = w.recs.len();
    let mut is_cold = vec![false; n];
    {
        let mut comps: Vec<&[u8]> = Vec::new();
        for (r, c) in is_cold.iter_mut().enumerate().skip(1) {
            comps.clear();
            let mut x = r;
            while x != 0 {
                comps.push(&w.recs[x].name);
                x = w.recs[x].parent;
            }
            comps.reverse();
            let is_dir = w
                .content(r)
                .is_none_or(|c| matches!(c, Content::Dir { .. }));
            *c = cold(&comps, is_dir);
        }
    }
    let hot = is_cold.iter().filter(|c| !**c).count();
    let mut new_of = vec![0usize; n];
    let (mut next_hot, mut next_cold) = (0, hot);
    for (old, c) in is_cold.iter().enumerate() {
        let next = if *c { &mut next_cold } else { &mut next_hot };
        new_of[old] = *next;
        *next += 1;
    }
    let mut recs: Vec<(usize, Rec)> = std::mem::take(&mut w.recs)
        .into_iter()
        .enumerate()
        .map(|(old, mut rec)| {
            rec.parent = new_of[rec.parent];
            for (_, c) in &mut rec.children {
                *c = new_of[*c];
            }
            (new_of[old], rec)
        })
        .collect();
    recs.sort_unstable_by_key(|(new, _)| *new);
    w.recs = recs.into_iter().map(|(_, rec)| rec).collect();
    for r in &mut w.rec_of {
        if let Some(new) = new_of.get(*r) {
            *r = *new;
        }
    }
    hot
}

/// Inode number of record `r`: the root is 2, the rest follow the reserved ones.
fn ino(r: usize) -> u32 {
    if r == 0 {
        ROOT_INO
    } else {
        FIRST_INO + r as u32 - 1
    }
}

fn file_type(c: Option<&Content>) -> u8 {
    match c {
        None | Some(Content::Dir { .. }) => dir::FT_DIR,
        Some(Content::File { .. }) => dir::FT_REG,
        Some(Content::Symlink { .. }) => dir::FT_SYMLINK,
        Some(Content::CharDevice { .. }) => dir::FT_CHR,
        Some(Content::BlockDevice { .. }) => dir::FT_BLK,
        Some(Content::Fifo) => dir::FT_FIFO,
        Some(Content::Socket) => dir::FT_SOCK,
    }
}

/// The encoded blocks of directory `r` (deterministic: planning and
/// writing encode the same bytes).
fn dir_data(w: &Walk<'_>, r: usize) -> Vec<u8> {
    let entries: Vec<(&[u8], u32, u8)> = w.recs[r]
        .children
        .iter()
        .map(|(n, c)| (n.as_slice(), ino(*c), file_type(w.content(*c))))
        .collect();
    dir::encode(ino(r), ino(w.recs[r].parent), &entries)
}

/// Per-inode plan: what it needs in the metadata region.
#[derive(Default)]
struct Plan {
    /// Bytes of the directory data. The data itself is encoded again when
    /// written: kept from planning to writing it would double the memory
    /// of an image of many directories (each takes a block, and they are
    /// all in the metadata region's buffer too).
    dir_len: u64,
    extents: Vec<Extent>,
    tree_blocks: Vec<u64>,
    xattrs: Option<Placement>,
    xattr_block: u64,
    symlink_block: u64,
    /// First block of the directory data.
    dir_block: u64,
}

/// Validates `nodes` (reachable from `root`), lays out the metadata after
/// the caller's data and writes it to `file`, then sets the file's length.
///
/// The caller has already written file data at the blocks its extents name,
/// all below `opts.data_end` and at or above [`first_data_block`]; every
/// other byte of `file` must read as zero (a new file does).
pub fn write_filesystem(
    file: &(impl Output + ?Sized),
    nodes: &[Node],
    root: NodeId,
    opts: &FsOptions,
) -> Result<FsSummary, Ext4Error> {
    let mut w = walk(nodes, root)?;
    let hot = match opts.cold {
        Some(cold) => cold_last(&mut w, cold),
        None => w.recs.len(),
    };
    let align = opts.align_blocks.max(1);
    let meta_start = opts.data_end.next_multiple_of(align);
    let cursor = std::cell::Cell::new(meta_start);
    let alloc = |n: u64| {
        let at = cursor.get();
        cursor.set(at + n);
        at
    };

    // The cold inodes' blocks first, so the hot ones end where the bitmaps
    // and inode tables begin: the metadata a start reads is one run.
    let mut plans: Vec<Plan> = std::iter::repeat_with(Plan::default)
        .take(w.recs.len())
        .collect();
    let mut hot_start = meta_start;
    for r in (hot..w.recs.len()).chain(0..hot) {
        if r == 0 {
            hot_start = cursor.get();
        }
        let mut p = Plan::default();
        let path = || w.path(r);
        match w.content(r) {
            None | Some(Content::Dir { .. }) => {
                p.dir_len = dir_data(&w, r).len() as u64;
                let n = p.dir_len / BLOCK_SIZE;
                p.dir_block = alloc(n);
                p.extents = extent::normalize(&[Extent {
                    logical: 0,
                    physical: p.dir_block,
                    len: n as u32,
                }]);
            }
            Some(Content::File { size, extents }) => {
                if *size > crate::MAX_FILE_BYTES {
                    return Err(Ext4Error::FileTooLarge {
                        path: path(),
                        size: *size,
                    });
                }
                p.extents = extent::normalize(extents);
                if w.recs[r].links > LINK_MAX {
                    return Err(Ext4Error::TooManyLinks {
                        path: path(),
                        links: w.recs[r].links,
                    });
                }
            }
            Some(Content::Symlink { target }) => {
                if target.is_empty() || target.len() >= BLOCK_SIZE as usize || target.contains(&0) {
                    return Err(Ext4Error::BadSymlink {
                        path: path(),
                        len: target.len(),
                    });
                }
                if target.len() >= 60 {
                    p.symlink_block = alloc(1);
                    p.extents = vec![Extent {
                        logical: 0,
                        physical: p.symlink_block,
                        len: 1,
                    }];
                }
            }
            _ => {
                if w.recs[r].links > LINK_MAX {
                    return Err(Ext4Error::TooManyLinks {
                        path: path(),
                        links: w.recs[r].links,
                    });
                }
            }
        }
        let tb = extent::tree_blocks(p.extents.len());
        let first = alloc(tb);
        p.tree_blocks = (first..first + tb).collect();
        let meta = w.meta(r);
        if !meta.xattrs.is_empty() {
            let mut entries = Vec::with_capacity(meta.xattrs.len());
            for (name, value) in &meta.xattrs {
                let e = xattr::split_name(name, value).map_err(|reason| Ext4Error::BadXattr {
                    path: path(),
                    name: String::from_utf8_lossy(name).into_owned(),
                    reason,
                })?;
                entries.retain(|x: &xattr::XattrEntry| (x.index, &x.name) != (e.index, &e.name));
                entries.push(e);
            }
            let placed = xattr::place(entries).map_err(|bytes| Ext4Error::XattrTooLarge {
                path: path(),
                bytes,
            })?;
            if matches!(placed, Placement::Block(_)) {
                p.xattr_block = alloc(1);
            }
            p.xattrs = Some(placed);
        }
        plans[r] = p;
    }
    let meta_end_no_groups = cursor.get();

    // Group count, inodes per group and total size depend on each other:
    // raise the group count until everything fits.
    let max_ino = u64::from(ino(w.recs.len() - 1)).max(u64::from(FIRST_INO));
    let inodes_needed = max_ino + opts.free_inodes;
    let Geometry { groups, ipg, total } =
        geometry(meta_end_no_groups, inodes_needed, opts.free_blocks, align);
    if total > opts.max_blocks || total > u64::from(u32::MAX) {
        return Err(Ext4Error::TooLarge {
            needed: total * BLOCK_SIZE,
            max: opts.max_blocks * BLOCK_SIZE,
        });
    }
    let itb = ipg / INODES_PER_BLOCK;
    let block_bitmaps = meta_end_no_groups;
    let inode_bitmaps = block_bitmaps + groups;
    let inode_tables = inode_bitmaps + groups;
    let meta_end = inode_tables + groups * itb;

    // Block ownership.
    let mut used = Bitset::new(total);
    let gdt = (groups * DESC_SIZE).div_ceil(BLOCK_SIZE);
    let conflict = |r: usize, block: u64| Ext4Error::BlockConflict {
        path: w.path(r),
        block,
    };
    used.mark(0, 1 + gdt).map_err(|b| conflict(0, b))?;
    used.mark(meta_start, meta_end - meta_start)
        .map_err(|b| conflict(0, b))?;
    for (r, p) in plans.iter().enumerate() {
        if let Some(Content::File { .. }) = w.content(r) {
            for e in &p.extents {
                if e.physical + u64::from(e.len) > opts.data_end {
                    return Err(conflict(r, e.physical));
                }
                used.mark(e.physical, u64::from(e.len))
                    .map_err(|b| conflict(r, b))?;
            }
        }
    }

    // Metadata region below the group metadata: one buffer.
    let mut region = vec![0u8; ((meta_end_no_groups - meta_start) * BLOCK_SIZE) as usize];
    let mut put = |block: u64, data: &[u8]| {
        let at = ((block - meta_start) * BLOCK_SIZE) as usize;
        region[at..at + data.len()].copy_from_slice(data);
    };
    let mut inodes: Vec<[u8; INODE_SIZE as usize]> = Vec::with_capacity(w.recs.len());
    for (r, p) in plans.iter().enumerate() {
        let meta = w.meta(r);
        let content = w.content(r);
        let (i_block, tree) = extent::build(&p.extents, &p.tree_blocks);
        for (b, data) in &tree {
            put(*b, data);
        }
        let mut rec = InodeRecord {
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            size: 0,
            time: meta.mtime,
            links: w.recs[r].links.min(LINK_MAX) as u16,
            sectors: 0,
            extents: true,
            i_block,
            xattr_block: 0,
            inline_xattrs: None,
        };
        let data_blocks: u64 = p.extents.iter().map(|e| u64::from(e.len)).sum();
        match content {
            None | Some(Content::Dir { .. }) => {
                rec.mode |= inode::S_IFDIR;
                rec.size = p.dir_len;
                if w.recs[r].links > LINK_MAX {
                    rec.links = 1;
                }
                put(p.dir_block, &dir_data(&w, r));
            }
            Some(Content::File { size, .. }) => {
                rec.mode |= inode::S_IFREG;
                rec.size = *size;
            }
            Some(Content::Symlink { target }) => {
                rec.mode |= inode::S_IFLNK;
                rec.size = target.len() as u64;
                if p.symlink_block == 0 {
                    rec.extents = false;
                    rec.i_block = [0; 60];
                    rec.i_block[..target.len()].copy_from_slice(target);
                } else {
                    let mut b = vec![0u8; BLOCK_SIZE as usize];
                    b[..target.len()].copy_from_slice(target);
                    put(p.symlink_block, &b);
                }
            }
            Some(Content::CharDevice { major, minor })
            | Some(Content::BlockDevice { major, minor }) => {
                let is_char = matches!(content, Some(Content::CharDevice { .. }));
                rec.mode |= if is_char {
                    inode::S_IFCHR
                } else {
                    inode::S_IFBLK
                };
                rec.extents = false;
                rec.i_block = inode::device_i_block(*major, *minor);
            }
            Some(Content::Fifo) | Some(Content::Socket) => {
                rec.mode |= if matches!(content, Some(Content::Fifo)) {
                    inode::S_IFIFO
                } else {
                    inode::S_IFSOCK
                };
                rec.extents = false;
                rec.i_block = [0; 60];
            }
        }
        match &p.xattrs {
            Some(Placement::Inline(x)) => rec.inline_xattrs = Some(x.clone()),
            Some(Placement::Block(b)) => {
                put(p.xattr_block, b);
                rec.xattr_block = p.xattr_block;
            }
            _ => {}
        }
        let meta_blocks = p.tree_blocks.len() as u64 + u64::from(p.xattr_block != 0);
        rec.sectors = (data_blocks + meta_blocks) * (BLOCK_SIZE / 512);
        inodes.push(inode::encode_inode(&rec));
    }
    file.write_image_at(&region, meta_start * BLOCK_SIZE)?;
    drop(region);

    // Group metadata: bitmaps and inode tables.
    let inode_count = groups * ipg;
    let mut inode_used = Bitset::new(inode_count + 1); // bit i = inode i (1-based)
    inode_used
        .mark(1, max_ino.min(inode_count))
        .map_err(|b| conflict(0, b))?;
    let mut descs = Vec::with_capacity(groups as usize);
    let mut bitmaps = vec![0u8; (2 * groups * BLOCK_SIZE) as usize];
    let mut dirs_per_group = vec![0u32; groups as usize];
    for r in 0..w.recs.len() {
        if matches!(w.content(r), None | Some(Content::Dir { .. })) {
            dirs_per_group[((u64::from(ino(r)) - 1) / ipg) as usize] += 1;
        }
    }
    for g in 0..groups {
        let first = g * BLOCKS_PER_GROUP;
        let end = (first + BLOCKS_PER_GROUP).min(total);
        let bb = used.group_block(first, BLOCKS_PER_GROUP, BLOCK_SIZE as usize);
        let first_ino = g * ipg + 1;
        let ib = inode_used.group_block(first_ino, ipg, BLOCK_SIZE as usize);
        let bb_at = (g * BLOCK_SIZE) as usize;
        bitmaps[bb_at..bb_at + BLOCK_SIZE as usize].copy_from_slice(&bb);
        let ib_at = ((groups + g) * BLOCK_SIZE) as usize;
        bitmaps[ib_at..ib_at + BLOCK_SIZE as usize].copy_from_slice(&ib);
        descs.push(GroupDesc {
            block_bitmap: block_bitmaps + g,
            inode_bitmap: inode_bitmaps + g,
            inode_table: inode_tables + g * itb,
            free_blocks: (end - first - used.count(first, end)) as u32,
            free_inodes: (ipg - inode_used.count(first_ino, first_ino + ipg)) as u32,
            used_dirs: dirs_per_group[g as usize],
        });
    }
    file.write_image_at(&bitmaps, block_bitmaps * BLOCK_SIZE)?;

    // Inode tables: only the part holding used inodes is written.
    let mut table = vec![0u8; (max_ino * u64::from(INODE_SIZE)) as usize];
    for (r, raw) in inodes.iter().enumerate() {
        let at = ((u64::from(ino(r)) - 1) * u64::from(INODE_SIZE)) as usize;
        table[at..at + INODE_SIZE as usize].copy_from_slice(raw);
    }
    for g in 0..groups {
        let lo = (g * ipg * u64::from(INODE_SIZE)) as usize;
        if lo >= table.len() {
            break;
        }
        let hi = (((g + 1) * ipg * u64::from(INODE_SIZE)) as usize).min(table.len());
        file.write_image_at(&table[lo..hi], (inode_tables + g * itb) * BLOCK_SIZE)?;
    }

    let free_blocks: u64 = descs.iter().map(|d| u64::from(d.free_blocks)).sum();
    let free_inodes: u64 = descs.iter().map(|d| u64::from(d.free_inodes)).sum();
    file.write_image_at(&superblock::encode_gdt(&descs), BLOCK_SIZE)?;
    let sb = SuperInfo {
        blocks: total,
        groups,
        inodes_per_group: ipg as u32,
        free_blocks,
        free_inodes,
        uuid: opts.uuid,
        hash_seed: opts.hash_seed,
        volume_name: opts.volume_name,
        time: 0,
    };
    file.write_image_at(&superblock::encode_superblock(&sb), 1024)?;
    file.set_len(total * BLOCK_SIZE)?;
    // Inode tables are one array across groups (flex_bg, and inodes per
    // group a multiple of a block's worth), so the hot inodes, numbered
    // first, end at one block.
    let hot_tables_end = inode_tables + (u64::from(ino(hot - 1)) - 1) / INODES_PER_BLOCK + 1;
    let hot_metadata = (hot_start, hot_tables_end - hot_start);
    Ok(FsSummary {
        blocks: total,
        groups,
        inodes: inode_count,
        used_inodes: max_ino,
        metadata_start: meta_start,
        metadata_blocks: meta_end - meta_start,
        hot_metadata,
        free_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn geometry_is_consistent(
            fixed in 1u64..3_000_000,
            inodes in 11u64..3_000_000,
            free in 0u64..1_000_000,
            align_log in 0u32..11,
        ) {
            let align = 1u64 << align_log;
            let g = geometry(fixed, inodes, free, align);
            prop_assert_eq!(g.groups, g.total.div_ceil(BLOCKS_PER_GROUP));
            prop_assert!(g.ipg * g.groups >= inodes);
            prop_assert!(g.ipg.is_multiple_of(INODES_PER_BLOCK) && g.ipg <= 8 * BLOCK_SIZE);
            prop_assert!(g.total >= fixed + g.groups * (2 + g.ipg / INODES_PER_BLOCK) + free);
            prop_assert_eq!(g.total % align, 0);
        }
    }
}
