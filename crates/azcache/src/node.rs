//! One cache node as the client sees it: a lazily opened, multiplexed
//! HTTP/2 (h2c, prior knowledge) connection, and a down-marker with
//! backoff so a dead node costs a fast local failure instead of a connect
//! attempt per request.
//!
//! A node is marked down when connecting to it fails or times out, and
//! when its connection goes unanswered for an HTTP/2 PING (the keep-alive
//! finds a wedged node or a half-open connection), or closed before it
//! carried any answer. A connection closed later (reset, GOAWAY) is
//! reopened by the next request, once. Request
//! timeouts do not mark it down: when the client itself is short of CPU,
//! every node seems slow at once, and marking them all down would turn a
//! slow hit into a certain miss. A read waits only for the fastest `k`
//! anyway, so one slow node costs nothing.
//!
//! Connecting runs in its own task, bounded by the connect timeout, so a
//! request that gives up (its own timeout) does not abort the attempt that
//! other requests are waiting on; at most one attempt per node is in flight
//! and at most one is started per backoff window: no retry storms.
//!
//! Lock order: only `Node::state` is ever locked, never across an `.await`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::client::{AzError, ClientConfig, Counters};
use crate::stripe::HEADER_LEN;

/// Largest stripe the node protocol carries (request and response bodies).
pub const MAX_STRIPE_BYTES: usize = 1 << 20;

/// HTTP/2 flow-control window per stream: a whole stripe of the largest
/// size, so no stripe ever waits for a WINDOW_UPDATE round trip.
const STREAM_WINDOW: u32 = MAX_STRIPE_BYTES as u32 + HEADER_LEN as u32;
/// Per connection: 32 stripes of 128 KiB (a 512 KiB chunk at 4 + m) in
/// flight on one node before the window limits.
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Largest DATA frame we accept: a 128 KiB stripe (plus header) in one
/// frame, fewer frame headers and wakeups.
const MAX_FRAME: u32 = 256 << 10;
/// Locally reset streams h2 remembers (for `reset_stream_duration`, 1 s):
/// a thousand cancelled stripes a second per node.
const RESET_STREAMS: usize = 1024;
/// HTTP/2 PING interval, to find half-open connections and wedged nodes.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A PING unanswered this long breaks the connection (and marks the node
/// down); generous, since a busy node may be slow to answer.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Node {
    pub addr: SocketAddr,
    /// `http://addr`, the prefix of every request URI.
    base: String,
    state: Mutex<State>,
    /// Woken when a connect attempt ends.
    connected: Notify,
    connect_timeout: Duration,
    down_backoff: Duration,
    down_backoff_max: Duration,
}

#[derive(Debug, Default)]
struct State {
    conn: Option<SendRequest<Full<Bytes>>>,
    connecting: bool,
    /// No requests are sent before this instant.
    down_until: Option<Instant>,
    /// Consecutive connect failures and broken connections; sets the
    /// backoff.
    failures: u32,
    /// Whether the current connection has carried an answer.
    answered: bool,
}

impl Node {
    pub fn new(addr: SocketAddr, cfg: &ClientConfig) -> Node {
        Node {
            addr,
            base: format!("http://{addr}"),
            state: Mutex::new(State::default()),
            connected: Notify::new(),
            connect_timeout: cfg.connect_timeout,
            down_backoff: cfg.down_backoff,
            down_backoff_max: cfg.down_backoff_max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every
        // critical section is a few plain assignments.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the node is marked down right now.
    pub fn is_down(&self) -> bool {
        self.lock()
            .down_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Starts opening a connection unless one is open or being opened, or
    /// the node is marked down. Does not wait.
    pub fn warm(self: &Arc<Node>, counters: &Arc<Counters>) {
        let (node, counters) = (Arc::clone(self), Arc::clone(counters));
        tokio::spawn(async move {
            let _ = node.conn(&counters).await;
        });
    }

    /// A ready connection, opening one if there is none.
    async fn conn(
        self: &Arc<Node>,
        counters: &Arc<Counters>,
    ) -> Result<SendRequest<Full<Bytes>>, AzError> {
        loop {
            let notified = {
                let mut st = self.lock();
                if let Some(until) = st.down_until {
                    if Instant::now() < until {
                        return Err(AzError::NodeDown { node: self.addr });
                    }
                }
                if let Some(conn) = &st.conn {
                    if !conn.is_closed() {
                        return Ok(conn.clone());
                    }
                    st.conn = None;
                }
                if !st.connecting {
                    st.connecting = true;
                    tokio::spawn(Arc::clone(self).connect(Arc::clone(counters)));
                }
                // Created under the lock, so the attempt's wakeup, which
                // comes after its state change, cannot be missed.
                self.connected.notified()
            };
            notified.await;
        }
    }

    async fn connect(self: Arc<Node>, counters: Arc<Counters>) {
        Counters::bump(&counters.connects);
        let attempt = async {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .adaptive_window(false)
                .max_frame_size(MAX_FRAME)
                .max_send_buf_size(MAX_STRIPE_BYTES + HEADER_LEN)
                .keep_alive_interval(KEEP_ALIVE)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                // Reads cancel their slowest stripe streams all the time.
                // h2 remembers 50 reset streams by default; frames that
                // arrive for a forgotten one are answered with RST_STREAM
                // and count toward a per-connection limit that ends in
                // GOAWAY. Remembering more costs a few bytes each.
                .max_concurrent_reset_streams(RESET_STREAMS)
                .handshake(TokioIo::new(tcp))
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>((sender, conn))
        };
        let result = tokio::time::timeout(self.connect_timeout, attempt).await;
        {
            let mut st = self.lock();
            st.connecting = false;
            match result {
                Ok(Ok((sender, conn))) => {
                    let node = Arc::clone(&self);
                    tokio::spawn(async move {
                        match conn.await {
                            Ok(()) => {}
                            // No PING answer: a wedged node or a half-open
                            // connection; reconnecting at once would likely
                            // hang the same way.
                            Err(e) if e.is_timeout() => {
                                let backoff = node.mark_down(&mut node.lock());
                                tracing::warn!(node = %node.addr, error = %e, ?backoff, "cache node stopped answering, marked down");
                            }
                            // Reset, GOAWAY, EOF after answers: the next
                            // request reconnects, once; if that fails the
                            // node is marked down. Before any answer: a
                            // node that accepts and drops connections, to
                            // be left alone like one that refuses them.
                            Err(e) => {
                                let mut st = node.lock();
                                if st.answered {
                                    tracing::info!(node = %node.addr, error = %e, "cache node connection closed");
                                } else {
                                    let backoff = node.mark_down(&mut st);
                                    tracing::warn!(node = %node.addr, error = %e, ?backoff, "cache node dropped a new connection, marked down");
                                }
                            }
                        }
                    });
                    st.conn = Some(sender);
                    st.answered = false;
                }
                Ok(Err(e)) => {
                    Counters::bump(&counters.connect_failures);
                    let backoff = self.mark_down(&mut st);
                    tracing::warn!(node = %self.addr, error = %e, ?backoff, "cache node unreachable, marked down");
                }
                Err(_) => {
                    Counters::bump(&counters.connect_failures);
                    let backoff = self.mark_down(&mut st);
                    tracing::warn!(node = %self.addr, timeout = ?self.connect_timeout, ?backoff, "cache node connect timed out, marked down");
                }
            }
        }
        self.connected.notify_waiters();
    }

    /// Marks the node down for a backoff that doubles with each
    /// consecutive failure, from `down_backoff` up to `down_backoff_max`,
    /// with up to 25 % random jitter so clients do not return in step.
    fn mark_down(&self, st: &mut State) -> Duration {
        st.failures = st.failures.saturating_add(1);
        let doubling = 1u32 << st.failures.saturating_sub(1).min(16);
        let base = self
            .down_backoff
            .saturating_mul(doubling)
            .min(self.down_backoff_max);
        let backoff = base + base.mul_f64(jitter() * 0.25);
        st.down_until = Some(Instant::now() + backoff);
        backoff
    }

    /// A request got an answer (any status): the node is alive, and the
    /// next failure starts the backoff from the bottom again.
    pub fn record_answer(&self) {
        let mut st = self.lock();
        st.failures = 0;
        st.answered = true;
    }

    fn uri(&self, name_hex: &str, index: u8) -> String {
        format!("{}/v1/stripes/{name_hex}/{index}", self.base)
    }

    /// `GET` one stripe: `Ok(None)` on 404.
    pub async fn get_stripe(
        self: &Arc<Node>,
        counters: &Arc<Counters>,
        name_hex: &str,
        index: u8,
    ) -> Result<Option<Bytes>, AzError> {
        let mut conn = self.conn(counters).await?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.uri(name_hex, index))
            .body(Full::new(Bytes::new()))
            .map_err(|e| AzError::Request(e.to_string()))?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| self.http_error(e))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => {
                return Err(AzError::Status {
                    node: self.addr,
                    status: status.as_u16(),
                })
            }
        }
        let body = Limited::new(resp.into_body(), MAX_STRIPE_BYTES)
            .collect()
            .await
            .map_err(|e| AzError::Body {
                node: self.addr,
                reason: e.to_string(),
            })?;
        Ok(Some(body.to_bytes()))
    }

    /// `PUT` one stripe.
    pub async fn put_stripe(
        self: &Arc<Node>,
        counters: &Arc<Counters>,
        name_hex: &str,
        index: u8,
        stripe: Bytes,
    ) -> Result<(), AzError> {
        let mut conn = self.conn(counters).await?;
        let req = Request::builder()
            .method(Method::PUT)
            .uri(self.uri(name_hex, index))
            .header(http::header::CONTENT_LENGTH, stripe.len())
            .body(Full::new(stripe))
            .map_err(|e| AzError::Request(e.to_string()))?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| self.http_error(e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(AzError::Status {
                node: self.addr,
                status: resp.status().as_u16(),
            })
        }
    }

    fn http_error(&self, e: hyper::Error) -> AzError {
        AzError::Http {
            node: self.addr,
            reason: e.to_string(),
        }
    }
}

/// A number in `[0, 1)`, different on every call; for backoff jitter only.
fn jitter() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    (RandomState::new().hash_one(n) >> 11) as f64 / (1u64 << 53) as f64
}
