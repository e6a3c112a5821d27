//! Sizes at the edges: a directory of 100k entries and a layer that pushes
//! the image over --max-size.

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
