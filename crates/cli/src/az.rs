//! The AZ cache cluster flags shared by `mount`, `run` and the benchmarks,
//! and the config file that can hold them instead.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kindling_azcache::{AzClient, ClientConfig, Stripes};

/// Where the AZ cache cluster is.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AzArgs {
    /// The AZ cache cluster: `kindling cache-node` addresses, HOST:PORT,...
    /// A chunk missing from the worker cache is rebuilt from their stripes
    /// before the origin is asked; what the origin returns is written back
    /// to them in the background [default: the config file's az.nodes,
    /// else no cluster].
    #[arg(long, value_delimiter = ',', value_name = "ADDR,...")]
    pub cache_nodes: Vec<String>,
    /// How chunks are spread over the cache nodes: K data stripes plus M
    /// parity stripes, on K+M distinct nodes; reads survive M nodes down
    /// [default: the config file's az.stripes, else 4+1].
    #[arg(long, value_name = "K+M", value_parser = parse_stripes)]
    pub stripes: Option<Stripes>,
    /// How long a read waits for the cluster before it asks the origin too
    /// (the first answer wins; the cluster's stripes are awaited up to 8
    /// times this) [default: the config file's az.timeout_ms, else 30ms].
    #[arg(long, value_name = "DURATION", value_parser = crate::bench::parse_duration)]
    pub az_timeout: Option<Duration>,
    /// A TOML config file with an [az] table: nodes = ["HOST:PORT", ...],
    /// stripes = "4+1", timeout_ms = 30. Flags win over it
    /// [default: $KINDLING_CONFIG, else $XDG_CONFIG_HOME/kindling/config.toml
    /// (~/.config/kindling/config.toml) if it exists].
    #[arg(long, env = "KINDLING_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// No cluster, whatever the config file says (for baselines).
    #[arg(skip)]
    pub disabled: bool,
}

pub(crate) fn parse_stripes(s: &str) -> Result<Stripes, String> {
    s.parse::<Stripes>().map_err(|e| e.to_string())
}

/// The config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub az: AzConfig,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzConfig {
    #[serde(default)]
    pub nodes: Vec<String>,
    pub stripes: Option<String>,
    pub timeout_ms: Option<u64>,
}

fn default_config_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".config")
        });
    base.join("kindling/config.toml")
}

/// Reads `path`, or the default config file if there is one.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let (path, must_exist) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default_config_path(), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
            return Ok(Config::default())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A resolved cluster: addresses, stripes, client settings.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub nodes: Vec<SocketAddr>,
    pub stripes: Stripes,
    pub config: ClientConfig,
    /// How long a read waits for the cluster before it asks the origin too.
    pub hedge_after: Duration,
}

/// A stripe request's time limit, in multiples of the hedge delay: long
/// enough for a busy node's late answer to beat the origin, short enough
/// that a silent node's request is let go.
const STRIPE_PATIENCE: u32 = 8;

impl AzArgs {
    /// The cluster these flags (over the config file) name, if any.
    pub fn cluster(&self) -> Result<Option<Cluster>> {
        if self.disabled {
            return Ok(None);
        }
        let file = load_config(self.config.as_deref())?;
        let names = if self.cache_nodes.is_empty() {
            file.az.nodes
        } else {
            self.cache_nodes.clone()
        };
        if names.is_empty() {
            return Ok(None);
        }
        let stripes = match (self.stripes, &file.az.stripes) {
            (Some(s), _) => s,
            (None, Some(s)) => parse_stripes(s)
                .map_err(anyhow::Error::msg)
                .context("the config file's az.stripes")?,
            (None, None) => Stripes::default(),
        };
        let mut nodes = Vec::with_capacity(names.len());
        for n in &names {
            let addr = n
                .to_socket_addrs()
                .with_context(|| format!("cache node {n:?}: expected HOST:PORT"))?
                .next()
                .with_context(|| format!("cache node {n:?} resolves to no address"))?;
            nodes.push(addr);
        }
        if nodes.len() < stripes.total() {
            bail!(
                "{} stripes ({stripes}) need at least {} cache nodes; {} given",
                stripes.total(),
                stripes.total(),
                nodes.len()
            );
        }
        let hedge_after = self
            .az_timeout
            .or(file.az.timeout_ms.map(Duration::from_millis))
            .unwrap_or(ClientConfig::DEFAULT_REQUEST_TIMEOUT);
        let config = ClientConfig {
            // The read asks the origin after `hedge_after`; a stripe still
            // on its way may yet win, so it is given longer.
            request_timeout: hedge_after * STRIPE_PATIENCE,
            ..ClientConfig::default()
        };
        Ok(Some(Cluster {
            nodes,
            stripes,
            config,
            hedge_after,
        }))
    }
}

impl Cluster {
    pub fn client(&self) -> Result<Arc<AzClient>> {
        Ok(Arc::new(
            AzClient::new(self.nodes.clone(), self.stripes, self.config.clone())
                .context("setting up the AZ cache client")?,
        ))
    }
}
