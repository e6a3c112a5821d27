//! `Retrying` over `FaultyStore` over a real `LocalStore`: which errors are
//! retried, how often, and for how long.

// Helpers outside #[test] functions unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kindling_store::{
    Bytes, FaultyStore, LocalStore, Op, RetryPolicy, Retrying, Store, StoreError,
};

/// Small durations so the tests are quick; generous bounds in the asserts
/// because the machine is shared.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        timeout: Duration::from_secs(10),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    faulty: Arc<FaultyStore<LocalStore>>,
    store: Retrying<Arc<FaultyStore<LocalStore>>>,
}

fn fixture(policy: RetryPolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyStore::new(LocalStore::new(dir.path().to_path_buf())));
    let store = Retrying::with_policy(faulty.clone(), policy);
    Fixture {
        _dir: dir,
        faulty,
        store,
    }
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let f = fixture(fast_policy());
    f.store.put("k", Bytes::from_static(b"v")).await.unwrap();
    f.faulty.reset_counts();

    f.faulty.fail_next(Op::Get, 2);
    assert_eq!(f.store.get("k").await.unwrap(), &b"v"[..]);
    assert_eq!(f.faulty.calls(Op::Get), 3);

    f.faulty.fail_next(Op::Put, 4);
    f.store.put("k", Bytes::from_static(b"w")).await.unwrap();
    assert_eq!(f.faulty.calls(Op::Put), 5);

    f.faulty.fail_next(Op::PutIfAbsent, 1);
    assert!(f.store.put_if_absent("n", Bytes::new()).await.unwrap());
    f.faulty.fail_next(Op::Exists, 1);
    assert!(f.store.exists("n").await.unwrap());
    f.faulty.fail_next(Op::List, 1);
    assert_eq!(f.store.list("").await.unwrap(), ["k", "n"]);
    f.faulty.fail_next(Op::Delete, 1);
    f.store.delete("n").await.unwrap();

    let counts = f.faulty.counts();
    assert_eq!(counts.gets, 3);
    assert_eq!(counts.puts, 5);
    assert_eq!(counts.puts_if_absent, 2);
    assert_eq!(counts.exists, 2);
    assert_eq!(counts.lists, 2);
    assert_eq!(counts.deletes, 2);
    assert_eq!(counts.total(), 16);
}

#[tokio::test]
async fn permanent_errors_and_not_found_are_not_retried() {
    let f = fixture(fast_policy());
    f.faulty.fail_next_permanent(Op::Put, 1);
    let err = f.store.put("k", Bytes::new()).await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::Injected {
            transient: false,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot put k in {}: injected permanent fault",
            f.store.url()
        )
    );
    assert_eq!(f.faulty.calls(Op::Put), 1);

    assert!(f.store.get("k").await.unwrap_err().is_not_found());
    assert_eq!(f.faulty.calls(Op::Get), 1);

    assert!(matches!(
        f.store.get("../k").await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert_eq!(f.faulty.calls(Op::Get), 2);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let f = fixture(fast_policy());
    f.faulty.fail_next(Op::Exists, 100);
    let err = f.store.exists("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(f.faulty.calls(Op::Exists), 5);

    let once = fixture(RetryPolicy {
        max_attempts: 1,
        ..fast_policy()
    });
    once.faulty.fail_next(Op::Get, 1);
    assert!(once.store.get("k").await.unwrap_err().is_transient());
    assert_eq!(once.faulty.calls(Op::Get), 1);
}

#[tokio::test]
async fn a_slow_call_times_out() {
    let f = fixture(RetryPolicy {
        timeout: Duration::from_millis(50),
        ..fast_policy()
    });
    f.faulty.set_op_latency(Op::Get, Duration::from_secs(5));
    let start = Instant::now();
    let err = f.store.get("k").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        format!("cannot get k in {}: timed out after 50ms", f.store.url())
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(f.faulty.calls(Op::Get), 1);
}

#[tokio::test]
async fn the_timeout_bounds_retries_too() {
    let f = fixture(RetryPolicy {
        max_attempts: 1_000_000,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_millis(200),
    });
    f.faulty.fail_next(Op::Get, 1_000_000);
    let start = Instant::now();
    let err = f.store.get("k").await.unwrap_err();
    let elapsed = start.elapsed();
    assert!(err.is_transient(), "{err:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let calls = f.faulty.calls(Op::Get);
    assert!((2..100).contains(&calls), "{calls} attempts");
}

#[tokio::test]
async fn corrupted_and_hidden_keys() {
    let f = fixture(fast_policy());
    let data = Bytes::from_static(b"0123456789");
    f.store.put("c", data.clone()).await.unwrap();
    f.store.put("h", data.clone()).await.unwrap();
    f.store.put("e", Bytes::new()).await.unwrap();

    f.faulty.corrupt_key("c");
    f.faulty.corrupt_key("e");
    let got = f.store.get("c").await.unwrap();
    assert_eq!(got.len(), data.len());
    let differing = got.iter().zip(&data).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 1);
    assert_eq!(f.store.get("e").await.unwrap(), &[0xff][..]);

    f.faulty.hide_key("h");
    assert!(f.store.get("h").await.unwrap_err().is_not_found());
    assert!(!f.store.exists("h").await.unwrap());
    assert_eq!(f.store.list("").await.unwrap(), ["c", "e"]);

    f.faulty.clear_faults();
    assert_eq!(f.store.get("c").await.unwrap(), data);
    assert!(f.store.exists("h").await.unwrap());
}

#[tokio::test]
async fn latency_applies_to_every_call() {
    let f = fixture(fast_policy());
    f.faulty.set_latency(Duration::from_millis(30));
    let start = Instant::now();
    assert!(!f.store.exists("k").await.unwrap());
    assert!(start.elapsed() >= Duration::from_millis(30));
}

/// `FaultyStore` wraps `Arc<dyn Store>` by default, as other crates hold it.
#[tokio::test]
async fn faulty_over_a_dyn_store() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().to_path_buf()));
    let faulty: FaultyStore = FaultyStore::new(inner);
    faulty.fail_next(Op::Put, 1);
    let err = faulty.put("k", Bytes::new()).await.unwrap_err();
    assert!(err.is_transient());
    faulty.put("k", Bytes::new()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(Retrying::new(Arc::new(faulty)));
    assert!(store.exists("k").await.unwrap());
}
