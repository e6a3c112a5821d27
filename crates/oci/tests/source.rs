//! Image::open and open_layer against OCI layouts, oci-archives and
//! docker-archives built in a temp dir, and every error they report.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use kindling_oci::{Compression, Digest, EntryKind, Image, OciError, TarError, TarReader};
use serde_json::{json, Value};
use tempfile::TempDir;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

// ---- building images ----

/// An uncompressed layer tar holding `files` (path, contents).
fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("append");
    }
    b.into_inner().expect("finish tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

fn compress(media_type: &str, tar: &[u8]) -> Vec<u8> {
    match media_type {
        TAR => tar.to_vec(),
        TAR_GZIP | DOCKER_GZIP => gzip(tar),
        TAR_ZSTD => zstd(tar),
        other => panic!("no compressor for {other}"),
    }
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).expect("mkdir blobs");
    fs::write(dir.join(d.hex()), bytes).expect("write blob");
    d
}

fn descriptor(media_type: &str, digest: Digest, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// A layer as stored: media type, blob and the diff_id the config lists.
#[derive(Clone)]
struct Layer {
    media_type: String,
    blob: Vec<u8>,
    diff_id: Digest,
    tar: Vec<u8>,
}

fn layer(media_type: &str, files: &[(&str, &[u8])]) -> Layer {
    let tar = layer_tar(files);
    Layer {
        media_type: media_type.to_owned(),
        blob: compress(media_type, &tar),
        diff_id: Digest::of(&tar),
        tar,
    }
}

fn config_json(diff_ids: &[Digest]) -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/app", "--serve"],
            "Cmd": null,
            "Env": ["PATH=/usr/bin:/bin", "MODE=test"],
            "WorkingDir": "/srv",
            "User": "1000:1000"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "history": [{"created_by": "test"}]
    })
}

/// Writes config, layers and manifest blobs; returns the manifest descriptor.
fn write_image(layout: &Path, layers: &[Layer], config: &Value) -> Value {
    let config_bytes = serde_json::to_vec(config).expect("json");
    let config_digest = write_blob(layout, &config_bytes);
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| descriptor(&l.media_type, write_blob(layout, &l.blob), l.blob.len()))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config_digest, config_bytes.len()),
        "layers": layer_descs,
    });
    let bytes = serde_json::to_vec(&manifest).expect("json");
    descriptor(OCI_MANIFEST, write_blob(layout, &bytes), bytes.len())
}

fn simple_image(layout: &Path, layers: &[Layer]) -> Value {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    write_image(layout, layers, &config_json(&diff_ids))
}

fn with_ref(mut desc: Value, name: &str) -> Value {
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    desc
}

fn write_index(layout: &Path, manifests: Vec<Value>) {
    fs::create_dir_all(layout).expect("mkdir");
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index.json");
}

/// Tars `dir` (entries named "./...", symlinks kept) into `out`.
fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).expect("create archive"));
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("append dir");
    b.finish().expect("finish");
}

fn three_layers() -> Vec<Layer> {
    vec![
        layer(
            TAR_GZIP,
            &[("etc/os-release", b"ID=test\n"), ("bin/app", b"\x7fELF...")],
        ),
        layer(TAR_ZSTD, &[("srv/data.txt", &[7u8; 100_000])]),
        // Over 64 KiB uncompressed: archives seek over it when scanning.
        layer(
            TAR,
            &[
                ("srv/top.txt", b"top layer"),
                ("srv/noise.bin", &noise(200_000)),
            ],
        ),
    ]
}

/// Incompressible bytes (xorshift).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Reads a layer through TarReader: (path, contents) of every entry, then
/// drains so the digests are checked.
fn read_layer(image: &Image, index: usize) -> Result<Vec<(String, Vec<u8>)>, TarError> {
    let stream = image.open_layer(index).map_err(|e| TarError::Io {
        offset: 0,
        source: io::Error::other(e),
    })?;
    let mut tar = TarReader::new(stream);
    let mut out = Vec::new();
    while let Some(entry) = tar.next_entry()? {
        let mut data = Vec::new();
        if entry.kind == EntryKind::Regular {
            let mut buf = [0u8; 8192];
            loop {
                let n = tar.read_data(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
        }
        out.push((String::from_utf8_lossy(&entry.path).into_owned(), data));
    }
    tar.drain()?;
    Ok(out)
}

fn read_stream(image: &Image, index: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    image
        .open_layer(index)
        .map_err(io::Error::other)?
        .read_to_end(&mut out)?;
    Ok(out)
}

fn check_three_layers(image: &Image, layers: &[Layer]) {
    assert_eq!(image.layers.len(), 3);
    let c = &image.config;
    assert_eq!(c.entrypoint, ["/bin/app", "--serve"]);
    assert!(c.cmd.is_empty());
    assert_eq!(c.env, ["PATH=/usr/bin:/bin", "MODE=test"]);
    assert_eq!(
        (c.working_dir.as_str(), c.user.as_str()),
        ("/srv", "1000:1000")
    );
    assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));
    assert_eq!(
        c.diff_ids,
        layers.iter().map(|l| l.diff_id).collect::<Vec<_>>()
    );
    let compressions: Vec<Compression> = image.layers.iter().map(|l| l.compression).collect();
    assert_eq!(
        compressions,
        [Compression::Gzip, Compression::Zstd, Compression::None]
    );
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(
            read_stream(image, i).expect("layer stream"),
            l.tar,
            "layer {i}"
        );
    }
    let entries = read_layer(image, 1).expect("layer 1");
    assert_eq!(
        entries,
        vec![("srv/data.txt".to_owned(), vec![7u8; 100_000])]
    );
}

fn expect_oci(err: &io::Error) -> &OciError {
    OciError::from_io(err).unwrap_or_else(|| panic!("no OciError in {err:?}"))
}

// ---- happy paths ----

#[test]
fn oci_layout_directory() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let layers = three_layers();
    let desc = simple_image(&layout, &layers);
    write_index(&layout, vec![desc.clone()]);
    let image = Image::open(path_str(&layout)).expect("opens");
    assert_eq!(
        image.manifest_digest.map(|d| d.to_string()),
        desc["digest"].as_str().map(str::to_owned)
    );
    check_three_layers(&image, &layers);
    assert_eq!(image.layers[0].media_type, TAR_GZIP);
    assert_eq!(image.layers[0].size, Some(layers[0].blob.len() as u64));
    assert_eq!(image.location(), layout);
    assert!(matches!(
        image.open_layer(3),
        Err(OciError::NoSuchLayer { index: 3, count: 3 })
    ));
}

#[test]
fn refs_select_images() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let a = simple_image(&layout, &[layer(TAR, &[("a", b"a")])]);
    let b = simple_image(&layout, &[layer(TAR, &[("b", b"b")])]);
    write_index(&layout, vec![with_ref(a, "v1"), with_ref(b.clone(), "v2")]);
    let image = Image::open(&format!("{}:v2", path_str(&layout))).expect("opens v2");
    assert_eq!(
        image.manifest_digest.map(|d| d.to_string()),
        b["digest"].as_str().map(str::to_owned)
    );
    assert_eq!(
        read_layer(&image, 0).expect("layer"),
        vec![("b".to_owned(), b"b".to_vec())]
    );

    match Image::open(&format!("{}:v3", path_str(&layout))) {
        Err(OciError::UnknownRef {
            reference,
            available,
            ..
        }) => {
            assert_eq!(reference, "v3");
            assert_eq!(available, ["v1", "v2"]);
        }
        other => panic!("expected UnknownRef, got {other:?}"),
    }
    match Image::open(path_str(&layout)) {
        Err(e @ OciError::AmbiguousImage { count: 2, .. }) => {
            assert!(e.to_string().contains("v1, v2"), "{e}");
        }
        other => panic!("expected AmbiguousImage, got {other:?}"),
    }
}

#[test]
fn nested_index_picks_linux_amd64() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let arm = simple_image(&layout, &[layer(TAR, &[("arch", b"arm64")])]);
    let amd = simple_image(&layout, &[layer(TAR_GZIP, &[("arch", b"amd64")])]);
    let mut arm = arm;
    arm["platform"] = json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
    let mut amd_desc = amd.clone();
    amd_desc["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let nested =
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm.clone(), amd_desc]});
    let nested_bytes = serde_json::to_vec(&nested).expect("json");
    let nested_digest = write_blob(&layout, &nested_bytes);
    write_index(
        &layout,
        vec![with_ref(
            descriptor(OCI_INDEX, nested_digest, nested_bytes.len()),
            "multi",
        )],
    );
    let image = Image::open(&format!("{}:multi", path_str(&layout))).expect("opens");
    assert_eq!(
        image.manifest_digest.map(|d| d.to_string()),
        amd["digest"].as_str().map(str::to_owned)
    );
    assert_eq!(
        read_layer(&image, 0).expect("layer"),
        vec![("arch".to_owned(), b"amd64".to_vec())]
    );

    // Without an amd64 entry: an error listing the platforms.
    let only_arm = json!({"schemaVersion": 2, "manifests": [arm.clone(), arm]});
    let bytes = serde_json::to_vec(&only_arm).expect("json");
    let digest = write_blob(&layout, &bytes);
    // No mediaType on the descriptor: the blob's shape says "index".
    write_index(
        &layout,
        vec![json!({"digest": digest.to_string(), "size": bytes.len()})],
    );
    match Image::open(path_str(&layout)) {
        Err(OciError::NoPlatform { available, .. }) => {
            assert_eq!(available, ["linux/arm64/v8", "linux/arm64/v8"])
        }
        other => panic!("expected NoPlatform, got {other:?}"),
    }
}

#[test]
fn oci_archive() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let layers = three_layers();
    let desc = simple_image(&layout, &layers);
    write_index(&layout, vec![with_ref(desc, "latest")]);
    let archive = tmp.path().join("image:with-colon.tar");
    tar_dir(&layout, &archive);
    for source in [
        path_str(&archive).to_owned(),
        format!("{}:latest", path_str(&archive)),
    ] {
        let image = Image::open(&source).expect("opens archive");
        check_three_layers(&image, &layers);
    }
    assert!(matches!(
        Image::open(&format!("{}:nope", path_str(&archive))),
        Err(OciError::UnknownRef { .. })
    ));
}

#[test]
fn compressed_archive_is_refused() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let desc = simple_image(&layout, &[layer(TAR, &[("a", b"a")])]);
    write_index(&layout, vec![desc]);
    let archive = tmp.path().join("image.tar");
    tar_dir(&layout, &archive);
    let gz = tmp.path().join("image.tar.gz");
    fs::write(&gz, gzip(&fs::read(&archive).expect("read"))).expect("write");
    match Image::open(path_str(&gz)) {
        Err(e @ OciError::CompressedArchive { .. }) => {
            assert!(e.to_string().contains("decompress it first"))
        }
        other => panic!("expected CompressedArchive, got {other:?}"),
    }
}

/// A `docker save` style directory: manifest.json, `<hex>.json` config,
/// `<id>/layer.tar`, the second image sharing a layer through a symlink.
fn docker_dir(root: &Path, layers: &[Layer]) -> Vec<Layer> {
    fs::create_dir_all(root).expect("mkdir");
    let config = serde_json::to_vec(&config_json(
        &layers.iter().map(|l| l.diff_id).collect::<Vec<_>>(),
    ))
    .expect("json");
    let config_name = format!("{}.json", Digest::of(&config).hex());
    fs::write(root.join(&config_name), &config).expect("config");
    let mut paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let id = format!("{i:064x}");
        fs::create_dir_all(root.join(&id)).expect("mkdir layer");
        fs::write(root.join(&id).join("layer.tar"), &l.blob).expect("layer");
        paths.push(format!("{id}/layer.tar"));
    }
    // A second image: one layer, a symlink to the first image's bottom layer.
    let other = vec![layers[0].clone()];
    let other_config = serde_json::to_vec(&config_json(&[other[0].diff_id])).expect("json");
    let other_config_name = format!("{}.json", Digest::of(&other_config).hex());
    fs::write(root.join(&other_config_name), &other_config).expect("config");
    let link_dir = root.join("f".repeat(64));
    fs::create_dir_all(&link_dir).expect("mkdir");
    std::os::unix::fs::symlink(format!("../{}", paths[0]), link_dir.join("layer.tar"))
        .expect("symlink");
    let manifest = json!([
        {"Config": config_name, "RepoTags": ["example.com/app:v1", "app:latest"], "Layers": paths},
        {"Config": other_config_name, "RepoTags": ["base:1"], "Layers": [format!("{}/layer.tar", "f".repeat(64))]},
    ]);
    fs::write(
        root.join("manifest.json"),
        serde_json::to_vec(&manifest).expect("json"),
    )
    .expect("manifest");
    other
}

#[test]
fn docker_archive() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("save");
    // docker save writes uncompressed layers, but docker load accepts gzip.
    let mut layers = vec![
        layer(TAR, &[("etc/os-release", b"ID=test\n")]),
        layer(DOCKER_GZIP, &[("srv/data.txt", &[7u8; 100_000])]),
    ];
    layers[1].media_type = TAR_GZIP.to_owned(); // what Image reports for it
    let other = docker_dir(&root, &layers);
    let archive = tmp.path().join("save.tar");
    tar_dir(&root, &archive);

    for source in [
        format!("{}:app:latest", path_str(&archive)),
        format!("{}:example.com/app:v1", path_str(&archive)),
        format!("{}:docker.io/library/app", path_str(&archive)),
    ] {
        let image = Image::open(&source).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(image.manifest_digest, None);
        assert_eq!(image.config.entrypoint, ["/bin/app", "--serve"]);
        assert_eq!(image.layers.len(), 2);
        for (info, l) in image.layers.iter().zip(&layers) {
            assert_eq!(info.diff_id, l.diff_id);
            assert_eq!(
                info.digest, l.diff_id,
                "docker-archive layers are named by diff_id"
            );
            assert_eq!(info.media_type, l.media_type);
        }
        assert_eq!(read_stream(&image, 0).expect("layer 0"), layers[0].tar);
        assert_eq!(read_stream(&image, 1).expect("layer 1"), layers[1].tar);
    }
    // The symlinked layer of the second image.
    let base = Image::open(&format!("{}:base:1", path_str(&archive))).expect("base");
    assert_eq!(read_stream(&base, 0).expect("shared layer"), other[0].tar);
    // The directory form works too.
    let from_dir = Image::open(&format!("{}:base:1", path_str(&root))).expect("dir");
    assert_eq!(
        read_stream(&from_dir, 0).expect("shared layer"),
        other[0].tar
    );

    match Image::open(path_str(&archive)) {
        Err(OciError::AmbiguousImage {
            count: 2,
            available,
            ..
        }) => {
            assert_eq!(available, ["example.com/app:v1", "app:latest", "base:1"]);
        }
        other => panic!("expected AmbiguousImage, got {other:?}"),
    }
    assert!(matches!(
        Image::open(&format!("{}:app:v2", path_str(&archive))),
        Err(OciError::UnknownRef { .. })
    ));
}

#[test]
fn docker_archive_digest_checks() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("save");
    let layers = vec![layer(TAR, &[("a", b"a")])];
    docker_dir(&root, &layers);
    // A diff_id that does not match the layer.tar.
    fs::write(
        root.join(format!("{:064x}/layer.tar", 0)),
        layer_tar(&[("a", b"b")]),
    )
    .expect("rewrite");
    let image = Image::open(&format!("{}:app:latest", path_str(&root))).expect("opens");
    let err = read_stream(&image, 0).expect_err("diff_id mismatch");
    match expect_oci(&err) {
        OciError::DigestMismatch { what, expected, .. } => {
            assert_eq!(*expected, layers[0].diff_id);
            assert!(what.contains(&layers[0].diff_id.to_string()), "{what}");
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn docker_archive_rejects_unsafe_paths() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("save");
    fs::create_dir_all(&root).expect("mkdir");
    let config = serde_json::to_vec(&config_json(&[Digest::of(b"x")])).expect("json");
    fs::write(root.join("c.json"), &config).expect("config");
    for bad in ["../outside/layer.tar", "/etc/passwd", "a/../../b"] {
        let manifest = json!([{"Config": "c.json", "RepoTags": [], "Layers": [bad]}]);
        fs::write(
            root.join("manifest.json"),
            serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("manifest");
        match Image::open(path_str(&root)) {
            Err(OciError::UnsafePath { path, .. }) => assert_eq!(path, bad),
            other => panic!("expected UnsafePath for {bad}, got {other:?}"),
        }
    }
}

#[test]
fn combined_docker_save_prefers_the_oci_layout() {
    let tmp = TempDir::new().expect("tempdir");
    let root = tmp.path().join("save");
    let layers = vec![layer(TAR, &[("a", b"a")])];
    let desc = simple_image(&root, &layers);
    let mut desc = desc;
    desc["annotations"] = json!({
        "io.containerd.image.name": "docker.io/library/app:latest",
        "org.opencontainers.image.ref.name": "latest"
    });
    write_index(&root, vec![desc.clone()]);
    // manifest.json pointing at the same blobs, as docker 25+ writes it.
    let manifest: Value = serde_json::from_slice(
        &fs::read(
            root.join("blobs/sha256")
                .join(&desc["digest"].as_str().expect("digest")[7..]),
        )
        .expect("manifest blob"),
    )
    .expect("json");
    let docker = json!([{
        "Config": format!("blobs/sha256/{}", &manifest["config"]["digest"].as_str().expect("digest")[7..]),
        "RepoTags": ["app:latest"],
        "Layers": [format!("blobs/sha256/{}", &manifest["layers"][0]["digest"].as_str().expect("digest")[7..])],
    }]);
    fs::write(
        root.join("manifest.json"),
        serde_json::to_vec(&docker).expect("json"),
    )
    .expect("manifest.json");
    let archive = tmp.path().join("save.tar");
    tar_dir(&root, &archive);
    for source in [
        path_str(&archive).to_owned(),
        format!("{}:app:latest", path_str(&archive)),
        format!("{}:latest", path_str(&archive)),
    ] {
        let image = Image::open(&source).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert!(image.manifest_digest.is_some(), "read through index.json");
        assert_eq!(read_stream(&image, 0).expect("layer"), layers[0].tar);
    }
    // Without the OCI layout, the docker manifest's digest-named blobs are verified too.
    fs::remove_file(root.join("index.json")).expect("rm");
    fs::remove_file(root.join("oci-layout")).expect("rm");
    let image = Image::open(path_str(&root)).expect("docker form");
    assert_eq!(image.manifest_digest, None);
    assert_eq!(image.layers[0].digest, layers[0].diff_id);
    assert_eq!(read_stream(&image, 0).expect("layer"), layers[0].tar);
}

// ---- integrity and format errors ----

/// A layout with the three standard layers; returns (tempdir, layout, layers).
fn standard_layout() -> (TempDir, PathBuf, Vec<Layer>) {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let layers = three_layers();
    let desc = simple_image(&layout, &layers);
    write_index(&layout, vec![desc]);
    (tmp, layout, layers)
}

fn blob_path(layout: &Path, bytes: &[u8]) -> PathBuf {
    layout.join(Digest::of(bytes).blob_path())
}

#[test]
fn layer_blob_digest_mismatch_is_reported_at_eof() {
    let (_tmp, layout, layers) = standard_layout();
    // Flip a byte of the uncompressed top layer's file data: same size, the
    // tar still parses, only the digest can tell.
    let path = blob_path(&layout, &layers[2].blob);
    let mut bytes = fs::read(&path).expect("read");
    let at = bytes
        .windows(9)
        .position(|w| w == b"top layer")
        .expect("data");
    bytes[at] = b'T';
    fs::write(&path, &bytes).expect("write");
    let image = Image::open(path_str(&layout)).expect("opens: blobs are checked when read");
    let err = read_layer(&image, 2).expect_err("mismatch at EOF");
    match err.oci_error() {
        Some(OciError::DigestMismatch {
            what,
            expected,
            actual,
        }) => {
            let digest = Digest::of(&layers[2].blob);
            assert_eq!(*expected, digest);
            assert_eq!(*actual, Digest::of(&bytes));
            assert_eq!(what, &format!("layer {digest} (blob)"));
        }
        other => panic!("expected DigestMismatch, got {err:?} / {other:?}"),
    }
    // The plain stream reports it too, after returning all the bytes.
    let mut stream = image.open_layer(2).expect("open");
    let mut out = Vec::new();
    let err = stream.read_to_end(&mut out).expect_err("mismatch");
    assert_eq!(out, bytes);
    assert!(expect_oci(&err).is_integrity());
}

#[test]
fn compressed_blob_digest_mismatch() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let tar = big_tar();
    let promised = gzip(&tar);
    // A different, valid gzip of the same tar, stored under the promised
    // digest with a matching size: only the blob digest can tell.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).expect("gzip");
    let stored = e.finish().expect("gzip");
    assert_ne!(stored, promised);
    let digest = write_blob(&layout, &promised);
    fs::write(layout.join(digest.blob_path()), &stored).expect("overwrite");
    let config = serde_json::to_vec(&config_json(&[Digest::of(&tar)])).expect("json");
    let config_digest = write_blob(&layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, config_digest, config.len()),
        "layers": [descriptor(TAR_GZIP, digest, stored.len())],
    }))
    .expect("json");
    let manifest_digest = write_blob(&layout, &manifest);
    write_index(
        &layout,
        vec![descriptor(OCI_MANIFEST, manifest_digest, manifest.len())],
    );
    let image = Image::open(path_str(&layout)).expect("opens");
    let err = read_layer(&image, 0).expect_err("blob digest mismatch");
    match err.oci_error() {
        Some(OciError::DigestMismatch {
            what,
            expected,
            actual,
        }) => {
            assert_eq!(what, &format!("layer {digest} (blob)"));
            assert_eq!(*expected, digest);
            assert_eq!(*actual, Digest::of(&stored));
        }
        other => panic!("expected DigestMismatch, got {err:?} / {other:?}"),
    }
}

#[test]
fn wrong_diff_id() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let l = layer(TAR_GZIP, &[("a", b"a")]);
    let wrong = Digest::of(b"not the tar");
    let desc = write_image(&layout, std::slice::from_ref(&l), &config_json(&[wrong]));
    write_index(&layout, vec![desc]);
    let image = Image::open(path_str(&layout)).expect("opens");
    let err = read_layer(&image, 0).expect_err("diff_id mismatch");
    match err.oci_error() {
        Some(OciError::DigestMismatch {
            what,
            expected,
            actual,
        }) => {
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, l.diff_id);
            assert_eq!(what, &format!("layer {wrong} (diff_id)"));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn media_type_gzip_but_content_zstd() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let mut l = layer(TAR_ZSTD, &[("a", b"a")]);
    l.media_type = TAR_GZIP.to_owned();
    let desc = simple_image(&layout, std::slice::from_ref(&l));
    write_index(&layout, vec![desc]);
    let image = Image::open(path_str(&layout)).expect("opens");
    match image.open_layer(0) {
        Err(
            e @ OciError::CompressionMismatch {
                found: Compression::Zstd,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&Digest::of(&l.blob).to_string()) && msg.contains("zstd"),
                "{msg}"
            );
        }
        other => panic!("expected CompressionMismatch, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn uncompressed_media_type_but_gzip_content() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let mut l = layer(TAR_GZIP, &[("a", b"a")]);
    l.media_type = TAR.to_owned();
    write_index(&layout, vec![simple_image(&layout, &[l])]);
    let image = Image::open(path_str(&layout)).expect("opens");
    assert!(matches!(
        image.open_layer(0),
        Err(OciError::CompressionMismatch {
            found: Compression::Gzip,
            ..
        })
    ));
}

/// An image whose only layer blob is `blob` (digest and size match it).
fn image_with_blob(media_type: &str, blob: Vec<u8>, diff_id: Digest) -> (TempDir, Image) {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let l = Layer {
        media_type: media_type.to_owned(),
        blob,
        diff_id,
        tar: Vec::new(),
    };
    write_index(&layout, vec![simple_image(&layout, &[l])]);
    let image = Image::open(path_str(&layout)).expect("opens");
    (tmp, image)
}

fn big_tar() -> Vec<u8> {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    layer_tar(&[("big", &data)])
}

#[test]
fn truncated_gzip_is_an_error() {
    let tar = big_tar();
    let gz = gzip(&tar);
    let truncated = gz[..gz.len() / 2].to_vec();
    let (_tmp, image) = image_with_blob(TAR_GZIP, truncated, Digest::of(&tar));
    // The decoder itself notices (before the diff_id check would).
    let err = read_stream(&image, 0).expect_err("truncated gzip must fail");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err:?}");
    // Truncated inside the trailer (CRC/size) as well.
    let (_tmp, image) = image_with_blob(TAR_GZIP, gz[..gz.len() - 3].to_vec(), Digest::of(&tar));
    let err = read_stream(&image, 0).expect_err("truncated trailer must fail");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err:?}");
}

#[test]
fn corrupt_zstd_is_an_error() {
    let tar = big_tar();
    let mut z = zstd(&tar);
    let mid = z.len() / 2;
    for b in &mut z[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let (_tmp, image) = image_with_blob(TAR_ZSTD, z, Digest::of(&tar));
    assert!(read_stream(&image, 0).is_err(), "corrupt zstd must fail");
    let z = zstd(&tar);
    let (_tmp, image) = image_with_blob(TAR_ZSTD, z[..z.len() - 5].to_vec(), Digest::of(&tar));
    let err = read_stream(&image, 0).expect_err("truncated zstd must fail");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err:?}");
}

#[test]
fn multi_member_gzip() {
    let tar = big_tar();
    let (a, b) = tar.split_at(100_001);
    let blob = [gzip(a), gzip(b)].concat();
    let (_tmp, image) = image_with_blob(TAR_GZIP, blob, Digest::of(&tar));
    assert_eq!(read_stream(&image, 0).expect("two members"), tar);
}

#[test]
fn malformed_manifest() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let bytes = br#"{"schemaVersion": 2, "config": {"digest": "sha256:nothex"}}"#;
    let digest = write_blob(&layout, bytes);
    write_index(&layout, vec![descriptor(OCI_MANIFEST, digest, bytes.len())]);
    match Image::open(path_str(&layout)) {
        Err(e @ OciError::Malformed { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("malformed manifest {digest}: ")),
                "{msg}"
            );
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    let bytes = b"{not json";
    let digest = write_blob(&layout, bytes);
    write_index(&layout, vec![descriptor(OCI_MANIFEST, digest, bytes.len())]);
    assert!(matches!(
        Image::open(path_str(&layout)),
        Err(OciError::Malformed { .. })
    ));
    fs::write(layout.join("index.json"), b"[]").expect("write");
    assert!(
        matches!(Image::open(path_str(&layout)), Err(OciError::Malformed { what, .. }) if what == "index.json")
    );
}

#[test]
fn manifest_blob_digest_is_verified() {
    let (_tmp, layout, _) = standard_layout();
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("read")).expect("json");
    let digest =
        Digest::parse(index["manifests"][0]["digest"].as_str().expect("digest")).expect("digest");
    let path = layout.join(digest.blob_path());
    let mut bytes = fs::read(&path).expect("read");
    let n = bytes.len();
    bytes[n - 1] = b' '; // was '}', now invalid JSON of the same size
    fs::write(&path, &bytes).expect("write");
    match Image::open(path_str(&layout)) {
        Err(OciError::DigestMismatch { what, expected, .. }) => {
            assert_eq!(expected, digest);
            assert_eq!(what, format!("manifest {digest}"));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[test]
fn missing_blobs() {
    let (_tmp, layout, layers) = standard_layout();
    let digest = Digest::of(&layers[1].blob);
    fs::remove_file(layout.join(digest.blob_path())).expect("rm");
    match Image::open(path_str(&layout)) {
        Err(e @ OciError::MissingBlob { .. }) => {
            assert_eq!(e.to_string(), format!("missing blob layer {digest}"))
        }
        other => panic!("expected MissingBlob, got {other:?}"),
    }
    // In an archive as well.
    let (tmp, layout, layers) = standard_layout();
    fs::remove_file(blob_path(&layout, &layers[0].blob)).expect("rm");
    let archive = tmp.path().join("a.tar");
    tar_dir(&layout, &archive);
    assert!(matches!(
        Image::open(path_str(&archive)),
        Err(OciError::MissingBlob { .. })
    ));
}

#[test]
fn layer_count_must_match_diff_ids() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let l = layer(TAR, &[("a", b"a")]);
    let desc = write_image(
        &layout,
        std::slice::from_ref(&l),
        &config_json(&[l.diff_id, l.diff_id]),
    );
    write_index(&layout, vec![desc]);
    assert!(matches!(
        Image::open(path_str(&layout)),
        Err(OciError::LayerCountMismatch {
            layers: 1,
            diff_ids: 2,
            ..
        })
    ));
}

#[test]
fn unsupported_layer_media_type() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let mut l = layer(TAR, &[("a", b"a")]);
    l.media_type = "application/vnd.oci.image.layer.v1.tar+bzip2".to_owned();
    write_index(&layout, vec![simple_image(&layout, &[l])]);
    match Image::open(path_str(&layout)) {
        Err(OciError::UnsupportedMediaType { media_type, what }) => {
            assert_eq!(media_type, "application/vnd.oci.image.layer.v1.tar+bzip2");
            assert!(what.starts_with("layer sha256:"));
        }
        other => panic!("expected UnsupportedMediaType, got {other:?}"),
    }
}

#[test]
fn layer_size_mismatch_is_caught_on_open() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let l = layer(TAR_GZIP, &[("a", b"a")]);
    let desc = simple_image(&layout, std::slice::from_ref(&l));
    // Rewrite the manifest with a wrong layer size.
    let manifest_path = layout.join(
        Digest::parse(desc["digest"].as_str().expect("digest"))
            .expect("digest")
            .blob_path(),
    );
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(&manifest_path).expect("read")).expect("json");
    manifest["layers"][0]["size"] = json!(l.blob.len() + 1);
    let bytes = serde_json::to_vec(&manifest).expect("json");
    let digest = write_blob(&layout, &bytes);
    write_index(&layout, vec![descriptor(OCI_MANIFEST, digest, bytes.len())]);
    let image = Image::open(path_str(&layout)).expect("opens");
    assert!(matches!(
        image.open_layer(0),
        Err(OciError::SizeMismatch { .. })
    ));
}

#[test]
fn oversized_json_is_refused() {
    let tmp = TempDir::new().expect("tempdir");
    let layout = tmp.path().join("layout");
    let digest = write_blob(&layout, b"{}");
    write_index(&layout, vec![descriptor(OCI_MANIFEST, digest, 17 << 20)]);
    assert!(matches!(
        Image::open(path_str(&layout)),
        Err(OciError::TooLarge { size, .. }) if size == 17 << 20
    ));
}

#[test]
fn not_an_image() {
    let tmp = TempDir::new().expect("tempdir");
    assert!(matches!(
        Image::open(path_str(tmp.path())),
        Err(OciError::NotAnImage { .. })
    ));
    let file = tmp.path().join("x.tar");
    fs::write(&file, layer_tar(&[("hello", b"world")])).expect("write");
    assert!(matches!(
        Image::open(path_str(&file)),
        Err(OciError::NotAnImage { .. })
    ));
    fs::write(
        &file,
        b"garbage that is not a tar header, long enough to fill nothing",
    )
    .expect("write");
    assert!(matches!(
        Image::open(path_str(&file)),
        Err(OciError::Archive { .. })
    ));
    assert!(matches!(
        Image::open("/nonexistent/image:tag"),
        Err(OciError::NotFound(_))
    ));
}
