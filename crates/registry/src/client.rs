//! The HTTP side of a pull: one repository on one registry, with
//! authentication, retries and bounded reads.
//!
//! A [`Client`] lives for one pull. It keeps the `Authorization` value that
//! last worked (Basic, or a Bearer token for this repository's pull scope)
//! so that concurrent blob downloads share one token; a 401 later in the
//! pull (an expired token) runs the challenge again once for that request.
//!
//! Retries: a request that fails in transport or gets 429/5xx is sent again
//! after an exponential backoff with a little jitter, up to
//! `max_retries` times. Blob downloads retry at their own level instead
//! (see `crate::pull`), because a body can fail half way and is then
//! resumed with a `Range` request. Integrity failures are never retried: a
//! registry that served corrupt bytes once will likely do it again, and
//! the caller should hear about it.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;

use crate::auth::{basic_header, parse_challenges, Challenge, Credentials, TokenResponse};
use crate::error::{is_transient_status, shorten, RegistryError};
use crate::reference::Reference;
use crate::PullOptions;

/// First retry delay; doubled for each further retry.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest delay between two tries.
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A `Retry-After` longer than this is not waited for (the retry happens
/// after the normal backoff and likely fails the same way).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Token responses are a few KiB (JWTs with long scopes).
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// How much of an error response body is read for its message.
const MAX_ERROR_BODY: u64 = 16 << 10;

/// HTTP access to one repository of a registry.
pub(crate) struct Client {
    http: reqwest::Client,
    /// `http[s]://host[:port]/v2/REPOSITORY/`
    base: Url,
    pub(crate) registry: String,
    pub(crate) repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value to send, once a challenge asked for one.
    auth: Mutex<Option<String>>,
    pub(crate) max_retries: u32,
}

impl Client {
    pub(crate) fn new(reference: &Reference, opts: &PullOptions) -> Result<Client, RegistryError> {
        let scheme = if opts.insecure { "http" } else { "https" };
        let base = format!(
            "{scheme}://{}/v2/{}/",
            reference.api_host(),
            reference.repository
        );
        let base = Url::parse(&base).map_err(|e| RegistryError::InvalidReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("kindling/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .build()
            .map_err(RegistryError::Client)?;
        Ok(Client {
            http,
            base,
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            credentials: opts.credentials.clone(),
            auth: Mutex::new(None),
            max_retries: opts.max_retries,
        })
    }

    /// `GET /v2/REPOSITORY/PATH`, authenticated, with up to `retries`
    /// retries of transport errors and transient statuses. Returns the
    /// response whatever its status (except 401, which becomes an error);
    /// see [`check_status`].
    pub(crate) async fn get(
        &self,
        path: &str,
        headers: HeaderMap,
        what: &str,
        retries: u32,
    ) -> Result<Response, RegistryError> {
        let url = self.base.join(path).map_err(|e| RegistryError::Malformed {
            what: what.to_owned(),
            reason: format!("cannot build its URL: {e}"),
        })?;
        let sent_auth = self.current_auth();
        let response = self
            .send(&url, &headers, sent_auth.as_deref(), what, retries)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let auth = self.authenticate(&response, sent_auth.as_deref()).await?;
        let response = self
            .send(&url, &headers, Some(&auth), what, retries)
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(self.rejected("the registry refused the new authorization"));
        }
        Ok(response)
    }

    fn current_auth(&self) -> Option<String> {
        match self.auth.lock() {
            Ok(auth) => auth.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_auth(&self, value: String) {
        match self.auth.lock() {
            Ok(mut auth) => *auth = Some(value),
            Err(poisoned) => *poisoned.into_inner() = Some(value),
        }
    }

    fn rejected(&self, detail: &str) -> RegistryError {
        if self.credentials.is_none() {
            RegistryError::AuthRequired {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
            }
        } else {
            RegistryError::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                detail: format!(": {detail}"),
            }
        }
    }

    /// Answers a 401: works out the `Authorization` value its challenge
    /// asks for (fetching a token if needed) and stores it for later
    /// requests. `sent` is what the refused request carried.
    async fn authenticate(
        &self,
        response: &Response,
        sent: Option<&str>,
    ) -> Result<String, RegistryError> {
        let values = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let auth = match parse_challenges(values) {
            None => {
                return Err(RegistryError::Auth {
                    registry: self.registry.clone(),
                    reason: "401 without a Basic or Bearer challenge".to_owned(),
                })
            }
            Some(Challenge::Basic) => {
                let Some(credentials) = &self.credentials else {
                    return Err(self.rejected(""));
                };
                let header = basic_header(credentials);
                if sent == Some(header.as_str()) {
                    return Err(self.rejected("wrong user name or password"));
                }
                header
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let token = self.fetch_token(&realm, service.as_deref(), &scope).await?;
                format!("Bearer {token}")
            }
        };
        self.set_auth(auth.clone());
        Ok(auth)
    }

    /// Asks the token service named by a Bearer challenge for a token,
    /// with the Basic credentials if there are any.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let auth_error = |reason: String| RegistryError::Auth {
            registry: self.registry.clone(),
            reason,
        };
        let mut url = Url::parse(realm)
            .map_err(|e| auth_error(format!("token realm '{}': {e}", shorten(realm))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(auth_error(format!(
                "token realm '{}' is not an http(s) URL",
                shorten(realm)
            )));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let basic = self.credentials.as_ref().map(basic_header);
        let what = format!("a token from {}", shorten(realm));
        let response = self
            .send(
                &url,
                &HeaderMap::new(),
                basic.as_deref(),
                &what,
                self.max_retries,
            )
            .await?;
        match response.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED => {
                return Err(self.rejected("the token service refused the credentials"))
            }
            StatusCode::FORBIDDEN => {
                return Err(RegistryError::Denied {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                })
            }
            _ => return Err(self.status_error(response, &what).await),
        }
        let body = read_limited(response, MAX_TOKEN_RESPONSE, &what, &self.registry).await?;
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Malformed {
                what: format!("the token response from {}", shorten(realm)),
                reason: e.to_string(),
            })?;
        let token = token.into_token().ok_or_else(|| RegistryError::Malformed {
            what: format!("the token response from {}", shorten(realm)),
            reason: "no token or access_token".to_owned(),
        })?;
        // The token goes into a header: it must be printable ASCII.
        if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
            return Err(RegistryError::Malformed {
                what: format!("the token response from {}", shorten(realm)),
                reason: "the token is not a valid header value".to_owned(),
            });
        }
        Ok(token)
    }

    /// One GET with retries of transport errors and transient statuses.
    async fn send(
        &self,
        url: &Url,
        headers: &HeaderMap,
        auth: Option<&str>,
        what: &str,
        retries: u32,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            let mut request = self.http.get(url.clone()).headers(headers.clone());
            if let Some(auth) = auth {
                request = request.header(AUTHORIZATION, auth);
            }
            let delay = match request.send().await {
                Ok(response) if is_transient_status(response.status().as_u16()) => {
                    if attempt >= retries {
                        return Ok(response);
                    }
                    retry_after(&response)
                }
                Ok(response) => return Ok(response),
                Err(source) => {
                    let error = RegistryError::Http {
                        registry: self.registry.clone(),
                        what: what.to_owned(),
                        source,
                    };
                    if attempt >= retries || !error.is_transient() {
                        return Err(error);
                    }
                    None
                }
            };
            attempt += 1;
            tokio::time::sleep(delay.unwrap_or_else(|| backoff(attempt))).await;
        }
    }

    /// Turns a response that is not 2xx into the matching error.
    pub(crate) async fn check_status(
        &self,
        response: Response,
        what: &str,
    ) -> Result<Response, RegistryError> {
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                registry: self.registry.clone(),
                what: what.to_owned(),
                detail: error_detail(response).await,
            }),
            StatusCode::UNAUTHORIZED => Err(self.rejected("the registry refused the request")),
            StatusCode::FORBIDDEN => Err(RegistryError::Denied {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
            }),
            _ => Err(self.status_error(response, what).await),
        }
    }

    async fn status_error(&self, response: Response, what: &str) -> RegistryError {
        RegistryError::Status {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status: response.status().as_u16(),
            detail: error_detail(response).await,
        }
    }
}

/// The delay before retry number `attempt` (1-based): exponential, capped,
/// plus up to a quarter of it as jitter so concurrent downloads that failed
/// together do not retry in lockstep.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let delay = exp.min(BACKOFF_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let jitter_range = (delay.as_millis() / 4).max(1) as u64;
    delay + Duration::from_millis(u64::from(nanos) % jitter_range)
}

/// A `Retry-After` in seconds, if the server sent a reasonable one.
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let delay = Duration::from_secs(seconds);
    (delay <= RETRY_AFTER_MAX).then_some(delay)
}

/// Reads a whole response body of at most `limit` bytes.
pub(crate) async fn read_limited(
    mut response: Response,
    limit: u64,
    what: &str,
    registry: &str,
) -> Result<Vec<u8>, RegistryError> {
    if let Some(size) = response.content_length().filter(|&s| s > limit) {
        return Err(RegistryError::TooLarge {
            what: what.to_owned(),
            size,
            limit,
        });
    }
    let mut body = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|source| RegistryError::Http {
                registry: registry.to_owned(),
                what: what.to_owned(),
                source,
            })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        let size = (body.len() + chunk.len()) as u64;
        if size > limit {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                size,
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
}

/// The registry's error body (`{"errors":[{"code":..,"message":..}]}`) as
/// `: CODE message`, or empty if there is none.
async fn error_detail(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() as u64 >= MAX_ERROR_BODY {
            break;
        }
    }
    format_error_body(&body)
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

fn format_error_body(body: &[u8]) -> String {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return String::new();
    };
    let Some(first) = parsed.errors.first() else {
        return String::new();
    };
    let text = match (first.code.is_empty(), first.message.is_empty()) {
        (true, true) => return String::new(),
        (false, true) => first.code.clone(),
        (true, false) => first.message.clone(),
        (false, false) => format!("{} {}", first.code, first.message),
    };
    format!(": {}", shorten(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            format_error_body(body),
            ": MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(format_error_body(br#"{"errors":[{"code":"X"}]}"#), ": X");
        assert_eq!(format_error_body(br#"{"errors":[]}"#), "");
        assert_eq!(format_error_body(b"<html>"), "");
        assert_eq!(format_error_body(b""), "");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let ms = |a| backoff(a).as_millis();
        assert!((500..=625).contains(&ms(1)), "{}", ms(1));
        assert!((1000..=1250).contains(&ms(2)), "{}", ms(2));
        assert!((8000..=10000).contains(&ms(10)), "{}", ms(10));
        assert!((8000..=10000).contains(&ms(u32::MAX)), "{}", ms(u32::MAX));
    }
}
