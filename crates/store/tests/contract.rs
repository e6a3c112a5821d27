//! One test body, `store_contract`, run against every backend: a local
//! directory and S3 (the in-process s3s-fs server), bare and through `open`.

// Helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use kindling_store::{
    open, open_with, Bytes, LocalStore, S3Options, S3Server, S3Store, Store, StoreError,
};

/// Deterministic bytes that differ from position to position, so a torn or
/// shifted read cannot match by accident.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed) * 97 + (i as u64 >> 8)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn is_invalid_key(result: Result<impl std::fmt::Debug, StoreError>) -> bool {
    matches!(result, Err(StoreError::InvalidKey { .. }))
}

/// The behaviour every store must have. Expects an empty store.
async fn store_contract(store: Arc<dyn Store>) {
    let url = store.url();
    assert_eq!(store.list("").await.unwrap(), Vec::<String>::new(), "{url}");

    // Missing objects.
    match store.get("chunks/ab/missing").await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "chunks/ab/missing"),
        other => panic!("{url}: get of a missing key gave {other:?}"),
    }
    let err = store.get("missing").await.unwrap_err();
    assert!(err.is_not_found() && !err.is_transient());
    assert_eq!(err.to_string(), "object not found: missing");
    assert!(!store.exists("chunks/ab/missing").await.unwrap());
    store.delete("chunks/ab/missing").await.unwrap();

    // Put, get, overwrite.
    store
        .put("manifests/00ff", Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert!(store.exists("manifests/00ff").await.unwrap());
    assert_eq!(store.get("manifests/00ff").await.unwrap(), &b"first"[..]);
    store
        .put("manifests/00ff", Bytes::from_static(b"second, longer"))
        .await
        .unwrap();
    assert_eq!(
        store.get("manifests/00ff").await.unwrap(),
        &b"second, longer"[..]
    );

    // put_if_absent.
    assert!(store
        .put_if_absent("chunks/ab/abc1", Bytes::from_static(b"one"))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("chunks/ab/abc1", Bytes::from_static(b"other"))
        .await
        .unwrap());
    assert_eq!(store.get("chunks/ab/abc1").await.unwrap(), &b"one"[..]);

    // Listing: recursive, sorted, by prefix.
    for key in [
        "chunks/ab/abc2",
        "chunks/cd/cde",
        "images/python-app:v1",
        "images/team/app:v2",
        "imagesX",
    ] {
        store.put(key, Bytes::from(key.to_owned())).await.unwrap();
    }
    let all = [
        "chunks/ab/abc1",
        "chunks/ab/abc2",
        "chunks/cd/cde",
        "images/python-app:v1",
        "images/team/app:v2",
        "imagesX",
        "manifests/00ff",
    ];
    assert_eq!(store.list("").await.unwrap(), all, "{url}");
    assert_eq!(
        store.list("chunks/").await.unwrap(),
        ["chunks/ab/abc1", "chunks/ab/abc2", "chunks/cd/cde"]
    );
    assert_eq!(
        store.list("chunks/ab/").await.unwrap(),
        ["chunks/ab/abc1", "chunks/ab/abc2"]
    );
    assert_eq!(
        store.list("images/").await.unwrap(),
        ["images/python-app:v1", "images/team/app:v2"]
    );
    assert_eq!(store.list("chunks/c").await.unwrap(), ["chunks/cd/cde"]);
    assert_eq!(store.list("images").await.unwrap(), all[3..6].to_vec());
    assert!(store.list("nothing/").await.unwrap().is_empty());
    assert!(store.list("chunks/ab/abc1/").await.unwrap().is_empty());
    assert_eq!(
        store.get("images/team/app:v2").await.unwrap(),
        &b"images/team/app:v2"[..]
    );

    // Delete.
    store.delete("chunks/ab/abc2").await.unwrap();
    store.delete("chunks/ab/abc2").await.unwrap();
    assert!(store
        .get("chunks/ab/abc2")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(!store.exists("chunks/ab/abc2").await.unwrap());
    assert_eq!(store.list("chunks/ab/").await.unwrap(), ["chunks/ab/abc1"]);

    // Invalid keys are refused by every operation.
    for bad in ["", "/abs", "a//b", "a/../b", ".", "a\0b", "sp ace", "a/"] {
        assert!(is_invalid_key(store.get(bad).await), "{url} get {bad:?}");
        assert!(is_invalid_key(store.put(bad, Bytes::new()).await));
        assert!(is_invalid_key(store.put_if_absent(bad, Bytes::new()).await));
        assert!(is_invalid_key(store.exists(bad).await));
        assert!(is_invalid_key(store.delete(bad).await));
    }
    assert!(is_invalid_key(store.list("/").await));
    assert!(is_invalid_key(store.list("../").await));
    assert!(is_invalid_key(store.get(&"k".repeat(1025)).await));

    // Large and empty objects.
    let big = pattern(1 << 20, 1);
    store.put("chunks/big/one", big.clone()).await.unwrap();
    assert_eq!(store.get("chunks/big/one").await.unwrap(), big);
    store.put("empty", Bytes::new()).await.unwrap();
    assert!(store.exists("empty").await.unwrap());
    assert_eq!(store.get("empty").await.unwrap().len(), 0);
    assert!(store.list("").await.unwrap().contains(&"empty".to_owned()));
    assert!(store.put_if_absent("empty2", Bytes::new()).await.unwrap());
    assert_eq!(store.get("empty2").await.unwrap().len(), 0);

    concurrent_overwrites(&store).await;

    // Clean up everything; the store is empty again.
    for key in store.list("").await.unwrap() {
        store.delete(&key).await.unwrap();
    }
    assert!(store.list("").await.unwrap().is_empty());
}

/// Writers overwrite one key with two different 512 KiB bodies while readers
/// read it: every read must return one of the bodies, whole.
async fn concurrent_overwrites(store: &Arc<dyn Store>) {
    const KEY: &str = "chunks/race/key";
    let bodies = [pattern(512 << 10, 2), pattern(512 << 10, 3)];
    assert_ne!(bodies[0], bodies[1]);
    store.put(KEY, bodies[0].clone()).await.unwrap();

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                for i in 0..6 {
                    store.put(KEY, bodies[(w + i) % 2].clone()).await.unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = store.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut reads = 0;
                for _ in 0..12 {
                    let got = store.get(KEY).await.unwrap();
                    assert!(
                        got == bodies[0] || got == bodies[1],
                        "read {} bytes matching neither body",
                        got.len()
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), 12);
    }
    let last = store.get(KEY).await.unwrap();
    assert!(last == bodies[0] || last == bodies[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("not-yet-created"));
    store_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_contract_through_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    store_contract(open(&url, &S3Options::default()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let store = S3Store::new(server.bucket(), "", &server.options()).unwrap();
    assert_eq!(store.url(), "s3://kindling");
    store_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_contract_with_prefix_through_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    // An object outside the prefix must stay invisible to the prefixed store.
    let bare = open_with(&server.url(""), &server.options(), None).unwrap();
    bare.put("outside", Bytes::from_static(b"x")).await.unwrap();
    bare.put("team/siblingX", Bytes::from_static(b"x"))
        .await
        .unwrap();

    let store = open(&server.url("team/sibling"), &server.options()).unwrap();
    assert_eq!(store.url(), "s3://kindling/team/sibling");
    store_contract(store.clone()).await;

    // The prefix is real: objects land under it in the bucket.
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(
        bare.list("").await.unwrap(),
        ["outside", "team/sibling/k", "team/siblingX"]
    );
    assert!(dir.path().join("kindling/team/sibling/k").is_file());
}

#[tokio::test]
async fn s3_wrong_credentials_are_permanent_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let options = S3Options {
        secret_access_key: Some("not-the-secret".into()),
        ..server.options()
    };
    let store = S3Store::new(server.bucket(), "", &options).unwrap();
    let err = store.get("manifests/x").await.unwrap_err();
    assert!(matches!(err, StoreError::Denied { .. }), "{err:?}");
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.starts_with("cannot get manifests/x in s3://kindling: access denied (http 403"),
        "{message}"
    );
    let err = store.put("k", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, StoreError::Denied { .. }) && !err.is_transient());
    let err = store.list("chunks/").await.unwrap_err();
    assert!(matches!(err, StoreError::Denied { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("cannot list chunks/* in s3://kindling"));

    let unknown = S3Options {
        access_key_id: Some("nobody".into()),
        ..server.options()
    };
    let store = S3Store::new(server.bucket(), "", &unknown).unwrap();
    let err = store.exists("k").await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");

    // Through `open`, a permanent error is not retried: it comes back at
    // once, not after the retry budget.
    let start = std::time::Instant::now();
    let store = open(&server.url(""), &options).unwrap();
    assert!(matches!(
        store.get("k").await,
        Err(StoreError::Denied { .. })
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn s3_missing_bucket_is_a_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let store = S3Store::new("no-such-bucket", "", &server.options()).unwrap();
    // s3s-fs answers a GET in a missing bucket with NoSuchKey (AWS says
    // NoSuchBucket, see the unit test of that mapping), but a listing
    // names the bucket.
    let err = store.list("").await.unwrap_err();
    assert!(!err.is_not_found() && !err.is_transient(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot list * in s3://no-such-bucket: http 404 NoSuchBucket"
    );
}

#[tokio::test]
async fn s3_stopped_server_gives_transient_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let store = S3Store::new(server.bucket(), "", &server.options()).unwrap();
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    drop(server);
    let err = store.get("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn s3_put_if_absent_uses_conditional_put() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let a = S3Store::new(server.bucket(), "", &server.options()).unwrap();
    let b = S3Store::new(server.bucket(), "", &server.options()).unwrap();
    assert!(a
        .put_if_absent("k", Bytes::from_static(b"a"))
        .await
        .unwrap());
    // A second client has no cached knowledge: the server itself refuses.
    assert!(!b
        .put_if_absent("k", Bytes::from_static(b"b"))
        .await
        .unwrap());
    assert_eq!(b.get("k").await.unwrap(), &b"a"[..]);
}

/// The server needs no runtime from its caller: it works from a plain test.
#[test]
fn s3_server_from_a_plain_test() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = open(&server.url("p"), &server.options()).unwrap();
    runtime.block_on(async {
        store.put("x/y", Bytes::from_static(b"z")).await.unwrap();
        assert_eq!(store.get("x/y").await.unwrap(), &b"z"[..]);
    });
    assert!(dir.path().join("kindling/p/x/y").is_file());
}

/// S3 lists at most 1000 keys per request; the store must follow the
/// continuation tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_list_pages_past_1000_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let store: Arc<dyn Store> =
        Arc::new(S3Store::new(server.bucket(), "p", &server.options()).unwrap());
    const KEYS: usize = 1010;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in (worker..KEYS).step_by(8) {
                let key = format!("chunks/{:02x}/{i:05}", i % 256);
                store.put(&key, Bytes::new()).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let keys = store.list("chunks/").await.unwrap();
    assert_eq!(keys.len(), KEYS);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}
