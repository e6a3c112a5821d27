//! Test harness: a real Distribution registry (Debian's `docker-registry`,
//! started by [`kindling_testkit::registry::Registry`]) filled with corpus
//! images by `skopeo copy`, plus what the pull tests need beyond it: the
//! images compared through `kindling_oci`, and multi-platform layouts.
//!
//! The registry is the real thing so that the pull code meets real
//! manifests, real content negotiation and real error bodies; what the
//! registry cannot do by itself (token auth without a PKI, injected
//! faults) comes from [`proxy`], which sits in front of it.

// Each test uses a different subset of these helpers.
#![allow(dead_code)]

pub mod proxy;

use std::fs;
use std::path::Path;

use kindling_oci::Image;

pub use kindling_testkit::registry::{prerequisites, Registry};

/// The `latest` image of a corpus layout and its manifest digest.
pub fn open_source(layout: &Path) -> Image {
    Image::open(&format!("{}:latest", layout.display()))
        .unwrap_or_else(|e| panic!("open {}: {e}", layout.display()))
}

/// Checks that a pulled layout holds the same image as `source`, and
/// that every layer reads through to its end (which verifies the blob
/// digests and diff_ids).
pub fn assert_same_image(pulled: &kindling_registry::Pulled, source: &Image) -> Image {
    let image = Image::open(&format!("{}:{}", pulled.layout.display(), pulled.reference))
        .unwrap_or_else(|e| panic!("open the pulled layout: {e}"));
    assert_eq!(image.config_digest, source.config_digest, "config digest");
    assert_eq!(image.config, source.config, "config");
    let diff_ids = |i: &Image| i.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>();
    let blobs = |i: &Image| i.layers.iter().map(|l| l.digest).collect::<Vec<_>>();
    assert_eq!(diff_ids(&image), diff_ids(source), "diff_ids");
    assert_eq!(blobs(&image), blobs(source), "layer blobs");
    assert_eq!(
        image.manifest_digest.map(|d| d.to_string()).as_deref(),
        Some(pulled.manifest_digest.as_str()),
        "manifest digest"
    );
    for index in 0..image.layers.len() {
        let mut layer = image.open_layer(index).expect("open layer");
        std::io::copy(&mut layer, &mut std::io::sink())
            .unwrap_or_else(|e| panic!("layer {index} does not read through: {e}"));
    }
    image
}

/// Names of the files under a directory, recursively, relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Builds an OCI layout whose `latest` is an image index over the
/// `latest` images of `images` (layout, platform `os/arch[/variant]`),
/// sharing their blobs by hard link (or copy).
pub fn multi_platform_layout(dir: &Path, images: &[(&Path, &str)]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir blobs");
    let mut manifests = Vec::new();
    for (layout, platform) in images {
        for entry in fs::read_dir(layout.join("blobs/sha256")).expect("read blobs") {
            let entry = entry.expect("dir entry");
            let target = blobs.join(entry.file_name());
            if !target.exists() && fs::hard_link(entry.path(), &target).is_err() {
                fs::copy(entry.path(), &target).expect("copy blob");
            }
        }
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json"))
                .expect("index.json json");
        let mut descriptor = index["manifests"][0].clone();
        let mut parts = platform.split('/');
        let mut p = serde_json::json!({
            "os": parts.next().expect("os"),
            "architecture": parts.next().expect("arch"),
        });
        if let Some(variant) = parts.next() {
            p["variant"] = variant.into();
        }
        descriptor["platform"] = p;
        if let Some(map) = descriptor.as_object_mut() {
            map.remove("annotations");
        }
        manifests.push(descriptor);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    })
    .to_string();
    let digest = kindling_oci::Digest::of(index.as_bytes());
    fs::write(dir.join(digest.blob_path()), &index).expect("write index blob");
    let top = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest.to_string(),
            "size": index.len(),
            "annotations": { "org.opencontainers.image.ref.name": "latest" },
        }],
    });
    fs::write(dir.join("index.json"), top.to_string()).expect("write index.json");
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
}
