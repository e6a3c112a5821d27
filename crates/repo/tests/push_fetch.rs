//! push -> store -> fetch, against a local directory and a real S3 server
//! (s3s-fs, in process on loopback): one test body, two backends.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kindling_chunk::TenantKey;
use kindling_repo::{fetch, push, FetchOptions, PushOptions, PushSummary, Repo, RepoError};
use kindling_store::{FaultyStore, LocalStore, Op, RetryPolicy, Retrying, S3Server, Store};
use kindling_testkit::{prng, write_layout_with_config, Layer};

const MARKER: &[u8] = b"KINDLING-PLAINTEXT-MARKER-7f3a9c";

/// A three-layer image: a multi-chunk file, small files, one holding a
/// marker string the store must never see, and an upper layer that
/// replaces a file.
fn build_image(dir: &Path, version: &str) {
    let mut marked = prng("marked", 300_000);
    marked[123_456..123_456 + MARKER.len()].copy_from_slice(MARKER);
    let base = Layer::new()
        .dir("usr/")
        .dir("usr/lib/")
        .file("usr/lib/big.so", 0o755, &prng("big", 3 << 20))
        .file("usr/lib/marked.dat", 0o644, &marked)
        .symlink("usr/lib/link.so", "big.so")
        .finish();
    let mut mid = Layer::new().dir("etc/");
    for i in 0..50 {
        mid = mid.file(
            &format!("etc/conf{i}"),
            0o644,
            &prng(&format!("conf{i}"), 1000 + i * 97),
        );
    }
    let app = Layer::new()
        .dir("app/")
        .file(
            "app/main.py",
            0o644,
            format!("print('hello {version}')\n").as_bytes(),
        )
        .file("app/data.bin", 0o644, &prng("data", 700_000))
        .finish();
    write_layout_with_config(
        dir,
        &[base, mid.finish(), app],
        serde_json::json!({"Cmd": ["python3", "/app/main.py"], "Env": ["A=1"], "WorkingDir": "/app"}),
    );
}

fn options() -> PushOptions {
    let mut o = PushOptions::default();
    o.flatten.free_space = 2 << 20;
    o.flatten.free_inodes = 64;
    o
}

fn flatten_reference(layout: &Path, out: &Path) -> Vec<u8> {
    let image = kindling_oci::Image::open(layout.to_str().unwrap()).unwrap();
    let f = std::fs::File::create(out).unwrap();
    kindling_flatten::flatten(&image, &f, &options().flatten).unwrap();
    std::fs::read(out).unwrap()
}

async fn push_layout(
    repo: &Repo,
    layout: &Path,
    name: &str,
    key: &TenantKey,
) -> Result<PushSummary, RepoError> {
    let image = kindling_oci::Image::open(layout.to_str().unwrap()).unwrap();
    push(repo, image, name, key, &options()).await
}

async fn fetch_bytes(
    repo: &Repo,
    name: &str,
    key: &TenantKey,
    dir: &Path,
) -> Result<Vec<u8>, RepoError> {
    let out = dir.join(format!("fetched-{}", name.replace([':', '/'], "_")));
    let f = std::fs::File::create(&out).unwrap();
    fetch(repo, name, key, &f, &FetchOptions::default()).await?;
    Ok(std::fs::read(&out).unwrap())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The shared body.
async fn round_trip(store: Arc<dyn Store>) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    build_image(&layout, "v1");
    let reference = flatten_reference(&layout, &tmp.path().join("ref.img"));
    assert!(
        contains(&reference, MARKER),
        "the test image must hold the marker"
    );

    let repo = Repo::new(store.clone());
    let key = TenantKey::from_bytes([42; 32]);
    let s = push_layout(&repo, &layout, "app:v1", &key).await.unwrap();
    assert_eq!(s.image_bytes, reference.len() as u64);
    assert_eq!(s.chunks, s.image_bytes.div_ceil(s.chunk_size));
    assert_eq!(
        s.chunks,
        s.zero_chunks + s.present_chunks + s.uploaded_chunks
    );
    assert!(s.uploaded_chunks > 5 && s.zero_chunks > 0, "{s:?}");
    assert_eq!(s.uploaded_bytes, s.uploaded_chunks * s.chunk_size);

    // Byte for byte what `flatten` writes.
    let fetched = fetch_bytes(&repo, "app:v1", &key, tmp.path())
        .await
        .unwrap();
    assert!(
        fetched == reference,
        "fetched image differs from flatten output"
    );

    // Again under another name: nothing new to upload, same manifest.
    let again = push_layout(&repo, &layout, "team/app:again", &key)
        .await
        .unwrap();
    assert_eq!(again.uploaded_chunks, 0);
    assert_eq!(again.present_chunks, s.chunks - s.zero_chunks);
    assert_eq!(again.manifest, s.manifest);

    let names: Vec<_> = repo
        .images()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["app:v1", "team/app:again"]);

    // No plaintext in the store: scan every object it holds.
    let keys = store.list("").await.unwrap();
    assert!(keys.len() as u64 > s.uploaded_chunks);
    for k in &keys {
        let data = store.get(k).await.unwrap();
        assert!(!contains(&data, MARKER), "object {k} holds plaintext");
        assert!(
            !contains(&data, b"python3"),
            "object {k} holds the run config"
        );
    }

    // The wrong tenant key is refused, clearly.
    let e = fetch_bytes(&repo, "app:v1", &TenantKey::from_bytes([7; 32]), tmp.path())
        .await
        .unwrap_err();
    assert!(
        anyhow_chain(&e).contains("wrong tenant key"),
        "{}",
        anyhow_chain(&e)
    );

    // A missing image is named.
    let e = fetch_bytes(&repo, "nope:v1", &key, tmp.path())
        .await
        .unwrap_err();
    assert!(matches!(e, RepoError::NoSuchImage { .. }), "{e}");
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(Arc::new(LocalStore::new(dir.path().join("store")))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_s3() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let store = kindling_store::open(&server.url("images-test"), &server.options()).unwrap();
    round_trip(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_top_layer_uploads_only_its_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let (v1, v2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    build_image(&v1, "v1");
    build_image(&v2, "v2");
    let repo = Repo::new(Arc::new(LocalStore::new(tmp.path().join("store"))));
    let key = TenantKey::from_bytes([1; 32]);
    let a = push_layout(&repo, &v1, "app:v1", &key).await.unwrap();
    let b = push_layout(&repo, &v2, "app:v2", &key).await.unwrap();
    // The app layer's first segment, its data file, metadata and chunk 0.
    assert!(
        b.uploaded_chunks >= 1 && b.uploaded_chunks <= 6,
        "{a:?}\n{b:?}"
    );
    assert_ne!(a.manifest, b.manifest);
}

/// A local store behind fault injection and fast retries.
fn faulty() -> (tempfile::TempDir, Arc<FaultyStore<LocalStore>>, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyStore::new(LocalStore::new(dir.path().join("store"))));
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        timeout: Duration::from_secs(10),
    };
    let repo = Repo::new(Arc::new(Retrying::with_policy(faulty.clone(), policy)));
    (dir, faulty, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_store_errors_are_retried() {
    let (dir, faulty, repo) = faulty();
    let layout = dir.path().join("layout");
    build_image(&layout, "v1");
    let key = TenantKey::from_bytes([3; 32]);
    faulty.fail_next(Op::Put, 3);
    faulty.fail_next(Op::Exists, 3);
    let s = push_layout(&repo, &layout, "app:v1", &key).await.unwrap();
    let c = faulty.counts();
    // Every chunk was checked and put once, plus the 3 + 3 failed attempts.
    assert_eq!(c.exists, s.uploaded_chunks + 3);
    assert_eq!(c.puts, s.uploaded_chunks + 1 + 3); // + the image name
    faulty.fail_next(Op::Get, 3);
    let fetched = fetch_bytes(&repo, "app:v1", &key, dir.path())
        .await
        .unwrap();
    let reference = flatten_reference(&layout, &dir.path().join("ref.img"));
    assert!(fetched == reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_stops_the_push_and_leaves_the_name_alone() {
    let (dir, faulty, repo) = faulty();
    let layout = dir.path().join("layout");
    build_image(&layout, "v1");
    let key = TenantKey::from_bytes([3; 32]);
    faulty.fail_next_permanent(Op::Put, 1);
    let e = push_layout(&repo, &layout, "app:v1", &key)
        .await
        .unwrap_err();
    assert!(matches!(e, RepoError::Store { .. }), "{e}");
    let inner = faulty.inner();
    assert!(!inner.exists("images/app:v1").await.unwrap());
    assert!(inner.list("manifests/").await.unwrap().is_empty());
    // Retrying transient errors stays bounded: 4 attempts, then the error.
    faulty.clear_faults();
    faulty.fail_next(Op::Put, 100);
    let e = push_layout(&repo, &layout, "app:v1", &key)
        .await
        .unwrap_err();
    assert!(matches!(e, RepoError::Store { .. }), "{e}");
    assert!(!inner.exists("images/app:v1").await.unwrap());
}

/// A run config the manifest cannot hold (readers refuse more than
/// MAX_CONFIG_BYTES) is refused before anything is uploaded; one just
/// under the limit round-trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_config_too_large_for_a_manifest_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path().join("store")));
    let repo = Repo::new(store.clone());
    let key = TenantKey::from_bytes([5; 32]);
    let layer = Layer::new().file("hello", 0o644, b"hi\n").finish();
    let max = kindling_chunk::MAX_CONFIG_BYTES;
    for (value_len, fits) in [(max, false), (max - 4096, true)] {
        let layout = dir.path().join(format!("layout-{value_len}"));
        let env = format!("BIG={}", "x".repeat(value_len));
        write_layout_with_config(
            &layout,
            std::slice::from_ref(&layer),
            serde_json::json!({"Cmd": ["/hello"], "Env": [env]}),
        );
        let name = format!("big:{fits}");
        match push_layout(&repo, &layout, &name, &key).await {
            Ok(_) => {
                assert!(fits, "a config over the limit was pushed");
                let (_, m) = repo.open_image(&name, &key).await.unwrap();
                assert_eq!(m.config.env[0].len(), value_len + 4);
            }
            Err(e) => {
                assert!(!fits, "{e}");
                assert!(
                    matches!(e, RepoError::ConfigTooLarge { max: m, .. } if m == max),
                    "{e}"
                );
                assert!(!store.exists(&format!("images/{name}")).await.unwrap());
                assert!(store.list("chunks/").await.unwrap().is_empty());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_missing_chunk_fails_the_fetch_naming_it() {
    let (dir, faulty, repo) = faulty();
    let layout = dir.path().join("layout");
    build_image(&layout, "v1");
    let key = TenantKey::from_bytes([3; 32]);
    push_layout(&repo, &layout, "app:v1", &key).await.unwrap();
    let (_, manifest) = repo.open_image("app:v1", &key).await.unwrap();
    let (index, name) = manifest
        .chunks
        .iter()
        .enumerate()
        .find_map(|(i, c)| match c {
            kindling_chunk::ChunkEntry::Stored { name, .. } if i > 2 => Some((i, *name)),
            _ => None,
        })
        .unwrap();
    let key_of = kindling_repo::chunk_key(&name);
    let offset = index as u64 * manifest.chunk_size;

    faulty.corrupt_key(&key_of);
    let e = fetch_bytes(&repo, "app:v1", &key, dir.path())
        .await
        .unwrap_err();
    let msg = anyhow_chain(&e);
    assert!(
        msg.contains(&format!("chunk {index} at offset {offset}")),
        "{msg}"
    );
    assert!(
        msg.contains(&name.to_hex()) && msg.contains("verification"),
        "{msg}"
    );
    // Corruption is retried once (a bad transfer), then reported.
    faulty.clear_faults();

    // The same on disk, for real: flip a byte of the stored object.
    let path = dir.path().join("store").join(&key_of);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let e = fetch_bytes(&repo, "app:v1", &key, dir.path())
        .await
        .unwrap_err();
    assert!(anyhow_chain(&e).contains(&format!("chunk {index} at offset {offset}")));

    std::fs::remove_file(&path).unwrap();
    let e = fetch_bytes(&repo, "app:v1", &key, dir.path())
        .await
        .unwrap_err();
    let msg = anyhow_chain(&e);
    assert!(
        msg.contains(&format!("chunk {index} at offset {offset}")) && msg.contains("not found"),
        "{msg}"
    );
}
