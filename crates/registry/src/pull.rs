//! A pull: resolve the reference to one image manifest, download its
//! config and layers concurrently, and write an OCI image layout.
//!
//! The manifest is stored byte for byte as served, so its digest is the
//! registry's manifest digest (the flattener derives the ext4 UUID from it,
//! and `skopeo copy` of an OCI manifest to an OCI layout stores the same
//! bytes). A Docker schema 2 manifest stays a Docker manifest with Docker
//! media types; `kindling_oci` reads those in a layout.
//!
//! Every byte is verified before it is trusted: manifests against the
//! digest they were asked for or announced with (`Docker-Content-Digest`),
//! blobs against their descriptor's digest and size while they stream to
//! a temporary file beside their final name, which they get only once
//! verified. A failed or cancelled pull leaves no partial blob under a
//! digest name; temporary files are removed when their download ends
//! either way. Interrupted blob downloads resume with a `Range` request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::TryStreamExt as _;
use kindling_oci::Digest;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _, BufWriter};

use crate::client::{backoff, read_limited, Client};
use crate::error::{shorten, RegistryError};
use crate::reference::Reference;
use crate::{Progress, PullOptions, Pulled};

pub(crate) const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const MEDIA_TYPE_DOCKER_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The manifest types we ask for, most wanted first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted: Distribution's own limit on manifest
/// uploads (4 MiB), so no registry can hold a bigger one.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// Largest image config accepted: the limit `kindling_oci` reads JSON
/// with, since a larger one could not be opened after the pull anyway.
pub const MAX_CONFIG_SIZE: u64 = kindling_oci::source::MAX_JSON_SIZE;
/// Indexes nested deeper than this are rejected (real ones nest once).
const MAX_INDEX_DEPTH: usize = 4;
/// Write buffer per blob download: large enough that a fast network does
/// not turn into many small writes.
const WRITE_BUFFER_SIZE: usize = 1 << 20;

/// What a manifest response turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Index,
    Manifest,
}

/// A verified manifest or index, as served.
#[derive(Debug)]
struct Fetched {
    bytes: Vec<u8>,
    digest: Digest,
    media_type: String,
    kind: Kind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
}

impl Platform {
    fn describe(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            s.push('/');
            s.push_str(variant);
        }
        shorten(&s)
    }
}

#[derive(Debug, Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Just enough of a manifest response to tell what it is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    config: Option<serde::de::IgnoredAny>,
}

/// One blob to download.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    what: String,
}

pub(crate) async fn pull(
    reference: &Reference,
    dest: &Path,
    opts: &PullOptions,
) -> Result<Pulled, RegistryError> {
    let client = Client::new(reference, opts)?;
    let (manifest, platform) = resolve(&client, reference, opts).await?;
    let doc: ManifestDoc =
        serde_json::from_slice(&manifest.bytes).map_err(|e| RegistryError::Malformed {
            what: manifest_what(&client, &manifest.digest.to_string()),
            reason: e.to_string(),
        })?;
    if doc.config.size > MAX_CONFIG_SIZE {
        return Err(RegistryError::TooLarge {
            what: format!("config {}", doc.config.digest),
            size: doc.config.size,
            limit: MAX_CONFIG_SIZE,
        });
    }

    let blob_dir = dest.join("blobs").join("sha256");
    tokio::fs::create_dir_all(&blob_dir)
        .await
        .map_err(|source| RegistryError::Io {
            path: blob_dir.clone(),
            source,
        })?;
    let image = format!("{}/{}", client.registry, client.repository);
    let mut blobs: BTreeMap<Digest, Blob> = BTreeMap::new();
    let described =
        std::iter::once(("config", &doc.config)).chain(doc.layers.iter().map(|l| ("layer", l)));
    for (kind, d) in described {
        if let Some(previous) = blobs.get(&d.digest) {
            if previous.size != d.size {
                return Err(RegistryError::Malformed {
                    what: manifest_what(&client, &manifest.digest.to_string()),
                    reason: format!("blob {} listed with two sizes", d.digest),
                });
            }
            continue;
        }
        blobs.insert(
            d.digest,
            Blob {
                digest: d.digest,
                size: d.size,
                what: format!("{kind} {} of {image}", d.digest),
            },
        );
    }

    let manifest_path = dest.join(manifest.digest.blob_path());
    write_file(&manifest_path, &manifest.bytes).await?;
    let tracker = Tracker {
        opts,
        downloaded: AtomicU64::new(0),
        total: blobs.values().map(|b| b.size).sum(),
    };
    futures_util::stream::iter(blobs.values().map(Ok))
        .try_for_each_concurrent(opts.concurrency.max(1), |blob| {
            download_blob(&client, &blob_dir, blob, &tracker)
        })
        .await?;

    let ref_name = match (&reference.tag, &reference.digest) {
        (Some(tag), _) => tag.clone(),
        (None, _) => manifest.digest.hex(),
    };
    let mut descriptor = serde_json::json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest.to_string(),
        "size": manifest.bytes.len(),
        "annotations": { ANNOTATION_REF_NAME: ref_name },
    });
    if let Some(platform) = platform {
        descriptor["platform"] = serde_json::to_value(platform).unwrap_or_default();
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [descriptor],
    });
    write_file(
        &dest.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .await?;
    // index.json last: a layout with one is complete.
    write_file(&dest.join("index.json"), index.to_string().as_bytes()).await?;
    Ok(Pulled {
        layout: dest.to_owned(),
        reference: ref_name,
        manifest_digest: manifest.digest.to_string(),
        bytes: manifest.bytes.len() as u64 + tracker.total,
    })
}

fn manifest_what(client: &Client, reference: &str) -> String {
    format!(
        "manifest {}{}{}",
        client.repository,
        if reference.starts_with("sha256:") {
            "@"
        } else {
            ":"
        },
        shorten(reference)
    )
}

/// Follows the reference through image indexes to an image manifest;
/// returns it and, if it was picked from an index, its platform.
async fn resolve(
    client: &Client,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<(Fetched, Option<Platform>), RegistryError> {
    let expected = match &reference.digest {
        Some(d) => Some(
            Digest::parse(d).map_err(|e| RegistryError::InvalidReference {
                reference: reference.to_string(),
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let mut fetched = fetch_manifest(client, reference.manifest_ref(), expected).await?;
    let mut platform = None;
    for _ in 0..=MAX_INDEX_DEPTH {
        if fetched.kind == Kind::Manifest {
            return Ok((fetched, platform));
        }
        let what = format!("index {} of {}", fetched.digest, client.repository);
        let index: IndexDoc =
            serde_json::from_slice(&fetched.bytes).map_err(|e| RegistryError::Malformed {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        let child = pick_platform(&index.manifests, &opts.platform, &what)?;
        let child_digest = child.digest.to_string();
        let next = fetch_manifest(client, &child_digest, Some(child.digest)).await?;
        if next.bytes.len() as u64 != child.size {
            return Err(RegistryError::SizeMismatch {
                what: manifest_what(client, &child_digest),
                expected: child.size,
                actual: next.bytes.len() as u64,
            });
        }
        platform = child.platform.clone();
        fetched = next;
    }
    Err(RegistryError::Malformed {
        what: manifest_what(client, reference.manifest_ref()),
        reason: "image indexes nested too deeply".to_owned(),
    })
}

/// GETs a manifest by tag or digest and verifies it.
async fn fetch_manifest(
    client: &Client,
    reference: &str,
    expected: Option<Digest>,
) -> Result<Fetched, RegistryError> {
    let what = manifest_what(client, reference);
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
    let response = client
        .get(
            &format!("manifests/{reference}"),
            headers,
            &what,
            client.max_retries,
        )
        .await?;
    let response = client.check_status(response, &what).await?;
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
    // The digest the registry says this is; other algorithms than sha256
    // cannot be checked and are ignored.
    let announced = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v.trim()).ok());
    let bytes = read_limited(response, MAX_MANIFEST_SIZE, &what, &client.registry).await?;
    let digest = Digest::of(&bytes);
    if let Some(expected) = expected.or(announced) {
        if expected != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    let (media_type, kind) = classify(content_type.as_deref(), &bytes, &what)?;
    Ok(Fetched {
        bytes,
        digest,
        media_type,
        kind,
    })
}

/// Decides what a manifest response is: its own `mediaType` field if it
/// has one (that is what a layout's descriptor must say), else a known
/// `Content-Type`, else its shape.
fn classify(
    content_type: Option<&str>,
    bytes: &[u8],
    what: &str,
) -> Result<(String, Kind), RegistryError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| RegistryError::Malformed {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let is_schema1 =
        |mt: &str| mt == MEDIA_TYPE_DOCKER_SCHEMA1 || mt == MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED;
    if probe.schema_version == Some(1)
        || probe.media_type.as_deref().is_some_and(is_schema1)
        || content_type.is_some_and(is_schema1)
    {
        return Err(RegistryError::Schema1 {
            what: what.to_owned(),
        });
    }
    if let Some(v) = probe.schema_version.filter(|&v| v != 2) {
        return Err(RegistryError::Malformed {
            what: what.to_owned(),
            reason: format!("schemaVersion {v}, expected 2"),
        });
    }
    let known = |mt: &str| {
        matches!(
            mt,
            MEDIA_TYPE_OCI_INDEX
                | MEDIA_TYPE_OCI_MANIFEST
                | MEDIA_TYPE_DOCKER_LIST
                | MEDIA_TYPE_DOCKER_MANIFEST
        )
    };
    let media_type = match (probe.media_type.filter(|m| !m.is_empty()), content_type) {
        (Some(mt), _) => mt,
        (None, Some(ct)) if known(ct) => ct.to_owned(),
        (None, _) if probe.manifests.is_some() => MEDIA_TYPE_OCI_INDEX.to_owned(),
        (None, _) if probe.config.is_some() => MEDIA_TYPE_OCI_MANIFEST.to_owned(),
        (None, _) => {
            return Err(RegistryError::Malformed {
                what: what.to_owned(),
                reason: "neither an image manifest nor an index".to_owned(),
            })
        }
    };
    let kind = match media_type.as_str() {
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST => Kind::Index,
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => Kind::Manifest,
        other => {
            return Err(RegistryError::UnsupportedMediaType {
                what: what.to_owned(),
                media_type: shorten(other),
            })
        }
    };
    Ok((media_type, kind))
}

/// The index entry for `wanted` (`os`, `architecture[/variant]`); an entry
/// without a platform is taken only if it is the only one.
fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    wanted: &(String, String),
    what: &str,
) -> Result<&'a Descriptor, RegistryError> {
    let (os, arch) = wanted;
    let (arch, variant) = match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch.as_str(), None),
    };
    let matching = manifests.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == *os
                && p.architecture == arch
                && (variant.is_none() || p.variant.as_deref() == variant)
        })
    });
    if let Some(found) = matching {
        return Ok(found);
    }
    if let [only] = manifests {
        if only.platform.is_none() {
            return Ok(only);
        }
    }
    Err(RegistryError::NoPlatform {
        what: what.to_owned(),
        wanted: shorten(&format!("{os}/{}", wanted.1)),
        available: manifests
            .iter()
            .map(|d| {
                d.platform
                    .as_ref()
                    .map_or("unknown".to_owned(), Platform::describe)
            })
            .collect(),
    })
}

/// Progress across the blobs of a pull.
struct Tracker<'a> {
    opts: &'a PullOptions,
    downloaded: AtomicU64,
    total: u64,
}

impl Tracker<'_> {
    /// Records that `blob` went from `before` to `now` bytes and tells the
    /// callback.
    fn report(&self, blob: &Blob, before: u64, now: u64) {
        let downloaded = if now >= before {
            self.downloaded.fetch_add(now - before, Ordering::Relaxed) + (now - before)
        } else {
            self.downloaded.fetch_sub(before - now, Ordering::Relaxed) - (before - now)
        };
        if let Some(progress) = &self.opts.progress {
            progress(Progress {
                digest: blob.digest.to_string(),
                downloaded: now,
                total: blob.size,
                pull_downloaded: downloaded,
                pull_total: self.total,
            });
        }
    }
}

/// Removes a temporary file when dropped, unless it was renamed.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A blob being written: the file, what went into it so far and its hash.
struct Partial {
    writer: BufWriter<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
    path: PathBuf,
}

impl Partial {
    fn io(&self) -> impl Fn(std::io::Error) -> RegistryError + '_ {
        |source| RegistryError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Throws away what was written, for a server that ignored `Range`.
    async fn restart(&mut self, blob: &Blob, tracker: &Tracker<'_>) -> Result<(), RegistryError> {
        self.writer.flush().await.map_err(self.io())?;
        self.writer.get_mut().set_len(0).await.map_err(self.io())?;
        self.writer
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(self.io())?;
        tracker.report(blob, self.written, 0);
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }
}

/// What one download attempt ended with, when it did not fail.
enum Attempt {
    /// The body ended.
    Done,
    /// The server answered a resume with something unusable; what was
    /// written is discarded and the next request starts from zero.
    Restart,
}

async fn download_blob(
    client: &Client,
    blob_dir: &Path,
    blob: &Blob,
    tracker: &Tracker<'_>,
) -> Result<(), RegistryError> {
    let hex = blob.digest.hex();
    let final_path = blob_dir.join(&hex);
    let temp = TempFile {
        path: blob_dir.join(format!(".{hex}.partial")),
        renamed: false,
    };
    let file = tokio::fs::File::create(&temp.path)
        .await
        .map_err(|source| RegistryError::Io {
            path: temp.path.clone(),
            source,
        })?;
    let mut partial = Partial {
        writer: BufWriter::with_capacity(WRITE_BUFFER_SIZE, file),
        hasher: Sha256::new(),
        written: 0,
        path: temp.path.clone(),
    };
    tracker.report(blob, 0, 0);
    // Failures in a row without new bytes. An attempt that got further
    // than any before starts the count again: a flaky link that delivers
    // a little each time still finishes, and since the high-water mark
    // only rises to the blob's size, this ends.
    let mut attempt = 0;
    let mut high_water = 0;
    loop {
        match download_attempt(client, blob, &mut partial, tracker).await {
            Ok(Attempt::Done) => break,
            Ok(Attempt::Restart) => {}
            Err(e) if e.is_transient() => {
                if partial.written > high_water {
                    high_water = partial.written;
                    attempt = 0;
                }
                if attempt >= client.max_retries {
                    return Err(e);
                }
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
    partial.writer.flush().await.map_err(partial.io())?;
    if partial.written != blob.size {
        return Err(RegistryError::SizeMismatch {
            what: blob.what.clone(),
            expected: blob.size,
            actual: partial.written,
        });
    }
    let actual = Digest::from_sha256(partial.hasher.clone().finalize().into());
    if actual != blob.digest {
        return Err(RegistryError::DigestMismatch {
            what: blob.what.clone(),
            expected: blob.digest.to_string(),
            actual: actual.to_string(),
        });
    }
    drop(partial);
    let mut temp = temp;
    tokio::fs::rename(&temp.path, &final_path)
        .await
        .map_err(|source| RegistryError::Io {
            path: final_path.clone(),
            source,
        })?;
    temp.renamed = true;
    Ok(())
}

/// One GET of a blob, resuming at `partial.written`, streaming into the
/// file and the hash. Fails as soon as the blob is longer than its size.
async fn download_attempt(
    client: &Client,
    blob: &Blob,
    partial: &mut Partial,
    tracker: &Tracker<'_>,
) -> Result<Attempt, RegistryError> {
    let mut headers = HeaderMap::new();
    let resuming = partial.written > 0;
    if resuming {
        let range = format!("bytes={}-", partial.written);
        if let Ok(value) = HeaderValue::from_str(&range) {
            headers.insert(RANGE, value);
        }
    }
    let response = client
        .get(&format!("blobs/{}", blob.digest), headers, &blob.what, 0)
        .await?;
    let mut response = client.check_status(response, &blob.what).await?;
    match response.status() {
        StatusCode::OK => {
            if resuming {
                partial.restart(blob, tracker).await?;
            }
        }
        StatusCode::PARTIAL_CONTENT if resuming => {
            let start = response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(content_range_start);
            if start != Some(partial.written) {
                partial.restart(blob, tracker).await?;
                return Ok(Attempt::Restart);
            }
        }
        status => {
            return Err(RegistryError::Status {
                registry: client.registry.clone(),
                what: blob.what.clone(),
                status: status.as_u16(),
                detail: String::new(),
            })
        }
    }
    let too_long = |actual: u64| RegistryError::SizeMismatch {
        what: blob.what.clone(),
        expected: blob.size,
        actual,
    };
    if let Some(length) = response.content_length() {
        let end = partial.written.saturating_add(length);
        if end > blob.size {
            return Err(too_long(end));
        }
    }
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|source| RegistryError::Http {
                registry: client.registry.clone(),
                what: blob.what.clone(),
                source,
            })?;
        let Some(chunk) = chunk else {
            return Ok(Attempt::Done);
        };
        let before = partial.written;
        let now = before + chunk.len() as u64;
        if now > blob.size {
            return Err(too_long(now));
        }
        partial.hasher.update(&chunk);
        partial
            .writer
            .write_all(&chunk)
            .await
            .map_err(partial.io())?;
        partial.written = now;
        tracker.report(blob, before, now);
    }
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}

async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    tokio::fs::write(path, bytes)
        .await
        .map_err(|source| RegistryError::Io {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::from_sha256([n; 32])
    }

    fn entry(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            digest: digest(n),
            size: 1,
            platform: Some(Platform {
                os: os.to_owned(),
                architecture: arch.to_owned(),
                variant: variant.map(str::to_owned),
            }),
        }
    }

    fn want(os: &str, arch: &str) -> (String, String) {
        (os.to_owned(), arch.to_owned())
    }

    #[test]
    fn platforms() {
        let index = [
            entry("linux", "arm", Some("v7"), 1),
            entry("linux", "arm64", Some("v8"), 2),
            entry("linux", "amd64", None, 3),
            entry("unknown", "unknown", None, 4),
        ];
        let pick = |os, arch| pick_platform(&index, &want(os, arch), "index").map(|d| d.digest);
        assert_eq!(pick("linux", "amd64").ok(), Some(digest(3)));
        assert_eq!(pick("linux", "arm64").ok(), Some(digest(2)));
        assert_eq!(pick("linux", "arm/v7").ok(), Some(digest(1)));
        let err = pick("linux", "s390x").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "index has no image for linux/s390x (available: linux/arm/v7, \
                 linux/arm64/v8, linux/amd64, unknown/unknown)"
            )
        );
        assert!(pick("linux", "arm/v6").is_err());

        let mut lone = entry("linux", "amd64", None, 5);
        lone.platform = None;
        let lone = [lone];
        assert!(pick_platform(&lone, &want("linux", "amd64"), "i").is_ok());
        assert!(pick_platform(&[], &want("linux", "amd64"), "i").is_err());
    }

    #[test]
    fn classification() {
        let c = |ct: Option<&str>, body: &str| classify(ct, body.as_bytes(), "m");
        let oci = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","config":{{}}}}"#
        );
        assert_eq!(
            c(Some("application/json"), &oci).ok(),
            Some((MEDIA_TYPE_OCI_MANIFEST.to_owned(), Kind::Manifest))
        );
        assert_eq!(
            c(
                Some(MEDIA_TYPE_DOCKER_LIST),
                r#"{"schemaVersion":2,"manifests":[]}"#
            )
            .ok(),
            Some((MEDIA_TYPE_DOCKER_LIST.to_owned(), Kind::Index))
        );
        assert_eq!(
            c(None, r#"{"schemaVersion":2,"manifests":[]}"#).ok(),
            Some((MEDIA_TYPE_OCI_INDEX.to_owned(), Kind::Index))
        );
        assert_eq!(
            c(Some("text/plain"), r#"{"schemaVersion":2,"config":{}}"#).ok(),
            Some((MEDIA_TYPE_OCI_MANIFEST.to_owned(), Kind::Manifest))
        );
        for schema1 in [
            (None, r#"{"schemaVersion":1,"fsLayers":[]}"#),
            (Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED), r#"{"fsLayers":[]}"#),
        ] {
            let e = c(schema1.0, schema1.1).err();
            assert!(matches!(e, Some(RegistryError::Schema1 { .. })), "{e:?}");
        }
        for bad in [
            "",
            "[]",
            "not json",
            r#"{"schemaVersion":3,"config":{}}"#,
            "{}",
        ] {
            let e = c(None, bad).err();
            assert!(
                matches!(e, Some(RegistryError::Malformed { .. })),
                "{bad}: {e:?}"
            );
        }
        let e = c(None, r#"{"mediaType":"application/vnd.example+json"}"#).err();
        assert!(matches!(
            e,
            Some(RegistryError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
