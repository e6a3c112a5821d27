//! A real Distribution registry for integration tests: Debian's
//! `docker-registry` on a free 127.0.0.1 port with its storage in a
//! temporary directory, optionally behind htpasswd (Basic) auth, filled with
//! images by `skopeo copy`, and stopped on drop.
//!
//! Tests that pull from a registry use the real thing so that they meet real
//! manifests, real content negotiation and real error bodies. A test that
//! needs the registry calls [`prerequisites`] first: it skips (with a note)
//! when the registry, skopeo or the image corpus is missing, and fails
//! instead when `CI` is set.
//!
//! ```no_run
//! use kindling_testkit::registry::{prerequisites, Registry};
//!
//! let Some(images) = prerequisites("my_test") else { return };
//! let registry = Registry::start();
//! registry.push(&images.join("debian-slim"), "debian:12", &[]);
//! let source = format!("docker://{}/debian:12", registry.host());
//! ```

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's Distribution registry (package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// How long a starting registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// True under CI, where every precondition is a hard requirement.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The corpus images directory (`$KINDLING_CORPUS/images`, default
/// `/var/cache/kindling-corpus/images`) if it and the registry and skopeo
/// are there. Missing: a failure under CI, a skip note otherwise.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    let corpus = std::env::var_os("KINDLING_CORPUS")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from("/var/cache/kindling-corpus"),
            PathBuf::from,
        )
        .join("images");
    let skopeo = Command::new("skopeo")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing = if !Path::new(REGISTRY_BIN).is_file() {
        format!("{REGISTRY_BIN} (apt-get install docker-registry)")
    } else if !skopeo {
        "skopeo (apt-get install skopeo)".to_owned()
    } else if !corpus.join("debian-slim/index.json").is_file() {
        format!(
            "the image corpus at {} (build it with shared/corpus/make-corpus.sh)",
            corpus.display()
        )
    } else {
        return Some(corpus);
    };
    assert!(!in_ci(), "{test}: CI is set but {missing} is missing");
    eprintln!("{test}: skipped, {missing} is missing");
    None
}

/// A running `docker-registry`.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `user:password` for skopeo, when the registry wants Basic auth.
    creds: Option<String>,
}

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// Starts a registry that requires HTTP Basic authentication with one
    /// user (htpasswd file, bcrypt hash). Distribution accepts htpasswd
    /// auth over plain HTTP, so no TLS is needed.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    fn start_with(htpasswd: Option<(&str, &str)>) -> Registry {
        let mut dir = tempfile::tempdir().expect("tempdir");
        let mut auth = String::new();
        if let Some((user, password)) = htpasswd {
            // Cost 5: the registry checks the hash on every request.
            let hash = bcrypt::hash(password, 5).expect("bcrypt");
            let path = dir.path().join("htpasswd");
            fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: kindling-test\n    path: {}\n",
                path.display()
            );
        }
        // A free port can be taken by someone else between our probe and
        // the registry's bind: try a few.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: kindling-test-secret\n{auth}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).expect("write config.yml");
            let log_path = dir.path().join("registry.log");
            let log = fs::File::create(&log_path).expect("registry log");
            let mut command = Command::new(REGISTRY_BIN);
            command
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log);
            // SAFETY: prctl is async-signal-safe and touches no memory of
            // the parent; it makes the kernel kill the registry if the test
            // thread that started it dies without running Drop (a test
            // process killed by a timeout).
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = command.spawn().expect("start docker-registry");
            let mut registry = Registry {
                child,
                port,
                dir,
                creds: htpasswd.map(|(u, p)| format!("{u}:{p}")),
            };
            if registry.wait_listening() {
                return registry;
            }
            last_log = fs::read_to_string(&log_path).unwrap_or_default();
            dir = registry.take_dir();
        }
        panic!("docker-registry did not start; its log:\n{last_log}");
    }

    /// Moves the temporary directory out of a registry that failed to
    /// start, so the next try can reuse it.
    fn take_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies the `latest` image of OCI layout `source` to `name`
    /// (`repo:tag`) in this registry with skopeo; `args` go before the
    /// image names (`--format v2s2`, `--all`).
    pub fn push(&self, source: &Path, name: &str, args: &[&str]) {
        let mut command = Command::new("skopeo");
        command
            .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
            .args(args);
        if let Some(creds) = &self.creds {
            command.arg("--dest-creds").arg(creds);
        }
        command
            .arg(format!("oci:{}:latest", source.display()))
            .arg(format!("docker://{}/{name}", self.host()));
        let out = command.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {} -> {name} failed: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The manifest digest `skopeo copy` stores when it copies `name`
    /// from this registry to an OCI layout (what a pull must match).
    pub fn skopeo_manifest_digest(&self, name: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new("skopeo");
        command.args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"]);
        if let Some(creds) = &self.creds {
            command.arg("--src-creds").arg(creds);
        }
        let out = command
            .arg(format!("docker://{}/{name}", self.host()))
            .arg(format!("oci:{}:latest", dir.path().display()))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {name} -> oci failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).expect("index.json"))
                .expect("index.json json");
        index["manifests"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_owned()
    }

    /// Where the registry keeps the content of blob `digest`
    /// (`sha256:<hex>`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("registry.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
