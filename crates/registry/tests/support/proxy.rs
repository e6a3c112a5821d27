//! An in-test reverse proxy in front of the real registry, and a token
//! service, for what the registry cannot do on its own in a test:
//!
//! * Bearer token auth. Distribution's own token auth needs a PKI (it
//!   checks JWTs signed by a configured certificate); instead the proxy
//!   enforces the protocol a client sees: 401 with a Bearer challenge
//!   naming the [`TokenServer`], and only tokens that server issued pass.
//! * Faults: 503s, bodies cut off or stalled half way, tokens that expire
//!   mid-pull.
//!
//! Both are hyper servers on 127.0.0.1:0 inside the test's runtime; the
//! proxy forwards with reqwest and buffers each response (test images are
//! tens of MiB).

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How long a stalled response stalls: far longer than the client's read
/// timeout in the tests.
const STALL: Duration = Duration::from_secs(60);

/// A server task that stops when dropped.
pub struct Server {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<F, Fut>(handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { port, task }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

/// Tokens a [`TokenServer`] issued and a [`Proxy`] accepts.
pub type Tokens = Arc<Mutex<HashSet<String>>>;

/// One request the token server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub service: Option<String>,
    pub scope: Option<String>,
    /// The user of the Basic credentials sent, if any.
    pub user: Option<String>,
}

pub struct TokenConfig {
    /// Credentials the token server requires; `None`: anonymous tokens.
    pub credentials: Option<(String, String)>,
    /// The JSON field the token is sent in (`token` or `access_token`).
    pub field: &'static str,
    /// Whether the proxy accepts the tokens issued (false: a token server
    /// and registry that disagree).
    pub valid: bool,
}

pub struct TokenServer {
    pub server: Server,
    pub tokens: Tokens,
    pub requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    pub async fn start(config: TokenConfig) -> TokenServer {
        let tokens: Tokens = Arc::default();
        let requests: Arc<Mutex<Vec<TokenRequest>>> = Arc::default();
        let config = Arc::new(config);
        let counter = Arc::new(AtomicU32::new(0));
        let (t, r) = (tokens.clone(), requests.clone());
        let server = serve(move |req: Request<Incoming>| {
            let (config, tokens, requests, counter) =
                (config.clone(), t.clone(), r.clone(), counter.clone());
            async move {
                let url = reqwest::Url::parse(&format!("http://token{}", req.uri()))
                    .expect("request uri");
                let param = |name: &str| {
                    url.query_pairs()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.into_owned())
                };
                let user = basic_user(&req);
                requests.lock().expect("lock").push(TokenRequest {
                    service: param("service"),
                    scope: param("scope"),
                    user: user.as_ref().map(|(u, _)| u.clone()),
                });
                if let Some(wanted) = &config.credentials {
                    if user.as_ref() != Some(wanted) {
                        let mut response = full(StatusCode::UNAUTHORIZED, "{}");
                        response.headers_mut().insert(
                            "www-authenticate",
                            "Basic realm=\"token\"".parse().expect("header"),
                        );
                        return response;
                    }
                }
                let token = format!("tok-{}", counter.fetch_add(1, Ordering::Relaxed));
                if config.valid {
                    tokens.lock().expect("lock").insert(token.clone());
                }
                let body = serde_json::json!({ config.field: token, "expires_in": 300 });
                full(StatusCode::OK, body.to_string())
            }
        })
        .await;
        TokenServer {
            server,
            tokens,
            requests,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.server.port)
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

/// The Basic credentials of a request, decoded.
fn basic_user(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Faults to inject into blob responses, each counted down as used, and
/// counters of what the proxy saw.
#[derive(Default)]
pub struct Faults {
    /// Answer this many blob requests with 503.
    pub fail_blobs: AtomicU32,
    /// Cut this many blob bodies off half way (connection dropped).
    pub truncate_blobs: AtomicU32,
    /// Stall this many blob bodies half way.
    pub stall_blobs: AtomicU32,
    /// Forget all tokens at the first blob request (an expired token).
    pub expire_tokens: AtomicBool,
    /// Corrupt one byte in the middle of this many blob bodies.
    pub corrupt_blobs: AtomicU32,
    pub blob_requests: AtomicU32,
    pub range_requests: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

pub struct Proxy {
    pub server: Server,
    pub faults: Arc<Faults>,
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    /// With a token server: its realm and the tokens to accept.
    bearer: Option<(String, Tokens)>,
    faults: Arc<Faults>,
}

impl Proxy {
    /// A proxy to the registry on `upstream_port`; with `bearer`, requests
    /// need a token from that token server.
    pub async fn start(upstream_port: u16, bearer: Option<&TokenServer>) -> Proxy {
        let faults = Arc::new(Faults::default());
        let state = Arc::new(ProxyState {
            upstream: format!("http://127.0.0.1:{upstream_port}"),
            client: reqwest::Client::new(),
            bearer: bearer.map(|t| (t.realm(), t.tokens.clone())),
            faults: faults.clone(),
        });
        let server = serve(move |req| handle(state.clone(), req)).await;
        Proxy { server, faults }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }
}

/// `REPO` of `/v2/REPO/manifests/...` or `/v2/REPO/blobs/...`.
fn repository_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/")?;
    let end = rest.find("/manifests/").or_else(|| rest.find("/blobs/"))?;
    Some(&rest[..end])
}

fn challenge(realm: &str, path: &str) -> Response<Body> {
    let scope = repository_of(path)
        .map(|r| format!(",scope=\"repository:{r}:pull\""))
        .unwrap_or_default();
    let mut response = full(
        StatusCode::UNAUTHORIZED,
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    );
    response.headers_mut().insert(
        "www-authenticate",
        format!("Bearer realm=\"{realm}\",service=\"kindling-test\"{scope}")
            .parse()
            .expect("header"),
    );
    response
}

async fn handle(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let faults = &state.faults;
    let is_blob = path.contains("/blobs/");
    if let Some((realm, tokens)) = &state.bearer {
        if is_blob && faults.expire_tokens.swap(false, Ordering::SeqCst) {
            tokens.lock().expect("lock").clear();
        }
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = token.is_some_and(|t| tokens.lock().expect("lock").contains(t));
        if !valid {
            return challenge(realm, &path);
        }
    }
    if is_blob {
        faults.blob_requests.fetch_add(1, Ordering::SeqCst);
        if req.headers().contains_key("range") {
            faults.range_requests.fetch_add(1, Ordering::SeqCst);
        }
        if take(&faults.fail_blobs) {
            return full(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    }

    let url = format!(
        "{}{}",
        state.upstream,
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let mut upstream = state.client.get(url);
    for name in ["accept", "range"] {
        if let Some(value) = req.headers().get(name) {
            upstream = upstream.header(name, value.as_bytes());
        }
    }
    let Ok(response) = upstream.send().await else {
        return full(StatusCode::BAD_GATEWAY, "upstream failed");
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let Ok(body) = response.bytes().await else {
        return full(StatusCode::BAD_GATEWAY, "upstream body failed");
    };
    let mut body = body.to_vec();
    let success = (200..300).contains(&status);
    if is_blob && success && !body.is_empty() && take(&faults.corrupt_blobs) {
        let middle = body.len() / 2;
        body[middle] ^= 0xff;
    }
    let length = body.len();
    let half = Bytes::from(body[..length / 2].to_vec());
    let out: Body = if is_blob && success && length > 1 && take(&faults.truncate_blobs) {
        let frames = futures_util::stream::iter([
            Ok(Frame::data(half)),
            Err(std::io::Error::other("cut off")),
        ]);
        StreamBody::new(frames).boxed_unsync()
    } else if is_blob && success && length > 1 && take(&faults.stall_blobs) {
        let stall = futures_util::stream::once(async {
            tokio::time::sleep(STALL).await;
            Err(std::io::Error::other("stalled"))
        });
        let frames = futures_util::stream::iter([Ok(Frame::data(half))]).chain(stall);
        StreamBody::new(frames).boxed_unsync()
    } else {
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync()
    };
    let mut builder = Response::builder().status(status);
    for name in [
        "content-type",
        "docker-content-digest",
        "content-range",
        "etag",
        "location",
        "accept-ranges",
    ] {
        if let Some(value) = headers.get(name) {
            builder = builder.header(name, value.as_bytes());
        }
    }
    builder = builder.header("content-length", length);
    builder.body(out).expect("response")
}
