//! S3 (and S3-compatible servers) as an object store, through `object_store`.
//!
//! `object_store` speaks the protocol (signing, path-style addressing,
//! conditional PUT); this module adds the key rules, the bucket prefix and
//! the error classification. Its own retries are switched off: retrying is
//! [`crate::Retrying`]'s job, with one policy for every backend, and two
//! nested retry loops would multiply attempts and hide the time spent.
//!
//! A PUT of a whole object is atomic on S3, so `put` needs no care.
//! `put_if_absent` sends `If-None-Match: *` (AWS S3 since 2024, MinIO, Ceph,
//! R2, s3s). A server that answers it with 501 makes this store fall back,
//! for its lifetime, to HEAD then PUT, where two writers racing on one key
//! may both see "absent" and both write; for content-addressed chunks both
//! write the same bytes, so the race costs only bandwidth. A server that
//! silently ignores the header cannot be detected: there `put_if_absent`
//! overwrites.
//!
//! `object_store` does not expose HTTP status codes of failed requests as
//! values, so the classification reads them from its error chain: transport
//! errors by their typed kind, statuses and S3 error codes from the text of
//! the request error. This is the only place that reads error text.

use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::error::op_key;
use crate::{validate_key, validate_prefix, Bytes, Op, Store, StoreError};

/// Region used when none is configured: the one AWS SDKs fall back to, and
/// the one S3-compatible servers accept by convention.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Time allowed for one HTTP request, body included. Chunks are a few MiB;
/// even at 10 Mbit/s a 4 MiB body takes 3.2 s, so 20 s only cuts requests
/// that have stalled, leaving [`crate::Retrying`] time for another attempt
/// inside its default 30 s budget.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Time allowed to open a connection: loopback and in-region endpoints
/// answer in milliseconds, so 5 s means the endpoint is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach an S3 endpoint. Libraries never read the environment: the
/// CLI builds this with [`S3Options::from_env`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (e.g. "http://127.0.0.1:9000");
    /// `None` is AWS S3. When set, requests use path-style addressing.
    pub endpoint: Option<String>,
    /// Region for request signing; `None` is "us-east-1".
    pub region: Option<String>,
    /// Access key id; `None` (with no secret) sends unsigned requests.
    pub access_key_id: Option<String>,
    /// Secret access key; given together with `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
    /// Whether an `http://` endpoint is allowed. Default: false.
    pub allow_http: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Options {
    /// Reads the usual AWS variables through `getenv`: `AWS_ENDPOINT_URL`,
    /// `AWS_REGION` (else `AWS_DEFAULT_REGION`, else "us-east-1"),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    /// Empty values count as unset; an `http://` endpoint allows HTTP.
    pub fn from_env(getenv: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| getenv(name).filter(|v| !v.is_empty());
        let endpoint = get("AWS_ENDPOINT_URL");
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"));
        S3Options {
            region: Some(
                get("AWS_REGION")
                    .or_else(|| get("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
            ),
            endpoint,
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
            allow_http,
        }
    }
}

/// A bucket, optionally under a key prefix, on an S3-compatible server.
#[derive(Debug)]
pub struct S3Store {
    client: AmazonS3,
    /// Prepended to every key, without slashes at either end; may be empty.
    prefix: String,
    url: String,
    /// Set once the server has answered a conditional PUT with 501.
    no_conditional_put: AtomicBool,
}

impl S3Store {
    /// A store for `bucket`, with keys stored under `prefix` ("" or a
    /// '/'-separated path; slashes at either end are ignored).
    pub fn new(bucket: &str, prefix: &str, options: &S3Options) -> Result<S3Store, StoreError> {
        let prefix = prefix.trim_matches('/').to_owned();
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let config_error = |reason: &str| StoreError::Config {
            store: url.clone(),
            reason: reason.to_owned(),
        };
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(config_error(
                "bucket name must be non-empty letters, digits, '-', '.' or '_'",
            ));
        }
        if !prefix.is_empty() {
            validate_key(&prefix).map_err(|_| config_error("prefix is not a valid key"))?;
        }

        let client_options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_allow_http(options.allow_http);
        if let Some(endpoint) = &options.endpoint {
            let lower = endpoint.to_ascii_lowercase();
            if lower.starts_with("http://") && !options.allow_http {
                return Err(config_error("endpoint is http:// but allow_http is off"));
            }
            if !lower.starts_with("http://") && !lower.starts_with("https://") {
                return Err(config_error("endpoint must start with http:// or https://"));
            }
        }
        let retry = RetryConfig {
            max_retries: 0,
            retry_timeout: REQUEST_TIMEOUT,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(options.region.as_deref().unwrap_or(DEFAULT_REGION))
            .with_client_options(client_options)
            .with_retry(retry)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        match (&options.access_key_id, &options.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret);
                if let Some(token) = &options.session_token {
                    builder = builder.with_token(token);
                }
            }
            // No credentials: anonymous requests, for public buckets. This
            // also keeps object_store from asking the EC2 instance metadata
            // service, which instance-profile deployments would need but
            // which must not be contacted anywhere else.
            (None, None) => builder = builder.with_skip_signature(true),
            _ => {
                return Err(config_error(
                    "access key id and secret access key must be given together",
                ))
            }
        }
        let client = builder
            .build()
            .map_err(|e| config_error(&e.to_string().to_lowercase()))?;
        Ok(S3Store {
            client,
            prefix,
            url,
            no_conditional_put: AtomicBool::new(false),
        })
    }

    /// The object path of `key` (already validated).
    fn path(&self, key: &str) -> Result<Path, StoreError> {
        let full = if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|e| StoreError::InvalidKey {
            key: key.to_owned(),
            reason: e.to_string().to_lowercase(),
        })
    }

    fn error(&self, op: Op, key: &str, e: object_store::Error) -> StoreError {
        map_error(op, key, &self.url, e)
    }
}

#[async_trait::async_trait]
impl Store for S3Store {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        let result = self
            .client
            .get(&path)
            .await
            .map_err(|e| self.error(Op::Get, key, e))?;
        result
            .bytes()
            .await
            .map_err(|e| self.error(Op::Get, key, e))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        self.client
            .put(&path, PutPayload::from_bytes(data))
            .await
            .map_err(|e| self.error(Op::Put, key, e))?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        if !self.no_conditional_put.load(Ordering::Relaxed) {
            let options = PutOptions::from(PutMode::Create);
            let payload = PutPayload::from_bytes(data.clone());
            match self.client.put_opts(&path, payload, options).await {
                Ok(_) => return Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => return Ok(false),
                Err(e) if Classified::of(&e).status == Some(501) => {
                    tracing::warn!(
                        store = %self.url,
                        "server does not support conditional put; \
                         falling back to check-then-put, which can race"
                    );
                    self.no_conditional_put.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(self.error(Op::PutIfAbsent, key, e)),
            }
        }
        // Fallback: not atomic, see the module documentation.
        match self.client.head(&path).await {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.error(Op::PutIfAbsent, key, e)),
        }
        self.client
            .put(&path, PutPayload::from_bytes(data))
            .await
            .map_err(|e| self.error(Op::PutIfAbsent, key, e))?;
        Ok(true)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        match self.client.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(Op::Exists, key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        validate_prefix(prefix)?;
        // S3 lists by string prefix, but object_store lists by directory:
        // list the directory holding the prefix's last '/', then filter.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let full_dir = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, _) => dir.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{dir}", self.prefix),
        };
        let dir_path = if full_dir.is_empty() {
            None
        } else {
            Some(Path::parse(&full_dir).map_err(|e| StoreError::InvalidKey {
                key: prefix.to_owned(),
                reason: e.to_string().to_lowercase(),
            })?)
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut stream = self.client.list(dir_path.as_ref());
        let mut keys = Vec::new();
        while let Some(meta) = stream
            .try_next()
            .await
            .map_err(|e| self.error(Op::List, prefix, e))?
        {
            let location: &str = meta.location.as_ref();
            if let Some(key) = location.strip_prefix(strip.as_str()) {
                if key.starts_with(prefix) && validate_key(key).is_ok() {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let path = self.path(key)?;
        match self.client.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(Op::Delete, key, e)),
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }
}

/// What the error chain of an `object_store` error says about the failure.
#[derive(Debug, Default)]
struct Classified {
    /// HTTP status of the failed request, if the server answered.
    status: Option<u16>,
    /// S3 error code from the response body (`SlowDown`, `AccessDenied`…).
    code: Option<String>,
    /// A 200 answer whose body reported an error (`InternalError`).
    error_in_body: bool,
    /// Transport failure, if the request got no answer.
    transport: Option<HttpErrorKind>,
}

impl Classified {
    fn of(e: &object_store::Error) -> Classified {
        let mut out = Classified::default();
        let mut next: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(err) = next {
            if let Some(http) = err.downcast_ref::<HttpError>() {
                out.transport.get_or_insert(http.kind());
            }
            let text = err.to_string();
            if out.status.is_none() {
                out.status = status_in(&text);
            }
            if out.code.is_none() {
                out.code = between(&text, "<Code>", "</Code>").map(str::to_owned);
            }
            if text.starts_with("Server returned error response") {
                out.error_in_body = true;
            }
            next = err.source();
        }
        out
    }

    fn is_transient(&self) -> bool {
        if let Some(status) = self.status {
            return status >= 500
                || status == 408
                || status == 429
                // AWS answers a request whose body arrived too slowly with
                // 400 RequestTimeout.
                || self.code.as_deref() == Some("RequestTimeout")
                || self.code.as_deref() == Some("SlowDown");
        }
        if self.error_in_body {
            return true;
        }
        matches!(
            self.transport,
            Some(
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            )
        )
    }

    fn is_denied(&self) -> bool {
        matches!(self.status, Some(401 | 403))
    }

    /// A short summary for messages.
    fn detail(&self, fallback: &str) -> String {
        match (self.status, &self.code, self.transport) {
            (Some(status), Some(code), _) => format!("http {status} {code}"),
            (Some(status), None, _) => format!("http {status}"),
            (None, _, _) if self.error_in_body => "server reported an error".to_owned(),
            (None, _, Some(HttpErrorKind::Connect)) => "connection failed".to_owned(),
            (None, _, Some(HttpErrorKind::Timeout)) => "request timed out".to_owned(),
            (None, _, Some(HttpErrorKind::Request | HttpErrorKind::Interrupted)) => {
                "connection lost".to_owned()
            }
            (None, _, Some(HttpErrorKind::Decode)) => "bad response".to_owned(),
            _ => fallback.to_owned(),
        }
    }
}

/// The status in object_store's request error text, which reads
/// "... status code: 503 Service Unavailable: <body>".
fn status_in(text: &str) -> Option<u16> {
    let rest = &text[text.find("status code: ")? + "status code: ".len()..];
    let digits = rest.get(..3)?;
    let status: u16 = digits.parse().ok()?;
    (100..600).contains(&status).then_some(status)
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

fn map_error(op: Op, key: &str, store: &str, e: object_store::Error) -> StoreError {
    let key = op_key(op, key);
    let store = store.to_owned();
    let classified = Classified::of(&e);
    // A missing bucket is a configuration error, not a missing object.
    if matches!(e, object_store::Error::NotFound { .. })
        && op != Op::List
        && classified.code.as_deref() != Some("NoSuchBucket")
    {
        return StoreError::NotFound { key };
    }
    let denied = classified.is_denied()
        || matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        );
    let fallback = match &e {
        object_store::Error::AlreadyExists { .. } => "already exists",
        object_store::Error::Precondition { .. } => "precondition failed",
        object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
            "not supported"
        }
        object_store::Error::PermissionDenied { .. } => "permission denied",
        object_store::Error::Unauthenticated { .. } => "not authenticated",
        _ => "request failed",
    };
    let detail = classified.detail(fallback);
    if denied {
        return StoreError::Denied {
            op,
            key,
            store,
            detail,
            source: Box::new(e),
        };
    }
    StoreError::Remote {
        op,
        key,
        store,
        transient: classified.is_transient(),
        detail,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_env() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let o = S3Options::from_env(env(&[]));
        assert_eq!(o.region.as_deref(), Some("us-east-1"));
        assert_eq!(o.endpoint, None);
        assert!(!o.allow_http);

        let o = S3Options::from_env(env(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", ""),
        ]));
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(o.region.as_deref(), Some("eu-west-1"));
        assert_eq!(o.access_key_id.as_deref(), Some("id"));
        assert_eq!(o.secret_access_key.as_deref(), Some("secret"));
        assert_eq!(o.session_token, None);
        assert!(o.allow_http);
        let debug = format!("{o:?}");
        assert!(!debug.contains("secret\""), "{debug}");

        let o = S3Options::from_env(env(&[
            ("AWS_REGION", "ap-south-1"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL", "https://s3.example"),
        ]));
        assert_eq!(o.region.as_deref(), Some("ap-south-1"));
        assert!(!o.allow_http);
    }

    #[test]
    fn config_errors() {
        let http = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            ..S3Options::default()
        };
        let err = S3Store::new("b", "", &http).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad configuration for s3://b: endpoint is http:// but allow_http is off"
        );
        let half = S3Options {
            access_key_id: Some("id".into()),
            ..S3Options::default()
        };
        assert!(matches!(
            S3Store::new("b", "p", &half),
            Err(StoreError::Config { .. })
        ));
        assert!(S3Store::new("", "", &S3Options::default()).is_err());
        assert!(S3Store::new("b", "a/../c", &S3Options::default()).is_err());
        let store = S3Store::new("b", "/a/b/", &S3Options::default()).unwrap();
        assert_eq!(store.url(), "s3://b/a/b");
    }

    #[test]
    fn status_parsing() {
        assert_eq!(
            status_in("Error performing PUT http://x in 1ms - Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>"),
            Some(503)
        );
        assert_eq!(status_in("no status here"), None);
        assert_eq!(status_in("status code: 5"), None);
        assert_eq!(between("a<Code>X</Code>b", "<Code>", "</Code>"), Some("X"));
    }

    #[test]
    fn missing_bucket_is_not_a_missing_object() {
        let body = "Server returned non-2xx status code: 404 Not Found: \
                    <Error><Code>NoSuchBucket</Code></Error>";
        let not_found = |text: &str| object_store::Error::NotFound {
            path: "k".into(),
            source: text.to_owned().into(),
        };
        let err = map_error(Op::Get, "k", "s3://b", not_found(body));
        assert!(matches!(
            err,
            StoreError::Remote {
                transient: false,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "cannot get k in s3://b: http 404 NoSuchBucket"
        );
        let err = map_error(Op::Get, "k", "s3://b", not_found("404 NoSuchKey"));
        assert!(err.is_not_found());
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        };
        for (text, transient) in [
            ("Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>", true),
            ("Server returned non-2xx status code: 500 Internal Server Error: ", true),
            ("Server returned non-2xx status code: 429 Too Many Requests: ", true),
            ("Server returned non-2xx status code: 400 Bad Request: <Code>RequestTimeout</Code>", true),
            ("Server returned error response: <Code>InternalError</Code>", true),
            ("Server returned non-2xx status code: 400 Bad Request: <Code>InvalidArgument</Code>", false),
            ("something else entirely", false),
        ] {
            let err = map_error(Op::Put, "k", "s3://b", generic(text));
            assert_eq!(err.is_transient(), transient, "{text}: {err}");
        }
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_transient() {
        // Bind then drop a listener: nothing listens on that port now.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let options = S3Options {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            allow_http: true,
            access_key_id: Some("id".into()),
            secret_access_key: Some("secret".into()),
            ..S3Options::default()
        };
        let store = S3Store::new("bucket", "", &options).unwrap();
        let err = store.get("k").await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cannot get k in s3://bucket: connection failed"
        );
    }
}
