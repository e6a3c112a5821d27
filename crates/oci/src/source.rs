//! Opening an image from a local source: an OCI image layout directory, an
//! oci-archive (a tar of a layout) or a docker-archive (`docker save`).
//!
//! [`Image::open`] reads and checks all the JSON up front (every blob
//! digest-verified, size-bounded, parsed with serde) and checks that every
//! layer blob exists, so a broken image fails before any layer is read.
//! Layer contents are only touched by [`Image::open_layer`], which streams
//! and verifies them (see [`crate::layer`]). Blob paths are built only from
//! validated digests, or from docker-archive paths checked to stay inside
//! the archive.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{shorten, OciError};
use crate::layer::{layer_stream, read_up_to, stream_error, Compression, LayerCheck};
use crate::manifest::{
    Descriptor, DockerImage, Index, Manifest, OciLayout, Probe, RawConfig,
    ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::store::{normalize, BlobStore};

/// Largest JSON document (index, manifest, config) accepted. Real ones are
/// a few KiB (configs with long histories reach hundreds of KiB); the cap
/// stops a hostile image from making us read gigabytes into memory.
pub const MAX_JSON_SIZE: u64 = 16 << 20;

/// The platform picked from multi-platform indexes (the machines Kindling
/// runs on).
pub const PLATFORM_OS: &str = "linux";
/// See [`PLATFORM_OS`].
pub const PLATFORM_ARCHITECTURE: &str = "amd64";

/// Nested image indexes deeper than this are rejected (real ones nest once).
const MAX_INDEX_DEPTH: usize = 4;

/// An opened image: its config and layer list, and where the blobs are.
#[derive(Debug, Clone)]
pub struct Image {
    /// Digest of the image manifest blob; `None` for a docker-archive
    /// without one (its `manifest.json` is not content-addressed).
    pub manifest_digest: Option<Digest>,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The parts of the config that flattening and running need.
    pub config: ImageConfig,
    /// Layers, bottom to top.
    pub layers: Vec<LayerInfo>,
    store: BlobStore,
    blobs: Vec<LayerBlob>,
}

/// Where one layer's blob is and whether its digest is known.
#[derive(Debug, Clone)]
struct LayerBlob {
    name: String,
    verify_blob: bool,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the blob as stored; for layers of old docker-archives,
    /// which record no blob digest, the diff_id.
    pub digest: Digest,
    /// Digest of the uncompressed tar (from the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The media type (for docker-archive layers: the OCI media type that
    /// matches their compression).
    pub media_type: String,
    /// Blob size from the descriptor, if known.
    pub size: Option<u64>,
    /// Compression named by the media type; checked against the blob's
    /// magic bytes by [`Image::open_layer`].
    pub compression: Compression,
}

/// What of an image config is needed to run the image. Missing and `null`
/// fields are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// `config.Entrypoint`
    pub entrypoint: Vec<String>,
    /// `config.Cmd`
    pub cmd: Vec<String>,
    /// `config.Env` (`KEY=VALUE`)
    pub env: Vec<String>,
    /// `config.WorkingDir`
    pub working_dir: String,
    /// `config.User`
    pub user: String,
    /// `architecture`
    pub architecture: String,
    /// `os`
    pub os: String,
    /// `rootfs.diff_ids`, bottom to top.
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    /// Parses an image config JSON document; `what` names it in errors.
    pub fn from_json(json: &[u8], what: &str) -> Result<ImageConfig, OciError> {
        let raw: RawConfig = parse_json(json, what)?;
        let rootfs = raw.rootfs.ok_or_else(|| OciError::Malformed {
            what: what.to_owned(),
            reason: "missing rootfs".to_owned(),
        })?;
        if rootfs.kind != "layers" {
            return Err(OciError::Malformed {
                what: what.to_owned(),
                reason: format!("rootfs type '{}' is not 'layers'", shorten(&rootfs.kind)),
            });
        }
        Ok(ImageConfig {
            entrypoint: raw.config.entrypoint,
            cmd: raw.config.cmd,
            env: raw.config.env,
            working_dir: raw.config.working_dir,
            user: raw.config.user,
            architecture: raw.architecture,
            os: raw.os,
            diff_ids: rootfs.diff_ids,
        })
    }
}

impl Image {
    /// Opens `SOURCE`: an OCI image layout directory `DIR` or `DIR:REF`, an
    /// oci-archive `FILE` or `FILE:REF`, or a docker-archive `FILE` or
    /// `FILE:REPO:TAG`.
    ///
    /// REF matches the `org.opencontainers.image.ref.name` annotation in
    /// `index.json` (or the full image name docker records there); docker
    /// tags match `RepoTags`, with `alpine:latest` and
    /// `docker.io/library/alpine:latest` the same image. Without REF the
    /// source must hold exactly one image. Image indexes are descended to
    /// their linux/amd64 manifest (or their only one). An archive holding
    /// both an OCI layout and `manifest.json` (newer `docker save`) is read
    /// as an OCI layout. A path that exists as a whole is taken as the
    /// path even if it contains ':'. Archives must be plain tar files.
    pub fn open(source: &str) -> Result<Image, OciError> {
        let (path, reference) = split_source(source)?;
        let meta = fs::metadata(&path).map_err(|e| OciError::Io {
            path: path.clone(),
            source: e,
        })?;
        let store = if meta.is_dir() {
            BlobStore::Dir(path.clone())
        } else {
            BlobStore::scan_archive(&path)?
        };
        let has_index = store.contains("index.json");
        let has_docker = store.contains("manifest.json");
        let label = path.display().to_string();
        if has_index && (store.contains("oci-layout") || !has_docker) {
            open_oci(store, reference.as_deref(), &label)
        } else if has_docker {
            open_docker(store, reference.as_deref(), &label)
        } else {
            let kind = if store.is_archive() {
                "archive"
            } else {
                "directory"
            };
            Err(OciError::NotAnImage {
                path,
                reason: format!("the {kind} has no index.json or manifest.json"),
            })
        }
    }

    /// The uncompressed tar stream of layer `index` (0 = bottom).
    ///
    /// The stream is buffered, decompressed (gzip, including multi-member,
    /// or zstd) and verified while read: the blob's digest and size and
    /// the diff_id of the uncompressed bytes. A mismatch is an
    /// `io::Error` wrapping [`OciError::DigestMismatch`] or
    /// [`OciError::SizeMismatch`] (see [`OciError::from_io`]) where EOF
    /// would be, so **read the stream to its end** (for a tar:
    /// [`TarReader::drain`](crate::tar::TarReader::drain) after the last
    /// entry) or the check never happens. Corrupt or truncated compressed
    /// data is an error too, never a short stream.
    ///
    /// Fails at once if the blob is missing, its size differs from the
    /// descriptor, or its magic bytes contradict the media type.
    pub fn open_layer(&self, index: usize) -> Result<Box<dyn Read + Send>, OciError> {
        let no_such = || OciError::NoSuchLayer {
            index,
            count: self.layers.len(),
        };
        let layer = self.layers.get(index).ok_or_else(no_such)?;
        let blob = self.blobs.get(index).ok_or_else(no_such)?;
        let what = format!("layer {}", layer.digest);
        let (reader, size) = self.store.open(&blob.name, &what)?;
        let blob_size = if blob.verify_blob { layer.size } else { None };
        if let Some(expected) = blob_size {
            if expected != size {
                return Err(OciError::SizeMismatch {
                    what: format!("layer {} (blob)", layer.digest),
                    expected,
                    actual: size,
                });
            }
        }
        layer_stream(
            reader,
            &LayerCheck {
                blob: blob.verify_blob.then_some(layer.digest),
                blob_size,
                diff_id: layer.diff_id,
                compression: layer.compression,
                media_type: &layer.media_type,
            },
        )
    }

    /// The layout directory or archive file the image was opened from.
    pub fn location(&self) -> &Path {
        self.store.location()
    }
}

/// Splits `PATH[:REF]`: the whole string if it exists, else the longest
/// prefix before a ':' that exists.
fn split_source(source: &str) -> Result<(PathBuf, Option<String>), OciError> {
    if Path::new(source).exists() {
        return Ok((PathBuf::from(source), None));
    }
    for (colon, _) in source.rmatch_indices(':') {
        let (path, reference) = (&source[..colon], &source[colon + 1..]);
        if !path.is_empty() && Path::new(path).exists() {
            if reference.is_empty() {
                break;
            }
            return Ok((PathBuf::from(path), Some(reference.to_owned())));
        }
    }
    Err(OciError::NotFound(source.to_owned()))
}

/// Parses a JSON document. All of them are objects except docker's
/// `manifest.json`; serde would also accept a struct written as an array,
/// so the outer bracket is checked first.
fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, OciError> {
    let malformed = |reason: String| OciError::Malformed {
        what: what.to_owned(),
        reason,
    };
    let want = if what == "manifest.json" { b'[' } else { b'{' };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(&b) if b == want => {}
        _ => {
            return Err(malformed(format!(
                "expected a JSON {}",
                if want == b'[' { "array" } else { "object" }
            )))
        }
    }
    serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))
}

/// Reads a content-addressed JSON blob, checking size and digest.
fn read_blob_json(
    store: &BlobStore,
    digest: Digest,
    size: Option<u64>,
    what: &str,
) -> Result<Vec<u8>, OciError> {
    if let Some(size) = size.filter(|&s| s > MAX_JSON_SIZE) {
        return Err(OciError::TooLarge {
            what: what.to_owned(),
            size,
            limit: MAX_JSON_SIZE,
        });
    }
    let bytes = store.read_small(&digest.blob_path(), what, MAX_JSON_SIZE)?;
    if let Some(expected) = size.filter(|&s| s != bytes.len() as u64) {
        return Err(OciError::SizeMismatch {
            what: what.to_owned(),
            expected,
            actual: bytes.len() as u64,
        });
    }
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(OciError::DigestMismatch {
            what: what.to_owned(),
            expected: digest,
            actual,
        });
    }
    Ok(bytes)
}

fn open_oci(store: BlobStore, reference: Option<&str>, label: &str) -> Result<Image, OciError> {
    if store.contains("oci-layout") {
        let bytes = store.read_small("oci-layout", "oci-layout", MAX_JSON_SIZE)?;
        let layout: OciLayout = parse_json(&bytes, "oci-layout")?;
        if !layout.image_layout_version.starts_with("1.") {
            return Err(OciError::Malformed {
                what: "oci-layout".to_owned(),
                reason: format!(
                    "unsupported imageLayoutVersion '{}'",
                    shorten(&layout.image_layout_version)
                ),
            });
        }
    }
    let bytes = store.read_small("index.json", "index.json", MAX_JSON_SIZE)?;
    let index: Index = parse_json(&bytes, "index.json")?;
    let descriptor = select_image(&index.manifests, reference, label)?;
    let (manifest_digest, manifest) = resolve_manifest(&store, descriptor, 0)?;
    image_from_manifest(store, manifest_digest, manifest)
}

/// The names an `index.json` entry answers to.
fn refs_of(d: &Descriptor) -> impl Iterator<Item = &String> {
    [ANNOTATION_REF_NAME, ANNOTATION_CONTAINERD_NAME]
        .into_iter()
        .filter_map(|key| d.annotations.get(key))
}

fn select_image<'a>(
    descriptors: &'a [Descriptor],
    reference: Option<&str>,
    label: &str,
) -> Result<&'a Descriptor, OciError> {
    let available = || {
        let mut refs: Vec<String> = descriptors
            .iter()
            .flat_map(refs_of)
            .map(|r| shorten(r))
            .collect();
        refs.dedup();
        refs
    };
    match reference {
        Some(wanted) => descriptors
            .iter()
            .find(|d| refs_of(d).any(|r| same_ref(r, wanted)))
            .ok_or_else(|| OciError::UnknownRef {
                reference: wanted.to_owned(),
                source_path: label.to_owned(),
                available: available(),
            }),
        None => match descriptors {
            [] => Err(OciError::NoImage(label.to_owned())),
            [only] => Ok(only),
            _ => Err(OciError::AmbiguousImage {
                source_path: label.to_owned(),
                count: descriptors.len(),
                available: available(),
            }),
        },
    }
}

/// Follows a descriptor through image indexes to an image manifest.
fn resolve_manifest(
    store: &BlobStore,
    d: &Descriptor,
    depth: usize,
) -> Result<(Digest, Manifest), OciError> {
    let is_index = |mt: &str| mt == MEDIA_TYPE_OCI_INDEX || mt == MEDIA_TYPE_DOCKER_LIST;
    let what = if is_index(&d.media_type) {
        format!("index {}", d.digest)
    } else {
        format!("manifest {}", d.digest)
    };
    if depth > MAX_INDEX_DEPTH {
        return Err(OciError::Malformed {
            what,
            reason: "image indexes nested too deeply".to_owned(),
        });
    }
    let bytes = read_blob_json(store, d.digest, d.size, &what)?;
    let media_type = if d.media_type.is_empty() {
        let probe: Probe = parse_json(&bytes, &what)?;
        match (probe.media_type.is_empty(), probe.manifests.is_some()) {
            (false, _) => probe.media_type,
            (true, true) => MEDIA_TYPE_OCI_INDEX.to_owned(),
            (true, false) => MEDIA_TYPE_OCI_MANIFEST.to_owned(),
        }
    } else {
        d.media_type.clone()
    };
    if is_index(&media_type) {
        let index: Index = parse_json(&bytes, &what)?;
        let child = pick_platform(&index.manifests, &what)?;
        resolve_manifest(store, child, depth + 1)
    } else if media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST {
        Ok((d.digest, parse_json(&bytes, &what)?))
    } else {
        Err(OciError::UnsupportedMediaType {
            what,
            media_type: shorten(&media_type),
        })
    }
}

fn pick_platform<'a>(
    descriptors: &'a [Descriptor],
    what: &str,
) -> Result<&'a Descriptor, OciError> {
    if let [only] = descriptors {
        return Ok(only);
    }
    descriptors
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCHITECTURE)
        })
        .ok_or_else(|| {
            if descriptors.is_empty() {
                return OciError::NoImage(what.to_owned());
            }
            OciError::NoPlatform {
                what: what.to_owned(),
                available: descriptors
                    .iter()
                    .map(|d| {
                        d.platform
                            .as_ref()
                            .map_or("unknown".to_owned(), |p| shorten(&p.describe()))
                    })
                    .collect(),
            }
        })
}

fn image_from_manifest(
    store: BlobStore,
    manifest_digest: Digest,
    manifest: Manifest,
) -> Result<Image, OciError> {
    let config_desc = &manifest.config;
    let config_what = format!("config {}", config_desc.digest);
    if !matches!(
        config_desc.media_type.as_str(),
        "" | MEDIA_TYPE_OCI_CONFIG | MEDIA_TYPE_DOCKER_CONFIG
    ) {
        return Err(OciError::UnsupportedMediaType {
            what: config_what,
            media_type: shorten(&config_desc.media_type),
        });
    }
    let config_bytes = read_blob_json(&store, config_desc.digest, config_desc.size, &config_what)?;
    let config = ImageConfig::from_json(&config_bytes, &config_what)?;
    if manifest.layers.len() != config.diff_ids.len() {
        return Err(OciError::LayerCountMismatch {
            layers: manifest.layers.len(),
            diff_ids: config.diff_ids.len(),
            config: config_desc.digest.to_string(),
        });
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    let mut blobs = Vec::with_capacity(manifest.layers.len());
    for (d, &diff_id) in manifest.layers.iter().zip(&config.diff_ids) {
        let what = format!("layer {}", d.digest);
        let compression = Compression::from_media_type(&d.media_type).ok_or_else(|| {
            OciError::UnsupportedMediaType {
                what: what.clone(),
                media_type: shorten(&d.media_type),
            }
        })?;
        let name = d.digest.blob_path();
        if !store.contains(&name) {
            return Err(OciError::MissingBlob { what });
        }
        layers.push(LayerInfo {
            digest: d.digest,
            diff_id,
            media_type: d.media_type.clone(),
            size: d.size,
            compression,
        });
        blobs.push(LayerBlob {
            name,
            verify_blob: true,
        });
    }
    Ok(Image {
        manifest_digest: Some(manifest_digest),
        config_digest: config_desc.digest,
        config,
        layers,
        store,
        blobs,
    })
}

fn open_docker(store: BlobStore, reference: Option<&str>, label: &str) -> Result<Image, OciError> {
    let bytes = store.read_small("manifest.json", "manifest.json", MAX_JSON_SIZE)?;
    let images: Vec<DockerImage> = parse_json(&bytes, "manifest.json")?;
    let available = || {
        images
            .iter()
            .flat_map(|i| i.repo_tags.iter().map(|t| shorten(t)))
            .collect()
    };
    let image = match reference {
        Some(wanted) => images
            .iter()
            .find(|i| i.repo_tags.iter().any(|t| same_ref(t, wanted)))
            .ok_or_else(|| OciError::UnknownRef {
                reference: wanted.to_owned(),
                source_path: label.to_owned(),
                available: available(),
            })?,
        None => match images.as_slice() {
            [] => return Err(OciError::NoImage(label.to_owned())),
            [only] => only,
            _ => {
                return Err(OciError::AmbiguousImage {
                    source_path: label.to_owned(),
                    count: images.len(),
                    available: available(),
                })
            }
        },
    };

    let config_name = safe_path(&image.config)?;
    let config_bytes = store.read_small(
        &config_name,
        &format!("config {}", shorten(&image.config)),
        MAX_JSON_SIZE,
    )?;
    let config_digest = Digest::of(&config_bytes);
    if let Some(expected) = digest_in_name(&config_name) {
        if expected != config_digest {
            return Err(OciError::DigestMismatch {
                what: format!("config {}", shorten(&image.config)),
                expected,
                actual: config_digest,
            });
        }
    }
    let config = ImageConfig::from_json(&config_bytes, &format!("config {config_digest}"))?;
    if image.layers.len() != config.diff_ids.len() {
        return Err(OciError::LayerCountMismatch {
            layers: image.layers.len(),
            diff_ids: config.diff_ids.len(),
            config: config_digest.to_string(),
        });
    }
    let mut layers = Vec::with_capacity(image.layers.len());
    let mut blobs = Vec::with_capacity(image.layers.len());
    for (path, &diff_id) in image.layers.iter().zip(&config.diff_ids) {
        let name = safe_path(path)?;
        let what = format!("layer {}", shorten(path));
        // Docker records no media type: the magic bytes decide.
        let (mut reader, size) = store.open(&name, &what)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut reader, &mut magic).map_err(|e| stream_error(e, &what))?;
        let compression = Compression::detect(&magic[..n]);
        // Newer docker saves name layer blobs by digest; older ones
        // ("<id>/layer.tar") only record the diff_id.
        let blob_digest = digest_in_name(&name);
        layers.push(LayerInfo {
            digest: blob_digest.unwrap_or(diff_id),
            diff_id,
            media_type: compression.oci_media_type().to_owned(),
            size: Some(size),
            compression,
        });
        blobs.push(LayerBlob {
            name,
            verify_blob: blob_digest.is_some(),
        });
    }
    Ok(Image {
        manifest_digest: None,
        config_digest,
        config,
        layers,
        store,
        blobs,
    })
}

/// A docker-archive member path, checked to stay inside the archive.
fn safe_path(path: &str) -> Result<String, OciError> {
    let unsafe_path = || OciError::UnsafePath {
        path: shorten(path),
        what: "manifest.json".to_owned(),
    };
    if path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c == "..") {
        return Err(unsafe_path());
    }
    let normalized = normalize(path.as_bytes()).ok_or_else(unsafe_path)?;
    String::from_utf8(normalized).map_err(|_| unsafe_path())
}

/// The digest a content-addressed name carries: `blobs/sha256/<hex>` or
/// `<hex>.json` (old docker-archive configs).
fn digest_in_name(name: &str) -> Option<Digest> {
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json").filter(|h| !h.contains('/')))?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// True if two image references name the same image: equal, or equal
/// after docker's normalization (`alpine` = `docker.io/library/alpine:latest`).
fn same_ref(a: &str, b: &str) -> bool {
    a == b
        || matches!((normalize_docker_ref(a), normalize_docker_ref(b)), (Some(x), Some(y)) if x == y)
}

/// `NAME[:TAG][@DIGEST]` in docker's fully qualified form.
fn normalize_docker_ref(reference: &str) -> Option<String> {
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(colon) => (
            &name_tag[..last_slash + colon],
            Some(&name_tag[last_slash + colon + 1..]),
        ),
        None => (name_tag, None),
    };
    if name.is_empty() || tag == Some("") {
        return None;
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first, rest.to_owned())
        }
        Some(_) => ("docker.io", name.to_owned()),
        None => ("docker.io", format!("library/{name}")),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(tag), _) => {
            out.push(':');
            out.push_str(tag);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_refs() {
        let n = |s| normalize_docker_ref(s);
        assert_eq!(
            n("alpine").as_deref(),
            Some("docker.io/library/alpine:latest")
        );
        assert_eq!(
            n("alpine:3.19").as_deref(),
            Some("docker.io/library/alpine:3.19")
        );
        assert_eq!(n("me/app:v1").as_deref(), Some("docker.io/me/app:v1"));
        assert_eq!(
            n("localhost:5000/app").as_deref(),
            Some("localhost:5000/app:latest")
        );
        assert_eq!(
            n("ghcr.io/a/b:c@sha256:00").as_deref(),
            Some("ghcr.io/a/b:c@sha256:00")
        );
        assert_eq!(
            n("index.docker.io/library/x:1").as_deref(),
            Some("docker.io/library/x:1")
        );
        assert!(same_ref("alpine:latest", "docker.io/library/alpine:latest"));
        assert!(same_ref("alpine", "alpine:latest"));
        assert!(!same_ref("alpine:3", "alpine:latest"));
        assert!(!same_ref("latest", "alpine:latest"));
    }

    #[test]
    fn safe_paths() {
        assert_eq!(
            safe_path("abc/layer.tar").ok().as_deref(),
            Some("abc/layer.tar")
        );
        assert_eq!(
            safe_path("./abc//layer.tar").ok().as_deref(),
            Some("abc/layer.tar")
        );
        for bad in ["/etc/passwd", "../x", "a/../../x", "a/..", "", "."] {
            assert!(
                matches!(safe_path(bad), Err(OciError::UnsafePath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn digests_in_names() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}")).ok();
        assert_eq!(digest_in_name(&format!("blobs/sha256/{hex}")), d);
        assert_eq!(digest_in_name(&format!("{hex}.json")), d);
        assert_eq!(digest_in_name(&format!("x/{hex}.json")), None);
        assert_eq!(digest_in_name("abc/layer.tar"), None);
    }

    #[test]
    fn source_splitting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("img");
        fs::create_dir(&plain).expect("mkdir");
        let colon = dir.path().join("a:b");
        fs::create_dir(&colon).expect("mkdir");
        let s = |p: &Path| p.to_str().expect("utf-8 temp path").to_owned();
        assert_eq!(split_source(&s(&plain)).ok(), Some((plain.clone(), None)));
        assert_eq!(
            split_source(&format!("{}:latest", s(&plain))).ok(),
            Some((plain.clone(), Some("latest".to_owned())))
        );
        assert_eq!(
            split_source(&format!("{}:localhost:5000/x:1", s(&plain))).ok(),
            Some((plain.clone(), Some("localhost:5000/x:1".to_owned())))
        );
        assert_eq!(split_source(&s(&colon)).ok(), Some((colon.clone(), None)));
        assert_eq!(
            split_source(&format!("{}:v1", s(&colon))).ok(),
            Some((colon.clone(), Some("v1".to_owned())))
        );
        assert!(matches!(
            split_source("/nonexistent/x:y"),
            Err(OciError::NotFound(_))
        ));
    }
}
