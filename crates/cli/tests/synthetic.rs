//! `kindling flatten` on small OCI images generated here, so these tests need
//! no corpus: a well-formed image checked against the corpus' reference
//! unpacker (`corpus.py unpack` + `listing`), every source form, and hostile
//! or broken inputs that must fail cleanly.
//!
//! A clean failure is exit status 1, one `kindling: error:` message that
//! names the offending layer, entry or limit, no panic, and nothing left in
//! the output directory. The mount checks need root (loop devices); without
//! root they are skipped with a note, except under CI where they fail.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// A small base layer: a few directories, text files and 300 KB of noise.
fn base() -> Vec<Entry> {
    vec![
        Entry::dir("etc"),
        Entry::file("etc/hostname", "kindling\n"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        Entry::dir("real"),
        Entry::file("real/keep.txt", "keep\n"),
        Entry::dir("data"),
        Entry::file("data/noise.bin", noise(300_000, 1)),
        Entry::file("data/gone.txt", "whited out by layer 2\n"),
    ]
}

/// Flattens `source` into a fresh directory and checks a clean failure.
fn flatten_fails(case: &str, source: &Path, args: &[&str], names: &[&str]) {
    let out = tempfile::tempdir().expect("tempdir");
    let img = out.path().join("out.img");
    let o = output(
        kindling()
            .arg("flatten")
            .arg(source)
            .arg("-o")
            .arg(&img)
            .args(args),
    );
    assert_clean_failure(case, &o, names, out.path());
}

/// Image with `base()` and one more gzip layer holding `top`.
fn two_layers(dir: &Path, top: Vec<Entry>) -> Written {
    write_layout(dir, &[Layer::gzip(base()), Layer::gzip(top)])
}

/// The first 12 hex digits of a digest: enough to name a blob in a message
/// whether it prints the digest in full or shortened.
fn short(digest: &str) -> &str {
    &digest["sha256:".len().."sha256:".len() + 12]
}

/// Flattens a layout that must succeed; returns the image path.
fn flatten_ok(layout: &Path, out_dir: &Path) -> std::path::PathBuf {
    let img = out_dir.join("out.img");
    flatten_json(layout.as_os_str(), &img, &[]);
    fsck_clean(&img);
    img
}

// ---------------------------------------------------------------------------
// Well-formed images
// ---------------------------------------------------------------------------

/// Every kind of entry and every layer rule, over gzip and plain layers.
fn rich_layers() -> Vec<Layer> {
    let mut l1 = base();
    l1.extend([
        Entry::hardlink("data/noise-link", "data/noise.bin"),
        Entry::symlink("etc/motd", "hostname"),
        Entry::symlink("abs-link", "/etc/hostname"),
        Entry::fifo("data/fifo"),
        Entry::char_dev("data/null", 1, 3),
        Entry::file("data/attrs", "with xattrs\n")
            .xattr("user.kindling", b"yes")
            .xattr("user.empty", b""),
        Entry::file("data/owned", "uid 1000\n")
            .owner(1000, 1000)
            .mode(0o600),
        Entry::file("data/setuid", "s\n").mode(0o4755),
        Entry::file("data/empty", ""),
        Entry::file("data/zeros", vec![0u8; 1 << 20]),
        Entry::dir(format!("data/{}", "d".repeat(120))),
        Entry::file(format!("data/{}/long-path", "d".repeat(120)), "pax path\n"),
        Entry::file(format!("data/{}", "n".repeat(255)), "255-byte name\n"),
        Entry::symlink("data/long-target", format!("/{}", "t".repeat(200))),
        Entry::dir("opaque"),
        Entry::file("opaque/old1", "old\n"),
        Entry::file("opaque/old2", "old\n"),
        Entry::dir("replace"),
        Entry::file("replace/was-file", "file\n"),
        Entry::dir("replace/was-dir"),
        Entry::file("replace/was-dir/inner", "inner\n"),
        Entry::symlink("replace/link-to-dir", "/real"),
        Entry::file("replace/to-hardlink", "replaced by a hard link\n"),
        Entry::dir("opaque-late"),
        Entry::file("opaque-late/old", "old\n"),
        Entry::dir("same-layer"),
    ]);
    let l2 = vec![
        Entry::whiteout("data/gone.txt"),
        Entry::whiteout("nothere"),
        Entry::file("opaque/.wh..wh..opq", ""),
        Entry::file("opaque/new", "new\n"),
        Entry::dir("replace/was-file"),
        Entry::file("replace/was-file/now-dir", "x\n"),
        Entry::symlink("replace/was-dir", "was-file"),
        Entry::file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        Entry::file("data/big", noise(1_500_000, 2)),
        // A whiteout or opaque marker hides lower layers only, never entries
        // of its own layer, whatever their order in the tar.
        Entry::file("same-layer/kept", "kept\n"),
        Entry::whiteout("same-layer/kept"),
        Entry::file("opaque-late/new", "new\n"),
        Entry::file("opaque-late/.wh..wh..opq", ""),
        Entry::dir("replace/link-to-dir"),
        Entry::hardlink("replace/to-hardlink", "etc/passwd"),
        // Names as real layers spell them.
        Entry::file("./dotslash.txt", "./ prefix\n"),
        Entry::dir("slash-dir/"),
        Entry::file("slash-dir/f", "trailing slash dir\n"),
        // Names are bytes, not UTF-8.
        Entry::file(b"data/\xffnot-utf8\x01", "bytes\n"),
        // Duplicate entry in one layer: the last one wins.
        Entry::file("dup.txt", "first\n"),
        Entry::file("dup.txt", "second wins\n"),
    ];
    let l3 = vec![
        Entry::file("etc/hostname", "kindling-3\n"),
        Entry::dir("newdir").mode(0o750).owner(5, 6),
        Entry::file("newdir/f", noise(70_000, 3)),
        Entry::hardlink("newdir/big-link", "data/big"),
        // Directory metadata changes; its contents stay.
        Entry::dir("etc").mode(0o700).owner(7, 8),
        // The original of a cross-layer hard link goes; the link stays.
        Entry::whiteout("data/noise.bin"),
    ];
    vec![Layer::gzip(l1), Layer::gzip(l2), Layer::plain(l3)]
}

/// The merged tree of a well-formed image matches the reference unpacker's,
/// from an OCI layout, an oci-archive and a docker-archive; the layout and
/// the oci-archive give the same bytes at any thread count.
#[test]
fn well_formed_image_matches_reference() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let w = write_layout(&layout, &rich_layers());
    let out = t.path().join("out");
    fs::create_dir(&out).expect("mkdir");

    let img = out.join("dir.img");
    flatten_json(layout.as_os_str(), &img, &["--threads", "1"]);
    fsck_clean(&img);
    let img3 = out.join("dir3.img");
    let src = format!("{}:latest", layout.display());
    flatten_json(src.as_ref(), &img3, &["--threads", "3"]);
    assert_eq!(
        sha256_file(&img),
        sha256_file(&img3),
        "DIR with --threads 1 and DIR:latest with --threads 3 differ"
    );

    // oci-archive: a tar of the layout.
    let archive = t.path().join("oci.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    let img_arch = out.join("archive.img");
    flatten_json(archive.as_os_str(), &img_arch, &[]);
    assert_eq!(
        sha256_file(&img),
        sha256_file(&img_arch),
        "oci-archive and layout dir of one image give different bytes"
    );

    // docker-archive (`docker save` format): uncompressed layers.
    let docker = t.path().join("docker.tar");
    write_docker_archive(&docker, &w, &rich_layers());
    let img_docker = out.join("docker.img");
    flatten_json(docker.as_os_str(), &img_docker, &[]);
    fsck_clean(&img_docker);

    if !can_mount("well_formed_image_matches_reference") {
        return;
    }
    let rootfs = t.path().join("rootfs");
    run_ok(
        python()
            .arg(corpus_py())
            .arg("unpack")
            .arg(&layout)
            .arg("latest")
            .arg(&rootfs),
    );
    let expected = listing(&rootfs, &t.path().join("expected.raw"));
    for (what, image) in [("layout", &img), ("docker-archive", &img_docker)] {
        let mnt = Mount::new(image, &t.path().join(format!("mnt-{what}")));
        let actual = listing(&mnt.dir, &t.path().join(format!("{what}.raw")));
        assert_same_listing(what, &expected, &actual, t.path());
    }
}

/// A `docker save` style archive of the image `w` (whose layers are `layers`).
fn write_docker_archive(path: &Path, w: &Written, layers: &[Layer]) {
    let mut b = tar::Builder::new(fs::File::create(path).expect("creating the archive"));
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("archive path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_cksum();
        b.append(&h, data).expect("appending to the archive");
    };
    let config = fs::read(w.blob_path(&w.config)).expect("reading the config");
    let config_name = format!("{}.json", short(&w.config));
    add(&config_name, &config);
    let mut names = vec![];
    for l in layers {
        let tar = tar_bytes(&l.entries);
        let name = format!("{}/layer.tar", sha256_hex(&tar));
        add(&name, &tar);
        names.push(name);
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["kindling/test:latest"],
        "Layers": names,
    }]);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("manifest.json"),
    );
    b.into_inner()
        .expect("finishing the archive")
        .sync_all()
        .expect("syncing the archive");
}

/// Flattens `layers` and compares the mounted tree with the reference
/// unpacker's (as root; without root only flatten and e2fsck run).
fn matches_reference(test: &str, layers: &[Layer]) {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    write_layout(&layout, layers);
    let img = flatten_ok(&layout, t.path());
    if !can_mount(test) {
        return;
    }
    let rootfs = t.path().join("rootfs");
    run_ok(
        python()
            .arg(corpus_py())
            .arg("unpack")
            .arg(&layout)
            .arg("latest")
            .arg(&rootfs),
    );
    let expected = listing(&rootfs, &t.path().join("expected.raw"));
    let mnt = Mount::new(&img, &t.path().join("mnt"));
    let actual = listing(&mnt.dir, &t.path().join("actual.raw"));
    assert_same_listing(test, &expected, &actual, t.path());
}

/// The same (empty) layer blob twice in one manifest, as `docker build`
/// makes for metadata-only steps.
#[test]
fn repeated_identical_layers() {
    matches_reference(
        "repeated_identical_layers",
        &[
            Layer::gzip(base()),
            Layer::gzip(vec![]),
            Layer::gzip(vec![Entry::file("etc/hostname", "top\n")]),
            Layer::gzip(vec![]),
        ],
    );
}

/// An opaque marker at the top level hides every lower entry.
#[test]
fn opaque_root() {
    matches_reference(
        "opaque_root",
        &[
            Layer::gzip(base()),
            Layer::gzip(vec![
                Entry::file(".wh..wh..opq", ""),
                Entry::dir("etc"),
                Entry::file("etc/only", "only this\n"),
            ]),
        ],
    );
}

/// A path removed by a whiteout and created again by the next layer.
#[test]
fn whiteout_then_recreate() {
    matches_reference(
        "whiteout_then_recreate",
        &[
            Layer::gzip(base()),
            Layer::gzip(vec![
                Entry::whiteout("data"),
                Entry::whiteout("etc/hostname"),
            ]),
            Layer::plain(vec![
                Entry::file("data", "data is a file now\n"),
                Entry::symlink("etc/hostname", "passwd"),
            ]),
        ],
    );
}

/// The image is readable like any other output file (not tempfile's 0600).
#[test]
fn output_is_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![]);
    let img = flatten_ok(&layout, t.path());
    let mode = std::fs::metadata(&img).expect("stat").permissions().mode();
    assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
}

/// A whiteout of a path that does not exist is not an error, nor is one
/// under a regular file (nothing there to hide), opaque or not.
#[test]
fn whiteout_of_missing_path_succeeds() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(
        &layout,
        vec![
            Entry::whiteout("nothere"),
            Entry::whiteout("data/nothere"),
            Entry::whiteout("nodir/nothere"),
            Entry::whiteout("etc/hostname/x"),
            Entry::whiteout("etc/passwd/.wh..opq"),
        ],
    );
    let img = flatten_ok(&layout, t.path());
    if !can_mount("whiteout_of_missing_path_succeeds") {
        return;
    }
    let mnt = Mount::new(&img, &t.path().join("mnt"));
    assert!(mnt.dir.join("data/noise.bin").is_file());
    assert!(!mnt.dir.join("nothere").exists());
    assert!(!mnt.dir.join("data/nothere").exists());
    assert_eq!(
        fs::read_to_string(mnt.dir.join("etc/hostname")).expect("hostname"),
        "kindling\n"
    );
    assert!(mnt.dir.join("etc/passwd").is_file());
}

/// Writes through symlinked parents that resolve inside the root land where
/// the link points, and the links stay links.
fn symlinked_parent_case(
    test: &str,
    links: Vec<Entry>,
    files: Vec<Entry>,
    expect: &[(&str, &str)],
) {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let mut l1 = base();
    l1.extend(links.clone());
    write_layout(&layout, &[Layer::gzip(l1), Layer::gzip(files)]);
    let img = flatten_ok(&layout, t.path());
    if !can_mount(test) {
        return;
    }
    let mnt = Mount::new(&img, &t.path().join("mnt"));
    for (path, content) in expect {
        let got = fs::read_to_string(mnt.dir.join(path))
            .unwrap_or_else(|e| panic!("{test}: reading {path} in the image: {e}"));
        assert_eq!(&got, content, "{test}: content of {path}");
    }
    for l in &links {
        if let Kind::Symlink(target) = &l.kind {
            let name = String::from_utf8_lossy(&l.name).into_owned();
            let got = fs::read_link(mnt.dir.join(&name))
                .unwrap_or_else(|e| panic!("{test}: {name} is no longer a symlink: {e}"));
            assert_eq!(
                got.as_os_str().as_encoded_bytes(),
                &target[..],
                "{test}: {name}"
            );
        }
    }
}

#[test]
fn write_through_relative_symlinked_parent_inside_root() {
    symlinked_parent_case(
        "write_through_relative_symlinked_parent_inside_root",
        vec![
            Entry::symlink("lnk", "real"),
            Entry::dir("deep"),
            Entry::symlink("deep/up", "../real"),
        ],
        vec![
            Entry::file("lnk/f1.txt", "one\n"),
            Entry::file("deep/up/f3.txt", "three\n"),
            Entry::symlink("lnk2", "./real/"),
            Entry::file("lnk2/f4.txt", "four\n"),
            Entry::hardlink("hl-via-link", "lnk/keep.txt"),
        ],
        &[
            ("real/f1.txt", "one\n"),
            ("real/f3.txt", "three\n"),
            ("real/f4.txt", "four\n"),
            ("real/keep.txt", "keep\n"),
            ("hl-via-link", "keep\n"),
        ],
    );
}

/// An absolute symlink resolves against the image root, as in a chroot.
#[test]
fn write_through_absolute_symlinked_parent_inside_root() {
    symlinked_parent_case(
        "write_through_absolute_symlinked_parent_inside_root",
        vec![Entry::symlink("abs", "/real")],
        vec![Entry::file("abs/f2.txt", "two\n")],
        &[("real/f2.txt", "two\n")],
    );
}

// ---------------------------------------------------------------------------
// Broken and hostile images
// ---------------------------------------------------------------------------

#[test]
fn layer_digest_mismatch() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let w = two_layers(&layout, vec![Entry::file("x", "one")]);
    // Same size, still a valid gzip stream (only the header's MTIME field
    // changes): nothing but the digest can tell.
    let path = w.blob_path(&w.layers[1]);
    let mut blob = fs::read(&path).expect("reading the blob");
    blob[4] ^= 1;
    fs::write(&path, blob).expect("replacing the blob");
    flatten_fails(
        "layer digest mismatch",
        &layout,
        &[],
        &[short(&w.layers[1])],
    );
}

/// Cold files wait in a temporary file until their layer ends: when
/// TMPDIR cannot hold it, the error says so and nothing is left.
#[test]
fn unusable_tmpdir_fails_cleanly() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(
        &layout,
        vec![Entry::dir("tests"), Entry::file("tests/t.py", "cold\n")],
    );
    let out = tempfile::tempdir().expect("tempdir");
    let o = output(
        kindling()
            .env("TMPDIR", t.path().join("missing"))
            .arg("flatten")
            .arg(&layout)
            .arg("-o")
            .arg(out.path().join("out.img")),
    );
    assert_clean_failure("unusable TMPDIR", &o, &["TMPDIR", "missing"], out.path());
}

#[test]
fn layer_size_mismatch() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let w = two_layers(&layout, vec![Entry::file("x", "one")]);
    // Another valid gzip'd tar of another size under the old name.
    let other = gzip(&tar_bytes(&[Entry::file("x", "two, longer")]));
    fs::write(w.blob_path(&w.layers[1]), other).expect("replacing the blob");
    flatten_fails("layer size mismatch", &layout, &[], &[short(&w.layers[1])]);
}

#[test]
fn truncated_gzip_layer() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let top = vec![Entry::file("big", noise(200_000, 9))];
    let mut gz = gzip(&tar_bytes(&top));
    gz.truncate(gz.len() / 2);
    let w = write_layout(
        &layout,
        &[
            Layer::gzip(base()),
            Layer {
                entries: top,
                blob: Blob::Raw {
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    bytes: gz,
                },
            },
        ],
    );
    flatten_fails("truncated gzip", &layout, &[], &[short(&w.layers[1])]);
}

#[test]
fn corrupt_zstd_layer() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    // The zstd magic number, then garbage.
    let mut bytes = vec![0x28, 0xb5, 0x2f, 0xfd];
    bytes.extend(noise(4096, 5));
    let w = write_layout(
        &layout,
        &[
            Layer::gzip(base()),
            Layer {
                entries: vec![Entry::file("x", "x")],
                blob: Blob::Raw {
                    media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
                    bytes,
                },
            },
        ],
    );
    flatten_fails("corrupt zstd", &layout, &[], &[short(&w.layers[1])]);
}

#[test]
fn malformed_manifest_json() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![Entry::file("x", "x")]);
    // A blob with the right digest and size, so that parsing is what fails.
    let bad = br#"{"schemaVersion": 2, "config": {"mediaType": "#;
    let digest = add_blob(&layout, bad);
    point_index_at(&layout, &digest, bad.len());
    flatten_fails(
        "malformed manifest",
        &layout,
        &[],
        &[short(&digest), "manifest"],
    );
}

/// Image whose top layer holds `top`; flattening must fail naming one of `names`.
fn hostile(case: &str, top: Vec<Entry>, names: &[&str]) {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, top);
    flatten_fails(case, &layout, &[], names);
}

#[test]
fn dotdot_path_escaping_root() {
    hostile(
        "../ path",
        vec![Entry::file("../escape.txt", "x")],
        &["../escape.txt"],
    );
}

#[test]
fn dotdot_inside_path_escaping_root() {
    hostile(
        "data/../../ path",
        vec![Entry::file("data/../../escape.txt", "x")],
        &["data/../../escape.txt"],
    );
}

#[test]
fn absolute_dotdot_path_escaping_root() {
    hostile(
        "absolute path with ..",
        vec![Entry::file("/data/../../escape.txt", "x")],
        &["/data/../../escape.txt"],
    );
}

#[test]
fn write_through_symlink_outside_root_across_layers() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let mut l1 = base();
    l1.push(Entry::symlink("evil", "../../../../.."));
    write_layout(
        &layout,
        &[
            Layer::gzip(l1),
            Layer::gzip(vec![Entry::file("evil/x", "pwned")]),
        ],
    );
    flatten_fails(
        "write through a symlink to outside (layer 2)",
        &layout,
        &[],
        &["evil"],
    );
}

#[test]
fn write_through_symlink_outside_root_same_layer() {
    hostile(
        "write through a symlink to outside (same layer)",
        vec![
            Entry::symlink("evil", "../.."),
            Entry::file("evil/x", "pwned"),
        ],
        &["evil"],
    );
}

#[test]
fn hard_link_to_missing_target() {
    hostile(
        "hard link to a missing target",
        vec![Entry::hardlink("hl", "no/such/target")],
        &["no/such/target"],
    );
}

#[test]
fn name_of_256_bytes() {
    let name = format!("data/{}", "n".repeat(256));
    hostile(
        "256-byte name",
        vec![Entry::file(&name, "x")],
        &[&"n".repeat(40)],
    );
}

/// Data alone larger than `--max-size`: caught while placing file data.
#[test]
fn image_larger_than_max_size() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![Entry::file("x", noise(2 << 20, 3))]);
    flatten_fails(
        "--max-size 1MiB",
        &layout,
        &["--max-size", "1MiB"],
        &["1048576", "1MiB", "1 MiB", "1.0 MiB"],
    );
}

/// Data fits but data + metadata + free space does not: caught when the
/// filesystem is laid out.
#[test]
fn image_larger_than_max_size_with_free_space() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![Entry::file("x", noise(2 << 20, 3))]);
    flatten_fails(
        "--max-size 64MiB --free-space 256MiB",
        &layout,
        &["--max-size", "64MiB", "--free-space", "256MiB"],
        &["67108864", "64MiB", "64 MiB", "64.0 MiB"],
    );
}

#[test]
fn symlink_loop_in_path() {
    hostile(
        "symlink loop",
        vec![
            Entry::symlink("loop-a", "loop-b"),
            Entry::symlink("loop-b", "loop-a"),
            Entry::file("loop-a/x", "x"),
        ],
        &["loop-a"],
    );
}

#[test]
fn hard_link_to_directory() {
    hostile(
        "hard link to a directory",
        vec![Entry::hardlink("dirlink", "etc")],
        &["dirlink"],
    );
}

#[test]
fn hard_link_target_through_symlink_outside_root() {
    hostile(
        "hard link whose target resolves outside the root",
        vec![
            Entry::symlink("evil", "../../.."),
            Entry::hardlink("stolen", "evil/etc/passwd"),
        ],
        &["evil/etc/passwd", "stolen"],
    );
}

/// Mistakes on the command line: a clean error naming the culprit.
#[test]
fn command_line_errors() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![Entry::file("x", "x")]);
    let out = t.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    let missing = t.path().join("no-such-image");
    let cases: [(&str, Vec<std::ffi::OsString>, &str); 4] = [
        (
            "missing source",
            vec![
                missing.clone().into(),
                "-o".into(),
                out.join("a.img").into(),
            ],
            "no-such-image",
        ),
        (
            "unknown ref",
            vec![
                format!("{}:nope", layout.display()).into(),
                "-o".into(),
                out.join("a.img").into(),
            ],
            "nope",
        ),
        (
            "output directory missing",
            vec![
                layout.clone().into(),
                "-o".into(),
                t.path().join("no-such-dir/a.img").into(),
            ],
            "no-such-dir",
        ),
        (
            "chunk size not a power of two",
            vec![
                layout.clone().into(),
                "-o".into(),
                out.join("a.img").into(),
                "--chunk-size".into(),
                "96KiB".into(),
            ],
            "chunk",
        ),
    ];
    for (case, args, name) in cases {
        let o = output(kindling().arg("flatten").args(&args));
        assert_clean_failure(case, &o, &[name], &out);
    }
}

/// `-o` naming something a rename would wrongly replace - a directory, a
/// FIFO (as a device node would be), a symlink - is refused before any
/// work, and it is left as it was, with no temporary file beside it.
#[test]
fn outputs_that_are_not_regular_files_are_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![]);
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("a-dir");
    fs::create_dir(&dir).expect("mkdir");
    let fifo = out.path().join("a-fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let link = out.path().join("a-link");
    std::os::unix::fs::symlink("a-dir", &link).expect("symlink");
    for (target, what) in [
        (&dir, "a directory"),
        (&fifo, "not a regular file"),
        (&link, "a symbolic link"),
    ] {
        let o = output(kindling().arg("flatten").arg(&layout).arg("-o").arg(target));
        assert_status(&o, 1, what);
        let mut left: Vec<_> = fs::read_dir(out.path())
            .expect("listing")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        left.sort();
        assert_eq!(left, ["a-dir", "a-fifo", "a-link"], "{what}");
    }
    assert!(fs::symlink_metadata(&link).expect("link").is_symlink());
    assert!(fs::read_dir(&dir).expect("dir").next().is_none());
}

/// A reader that stops early (`kindling flatten ... | head -c1`) ends the
/// command by SIGPIPE, the way Unix tools end, not by a panic; the image
/// is in place, since the summary is printed after the rename.
#[test]
fn a_closed_stdout_is_no_panic() {
    use std::os::unix::process::ExitStatusExt;
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    two_layers(&layout, vec![]);
    let img = t.path().join("out.img");
    let mut child = kindling()
        .arg("flatten")
        .arg(&layout)
        .arg("-o")
        .arg(&img)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    fsck_clean(&img);
}

/// A layer of many empty directories (a few hundred bytes of gzip for
/// thousands of blocks of ext4) costs about the image's metadata in
/// memory, once: the flattener holds the metadata region, not a second
/// copy of every directory's blocks (188 MiB peak for 20k directories
/// when it did, 109 MiB now).
#[test]
fn many_directories_cost_their_blocks_once_in_memory() {
    let t = tempfile::tempdir().expect("tempdir");
    let layout = t.path().join("layout");
    let dirs = 20_000u64;
    let mut top = vec![Entry::dir("many")];
    top.extend((0..dirs).map(|i| Entry::dir(format!("many/d{i:06}"))));
    two_layers(&layout, top);
    let img = t.path().join("out.img");
    // Reaped by wait4 below, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = kindling()
        .arg("flatten")
        .arg(&layout)
        .arg("-o")
        .arg(&img)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 on our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    fsck_clean(&img);
    let peak = usage.ru_maxrss as u64 * 1024;
    let blocks = dirs * 4096;
    assert!(
        peak < blocks + (48 << 20),
        "peak RSS {} MiB for {} MiB of directory blocks",
        peak >> 20,
        blocks >> 20
    );
}
