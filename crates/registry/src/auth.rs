//! Registry authentication: credentials, `WWW-Authenticate` challenges and
//! the Docker config file.
//!
//! Distribution registries either take HTTP Basic credentials on every
//! request or, more commonly, answer 401 with a Bearer challenge naming a
//! token service (`realm`) and the `service`/`scope` to ask it for; the
//! token is then sent as `Authorization: Bearer`. Nothing is sent before a
//! challenge asks for it, so credentials never go to a registry that does
//! not want them. The protocol side (fetching tokens, retrying the request)
//! is in [`crate::client`]; this module only parses.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

/// A user name and password (or token used as password) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password, personal access token or identity token.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// Never prints the password.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Reads the credentials for `registry` (`host[:port]`) from a Docker
/// client config file (`~/.docker/config.json`; the caller picks the path).
///
/// Looks at `auths` entries whose key is the host, with or without a
/// scheme and path (`https://host/v1/`); for `docker.io` also Docker's own
/// key `https://index.docker.io/v1/`. The entry's `auth` is base64 of
/// `user:password`; separate `username`/`password` fields are accepted
/// too. Credential helpers (`credsStore`, `credHelpers`) are not run.
/// Returns `None` if the file is missing, unreadable or has no usable
/// entry.
pub fn credentials_from_docker_config(path: &Path, registry: &str) -> Option<Credentials> {
    /// Config files are a few KiB; a larger one is not a config file.
    const MAX_CONFIG_SIZE: u64 = 1 << 20;
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_CONFIG_SIZE {
        return None;
    }
    let config: DockerConfig = serde_json::from_reader(std::io::BufReader::new(file)).ok()?;
    let wanted = normalize_registry(registry);
    let entry = config
        .auths
        .iter()
        .filter(|(key, _)| normalize_registry(key) == wanted)
        // An exact key wins over one with a scheme or path.
        .min_by_key(|(key, _)| key.as_str() != registry)
        .map(|(_, entry)| entry)?;
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (username, password) = decoded.split_once(':')?;
        return Some(Credentials::new(username, password));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) if !u.is_empty() => Some(Credentials::new(u.clone(), p.clone())),
        _ => None,
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`, `http://h:5000/x` -> `h:5000`.
fn normalize_registry(key: &str) -> String {
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

#[derive(Debug, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Debug, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// What a 401's `WWW-Authenticate` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `WWW-Authenticate` header values (RFC 7235: a scheme, then
/// `key=value` or `key="quoted"` parameters separated by commas). Prefers a
/// Bearer challenge when several are offered; `None` if none is usable.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for value in values {
        for (scheme, params) in split_challenges(value) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let get = |name: &str| {
                    params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                if let Some(realm) = get("realm").filter(|r| !r.is_empty()) {
                    return Some(Challenge::Bearer {
                        realm,
                        service: get("service"),
                        scope: get("scope"),
                    });
                }
            } else if scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
    }
    basic.then_some(Challenge::Basic)
}

type Params = Vec<(String, String)>;

/// Splits one header value into challenges. A token followed by
/// whitespace and not by `=` starts a new challenge.
fn split_challenges(value: &str) -> Vec<(String, Params)> {
    let mut out: Vec<(String, Params)> = Vec::new();
    let mut rest = value.trim_start();
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start();
        if token.is_empty() {
            // A stray separator.
            rest = rest[1..].trim_start();
            continue;
        }
        if let Some(value_part) = after.strip_prefix('=') {
            // A parameter of the current challenge.
            let value_part = value_part.trim_start();
            let (param, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                parse_quoted(quoted)
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim_end().to_owned(), &value_part[end..])
            };
            if let Some((_, params)) = out.last_mut() {
                params.push((token.to_owned(), param));
            }
            rest = remaining.trim_start();
        } else {
            // A new scheme.
            out.push((token.to_owned(), Vec::new()));
            rest = after;
        }
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

/// Reads a quoted-string body (after the opening quote); returns the
/// unescaped value and what follows the closing quote.
fn parse_quoted(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            _ => value.push(c),
        }
    }
    (value, "")
}

/// The Basic `Authorization` header value.
pub(crate) fn basic_header(credentials: &Credentials) -> String {
    let raw = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A token service's answer (Docker token spec: `token`, with OAuth2's
/// `access_token` as an alias).
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenges([
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        ]);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".to_owned(),
                service: Some("registry.docker.io".to_owned()),
                scope: Some("repository:library/alpine:pull".to_owned()),
            })
        );
        let c = parse_challenges([r#"bearer realm=http://h/t , scope="a\"b""#]);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://h/t".to_owned(),
                service: None,
                scope: Some("a\"b".to_owned()),
            })
        );
    }

    #[test]
    fn several_challenges() {
        let c =
            parse_challenges([r#"Basic realm="x", Bearer realm="https://t/token",service="s""#]);
        assert!(
            matches!(c, Some(Challenge::Bearer { ref realm, .. }) if realm == "https://t/token")
        );
        assert_eq!(
            parse_challenges(["Basic realm=\"Registry Realm\""]),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenges(["Negotiate", "Basic realm=x"]),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenges(["Negotiate abc"]), None);
        assert_eq!(parse_challenges(["Bearer service=x"]), None);
        assert_eq!(
            parse_challenges(["", ",,", "=", "\"", "Bearer realm=\""]),
            None
        );
    }

    #[test]
    fn token_response() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"token":"a","access_token":"b"}"#).expect("json");
        assert_eq!(t.into_token().as_deref(), Some("a"));
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"b","expires_in":300}"#).expect("json");
        assert_eq!(t.into_token().as_deref(), Some("b"));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).expect("json");
        assert_eq!(t.into_token(), None);
    }

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = serde_json::json!({
            "auths": {
                "reg.example.com:5000": { "auth": b64("alice:pa:ss") },
                "https://index.docker.io/v1/": { "auth": b64("bob:hub") },
                "https://other.example.com/v2/": { "username": "carol", "password": "pw" },
                "broken.example.com": { "auth": "!!!" },
                "empty.example.com": {}
            },
            "credsStore": "desktop"
        });
        std::fs::write(&path, config.to_string()).expect("write");
        assert_eq!(
            credentials_from_docker_config(&path, "reg.example.com:5000"),
            Some(Credentials::new("alice", "pa:ss"))
        );
        assert_eq!(
            credentials_from_docker_config(&path, "docker.io"),
            Some(Credentials::new("bob", "hub"))
        );
        assert_eq!(
            credentials_from_docker_config(&path, "other.example.com"),
            Some(Credentials::new("carol", "pw"))
        );
        for none in [
            "reg.example.com",
            "broken.example.com",
            "empty.example.com",
            "x.io",
        ] {
            assert_eq!(credentials_from_docker_config(&path, none), None, "{none}");
        }
        assert_eq!(
            credentials_from_docker_config(&dir.path().join("missing.json"), "docker.io"),
            None
        );
        std::fs::write(&path, "not json").expect("write");
        assert_eq!(credentials_from_docker_config(&path, "docker.io"), None);
    }

    #[test]
    fn debug_hides_password() {
        let s = format!("{:?}", Credentials::new("u", "secret"));
        assert!(!s.contains("secret"), "{s}");
    }
}
