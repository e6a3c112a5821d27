//! The HTTP surface over real loopback sockets, with an HTTP/2
//! prior-knowledge client as the AZ cache client uses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kindling_cachenode::{
    serve_metrics, CacheNode, Faults, NodeConfig, RunningNode, MAX_STRIPE_BYTES,
};
use kindling_chunk::ChunkName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type H2Client = Client<HttpConnector, Full<Bytes>>;

fn client() -> H2Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(2 << 20)
        .http2_initial_connection_window_size(8 << 20)
        .http2_max_frame_size(512 << 10)
        .build(connector)
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn tier(&self) -> Option<&str> {
        self.headers
            .get("x-kindling-tier")
            .and_then(|v| v.to_str().ok())
    }
}

async fn call(
    client: &H2Client,
    method: Method,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> Answer {
    try_call(client, method, addr, path, body)
        .await
        .expect("request")
}

/// The first request after a node restarted: the client may still hold
/// the old connection and fail once before it reconnects, as a real
/// client would.
async fn call_after_restart(client: &H2Client, addr: SocketAddr, path: &str) -> Answer {
    for _ in 0..3 {
        if let Ok(answer) = try_call(client, Method::GET, addr, path, Bytes::new()).await {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no answer from the restarted node");
}

async fn try_call(
    client: &H2Client,
    method: Method,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> Result<Answer, hyper_util::client::legacy::Error> {
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(body))
        .expect("request");
    let response = client.request(request).await?;
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn stripe_path(name: &ChunkName, index: u8) -> String {
    format!("/v1/stripes/{}/{index}", name.to_hex())
}

fn stripe(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn config(dir: &Path, memory: u64, disk: u64) -> NodeConfig {
    NodeConfig {
        memory_bytes: memory,
        disk_dir: dir.to_path_buf(),
        disk_bytes: disk,
    }
}

async fn start(config: NodeConfig) -> RunningNode {
    let node = Arc::new(CacheNode::open(config).expect("open"));
    RunningNode::start(node, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Every stripe file under the flash directory.
fn flash_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for sub in std::fs::read_dir(dir.join("stripes")).expect("stripes") {
        for file in std::fs::read_dir(sub.expect("sub").path()).expect("sub") {
            files.push(file.expect("file").path());
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_and_misses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(dir.path(), 8 << 20, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let name = ChunkName([0x5a; 32]);
    let body = stripe(1, 128 << 10);

    let put = call(
        &client,
        Method::PUT,
        addr,
        &stripe_path(&name, 3),
        body.clone(),
    )
    .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);

    let get = call(
        &client,
        Method::GET,
        addr,
        &stripe_path(&name, 3),
        Bytes::new(),
    )
    .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.body, body);
    assert_eq!(get.tier(), Some("memory"));
    assert_eq!(get.headers["content-length"], "131072");

    let head = call(
        &client,
        Method::HEAD,
        addr,
        &stripe_path(&name, 3),
        Bytes::new(),
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "131072");
    assert!(head.body.is_empty());

    for path in [stripe_path(&name, 4), stripe_path(&ChunkName([1; 32]), 3)] {
        assert_eq!(
            call(&client, Method::GET, addr, &path, Bytes::new())
                .await
                .status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&client, Method::HEAD, addr, &path, Bytes::new())
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }

    // An empty stripe is a stripe.
    let empty = stripe_path(&name, 0);
    assert_eq!(
        call(&client, Method::PUT, addr, &empty, Bytes::new())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let get = call(&client, Method::GET, addr, &empty, Bytes::new()).await;
    assert_eq!((get.status, get.body.len()), (StatusCode::OK, 0));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(dir.path(), 8 << 20, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let hex = "ab".repeat(32);
    for path in [
        format!("/v1/stripes/{}/1", hex.to_uppercase()),
        format!("/v1/stripes/{}/1", &hex[..62]),
        format!("/v1/stripes/{hex}/256"),
        format!("/v1/stripes/{hex}/x"),
        format!("/v1/stripes/{hex}/1/extra"),
        format!("/v1/stripes/{hex}"),
    ] {
        for method in [Method::GET, Method::PUT, Method::HEAD] {
            let answer = call(
                &client,
                method.clone(),
                addr,
                &path,
                Bytes::from_static(b"x"),
            )
            .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {path}");
        }
    }
    let path = format!("/v1/stripes/{hex}/1");
    let too_big = Bytes::from(vec![7u8; MAX_STRIPE_BYTES + 1]);
    assert_eq!(
        call(&client, Method::PUT, addr, &path, too_big)
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        call(&client, Method::GET, addr, &path, Bytes::new())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let largest = Bytes::from(vec![7u8; MAX_STRIPE_BYTES]);
    assert_eq!(
        call(&client, Method::PUT, addr, &path, largest.clone())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&client, Method::GET, addr, &path, Bytes::new())
            .await
            .body,
        largest
    );

    let post = call(&client, Method::POST, addr, &path, Bytes::new()).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers["allow"], "GET, HEAD, PUT");
    assert_eq!(
        call(&client, Method::GET, addr, "/v2/x", Bytes::new())
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Memory holds one 100 KiB stripe.
    let running = start(config(dir.path(), 150 << 10, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let health = call(&client, Method::GET, addr, "/health", Bytes::new()).await;
    assert_eq!(
        (health.status, &health.body[..]),
        (StatusCode::OK, &b"ok"[..])
    );

    let (a, b) = (ChunkName([1; 32]), ChunkName([2; 32]));
    for name in [&a, &b] {
        let put = call(
            &client,
            Method::PUT,
            addr,
            &stripe_path(name, 0),
            stripe(9, 100 << 10),
        )
        .await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
    }
    // b in memory; a demoted to flash; a's second read promotes it.
    let tiers: Vec<_> = [&b, &a, &a, &a]
        .into_iter()
        .map(|name| stripe_path(name, 0))
        .collect();
    let mut seen = Vec::new();
    for path in &tiers {
        let answer = call(&client, Method::GET, addr, path, Bytes::new()).await;
        seen.push(answer.tier().map(str::to_owned));
    }
    assert_eq!(
        seen,
        ["memory", "flash", "flash", "memory"]
            .map(|t| Some(t.to_owned()))
            .to_vec()
    );
    call(
        &client,
        Method::GET,
        addr,
        &stripe_path(&ChunkName([3; 32]), 0),
        Bytes::new(),
    )
    .await;

    let metrics = call(&client, Method::GET, addr, "/metrics", Bytes::new()).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/plain; version=0.0.4"));
    let text = std::str::from_utf8(&metrics.body).expect("utf-8");
    assert_eq!(
        metric(text, "kindling_node_hits_total{tier=\"memory\"}"),
        2.0
    );
    assert_eq!(
        metric(text, "kindling_node_hits_total{tier=\"flash\"}"),
        2.0
    );
    assert_eq!(metric(text, "kindling_node_misses_total"), 1.0);
    assert_eq!(metric(text, "kindling_node_puts_total"), 2.0);
    assert_eq!(metric(text, "kindling_node_promotions_total"), 1.0);
    assert_eq!(metric(text, "kindling_node_demotions_total"), 2.0);
    assert_eq!(
        metric(text, "kindling_node_evictions_total{tier=\"memory\"}"),
        2.0
    );
    assert_eq!(metric(text, "kindling_node_entries{tier=\"memory\"}"), 1.0);
    assert_eq!(metric(text, "kindling_node_entries{tier=\"flash\"}"), 2.0);
    assert_eq!(
        metric(text, "kindling_node_bytes{tier=\"flash\"}"),
        200.0 * 1024.0
    );
    assert_eq!(
        metric(text, "kindling_node_served_bytes_total{tier=\"flash\"}"),
        200.0 * 1024.0
    );
    assert_eq!(
        metric(text, "kindling_node_get_duration_seconds_count"),
        5.0
    );
    assert_eq!(
        metric(
            text,
            "kindling_node_get_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        5.0
    );
    assert_eq!(metric(text, "kindling_node_corrupt_total"), 0.0);

    // The separate metrics listener, over plain HTTP/1.1.
    let metrics_server =
        serve_metrics(running.node().clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("metrics listener");
    let page = http1_get(metrics_server.addr(), "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("kindling_node_puts_total 2\n"));
    let stripes = http1_get(metrics_server.addr(), &stripe_path(&a, 0)).await;
    assert!(stripes.starts_with("HTTP/1.1 404"), "{stripes}");
    // The node's own listener speaks HTTP/1.1 too.
    assert!(http1_get(addr, "/health").await.starts_with("HTTP/1.1 200"));
    metrics_server.shutdown().await;
    running.shutdown().await;
}

async fn http1_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_flash_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(dir.path(), 1 << 20, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let names: Vec<ChunkName> = (0..20u8).map(|n| ChunkName([n; 32])).collect();
    for (n, name) in names.iter().enumerate() {
        let put = call(
            &client,
            Method::PUT,
            addr,
            &stripe_path(name, 1),
            stripe(n as u8, 100 << 10),
        )
        .await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
    }
    running.shutdown().await;
    assert!(
        try_call(&client, Method::GET, addr, "/health", Bytes::new())
            .await
            .is_err()
    );

    // Same directory, same address, the same client reconnecting.
    let running = start(config(dir.path(), 1 << 20, 64 << 20)).await;
    assert_eq!(running.addr().ip(), addr.ip());
    let node = Arc::clone(running.node());
    running.shutdown().await;
    let running = RunningNode::start(node, addr)
        .await
        .expect("restart on the same address");
    call_after_restart(&client, addr, "/health").await;
    for (n, name) in names.iter().enumerate() {
        let get = call(
            &client,
            Method::GET,
            addr,
            &stripe_path(name, 1),
            Bytes::new(),
        )
        .await;
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(get.body, stripe(n as u8, 100 << 10));
        assert_eq!(get.tier(), Some("flash"));
    }
    assert_eq!(running.node().stats().flash.entries, 20);
    running.shutdown().await;

    // A smaller flash tier at the next start keeps the newest entries.
    let node = CacheNode::open(config(dir.path(), 0, 500 << 10)).expect("reopen smaller");
    let stats = node.stats();
    assert_eq!((stats.flash.entries, stats.flash.evictions), (5, 15));
    assert_eq!(flash_files(dir.path()).len(), 5);
    assert!(node.head(&names[19], 1).is_some());
    assert!(node.head(&names[14], 1).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_flash_file_is_a_miss_and_is_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No memory tier: every GET reads flash.
    let running = start(config(dir.path(), 0, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let (good, bad, short) = (ChunkName([1; 32]), ChunkName([2; 32]), ChunkName([3; 32]));
    for name in [&good, &bad, &short] {
        call(
            &client,
            Method::PUT,
            addr,
            &stripe_path(name, 0),
            stripe(4, 64 << 10),
        )
        .await;
    }
    for file in flash_files(dir.path()) {
        let file_name = file
            .file_name()
            .and_then(|f| f.to_str())
            .expect("name")
            .to_owned();
        let mut raw = std::fs::read(&file).expect("read");
        if file_name.starts_with(&bad.to_hex()) {
            let last = raw.len() - 1;
            raw[last] ^= 0x01;
        } else if file_name.starts_with(&short.to_hex()) {
            raw.truncate(raw.len() - 10);
        } else {
            continue;
        }
        std::fs::write(&file, raw).expect("write");
    }
    for name in [&bad, &short] {
        let head = call(
            &client,
            Method::HEAD,
            addr,
            &stripe_path(name, 0),
            Bytes::new(),
        )
        .await;
        assert_eq!(head.status, StatusCode::OK, "HEAD does not read the file");
        let get = call(
            &client,
            Method::GET,
            addr,
            &stripe_path(name, 0),
            Bytes::new(),
        )
        .await;
        assert_eq!(get.status, StatusCode::NOT_FOUND);
        let head = call(
            &client,
            Method::HEAD,
            addr,
            &stripe_path(name, 0),
            Bytes::new(),
        )
        .await;
        assert_eq!(head.status, StatusCode::NOT_FOUND);
    }
    let get = call(
        &client,
        Method::GET,
        addr,
        &stripe_path(&good, 0),
        Bytes::new(),
    )
    .await;
    assert_eq!(
        (get.status, get.body),
        (StatusCode::OK, stripe(4, 64 << 10))
    );
    let stats = running.node().stats();
    assert_eq!(
        (stats.corrupt, stats.flash.entries, stats.misses),
        (2, 1, 2)
    );
    assert_eq!(flash_files(dir.path()).len(), 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_delay_corrupt_and_stop_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(dir.path(), 8 << 20, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let name = ChunkName([8; 32]);
    let path = stripe_path(&name, 2);
    let body = stripe(3, 128 << 10);
    call(&client, Method::PUT, addr, &path, body.clone()).await;

    running.set_faults(Faults {
        delay: Some(Duration::from_millis(150)),
        corrupt: false,
    });
    let start_time = Instant::now();
    let get = call(&client, Method::GET, addr, &path, Bytes::new()).await;
    assert!(start_time.elapsed() >= Duration::from_millis(150));
    assert_eq!(get.body, body);
    // Health is not delayed.
    let start_time = Instant::now();
    call(&client, Method::GET, addr, "/health", Bytes::new()).await;
    assert!(start_time.elapsed() < Duration::from_millis(150));

    running.set_faults(Faults {
        delay: None,
        corrupt: true,
    });
    let get = call(&client, Method::GET, addr, &path, Bytes::new()).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.body.len(), body.len());
    assert_ne!(get.body, body);
    assert_eq!(get.body[0], body[0] ^ 0xff);
    running.set_faults(Faults::default());
    assert_eq!(running.faults(), Faults::default());
    assert_eq!(
        call(&client, Method::GET, addr, &path, Bytes::new())
            .await
            .body,
        body
    );

    // Stop: the address refuses connections.
    running.shutdown().await;
    assert!(try_call(&client, Method::GET, addr, &path, Bytes::new())
        .await
        .is_err());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // Start again with the disk kept: a flash hit.
    let node = Arc::new(CacheNode::open(config(dir.path(), 8 << 20, 64 << 20)).expect("open"));
    let running = RunningNode::start(node, addr).await.expect("restart");
    let get = call_after_restart(&client, addr, &path).await;
    assert_eq!((get.status, get.tier()), (StatusCode::OK, Some("flash")));
    running.shutdown().await;

    // Start again empty: a miss, and the files are gone.
    let node =
        Arc::new(CacheNode::open_empty(config(dir.path(), 8 << 20, 64 << 20)).expect("open"));
    let running = RunningNode::start(node, addr).await.expect("restart");
    assert_eq!(
        call_after_restart(&client, addr, &path).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(flash_files(dir.path()).is_empty());
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_off_a_request_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(dir.path(), 8 << 20, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let path = stripe_path(&ChunkName([1; 32]), 0);
    call(&client, Method::PUT, addr, &path, stripe(1, 1000)).await;
    running.set_faults(Faults {
        delay: Some(Duration::from_secs(30)),
        corrupt: false,
    });
    let pending = tokio::spawn({
        let client = client.clone();
        let path = path.clone();
        async move {
            try_call(&client, Method::GET, addr, &path, Bytes::new())
                .await
                .map(|a| a.status)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    running.shutdown().await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the request ends when the node stops")
        .expect("task");
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_gets_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Half the stripes fit in memory; the rest come from flash.
    let running = start(config(dir.path(), 2 << 20, 64 << 20)).await;
    let (addr, client) = (running.addr(), client());
    let names: Vec<ChunkName> = (0..32u8).map(|n| ChunkName([n; 32])).collect();
    for (n, name) in names.iter().enumerate() {
        call(
            &client,
            Method::PUT,
            addr,
            &stripe_path(name, 0),
            stripe(n as u8, 128 << 10),
        )
        .await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..8 {
        for (n, name) in names.iter().enumerate() {
            let (client, path) = (client.clone(), stripe_path(name, 0));
            tasks.spawn(async move {
                let get = call(&client, Method::GET, addr, &path, Bytes::new()).await;
                assert_eq!(get.status, StatusCode::OK, "round {round}");
                assert_eq!(get.body, stripe(n as u8, 128 << 10));
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("get");
    }
    let stats = running.node().stats();
    assert_eq!(stats.memory.hits + stats.flash.hits, 256);
    assert!(stats.memory.bytes <= 2 << 20);
    running.shutdown().await;
}

/// A request body of several frames and no length: the node must count.
struct Chunks(Vec<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = (!self.0.is_empty()).then(|| self.0.remove(0));
        std::task::Poll::Ready(next.map(|data| Ok(hyper::body::Frame::data(data))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_without_a_length_is_limited_while_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(config(dir.path(), 8 << 20, 64 << 20)).await;
    let addr = running.addr();
    let client: Client<HttpConnector, Chunks> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let path = stripe_path(&ChunkName([4; 32]), 9);
    let put = |parts: Vec<Bytes>| {
        let request = Request::put(format!("http://{addr}{path}"))
            .body(Chunks(parts))
            .expect("request");
        let client = client.clone();
        async move { client.request(request).await.expect("put").status() }
    };
    let half = stripe(1, 600 << 10);
    assert_eq!(
        put(vec![half.clone(), half.clone()]).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let (a, b) = (stripe(2, 300 << 10), stripe(3, 100));
    assert_eq!(
        put(vec![a.clone(), b.clone()]).await,
        StatusCode::NO_CONTENT
    );
    let get = call(&self::client(), Method::GET, addr, &path, Bytes::new()).await;
    assert_eq!(get.body, [a, b].concat());

    // HEAD over HTTP/1.1 keeps the stripe's length.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("HEAD {path} HTTP/1.1\r\nhost: node\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!("content-length: {}\r\n", (300 << 10) + 100)),
        "{answer}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_on_a_listener_the_caller_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(CacheNode::open(config(dir.path(), 1 << 20, 1 << 20)).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let running = RunningNode::start_on(node, listener).await.expect("start");
    assert_eq!(running.addr(), addr);
    let health = call(&client(), Method::GET, addr, "/health", Bytes::new()).await;
    assert_eq!(health.status, StatusCode::OK);
    running.shutdown().await;
}
