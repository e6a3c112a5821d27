//! A stand-in cache node for the client tests: the node protocol over h2c
//! on loopback, stripes in a `HashMap`, and switches to make it slow,
//! corrupt or down. The real server is `crates/cachenode`; this stub keeps
//! the client's tests independent of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a stub node holds and how it behaves; shared with its tasks.
#[derive(Debug, Default)]
pub struct StubState {
    pub stripes: Mutex<HashMap<(String, u8), Bytes>>,
    /// Every request waits this long before it is served.
    pub delay: Mutex<Duration>,
    /// GET answers with one byte of the stripe flipped.
    pub corrupt: AtomicBool,
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub connections: AtomicU64,
}

/// One stub node on `127.0.0.1`; it can be stopped (connections dropped,
/// port closed) and started again on the same port.
#[derive(Debug)]
pub struct Stub {
    pub addr: SocketAddr,
    pub state: Arc<StubState>,
    running: Mutex<Option<(watch::Sender<bool>, JoinHandle<()>)>>,
}

impl Stub {
    pub async fn start() -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Stub {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(StubState::default()),
            running: Mutex::new(None),
        };
        stub.serve(listener);
        stub
    }

    /// `n` stubs.
    pub async fn cluster(n: usize) -> Vec<Stub> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(Stub::start().await);
        }
        out
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, rx) = watch::channel(false);
        let state = Arc::clone(&self.state);
        let task = tokio::spawn(accept_loop(listener, state, rx));
        *self.running.lock().unwrap() = Some((tx, task));
    }

    /// Closes the port and every open connection, as a crashed node would.
    pub async fn stop(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((tx, task)) = running {
            let _ = tx.send(true);
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    pub fn set_corrupt(&self, on: bool) {
        self.state.corrupt.store(on, Ordering::SeqCst);
    }

    pub fn insert(&self, name_hex: &str, index: u8, stripe: Bytes) {
        self.state
            .stripes
            .lock()
            .unwrap()
            .insert((name_hex.to_owned(), index), stripe);
    }

    pub fn stripe_count(&self) -> usize {
        self.state.stripes.lock().unwrap().len()
    }

    pub fn gets(&self) -> u64 {
        self.state.gets.load(Ordering::SeqCst)
    }

    pub fn puts(&self) -> u64 {
        self.state.puts.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<StubState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                tcp.set_nodelay(true).unwrap();
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&state);
                conns.push(tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .initial_stream_window_size(2 << 20)
                        .initial_connection_window_size(8 << 20)
                        .max_frame_size(256 << 10)
                        // Readers cancel the streams of the slowest
                        // stripes; h2's rapid-reset guard (20 by default)
                        // would answer a burst of them with GOAWAY.
                        .max_pending_accept_reset_streams(4096)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }));
            }
        }
    }
    for c in conns {
        c.abort();
    }
}

async fn handle(req: Request<Incoming>, state: &StubState) -> Response<Full<Bytes>> {
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = |s: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = s;
        r
    };
    let path = req.uri().path().to_owned();
    if path == "/health" {
        return status(StatusCode::OK);
    }
    let key = path
        .strip_prefix("/v1/stripes/")
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(name, index)| Some((name.to_owned(), index.parse::<u8>().ok()?)));
    let Some(key) = key else {
        return status(StatusCode::NOT_FOUND);
    };
    match *req.method() {
        Method::PUT => {
            state.puts.fetch_add(1, Ordering::SeqCst);
            let Ok(body) = Limited::new(req.into_body(), 1 << 20).collect().await else {
                return status(StatusCode::PAYLOAD_TOO_LARGE);
            };
            state.stripes.lock().unwrap().insert(key, body.to_bytes());
            status(StatusCode::NO_CONTENT)
        }
        Method::GET | Method::HEAD => {
            state.gets.fetch_add(1, Ordering::SeqCst);
            let found = state.stripes.lock().unwrap().get(&key).cloned();
            match found {
                None => status(StatusCode::NOT_FOUND),
                Some(_) if req.method() == Method::HEAD => status(StatusCode::OK),
                Some(mut b) => {
                    if state.corrupt.load(Ordering::SeqCst) {
                        let mut v = b.to_vec();
                        let mid = v.len() / 2;
                        v[mid] ^= 0x40;
                        b = Bytes::from(v);
                    }
                    Response::new(Full::new(b))
                }
            }
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED),
    }
}
