//! Pulls from a real registry (Debian's `docker-registry`, Distribution
//! 2.8) filled by skopeo with corpus images, checked by opening the result
//! with `kindling_oci` and reading every layer through; auth, faults and
//! corruption come from the registry's own htpasswd auth, an in-test
//! token service and proxy, and edits to the registry's storage.

mod support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kindling_registry::{pull, Credentials, Progress, PullOptions, Reference, RegistryError};
use support::proxy::{Proxy, TokenConfig, TokenRequest, TokenServer};
use support::{assert_same_image, files_under, open_source, prerequisites, Registry};

fn insecure() -> PullOptions {
    PullOptions {
        insecure: true,
        ..PullOptions::default()
    }
}

fn reference(s: &str) -> Reference {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

async fn pull_ok(r: &str, dest: &Path, opts: &PullOptions) -> kindling_registry::Pulled {
    pull(&reference(r), dest, opts)
        .await
        .unwrap_or_else(|e| panic!("pull {r}: {e} ({e:?})"))
}

async fn pull_err(r: &str, opts: &PullOptions) -> RegistryError {
    let dest = tempfile::tempdir().expect("tempdir");
    match pull(&reference(r), dest.path(), opts).await {
        Ok(p) => panic!("pull {r} should fail, got {p:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn by_tag_and_by_digest_match_the_source() {
    let Some(corpus) = prerequisites("by_tag_and_by_digest_match_the_source") else {
        return;
    };
    let registry = Registry::start();
    let layout = corpus.join("debian-slim");
    registry.push(&layout, "debian-slim:latest", &[]);
    let source = open_source(&layout);
    let source_manifest = source.manifest_digest.expect("manifest digest").to_string();

    let dest = tempfile::tempdir().expect("tempdir");
    let r = format!("{}/debian-slim:latest", registry.host());
    let pulled = pull_ok(&r, dest.path(), &insecure()).await;
    assert_eq!(pulled.reference, "latest");
    assert_eq!(pulled.layout, dest.path());
    // Stored byte for byte: the same manifest digest as the source layout
    // (which skopeo pushed unchanged).
    assert_eq!(pulled.manifest_digest, source_manifest);
    assert_eq!(
        pulled.manifest_digest,
        registry.skopeo_manifest_digest("debian-slim:latest")
    );
    assert_same_image(&pulled, &source);
    let layer_size: u64 = source.layers.iter().filter_map(|l| l.size).sum();
    assert!(pulled.bytes > layer_size, "{} bytes", pulled.bytes);
    // Nothing but the layout.
    let files = files_under(dest.path());
    assert!(files.iter().all(|f| !f.contains(".partial")), "{files:?}");
    assert!(files.contains(&"index.json".to_owned()) && files.contains(&"oci-layout".to_owned()));

    let by_digest = tempfile::tempdir().expect("tempdir");
    let r = format!("docker://{}/debian-slim@{source_manifest}", registry.host());
    let pulled = pull_ok(&r, by_digest.path(), &insecure()).await;
    assert_eq!(pulled.manifest_digest, source_manifest);
    assert_eq!(
        pulled.reference,
        source_manifest.trim_start_matches("sha256:")
    );
    assert_same_image(&pulled, &source);
}

#[tokio::test]
async fn layers_of_every_compression_concurrently_with_progress() {
    let Some(corpus) = prerequisites("layers_of_every_compression_concurrently_with_progress")
    else {
        return;
    };
    let registry = Registry::start();
    // gzip, zstd and uncompressed layers (skopeo would compress the
    // uncompressed one unless told to keep the digests).
    let layout = corpus.join("torture");
    registry.push(&layout, "torture:v1", &["--preserve-digests"]);
    let source = open_source(&layout);

    let events: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = events.clone();
    let opts = PullOptions {
        concurrency: 4,
        progress: Some(Arc::new(move |p| sink.lock().expect("lock").push(p))),
        ..insecure()
    };
    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(
        &format!("{}/torture:v1", registry.host()),
        dest.path(),
        &opts,
    )
    .await;
    assert_same_image(&pulled, &source);

    let events = events.lock().expect("lock");
    let last = events.last().expect("progress events");
    assert_eq!(last.pull_downloaded, last.pull_total);
    let blob_total: u64 = source.layers.iter().filter_map(|l| l.size).sum();
    assert!(last.pull_total > blob_total, "config + layers");
    assert!(pulled.bytes > last.pull_total, "manifest + blobs");
    for layer in &source.layers {
        let digest = layer.digest.to_string();
        let mine: Vec<&Progress> = events.iter().filter(|p| p.digest == digest).collect();
        assert_eq!(
            mine.first().map(|p| p.downloaded),
            Some(0),
            "{digest} starts at 0"
        );
        let end = mine.last().expect("events for the layer");
        assert_eq!(
            (end.downloaded, end.total),
            (layer.size.expect("size"), end.total)
        );
        assert_eq!(end.downloaded, end.total);
        assert!(mine.windows(2).all(|w| w[0].downloaded <= w[1].downloaded));
    }
}

#[tokio::test]
async fn docker_schema2_is_stored_as_served() {
    let Some(corpus) = prerequisites("docker_schema2_is_stored_as_served") else {
        return;
    };
    let registry = Registry::start();
    let debian = corpus.join("debian-slim");
    registry.push(&debian, "debian-v2s2:1", &["--format", "v2s2"]);
    let debian_source = open_source(&debian);

    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(
        &format!("{}/debian-v2s2:1", registry.host()),
        dest.path(),
        &insecure(),
    )
    .await;
    let image = assert_same_image(&pulled, &debian_source);
    assert_eq!(
        image.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let manifest = std::fs::read(
        dest.path()
            .join("blobs/sha256")
            .join(pulled.manifest_digest.trim_start_matches("sha256:")),
    )
    .expect("manifest blob");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["manifests"][0]["mediaType"], manifest["mediaType"]);

    // Docker schema 2 has no zstd media type, so zstd images stay OCI.
    let zstd = corpus.join("python3-zstd");
    registry.push(&zstd, "py-zstd:1", &[]);
    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(
        &format!("{}/py-zstd:1", registry.host()),
        dest.path(),
        &insecure(),
    )
    .await;
    assert_same_image(&pulled, &open_source(&zstd));
}

#[tokio::test]
async fn an_index_resolves_to_the_wanted_platform() {
    let Some(corpus) = prerequisites("an_index_resolves_to_the_wanted_platform") else {
        return;
    };
    let registry = Registry::start();
    // python3 (gzip layers) stands in for an arm64 image: Docker manifest
    // lists cannot carry zstd layers.
    let (amd64, arm64) = (corpus.join("debian-slim"), corpus.join("python3"));
    let multi = tempfile::tempdir().expect("tempdir");
    support::multi_platform_layout(
        multi.path(),
        &[(&amd64, "linux/amd64"), (&arm64, "linux/arm64/v8")],
    );
    registry.push(multi.path(), "multi:oci", &["--all"]);
    registry.push(multi.path(), "multi:docker", &["--all", "--format", "v2s2"]);
    let (amd64, arm64) = (open_source(&amd64), open_source(&arm64));

    for tag in ["oci", "docker"] {
        let r = format!("{}/multi:{tag}", registry.host());
        let dest = tempfile::tempdir().expect("tempdir");
        let pulled = pull_ok(&r, dest.path(), &insecure()).await;
        assert_same_image(&pulled, &amd64);
        // skopeo stores the same OCI manifest; a Docker one it converts to
        // OCI (new digest), where the pull keeps the registry's digest.
        let skopeo = registry.skopeo_manifest_digest(&format!("multi:{tag}"));
        assert_eq!(pulled.manifest_digest == skopeo, tag == "oci", "{skopeo}");
        if tag == "oci" {
            assert_eq!(
                Some(pulled.manifest_digest.clone()),
                amd64.manifest_digest.map(|d| d.to_string())
            );
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dest.path().join("index.json")).expect("read"))
                .expect("json");
        assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");

        let opts = PullOptions {
            platform: ("linux".to_owned(), "arm64".to_owned()),
            ..insecure()
        };
        let dest = tempfile::tempdir().expect("tempdir");
        let pulled = pull_ok(&r, dest.path(), &opts).await;
        assert_same_image(&pulled, &arm64);

        let opts = PullOptions {
            platform: ("linux".to_owned(), "s390x".to_owned()),
            ..insecure()
        };
        let e = pull_err(&r, &opts).await;
        assert!(matches!(e, RegistryError::NoPlatform { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("linux/s390x")
                && message.contains("linux/amd64")
                && message.contains("linux/arm64/v8"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn missing_images_are_clear_errors() {
    let Some(corpus) = prerequisites("missing_images_are_clear_errors") else {
        return;
    };
    let registry = Registry::start();
    registry.push(&corpus.join("debian-slim"), "debian-slim:latest", &[]);
    let host = registry.host();

    let e = pull_err(&format!("{host}/debian-slim:nope"), &insecure()).await;
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("manifest debian-slim:nope not found in {host}: MANIFEST_UNKNOWN manifest unknown")
    );
    let e = pull_err(&format!("{host}/no/such-repo:latest"), &insecure()).await;
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("no/such-repo:latest"), "{e}");
    let zero = format!("sha256:{}", "0".repeat(64));
    let e = pull_err(&format!("{host}/debian-slim@{zero}"), &insecure()).await;
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains(&zero), "{e}");

    // Nothing listens: a connection error after the retries.
    let opts = PullOptions {
        max_retries: 1,
        ..insecure()
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let e = pull_err(&format!("127.0.0.1:{closed}/x:1"), &opts).await;
    assert!(matches!(e, RegistryError::Http { .. }), "{e:?}");
    assert!(e.is_transient(), "{e:?}");
}

/// Overwrites one byte in the middle of a file, keeping its size.
fn corrupt(path: &Path, find: Option<&[u8]>) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = match find {
        Some(needle) => {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("needle in file")
                + needle.len()
                - 1
        }
        None => bytes.len() / 2,
    };
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write corrupted");
}

#[tokio::test]
async fn corrupt_content_in_the_registry_is_an_integrity_error() {
    let Some(corpus) = prerequisites("corrupt_content_in_the_registry_is_an_integrity_error")
    else {
        return;
    };
    let registry = Registry::start();
    let layout = corpus.join("python3");
    registry.push(&layout, "python3:latest", &[]);
    registry.push(&corpus.join("debian-slim"), "debian-slim:latest", &[]);
    let source = open_source(&layout);
    let host = registry.host();

    // The top layer (the debian base layer stays intact).
    let layer = source.layers.last().expect("layers").digest.to_string();
    corrupt(&registry.blob_data(&layer), None);
    let dest = tempfile::tempdir().expect("tempdir");
    let e = pull(
        &reference(&format!("{host}/python3:latest")),
        dest.path(),
        &insecure(),
    )
    .await
    .expect_err("corrupt layer");
    assert!(e.is_integrity(), "{e:?}");
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains(&layer) && message.contains("python3"),
        "{message}"
    );
    let files = files_under(dest.path());
    let hex = layer.trim_start_matches("sha256:");
    assert!(
        files
            .iter()
            .all(|f| !f.contains(hex) && !f.contains(".partial")),
        "no trace of the bad blob: {files:?}"
    );
    assert!(!dest.path().join("index.json").exists());

    // The manifest: still valid JSON, but not what its digest says. By
    // tag it is caught through Docker-Content-Digest, by digest directly.
    let debian = open_source(&corpus.join("debian-slim"));
    let manifest = debian.manifest_digest.expect("digest").to_string();
    corrupt(&registry.blob_data(&manifest), Some(b"debian-sli"));
    for r in [
        format!("{host}/debian-slim:latest"),
        format!("{host}/debian-slim@{manifest}"),
    ] {
        let e = pull_err(&r, &insecure()).await;
        assert!(
            matches!(e, RegistryError::DigestMismatch { .. }),
            "{r}: {e:?}"
        );
        assert!(e.to_string().contains(&manifest), "{e}");
    }
}

#[tokio::test]
async fn basic_auth_against_htpasswd() {
    let Some(corpus) = prerequisites("basic_auth_against_htpasswd") else {
        return;
    };
    let registry = Registry::start_with_htpasswd("alice", "s3cret");
    let layout = corpus.join("debian-slim");
    registry.push(&layout, "private/debian:1", &[]);
    let r = format!("{}/private/debian:1", registry.host());

    let e = pull_err(&r, &insecure()).await;
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e:?}");
    assert!(e.to_string().contains("private/debian"), "{e}");

    let wrong = PullOptions {
        credentials: Some(Credentials::new("alice", "guess")),
        ..insecure()
    };
    let e = pull_err(&r, &wrong).await;
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");

    let right = PullOptions {
        credentials: Some(Credentials::new("alice", "s3cret")),
        ..insecure()
    };
    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(&r, dest.path(), &right).await;
    assert_same_image(&pulled, &open_source(&layout));
}

#[tokio::test]
async fn bearer_token_flow() {
    let Some(corpus) = prerequisites("bearer_token_flow") else {
        return;
    };
    let registry = Registry::start();
    let layout = corpus.join("python3");
    registry.push(&layout, "team/python3:3", &[]);
    let source = open_source(&layout);
    let creds = PullOptions {
        credentials: Some(Credentials::new("bob", "hunter2")),
        concurrency: 4,
        ..insecure()
    };

    // A token service that wants credentials.
    let tokens = TokenServer::start(TokenConfig {
        credentials: Some(("bob".to_owned(), "hunter2".to_owned())),
        field: "token",
        valid: true,
    })
    .await;
    let proxy = Proxy::start(registry.port, Some(&tokens)).await;
    let r = format!("{}/team/python3:3", proxy.host());
    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(&r, dest.path(), &creds).await;
    assert_same_image(&pulled, &source);
    // One token for the whole pull (manifest, config and two layers, in
    // parallel), asked with the challenge's service and scope.
    assert_eq!(
        tokens.requests(),
        vec![TokenRequest {
            service: Some("kindling-test".to_owned()),
            scope: Some("repository:team/python3:pull".to_owned()),
            user: Some("bob".to_owned()),
        }]
    );

    // A token that expires mid-pull is fetched again (one blob at a time,
    // so that exactly one request meets the expired token).
    proxy.faults.expire_tokens.store(true, Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let one_by_one = PullOptions {
        concurrency: 1,
        ..creds.clone()
    };
    pull_ok(&r, dest.path(), &one_by_one).await;
    assert_eq!(tokens.requests().len(), 3, "{:?}", tokens.requests());

    let e = pull_err(&r, &insecure()).await;
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e:?}");
    let wrong = PullOptions {
        credentials: Some(Credentials::new("bob", "hunter3")),
        ..insecure()
    };
    let e = pull_err(&r, &wrong).await;
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");

    // Anonymous tokens in OAuth2's `access_token` field.
    let anonymous = TokenServer::start(TokenConfig {
        credentials: None,
        field: "access_token",
        valid: true,
    })
    .await;
    let proxy = Proxy::start(registry.port, Some(&anonymous)).await;
    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(
        &format!("{}/team/python3:3", proxy.host()),
        dest.path(),
        &insecure(),
    )
    .await;
    assert_same_image(&pulled, &source);
    assert_eq!(anonymous.requests()[0].user, None);

    // A token the registry does not accept.
    let useless = TokenServer::start(TokenConfig {
        credentials: None,
        field: "token",
        valid: false,
    })
    .await;
    let proxy = Proxy::start(registry.port, Some(&useless)).await;
    let r = format!("{}/team/python3:3", proxy.host());
    let e = pull_err(&r, &creds).await;
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e:?}");
    let e = pull_err(&r, &insecure()).await;
    assert!(matches!(e, RegistryError::AuthRequired { .. }), "{e:?}");
}

#[tokio::test]
async fn transient_failures_are_retried_and_downloads_resume() {
    let Some(corpus) = prerequisites("transient_failures_are_retried_and_downloads_resume") else {
        return;
    };
    let registry = Registry::start();
    let layout = corpus.join("python3");
    registry.push(&layout, "python3:latest", &[]);
    let source = open_source(&layout);
    let proxy = Proxy::start(registry.port, None).await;
    let r = format!("{}/python3:latest", proxy.host());
    let opts = PullOptions {
        read_timeout: Duration::from_secs(1),
        concurrency: 1,
        ..insecure()
    };

    let faults = &proxy.faults;
    faults.fail_blobs.store(2, Ordering::SeqCst);
    faults.truncate_blobs.store(1, Ordering::SeqCst);
    faults.stall_blobs.store(1, Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let pulled = pull_ok(&r, dest.path(), &opts).await;
    assert_same_image(&pulled, &source);
    assert_eq!(faults.fail_blobs.load(Ordering::SeqCst), 0);
    assert_eq!(faults.stall_blobs.load(Ordering::SeqCst), 0);
    // The cut-off and the stalled body were resumed, not started over.
    assert_eq!(faults.range_requests.load(Ordering::SeqCst), 2);
    // 3 blobs, 2 refused, 2 resumed.
    assert_eq!(faults.blob_requests.load(Ordering::SeqCst), 3 + 2 + 2);

    // Without retries the 503 is the error.
    faults.fail_blobs.store(1, Ordering::SeqCst);
    let no_retries = PullOptions {
        max_retries: 0,
        ..opts.clone()
    };
    let e = pull_err(&r, &no_retries).await;
    assert!(
        matches!(e, RegistryError::Status { status: 503, .. }),
        "{e:?}"
    );
    assert!(e.is_transient());

    // Corruption in transit is not retried.
    faults.corrupt_blobs.store(1, Ordering::SeqCst);
    let before = faults.blob_requests.load(Ordering::SeqCst);
    let e = pull_err(&r, &opts).await;
    assert!(e.is_integrity(), "{e:?}");
    assert_eq!(
        faults.blob_requests.load(Ordering::SeqCst) - before,
        1,
        "stops at the first (corrupt) blob with concurrency 1"
    );
}
