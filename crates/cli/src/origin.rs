//! Flags shared by the commands that talk to an origin store: the store
//! URL, S3 settings and the tenant key, with their defaults under the
//! user's data directory (the embedded default needs no setup at all).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use kindling_chunk::{KeyFile, KeyProvider, TenantKey};
use kindling_repo::Repo;
use kindling_store::S3Options;

/// `$XDG_DATA_HOME/kindling`, else `~/.local/share/kindling`.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kindling");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/kindling")
}

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Origin store: a directory (a path or file:///path) or S3
    /// (s3://bucket/prefix). Default: the embedded local store,
    /// $XDG_DATA_HOME/kindling/store (~/.local/share/kindling/store).
    #[arg(long, env = "KINDLING_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// S3 endpoint, for S3-compatible servers [default: $AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: $AWS_REGION, else us-east-1].
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id [default: $AWS_ACCESS_KEY_ID].
    #[arg(long, value_name = "ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key [default: $AWS_SECRET_ACCESS_KEY]. Prefer the
    /// environment: flags show up in `ps`.
    #[arg(long, value_name = "SECRET")]
    pub s3_secret_access_key: Option<String>,
}

impl StoreArgs {
    pub fn url(&self) -> String {
        match &self.store {
            Some(s) => s.clone(),
            None => data_dir().join("store").to_string_lossy().into_owned(),
        }
    }

    /// Whether the store is there. A local store given by path that does
    /// not exist holds nothing (yet: stores are created by their first
    /// push); one that is not a directory is an error. The embedded
    /// default and S3 count as there.
    pub fn exists(&self) -> Result<bool> {
        let Some(url) = &self.store else {
            return Ok(true);
        };
        let Some(path) = kindling_store::local_root(url).with_context(|| format!("store {url}"))?
        else {
            return Ok(true);
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(true),
            Ok(_) => anyhow::bail!("store {url} is not a directory"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("opening store {url}")),
        }
    }

    /// For commands that read an image: a store given by path must exist
    /// (a mistyped path would otherwise read as "no image named ...").
    pub fn check_readable(&self) -> Result<()> {
        if !self.exists()? {
            anyhow::bail!(
                "store {} does not exist (push an image there first)",
                self.url()
            );
        }
        Ok(())
    }

    pub fn repo(&self) -> Result<Repo> {
        let mut s3 = S3Options::from_env(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        if let Some(e) = &self.s3_endpoint {
            s3.allow_http = e.starts_with("http://");
            s3.endpoint = Some(e.clone());
        }
        if let Some(r) = &self.s3_region {
            s3.region = Some(r.clone());
        }
        if let Some(k) = &self.s3_access_key_id {
            s3.access_key_id = Some(k.clone());
        }
        if let Some(k) = &self.s3_secret_access_key {
            s3.secret_access_key = Some(k.clone());
        }
        let url = self.url();
        let store =
            kindling_store::open(&url, &s3).with_context(|| format!("opening store {url}"))?;
        Ok(Repo::new(store))
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    /// Tenant key file: 32 random bytes (or 64 hex digits). Default:
    /// $XDG_DATA_HOME/kindling/tenant.key, created (mode 0600) on first use.
    #[arg(long, env = "KINDLING_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl KeyArgs {
    pub fn provider(&self) -> Arc<dyn KeyProvider> {
        match &self.key_file {
            Some(p) => Arc::new(KeyFile::existing(p)),
            None => Arc::new(KeyFile::create_if_missing(data_dir().join("tenant.key"))),
        }
    }

    pub fn key(&self) -> Result<TenantKey> {
        self.provider()
            .tenant_key()
            .context("loading the tenant key")
    }
}

/// A runtime for one command. Two workers: the machines this runs on are
/// small, and the heavy work happens on blocking threads anyway.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    builder().build().context("starting the async runtime")
}

fn builder() -> tokio::runtime::Builder {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    b
}

/// Blocking threads of an agent's runtime: up to
/// [`kindling_agent::PENDING_STORES`] page-cache stores, which may wait for
/// the kernel, and eight more for the worker cache's file work (reads,
/// fill locks, writes), which only ever waits for other processes. Left
/// to tokio's default (512), a cold start of python-ds ran 80-150 threads
/// on two cores.
pub const AGENT_BLOCKING_THREADS: usize = kindling_agent::PENDING_STORES + 8;

/// [`runtime`] for commands that run an agent (`mount`, `run`, the
/// cold-start benchmark).
pub fn agent_runtime() -> Result<tokio::runtime::Runtime> {
    builder()
        .max_blocking_threads(AGENT_BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")
}

/// Runs `fut`, or stops with an error on Ctrl-C, SIGTERM or SIGHUP (the
/// terminal went away) so that destructors (temporary files, directories)
/// still run.
pub async fn interruptible<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut stop = StopSignals::new()?;
    tokio::select! {
        r = fut => r,
        why = stop.recv() => anyhow::bail!("{why}"),
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught from the moment this is made (inside
/// a runtime): one that arrives while a command is still setting up waits
/// here instead of being lost or killing it half-way.
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn new() -> Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing a SIGHUP handler")?,
        })
    }

    /// The next stop signal, as what it means.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "interrupted",
            _ = self.term.recv() => "terminated",
            _ = self.hup.recv() => "hung up",
        }
    }
}
