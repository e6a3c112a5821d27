//! The worker's client of the AZ cache cluster (DESIGN.md section 4).
//!
//! A read asks all `k + m` nodes of a chunk at once and rebuilds from the
//! first `k` valid stripes; the slower requests are cancelled (their HTTP/2
//! streams reset). Waiting for the fastest `k` of `k + m` is what cuts the
//! tail, and `m` nodes may be down without costing a hit. The rebuilt
//! chunk is checked against its name; if a stripe that passed its own
//! checksum still poisons the rebuild (a node serving another chunk's
//! stripe), other `k`-subsets are tried as more replies come in.
//!
//! Every request has a timeout and nothing is retried or hedged (all
//! `k + m` are asked at once already), so a read takes at most about
//! [`ClientConfig::request_timeout`] plus the rebuild. Anything
//! short of a verified chunk is a miss (`Ok(None)`): the caller reads the
//! origin and calls [`AzClient::fill`], which overwrites whatever stripes
//! were bad.
//!
//! Fills run in the background, bounded in number and deduplicated per
//! chunk. The client must be used inside a tokio runtime with I/O and time
//! enabled.
//!
//! Nodes should allow many client-reset streams: readers cancel a stripe
//! stream on most reads, and h2's default guard against "rapid reset"
//! (`max_pending_accept_reset_streams`, 20) answers a burst of them with
//! GOAWAY when the server falls behind accepting streams.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use kindling_chunk::{cipher, ChunkName};

use crate::node::{Node, MAX_STRIPE_BYTES};
use crate::placement::{Placement, PlacementError};
use crate::stripe::{self, Checked, StripeError, StripeInfo, Stripes, HEADER_LEN};

/// At most this many `k`-subsets of the received stripes are rebuilt and
/// hashed for one read. Only a stripe that passes its own checksum but
/// belongs to another chunk makes a first rebuild fail, so one or two more
/// attempts find the good subset; the cap bounds the CPU (about 0.4 ms per
/// attempt for 512 KiB) when many stripes are bad. 4 + 1 has 5 subsets,
/// 4 + 2 has 15.
const MAX_REBUILD_ATTEMPTS: usize = 16;

/// The AZ cache client failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AzError {
    /// The node list cannot hold the layout.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// No nodes were given.
    #[error("no cache nodes configured")]
    NoNodes,
    /// The same node address was given twice.
    #[error("cache node {0} is listed twice")]
    DuplicateNode(SocketAddr),
    /// A chunk too large for the node protocol's 1 MiB stripes.
    #[error("chunk of {len} bytes is too large: stripes would exceed {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The node is marked down after failures; it is not asked until its
    /// backoff ends.
    #[error("cache node {node} is marked down")]
    NodeDown { node: SocketAddr },
    /// A request to the node failed (connection or protocol error).
    #[error("cache node {node}: {reason}")]
    Http { node: SocketAddr, reason: String },
    /// The node answered with an unexpected status.
    #[error("cache node {node} answered {status}")]
    Status { node: SocketAddr, status: u16 },
    /// The response body could not be read or was too large.
    #[error("cache node {node}: bad response body: {reason}")]
    Body { node: SocketAddr, reason: String },
    /// A request could not be built (a bug).
    #[error("bad request: {0}")]
    Request(String),
    /// The request took longer than its timeout.
    #[error("cache node {node} timed out")]
    Timeout { node: SocketAddr },
    /// A put stored fewer than all stripes. With at least `k` stored the
    /// chunk is readable, with less redundancy.
    #[error("stored {stored} of {total} stripes")]
    PartialPut { stored: usize, total: usize },
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

/// Settings of an [`AzClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time limit of one stripe request (connecting included) on a read.
    /// Default [`ClientConfig::DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// Time limit of one stripe upload. Default
    /// [`ClientConfig::DEFAULT_PUT_TIMEOUT`].
    pub put_timeout: Duration,
    /// Time limit of opening a connection (TCP and HTTP/2 preface).
    /// Default [`ClientConfig::DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Background fills running at once; more are dropped. Default
    /// [`ClientConfig::DEFAULT_MAX_FILLS_IN_FLIGHT`].
    pub max_fills_in_flight: usize,
    /// How long a node that failed is left alone at first; doubles with
    /// each consecutive failure. Default [`ClientConfig::DEFAULT_DOWN_BACKOFF`].
    pub down_backoff: Duration,
    /// The longest backoff. Default [`ClientConfig::DEFAULT_DOWN_BACKOFF_MAX`].
    pub down_backoff_max: Duration,
}

impl ClientConfig {
    /// 30 ms. The paper's AZ hit is 550 us median and 3.7 ms at p99.9, so a
    /// healthy stripe arrives well inside 30 ms even from a node's flash
    /// tier. A read waits this long only when more than `m` nodes fail to
    /// answer; it then goes to the origin (S3 median 36 ms), so a timed-out
    /// read costs less than twice an origin read, where 100 ms would triple
    /// it.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(30);
    /// 1 s. Uploads are background fills: nobody waits for them, but a
    /// wedged node must not hold a fill slot for long.
    pub const DEFAULT_PUT_TIMEOUT: Duration = Duration::from_secs(1);
    /// 200 ms: a connect inside one AZ takes well under a millisecond; the
    /// attempt runs on its own and reads are still bounded by their own
    /// timeout, so this only decides when a silent node is marked down.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
    /// 64 fills of 512 KiB: 32 MiB of chunks buffered for upload at most.
    pub const DEFAULT_MAX_FILLS_IN_FLIGHT: usize = 64;
    /// 250 ms, doubling to [`ClientConfig::DEFAULT_DOWN_BACKOFF_MAX`]: a
    /// restarting node is back in use within a second or two, while a dead
    /// one sees one connect attempt per client every few seconds.
    pub const DEFAULT_DOWN_BACKOFF: Duration = Duration::from_millis(250);
    /// 5 s.
    pub const DEFAULT_DOWN_BACKOFF_MAX: Duration = Duration::from_secs(5);
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            request_timeout: ClientConfig::DEFAULT_REQUEST_TIMEOUT,
            put_timeout: ClientConfig::DEFAULT_PUT_TIMEOUT,
            connect_timeout: ClientConfig::DEFAULT_CONNECT_TIMEOUT,
            max_fills_in_flight: ClientConfig::DEFAULT_MAX_FILLS_IN_FLIGHT,
            down_backoff: ClientConfig::DEFAULT_DOWN_BACKOFF,
            down_backoff_max: ClientConfig::DEFAULT_DOWN_BACKOFF_MAX,
        }
    }
}

/// A snapshot of an [`AzClient`]'s counters, all monotonic since `new`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Calls of [`AzClient::get`].
    pub gets: u64,
    /// Gets that returned a verified chunk.
    pub hits: u64,
    /// Gets that returned `Ok(None)`.
    pub misses: u64,
    /// Hits rebuilt with at least one parity stripe.
    pub rebuilds_with_parity: u64,
    /// Rebuilt chunks that did not hash to their name.
    pub rebuilds_bad: u64,
    /// Stripes received that passed their checks.
    pub stripes_received: u64,
    /// Stripes received that failed their checks.
    pub stripes_corrupt: u64,
    /// Stripe requests answered 404.
    pub stripes_missing: u64,
    /// Stripe requests (gets and puts) that timed out.
    pub stripes_timed_out: u64,
    /// Stripe requests (gets and puts) that failed: node down, connection
    /// or protocol error, unexpected status.
    pub node_errors: u64,
    /// Calls of [`AzClient::put`], direct or from fills.
    pub puts: u64,
    /// Stripes stored.
    pub stripes_put: u64,
    /// Connect attempts, and failed ones.
    pub connects: u64,
    pub connect_failures: u64,
    /// Fills spawned.
    pub fills_started: u64,
    /// Fills that stored at least `k` stripes.
    pub fills_done: u64,
    /// Fills dropped because `max_fills_in_flight` were running, or there
    /// was no runtime.
    pub fills_dropped: u64,
    /// Fills skipped because a fill of the same chunk was running.
    pub fills_deduped: u64,
    /// Fills that stored fewer than `k` stripes.
    pub fills_failed: u64,
}

/// The live counters behind [`ClientStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    gets: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    rebuilds_with_parity: AtomicU64,
    rebuilds_bad: AtomicU64,
    stripes_received: AtomicU64,
    stripes_corrupt: AtomicU64,
    stripes_missing: AtomicU64,
    stripes_timed_out: AtomicU64,
    node_errors: AtomicU64,
    puts: AtomicU64,
    stripes_put: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    fills_started: AtomicU64,
    fills_done: AtomicU64,
    fills_dropped: AtomicU64,
    fills_deduped: AtomicU64,
    fills_failed: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ClientStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            gets: g(&self.gets),
            hits: g(&self.hits),
            misses: g(&self.misses),
            rebuilds_with_parity: g(&self.rebuilds_with_parity),
            rebuilds_bad: g(&self.rebuilds_bad),
            stripes_received: g(&self.stripes_received),
            stripes_corrupt: g(&self.stripes_corrupt),
            stripes_missing: g(&self.stripes_missing),
            stripes_timed_out: g(&self.stripes_timed_out),
            node_errors: g(&self.node_errors),
            puts: g(&self.puts),
            stripes_put: g(&self.stripes_put),
            connects: g(&self.connects),
            connect_failures: g(&self.connect_failures),
            fills_started: g(&self.fills_started),
            fills_done: g(&self.fills_done),
            fills_dropped: g(&self.fills_dropped),
            fills_deduped: g(&self.fills_deduped),
            fills_failed: g(&self.fills_failed),
        }
    }
}

/// A client of one AZ cache cluster. Cheap to clone; clones share
/// connections, counters and the fill limit.
///
/// ```no_run
/// # async fn demo(chunk: bytes::Bytes) -> Result<(), kindling_azcache::AzError> {
/// use kindling_azcache::{AzClient, ClientConfig, Stripes};
/// use kindling_chunk::ChunkName;
/// let nodes = (0..5).map(|i| format!("10.0.0.{i}:7070").parse().unwrap()).collect();
/// let az = AzClient::new(nodes, Stripes::DEFAULT, ClientConfig::default())?;
/// let name = ChunkName::of(&chunk);
/// if az.get(&name).await?.is_none() {
///     // ...read the origin, then:
///     az.fill(name, chunk);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AzClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nodes: Vec<Arc<Node>>,
    placement: Placement,
    stripes: Stripes,
    cfg: ClientConfig,
    counters: Arc<Counters>,
    /// Chunks being filled. Lock held for a lookup and insert only.
    filling: Mutex<HashSet<ChunkName>>,
}

/// How one stripe request ended.
enum Reply {
    Stripe(Bytes),
    Missing,
    Failed(AzError),
    TimedOut,
}

impl AzClient {
    /// A client of the cluster made of `nodes`, storing chunks as
    /// `stripes`. Connections are opened on first use.
    ///
    /// Placement hashes the node addresses, so every client given the same
    /// set of addresses (in any order) places a chunk on the same nodes.
    pub fn new(
        nodes: Vec<SocketAddr>,
        stripes: Stripes,
        cfg: ClientConfig,
    ) -> Result<AzClient, AzError> {
        if nodes.is_empty() {
            return Err(AzError::NoNodes);
        }
        let mut seen = HashSet::new();
        if let Some(dup) = nodes.iter().find(|a| !seen.insert(**a)) {
            return Err(AzError::DuplicateNode(*dup));
        }
        if nodes.len() < stripes.total() {
            return Err(PlacementError {
                nodes: nodes.len(),
                needed: stripes.total(),
            }
            .into());
        }
        let placement = Placement::new(nodes.iter().map(|a| a.to_string()));
        let nodes = nodes
            .iter()
            .map(|&a| Arc::new(Node::new(a, &cfg)))
            .collect();
        Ok(AzClient {
            inner: Arc::new(Inner {
                nodes,
                placement,
                stripes,
                cfg,
                counters: Arc::new(Counters::default()),
                filling: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The layout chunks are stored in.
    pub fn stripes(&self) -> Stripes {
        self.inner.stripes
    }

    /// The node addresses, in the order given to [`AzClient::new`].
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.inner.nodes.iter().map(|n| n.addr).collect()
    }

    /// The addresses of the nodes holding stripes `0..k+m` of `name`.
    pub fn placement(&self, name: &ChunkName) -> Result<Vec<SocketAddr>, AzError> {
        Ok(self
            .place(name)?
            .into_iter()
            .map(|i| self.inner.nodes[i].addr)
            .collect())
    }

    /// The counters so far.
    /// Starts connecting to every node in the background, so that the
    /// first reads do not each wait for TCP and HTTP/2 handshakes (a
    /// start's first reads are the ext4 mount's, one after another).
    /// Call within a tokio runtime.
    pub fn connect_all(&self) {
        for node in &self.inner.nodes {
            node.warm(&self.inner.counters);
        }
    }

    pub fn stats(&self) -> ClientStats {
        self.inner.counters.snapshot()
    }

    fn place(&self, name: &ChunkName) -> Result<Vec<usize>, AzError> {
        Ok(self.inner.placement.place(name, self.inner.stripes)?)
    }

    /// Reads chunk `name`: its verified ciphertext, or `Ok(None)` when the
    /// cluster cannot produce it (not cached, too many nodes down or slow,
    /// or only bad stripes). Takes at most about the request timeout plus
    /// the rebuilds. Cluster trouble is never an error: `Err` means a
    /// misconfigured client.
    ///
    /// Cancel safe: dropping the future cancels the stripe requests.
    pub async fn get(&self, name: &ChunkName) -> Result<Option<Bytes>, AzError> {
        let inner = &*self.inner;
        let c = &*inner.counters;
        Counters::bump(&c.gets);
        let s = inner.stripes;
        let k = usize::from(s.k());
        let placed = self.place(name)?;
        let hex = name.to_hex();
        let timeout = inner.cfg.request_timeout;
        let mut pending: FuturesUnordered<_> = placed
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let node = &inner.nodes[n];
                let hex = &hex;
                // `i < k + m <= MAX_STRIPES`.
                let index = i as u8;
                async move {
                    let reply = match tokio::time::timeout(
                        timeout,
                        node.get_stripe(&inner.counters, hex, index),
                    )
                    .await
                    {
                        Ok(Ok(Some(b))) => Reply::Stripe(b),
                        Ok(Ok(None)) => Reply::Missing,
                        Ok(Err(e)) => Reply::Failed(e),
                        Err(_) => Reply::TimedOut,
                    };
                    (index, node, reply)
                }
            })
            .collect();

        let mut valid: Vec<(u8, Bytes, StripeInfo)> = Vec::with_capacity(s.total());
        let mut search = Search::default();
        while let Some((index, node, reply)) = pending.next().await {
            match reply {
                Reply::Stripe(bytes) => {
                    node.record_answer();
                    match stripe::check(index, &bytes, s) {
                        Ok(info) => {
                            Counters::bump(&c.stripes_received);
                            valid.push((index, bytes, info));
                            if valid.len() >= k {
                                if let Some(chunk) = search.next_round(name, &valid, s, c) {
                                    Counters::bump(&c.hits);
                                    return Ok(Some(chunk));
                                }
                            }
                        }
                        Err(e) => {
                            Counters::bump(&c.stripes_corrupt);
                            tracing::warn!(node = %node.addr, chunk = %hex, error = %e, "bad stripe from cache node");
                        }
                    }
                }
                Reply::Missing => {
                    node.record_answer();
                    Counters::bump(&c.stripes_missing);
                }
                Reply::Failed(e) => {
                    Counters::bump(&c.node_errors);
                    tracing::debug!(chunk = %hex, index, error = %e, "stripe request failed");
                }
                Reply::TimedOut => Counters::bump(&c.stripes_timed_out),
            }
            if valid.len() + pending.len() < k || search.attempts >= MAX_REBUILD_ATTEMPTS {
                break;
            }
        }
        // Dropping `pending` resets the streams still open.
        Counters::bump(&c.misses);
        Ok(None)
    }

    /// Stores `ciphertext` as chunk `name`: encodes it and uploads all
    /// stripes concurrently, each bounded by the put timeout. The caller
    /// vouches that `name` is the ciphertext's name (readers check it).
    ///
    /// Fails with [`AzError::PartialPut`] unless every stripe was stored.
    pub async fn put(&self, name: &ChunkName, ciphertext: Bytes) -> Result<(), AzError> {
        self.put_counted(name, ciphertext).await.map(|_| ())
    }

    /// [`AzClient::put`], also giving the number of stripes stored.
    async fn put_counted(&self, name: &ChunkName, ciphertext: Bytes) -> Result<usize, AzError> {
        let inner = &*self.inner;
        let c = &*inner.counters;
        Counters::bump(&c.puts);
        let s = inner.stripes;
        if HEADER_LEN + s.body_len(ciphertext.len()) > MAX_STRIPE_BYTES {
            return Err(AzError::TooLarge {
                len: ciphertext.len(),
                max: MAX_STRIPE_BYTES,
            });
        }
        let placed = self.place(name)?;
        let stripes = stripe::encode(&ciphertext, s);
        drop(ciphertext);
        let hex = name.to_hex();
        let timeout = inner.cfg.put_timeout;
        let mut pending: FuturesUnordered<_> = placed
            .iter()
            .zip(stripes)
            .enumerate()
            .map(|(i, (&n, stripe))| {
                let node = &inner.nodes[n];
                let hex = &hex;
                async move {
                    let res = tokio::time::timeout(
                        timeout,
                        node.put_stripe(&inner.counters, hex, i as u8, stripe),
                    )
                    .await;
                    (node, res)
                }
            })
            .collect();
        let mut stored = 0;
        while let Some((node, res)) = pending.next().await {
            match res {
                Ok(Ok(())) => {
                    node.record_answer();
                    Counters::bump(&c.stripes_put);
                    stored += 1;
                }
                Ok(Err(e)) => {
                    Counters::bump(&c.node_errors);
                    tracing::debug!(chunk = %hex, error = %e, "stripe upload failed");
                }
                Err(_) => Counters::bump(&c.stripes_timed_out),
            }
        }
        if stored == s.total() {
            Ok(stored)
        } else {
            Err(AzError::PartialPut {
                stored,
                total: s.total(),
            })
        }
    }

    /// Stores chunk `name` in the background: never blocks or fails.
    ///
    /// Skipped (and counted) when a fill of the same chunk is running, when
    /// `max_fills_in_flight` fills are running, or outside a tokio runtime.
    pub fn fill(&self, name: ChunkName, ciphertext: Bytes) {
        let c = &*self.inner.counters;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            Counters::bump(&c.fills_dropped);
            return;
        };
        {
            let mut filling = self.inner.filling.lock().unwrap_or_else(|e| e.into_inner());
            if filling.contains(&name) {
                Counters::bump(&c.fills_deduped);
                return;
            }
            if filling.len() >= self.inner.cfg.max_fills_in_flight {
                Counters::bump(&c.fills_dropped);
                return;
            }
            filling.insert(name);
        }
        Counters::bump(&c.fills_started);
        let client = self.clone();
        runtime.spawn(async move {
            // Removes the entry however the task ends, also if the runtime
            // drops it at shutdown.
            let _slot = FillSlot {
                inner: &client.inner,
                name,
            };
            let k = usize::from(client.inner.stripes.k());
            let c = &*client.inner.counters;
            match client.put_counted(&name, ciphertext).await {
                Ok(_) => Counters::bump(&c.fills_done),
                Err(AzError::PartialPut { stored, .. }) if stored >= k => {
                    Counters::bump(&c.fills_done)
                }
                Err(e) => {
                    Counters::bump(&c.fills_failed);
                    tracing::debug!(chunk = %name, error = %e, "background fill failed");
                }
            }
        });
    }

    /// Whether the client currently treats `node` as down (for tests and
    /// diagnostics).
    pub fn is_down(&self, node: SocketAddr) -> bool {
        self.inner
            .nodes
            .iter()
            .any(|n| n.addr == node && n.is_down())
    }

    /// Fills running now.
    pub fn fills_in_flight(&self) -> usize {
        self.inner
            .filling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

struct FillSlot<'a> {
    inner: &'a Inner,
    name: ChunkName,
}

impl Drop for FillSlot<'_> {
    fn drop(&mut self) {
        self.inner
            .filling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

/// The search for a `k`-subset of the received stripes that rebuilds into
/// the named chunk. Each round is run when a new valid stripe arrives and
/// tries only the subsets that contain it: the others were tried before.
#[derive(Default)]
struct Search {
    attempts: usize,
}

impl Search {
    fn next_round(
        &mut self,
        name: &ChunkName,
        valid: &[(u8, Bytes, StripeInfo)],
        s: Stripes,
        c: &Counters,
    ) -> Option<Bytes> {
        let k = usize::from(s.k());
        let (newest, older) = valid.split_last()?;
        let mut chosen: Vec<Checked<'_>> = Vec::with_capacity(k);
        // Subsets: the newest stripe plus k - 1 of the older ones, in
        // lexicographic order of their positions; data stripes tend to come
        // first, so the first subset is the cheapest to rebuild.
        let mut pick: Vec<usize> = (0..k - 1).collect();
        loop {
            if self.attempts >= MAX_REBUILD_ATTEMPTS {
                return None;
            }
            chosen.clear();
            chosen.extend(pick.iter().map(|&p| checked(&older[p])));
            chosen.push(checked(newest));
            self.attempts += 1;
            match stripe::rebuild(&chosen, s) {
                Ok(chunk) => {
                    if cipher::verify(name, &chunk).is_ok() {
                        if chosen.iter().any(|x| x.index >= s.k()) {
                            Counters::bump(&c.rebuilds_with_parity);
                        }
                        return Some(chunk);
                    }
                    Counters::bump(&c.rebuilds_bad);
                    tracing::warn!(chunk = %name, "rebuilt chunk does not match its name; trying other stripes");
                }
                // Stripes of chunks of different lengths: not this subset.
                Err(e) => tracing::debug!(chunk = %name, error = %e, "stripes do not rebuild"),
            }
            if !next_combination(&mut pick, older.len()) {
                return None;
            }
        }
    }
}

fn checked(v: &(u8, Bytes, StripeInfo)) -> Checked<'_> {
    Checked {
        index: v.0,
        stripe: &v.1,
        info: v.2,
    }
}

/// Advances `pick` (strictly increasing positions below `n`) to the next
/// combination in lexicographic order; false after the last.
fn next_combination(pick: &mut [usize], n: usize) -> bool {
    let r = pick.len();
    for i in (0..r).rev() {
        if pick[i] < n - r + i {
            pick[i] += 1;
            for j in i + 1..r {
                pick[j] = pick[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_enumerated() {
        let mut pick = vec![0, 1];
        let mut all = vec![pick.clone()];
        while next_combination(&mut pick, 4) {
            all.push(pick.clone());
        }
        assert_eq!(
            all,
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
        let mut empty: Vec<usize> = vec![];
        assert!(!next_combination(&mut empty, 3));
    }

    #[test]
    fn config_defaults() {
        let c = ClientConfig::default();
        assert_eq!(c.request_timeout, Duration::from_millis(30));
        assert!(c.connect_timeout > c.request_timeout);
    }

    #[test]
    fn new_checks_the_node_list() {
        let addrs = |n: u16| -> Vec<SocketAddr> {
            (0..n)
                .map(|p| SocketAddr::from(([127, 0, 0, 1], 7000 + p)))
                .collect()
        };
        let cfg = ClientConfig::default;
        assert_eq!(
            AzClient::new(vec![], Stripes::DEFAULT, cfg()).unwrap_err(),
            AzError::NoNodes
        );
        assert!(matches!(
            AzClient::new(addrs(4), Stripes::DEFAULT, cfg()).unwrap_err(),
            AzError::Placement(_)
        ));
        let mut dup = addrs(5);
        dup.push(dup[0]);
        assert!(matches!(
            AzClient::new(dup, Stripes::DEFAULT, cfg()).unwrap_err(),
            AzError::DuplicateNode(_)
        ));
        let az = AzClient::new(addrs(6), Stripes::DEFAULT, cfg()).unwrap();
        let p = az.placement(&ChunkName::of(b"x")).unwrap();
        assert_eq!(p.len(), 5);
        // Placement follows addresses, not their order in the list.
        let mut rev = addrs(6);
        rev.reverse();
        let az2 = AzClient::new(rev, Stripes::DEFAULT, cfg()).unwrap();
        assert_eq!(az2.placement(&ChunkName::of(b"x")).unwrap(), p);
    }
}
