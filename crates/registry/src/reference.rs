//! Image references: `HOST[:PORT]/REPOSITORY[:TAG][@DIGEST]`.
//!
//! The registry host is required. Docker's short names (`alpine`,
//! `library/alpine`) silently mean Docker Hub; a tool that pulls from
//! private registries should not guess, so they are rejected with a hint
//! instead. The grammar follows the distribution reference grammar
//! (lowercase path components, tags of up to 128 word characters), checked
//! here so that every string later joined into a URL or path is known to be
//! safe.

use std::fmt;
use std::str::FromStr;

use kindling_oci::Digest;

use crate::error::{shorten, RegistryError};

/// The tag pulled when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// Longest repository name Distribution accepts.
const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag (distribution reference grammar: one word character and up
/// to 127 more).
const MAX_TAG_LEN: usize = 128;

/// An image in a registry: `HOST[:PORT]/REPOSITORY[:TAG][@sha256:...]`.
///
/// Parse with [`str::parse`]; a leading `docker://` is accepted. When
/// neither tag nor digest is given the tag is [`DEFAULT_TAG`]. When both
/// are, the digest decides what is pulled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` as written (`index.docker.io` becomes `docker.io`).
    pub registry: String,
    /// The repository path; on Docker Hub a one-component name gets the
    /// `library/` prefix it has there.
    pub repository: String,
    /// The tag, if given (or defaulted).
    pub tag: Option<String>,
    /// The manifest digest (`sha256:<hex>`), if given.
    pub digest: Option<String>,
}

impl Reference {
    /// What the manifest request names: the digest if there is one, else
    /// the tag.
    pub(crate) fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// The host the API is served on: Docker Hub's API is not on
    /// `docker.io` itself.
    pub(crate) fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = RegistryError;

    fn from_str(input: &str) -> Result<Reference, RegistryError> {
        let invalid = |reason: String| RegistryError::InvalidReference {
            reference: shorten(input),
            reason,
        };
        let s = input.strip_prefix("docker://").unwrap_or(input);
        let (name_tag, digest) = match s.split_once('@') {
            Some((name_tag, digest)) => {
                let digest = Digest::parse(digest).map_err(|e| invalid(e.to_string()))?;
                (name_tag, Some(digest.to_string()))
            }
            None => (s, None),
        };
        let Some((host, path)) = name_tag.split_once('/') else {
            return Err(invalid(
                "no registry host; write it in full, e.g. registry.example.com/app:1.0 \
                 or docker.io/library/alpine:latest"
                    .to_owned(),
            ));
        };
        if !(host.contains(['.', ':']) || host == "localhost") {
            return Err(invalid(format!(
                "'{}' is not a registry host (short docker.io names are not supported; \
                 write the registry, e.g. docker.io/library/alpine:latest)",
                shorten(host)
            )));
        }
        check_host(host).map_err(invalid)?;
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        check_repository(repository).map_err(invalid)?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(invalid)?;
        }
        let registry = if host == "index.docker.io" {
            "docker.io"
        } else {
            host
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }
}

/// `name[:port]` or `[ipv6][:port]`.
fn check_host(host: &str) -> Result<(), String> {
    let bad = || format!("'{}' is not a valid registry host", shorten(host));
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(bad());
        }
        match after {
            "" => (addr, None),
            _ => (addr, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        let (name, port) = match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !name.split('.').all(label_ok) {
            return Err(bad());
        }
        (name, port)
    };
    if name.is_empty() {
        return Err(bad());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(format!("'{}' is not a valid port", shorten(port)));
        }
    }
    Ok(())
}

/// Path components of lowercase letters and digits, joined by `.`, `_`,
/// `__` or runs of `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("empty repository name".to_owned());
    }
    if repository.len() > MAX_REPOSITORY_LEN {
        return Err(format!(
            "repository name longer than {MAX_REPOSITORY_LEN} characters"
        ));
    }
    for component in repository.split('/') {
        if !valid_component(component) {
            return Err(format!(
                "'{}' is not a valid repository path component (lowercase letters, digits, \
                 and separators '.', '_', '__', '-' between them)",
                shorten(component)
            ));
        }
    }
    Ok(())
}

fn valid_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut separator = String::new();
    let mut chars = component.chars();
    if !chars.next().is_some_and(alnum) {
        return false;
    }
    for c in chars {
        if alnum(c) {
            let ok = separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.chars().all(|s| s == '-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if matches!(c, '.' | '_' | '-') {
            separator.push(c);
        } else {
            return false;
        }
    }
    separator.is_empty()
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = tag.len() <= MAX_TAG_LEN
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!("'{}' is not a valid tag", shorten(tag)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reference {
        s.parse()
            .unwrap_or_else(|e| panic!("{s} should parse: {e}"))
    }

    fn error(s: &str) -> String {
        match s.parse::<Reference>() {
            Ok(r) => panic!("{s} should not parse, got {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn host_repository_tag() {
        let r = parse("127.0.0.1:5000/debian-slim:latest");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "debian-slim");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
        assert_eq!(r.manifest_ref(), "latest");
        assert_eq!(r.to_string(), "127.0.0.1:5000/debian-slim:latest");

        let r = parse("docker://ghcr.io/org/team/app");
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/team/app");
        assert_eq!(r.tag.as_deref(), Some(DEFAULT_TAG));

        let r = parse("localhost/a__b.c-d---e/f_g:v1.2-rc_3");
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.repository, "a__b.c-d---e/f_g");
        assert_eq!(r.tag.as_deref(), Some("v1.2-rc_3"));

        let r = parse("[::1]:5000/x");
        assert_eq!(r.registry, "[::1]:5000");
    }

    #[test]
    fn digests() {
        let r = parse(&format!("reg.example.com:443/app@sha256:{HEX}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
        assert_eq!(r.manifest_ref(), format!("sha256:{HEX}"));

        let r = parse(&format!("reg.example.com/app:v1@sha256:{HEX}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), format!("sha256:{HEX}"));
        assert_eq!(
            r.to_string(),
            format!("reg.example.com/app:v1@sha256:{HEX}")
        );

        assert!(error("reg.example.com/app@sha256:abc").contains("invalid image reference"));
        assert!(error(&format!("reg.example.com/app@sha512:{HEX}")).contains("sha512"));
    }

    #[test]
    fn docker_hub() {
        let r = parse("docker.io/alpine:3.19");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = parse("index.docker.io/me/app");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "me/app");
    }

    #[test]
    fn short_names_rejected() {
        for s in ["alpine", "alpine:3.19", "library/alpine", "me/app:v1"] {
            let e = error(s);
            assert!(
                e.contains("registry host") || e.contains("not a registry host"),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "reg.io/",
            "reg.io/App",
            "reg.io/a//b",
            "reg.io/-a",
            "reg.io/a-",
            "reg.io/a..b",
            "reg.io/a___b",
            "reg.io/a:",
            "reg.io/a:-x",
            "reg.io/a:x/y",
            "reg.io:0/a",
            "reg.io:99999/a",
            "reg.io:x/a",
            "reg..io/a",
            "-reg.io/a",
            "reg io/a",
            "[zz]:5000/a",
            "reg.io/a b",
            "reg.io/a\n",
        ] {
            error(s);
        }
        error(&format!("reg.io/a:{}", "t".repeat(129)));
        parse(&format!("reg.io/a:{}", "t".repeat(128)));
    }
}
