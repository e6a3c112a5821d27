//! Sizes at the edges: a directory of 100k entries, a layer that pushes
//! the image over --max-size, the largest file ext4 takes.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[test]
fn hundred_thousand_entries_in_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layer::default();
    l.dir(
        "big",
        &Meta {
            mode: 0o755,
            ..Meta::default()
        },
    );
    for i in 0..100_000 {
        l.file(
            &format!("big/entry-{i:06}-with-a-longer-name"),
            if i % 1000 == 0 { b"x" } else { b"" },
            &Meta::default(),
        );
    }
    let layout = tmp.path().join("layout");
    write_layout(&layout, &[l.finish()]);
    let img = tmp.path().join("img");
    let s = flatten(&layout, &img, 2).unwrap();
    assert!(s.inodes_used > 100_000);
    e2fsck(&img);
    if !is_root() {
        eprintln!("not root: skipping the mount check");
        return;
    }
    let m = Mount::new(&img, &tmp.path().join("mnt"));
    let names: Vec<_> = std::fs::read_dir(m.dir.join("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 100_000);
    assert_eq!(
        std::fs::read(m.dir.join("big/entry-099000-with-a-longer-name")).unwrap(),
        b"x"
    );
    assert_eq!(
        std::fs::read(m.dir.join("big/entry-099999-with-a-longer-name")).unwrap(),
        b""
    );
}

#[test]
fn max_size_is_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = Layer::default();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
    l.file("big.bin", &data, &Meta::default());
    let layout = tmp.path().join("layout");
    write_layout(&layout, &[l.finish()]);
    let image = kindling_oci::Image::open(layout.to_str().unwrap()).unwrap();
    let out = std::fs::File::create(tmp.path().join("img")).unwrap();
    let opts = kindling_flatten::FlattenOptions {
        max_size: 2 << 20,
        ..Default::default()
    };
    let err = kindling_flatten::flatten(&image, &out, &opts).unwrap_err();
    assert!(
        matches!(err, kindling_flatten::FlattenError::TooLarge { max } if max == 2 << 20),
        "{err}"
    );
}

/// A sparse file of 2 TiB less 4 KiB is the largest the kernel opens on
/// these images (no `huge_file`); one byte more is refused by name, not
/// flattened into an inode the kernel rejects, nor blamed on --max-size.
#[test]
fn the_largest_file_is_2_tib_less_a_block() {
    let tmp = tempfile::tempdir().unwrap();
    let largest = kindling_ext4::MAX_FILE_BYTES;
    assert_eq!(largest, (1 << 41) - 4096);
    for (size, fits) in [(largest, true), (largest + 1, false), (1 << 44, false)] {
        let mut l = Layer::default();
        l.sparse("huge", size, size - 5, b"hello");
        let layout = tmp.path().join(format!("layout-{size}"));
        write_layout(&layout, &[l.finish()]);
        let img = tmp.path().join(format!("img-{size}"));
        match flatten(&layout, &img, 1) {
            Ok(_) => {
                assert!(fits, "{size} flattened");
                e2fsck(&img);
                if is_root() {
                    let m = Mount::new(&img, &tmp.path().join(format!("mnt-{size}")));
                    let f = std::fs::File::open(m.dir.join("huge")).unwrap();
                    let mut tail = [0u8; 5];
                    std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, size - 5).unwrap();
                    assert_eq!(&tail, b"hello");
                }
            }
            Err(e) => {
                assert!(!fits, "{size}: {e:#}");
                let msg = e;
                assert!(msg.contains("huge") && msg.contains("at most"), "{msg}");
                assert!(!msg.contains("max-size"), "{msg}");
            }
        }
    }
}
