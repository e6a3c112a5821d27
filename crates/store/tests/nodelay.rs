//! Reads of 512 KiB objects from the in-process S3 server must not stall on
//! Nagle's algorithm and delayed ACKs: without TCP_NODELAY on the server's
//! sockets, most reads take 40 ms or more instead of a few ms.
//!
//! Timing test, so it lives alone in its own binary: cargo runs test
//! binaries one after another, and the other S3 tests would otherwise load
//! the two cores while it measures. It compares the median of 21 reads.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kindling_store::{Bytes, S3Server, S3Store, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reads_are_not_delayed() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path()).unwrap();
    let store = S3Store::new(server.bucket(), "", &server.options()).unwrap();
    let body: Vec<u8> = (0..512u32 << 10).map(|i| (i % 251) as u8).collect();
    store.put("c", Bytes::from(body)).await.unwrap();
    store.get("c").await.unwrap();
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        store.get("c").await.unwrap();
        times.push(start.elapsed());
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(25),
        "median {median:?} per 512 KiB get: {times:?}"
    );
}
