//! Test support: OCI layouts built from tar layers, e2fsck, and loop mounts.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub use kindling_testkit::write_layout;

/// Flattens the layout at `layout` into `out` with default options.
pub fn flatten(
    layout: &Path,
    out: &Path,
    lookahead: usize,
) -> Result<kindling_flatten::FlattenSummary, String> {
    let image = kindling_oci::Image::open(layout.to_str().unwrap()).map_err(|e| format!("{e}"))?;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .unwrap();
    let opts = kindling_flatten::FlattenOptions {
        chunk_size: 64 << 10,
        free_space: 1 << 20,
        free_inodes: 64,
        lookahead,
        ..Default::default()
    };
    kindling_flatten::flatten(&image, &file, &opts).map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            s.push_str(": ");
            s.push_str(&x.to_string());
            src = x.source();
        }
        s
    })
}

pub fn e2fsck(img: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .output()
        .expect("e2fsck runs");
    assert!(
        out.status.success(),
        "e2fsck -fn {}:\n{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A read-only loop mount, unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(img: &Path, dir: &Path) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-o", "loop,ro", "-t", "ext4"])
            .arg(img)
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount {} failed", img.display());
        Mount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A tar layer under construction.
pub struct Layer {
    pub b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }
}

pub struct Meta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: vec![],
        }
    }
}

impl Layer {
    fn header(kind: tar::EntryType, m: &Meta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode);
        h.set_uid(m.uid);
        h.set_gid(m.gid);
        h.set_mtime(m.mtime);
        h.set_size(size);
        h
    }

    fn pax(&mut self, m: &Meta) {
        if !m.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = m
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            self.b
                .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8], m: &Meta) {
        self.pax(m);
        let mut h = Self::header(tar::EntryType::Regular, m, data.len() as u64);
        self.b.append_data(&mut h, path, data).unwrap();
    }

    /// A PAX 0.1 sparse file of `size` bytes whose only data is `data`
    /// at `offset`.
    pub fn sparse(&mut self, path: &str, size: u64, offset: u64, data: &[u8]) {
        let (size, map) = (size.to_string(), format!("{offset},{}", data.len()));
        self.b
            .append_pax_extensions([
                ("GNU.sparse.major", b"0".as_slice()),
                ("GNU.sparse.minor", b"1"),
                ("GNU.sparse.name", path.as_bytes()),
                ("GNU.sparse.realsize", size.as_bytes()),
                ("GNU.sparse.numblocks", b"1"),
                ("GNU.sparse.map", map.as_bytes()),
            ])
            .unwrap();
        let mut h = Self::header(tar::EntryType::Regular, &Meta::default(), data.len() as u64);
        self.b
            .append_data(&mut h, format!("GNUSparseFile.0/{path}"), data)
            .unwrap();
    }

    pub fn dir(&mut self, path: &str, m: &Meta) {
        self.pax(m);
        let mut h = Self::header(tar::EntryType::Directory, m, 0);
        self.b.append_data(&mut h, path, &[][..]).unwrap();
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let mut h = Self::header(
            tar::EntryType::Symlink,
            &Meta {
                mode: 0o777,
                ..Meta::default()
            },
            0,
        );
        self.b.append_link(&mut h, path, target).unwrap();
    }

    pub fn hardlink(&mut self, path: &str, target: &str) {
        let mut h = Self::header(tar::EntryType::Link, &Meta::default(), 0);
        self.b.append_link(&mut h, path, target).unwrap();
    }

    pub fn special(&mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32, m: &Meta) {
        let mut h = Self::header(kind, m, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, &[][..]).unwrap();
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}
