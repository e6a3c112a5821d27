//! The HTTP surface: [`RunningNode`] serves the stripe protocol (see the
//! crate documentation) over a [`CacheNode`]; [`MetricsServer`] serves
//! only `/metrics` and `/health`.
//!
//! One task accepts connections and owns one task per connection (mini-redis
//! style, at most [`MAX_CONNECTIONS`]). Stopping drops the listener and
//! aborts every connection task, which closes the sockets at once, as a
//! dying node would; requests in flight are cut off. Sockets are bound
//! with `SO_REUSEADDR` so a stopped node can start again on its address
//! while old connections sit in `TIME_WAIT`.
//!
//! HTTP/2 is tuned so one stripe is one round trip: the default 64 KiB
//! windows would stall a 128 KiB stripe for a WINDOW_UPDATE. The client's
//! receive windows govern GETs; these govern PUTs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::{CacheNode, NodeError, StripeKey, MAX_STRIPE_BYTES};

/// Connections served at once; more wait in the listen backlog. Each may
/// buffer up to its HTTP/2 receive window (4 MiB) of request bodies.
pub const MAX_CONNECTIONS: usize = 1024;

/// HTTP/2 receive window per stream: 2 MiB, above [`MAX_STRIPE_BYTES`],
/// so any stripe PUT goes out without waiting for a window update.
const STREAM_WINDOW: u32 = 2 << 20;
/// HTTP/2 receive window per connection: 4 MiB, a few stripe PUTs in
/// flight per connection.
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Largest HTTP/2 frame the node accepts: 512 KiB, so a stripe body of
/// the default layout arrives in one DATA frame (the protocol default is
/// 16 KiB).
const MAX_FRAME: u32 = 512 << 10;
/// Concurrent streams per HTTP/2 connection.
const MAX_STREAMS: u32 = 512;
/// HTTP/2 send buffer per stream: a whole stripe, so a GET body is
/// handed to the connection in one piece.
const SEND_BUFFER: usize = MAX_STRIPE_BYTES + (64 << 10);

/// The response header naming the tier that served a stripe.
pub const TIER_HEADER: &str = "x-kindling-tier";

/// Misbehaviour a test switches on in a running node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Sleep this long before answering each stripe request (GET, HEAD,
    /// PUT). Default none.
    pub delay: Option<Duration>,
    /// Flip bytes in every GET body (the first of each 4 KiB), leaving the
    /// stored stripe intact. Default off.
    pub corrupt: bool,
}

type Body = Full<Bytes>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routes {
    /// Stripes, health and metrics.
    Node,
    /// Health and metrics only.
    Metrics,
}

#[derive(Debug)]
struct Context {
    node: Arc<CacheNode>,
    faults: Mutex<Faults>,
    routes: Routes,
}

impl Context {
    fn faults(&self) -> Faults {
        *self
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A listener and its connections, stopped on [`Server::stop`] or drop.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    context: Arc<Context>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    fn spawn(
        listener: TcpListener,
        node: Arc<CacheNode>,
        routes: Routes,
    ) -> Result<Server, NodeError> {
        let addr = listener.local_addr().map_err(NodeError::LocalAddr)?;
        let context = Arc::new(Context {
            node,
            faults: Mutex::new(Faults::default()),
            routes,
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, context.clone(), stopped));
        Ok(Server {
            addr,
            context,
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn stop(&mut self) {
        self.stop.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A cache node serving HTTP. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct RunningNode {
    server: Server,
}

impl RunningNode {
    /// Binds `addr` (port 0 picks one; see [`RunningNode::addr`]) and
    /// serves `node` on it.
    pub async fn start(node: Arc<CacheNode>, addr: SocketAddr) -> Result<RunningNode, NodeError> {
        RunningNode::start_on(node, bind(addr)?).await
    }

    /// Serves `node` on a listener the caller bound.
    pub async fn start_on(
        node: Arc<CacheNode>,
        listener: TcpListener,
    ) -> Result<RunningNode, NodeError> {
        Ok(RunningNode {
            server: Server::spawn(listener, node, Routes::Node)?,
        })
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// The storage being served.
    pub fn node(&self) -> &Arc<CacheNode> {
        &self.server.context.node
    }

    /// Switches faults on or off for the requests that start from now.
    pub fn set_faults(&self, faults: Faults) {
        *self
            .server
            .context
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.server.context.faults()
    }

    /// Stops accepting, closes every connection (requests in flight are
    /// cut off) and returns once the listener and the sockets are closed.
    /// The storage stays open: start it again with
    /// [`RunningNode::start`] on the same address.
    pub async fn shutdown(mut self) {
        self.server.stop().await;
    }
}

/// A listener serving only `GET /metrics` and `GET /health` (for
/// `--metrics-listen`). Dropping it stops it too.
#[derive(Debug)]
pub struct MetricsServer {
    server: Server,
}

impl MetricsServer {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        self.server.stop().await;
    }
}

/// Serves `node`'s metrics page on `addr` (HTTP/1.1 and HTTP/2).
pub async fn serve_metrics(
    node: Arc<CacheNode>,
    addr: SocketAddr,
) -> Result<MetricsServer, NodeError> {
    Ok(MetricsServer {
        server: Server::spawn(bind(addr)?, node, Routes::Metrics)?,
    })
}

fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    listen().map_err(|source| NodeError::Listen { addr, source })
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buf_size(SEND_BUFFER)
        // Every read cancels its slowest stripe requests once K have come
        // back, and a cancel is a stream reset. h2's default (20 pending
        // resets) takes that for a rapid-reset attack and answers GOAWAY
        // under load; the bound stays, sized for that traffic.
        .max_pending_accept_reset_streams(RESET_STREAMS);
    builder
}

/// Streams a client may reset before the node accepts them; see `builder`.
const RESET_STREAMS: usize = 4096;

async fn accept_loop(
    listener: TcpListener,
    context: Arc<Context>,
    mut stopped: oneshot::Receiver<()>,
) {
    let builder = Arc::new(builder());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A send or a drop of the sender: stop either way.
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                Ok((stream, peer)) => {
                    // Without it a response tail waits for the peer's
                    // delayed ACK (about 40 ms on Linux).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    let context = context.clone();
                    let builder = builder.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let context = context.clone();
                            async move { Ok::<_, Infallible>(handle(&context, request).await) }
                        });
                        if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn handle(context: &Context, request: Request<Incoming>) -> Response<Body> {
    let head = request.method() == Method::HEAD;
    let mut response = route(context, request).await;
    if head {
        // A HEAD answer has the headers of the GET and no body. hyper's
        // HTTP/1 drops the body itself; its HTTP/2 would send it, which a
        // client must treat as a protocol error.
        let len = response.body().size_hint().exact().unwrap_or(0);
        response
            .headers_mut()
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
        *response.body_mut() = Full::default();
    }
    response
}

async fn route(context: &Context, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    let stripe = path
        .strip_prefix("/v1/stripes/")
        .filter(|_| context.routes == Routes::Node);
    if let Some(rest) = stripe {
        let key = rest
            .split_once('/')
            .and_then(|(name, index)| StripeKey::parse(name, index));
        return match key {
            Some(key) => stripe_request(context, key, request).await,
            None => text(StatusCode::BAD_REQUEST, "bad stripe name or index\n"),
        };
    }
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
    match path {
        "/health" if read_only => text(StatusCode::OK, "ok"),
        "/metrics" if read_only => {
            let mut response = text(StatusCode::OK, context.node.metrics_text());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/health" | "/metrics" => method_not_allowed("GET, HEAD"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn stripe_request(
    context: &Context,
    key: StripeKey,
    request: Request<Incoming>,
) -> Response<Body> {
    let faults = context.faults();
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    let node = &context.node;
    match *request.method() {
        Method::GET => {
            let start = Instant::now();
            let response = match node.get(&key.name, key.index).await {
                Some((bytes, tier)) => {
                    let bytes = if faults.corrupt {
                        corrupt(&bytes)
                    } else {
                        bytes
                    };
                    stripe_response(bytes.len() as u64, tier.as_str(), Full::new(bytes))
                }
                None => empty(StatusCode::NOT_FOUND),
            };
            node.observe_get_latency(start.elapsed());
            response
        }
        Method::HEAD => match node.head(&key.name, key.index) {
            Some((len, tier)) => stripe_response(len, tier.as_str(), Full::default()),
            None => empty(StatusCode::NOT_FOUND),
        },
        Method::PUT => {
            let bytes = match read_body(request).await {
                Ok(bytes) => bytes,
                Err(response) => return response,
            };
            match node.put(&key.name, key.index, bytes).await {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(NodeError::TooLarge { .. }) => {
                    text(StatusCode::PAYLOAD_TOO_LARGE, "stripe too large\n")
                }
                Err(e) => {
                    tracing::warn!(name = %key.name, index = key.index, error = %e, "cannot store stripe");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "cannot store stripe\n")
                }
            }
        }
        _ => method_not_allowed("GET, HEAD, PUT"),
    }
}

/// Reads a PUT body of at most [`MAX_STRIPE_BYTES`] into a buffer of its
/// own (exactly sized, so the memory tier's byte count is what it holds).
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "stripe too large\n");
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_STRIPE_BYTES as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            tracing::debug!(error = %e, "cannot read stripe body");
            text(StatusCode::BAD_REQUEST, "cannot read body\n")
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_STRIPE_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf.into_boxed_slice()))
}

/// A copy of `bytes` with the first byte of every 4 KiB flipped.
fn corrupt(bytes: &Bytes) -> Bytes {
    let mut copy = bytes.to_vec();
    for byte in copy.iter_mut().step_by(4096) {
        *byte ^= 0xff;
    }
    Bytes::from(copy)
}

fn stripe_response(len: u64, tier: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(TIER_HEADER, HeaderValue::from_static(tier));
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_flips_a_byte_per_page() {
        let bytes = Bytes::from(vec![0u8; 10_000]);
        let bad = corrupt(&bytes);
        assert_eq!(bad.iter().filter(|&&b| b == 0xff).count(), 3);
        assert_eq!(corrupt(&Bytes::from_static(b"a"))[0], b'a' ^ 0xff);
        assert!(corrupt(&Bytes::new()).is_empty());
    }
}
