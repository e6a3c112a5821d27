//! A store wrapper that misbehaves on request, for tests of retry and
//! integrity paths.
//!
//! Mocks drift from the real thing; this wrapper instead sits in front of a
//! real store (a [`crate::LocalStore`] in a temporary directory, or S3 on the
//! in-process server) and breaks only what a test asks for: the next N calls
//! of an operation fail (transiently or permanently), chosen keys read back
//! corrupted or missing, every call is slowed. It counts calls per operation,
//! injected failures included, so a test can assert how often a layer above
//! retried. It is public, not `cfg(test)`, so other crates' tests use it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::op_key;
use crate::{Bytes, Op, Store, StoreError};

/// Calls seen by a [`FaultyStore`], per operation, failed ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub gets: u64,
    pub puts: u64,
    pub puts_if_absent: u64,
    pub exists: u64,
    pub lists: u64,
    pub deletes: u64,
}

impl OpCounts {
    /// The count for `op`.
    pub fn of(&self, op: Op) -> u64 {
        match op {
            Op::Get => self.gets,
            Op::Put => self.puts,
            Op::PutIfAbsent => self.puts_if_absent,
            Op::Exists => self.exists,
            Op::List => self.lists,
            Op::Delete => self.deletes,
        }
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        Op::ALL.iter().map(|&op| self.of(op)).sum()
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// Pending injected failures per operation, consumed in order: `true`
    /// is transient.
    failures: HashMap<Op, Vec<bool>>,
    corrupt: HashSet<String>,
    hidden: HashSet<String>,
    latency: Duration,
    op_latency: HashMap<Op, Duration>,
}

/// A store that injects failures into another. See the module docs.
#[derive(Debug)]
pub struct FaultyStore<S = Arc<dyn Store>> {
    inner: S,
    faults: Mutex<Faults>,
    calls: [AtomicU64; Op::ALL.len()],
}

fn index(op: Op) -> usize {
    match op {
        Op::Get => 0,
        Op::Put => 1,
        Op::PutIfAbsent => 2,
        Op::Exists => 3,
        Op::List => 4,
        Op::Delete => 5,
    }
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, injecting nothing until told to.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(Faults::default()),
            calls: Default::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        // A test that panicked while holding the lock has already failed;
        // the fault table itself is always consistent.
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next `n` calls of `op` fail with a transient error (after any
    /// failures already queued).
    pub fn fail_next(&self, op: Op, n: usize) {
        let mut faults = self.faults();
        let queue = faults.failures.entry(op).or_default();
        queue.extend(std::iter::repeat_n(true, n));
    }

    /// The next `n` calls of `op` fail with a permanent error (after any
    /// failures already queued).
    pub fn fail_next_permanent(&self, op: Op, n: usize) {
        let mut faults = self.faults();
        let queue = faults.failures.entry(op).or_default();
        queue.extend(std::iter::repeat_n(false, n));
    }

    /// `get(key)` returns the stored bytes with one byte flipped (the middle
    /// one); an empty object reads as one byte, 0xff.
    pub fn corrupt_key(&self, key: &str) {
        self.faults().corrupt.insert(key.to_owned());
    }

    /// `key` looks absent: `get` answers NotFound, `exists` false, `list`
    /// leaves it out. Writes and deletes still reach the inner store.
    pub fn hide_key(&self, key: &str) {
        self.faults().hidden.insert(key.to_owned());
    }

    /// Every call sleeps `latency` before doing anything.
    pub fn set_latency(&self, latency: Duration) {
        self.faults().latency = latency;
    }

    /// Calls of `op` sleep `latency` (instead of the general latency).
    pub fn set_op_latency(&self, op: Op, latency: Duration) {
        self.faults().op_latency.insert(op, latency);
    }

    /// Removes every injected fault (counters are kept).
    pub fn clear_faults(&self) {
        *self.faults() = Faults::default();
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.calls[index(op)].load(Ordering::SeqCst)
    }

    /// Calls so far, per operation.
    pub fn counts(&self) -> OpCounts {
        OpCounts {
            gets: self.calls(Op::Get),
            puts: self.calls(Op::Put),
            puts_if_absent: self.calls(Op::PutIfAbsent),
            exists: self.calls(Op::Exists),
            lists: self.calls(Op::List),
            deletes: self.calls(Op::Delete),
        }
    }

    /// Sets every counter back to zero.
    pub fn reset_counts(&self) {
        for counter in &self.calls {
            counter.store(0, Ordering::SeqCst);
        }
    }

    /// Counts the call, sleeps, and fails it if a failure is queued.
    async fn enter(&self, op: Op, key: &str) -> Result<(), StoreError> {
        self.calls[index(op)].fetch_add(1, Ordering::SeqCst);
        let (latency, failure) = {
            let mut faults = self.faults();
            let latency = faults
                .op_latency
                .get(&op)
                .copied()
                .unwrap_or(faults.latency);
            let failure = faults
                .failures
                .get_mut(&op)
                .filter(|queue| !queue.is_empty())
                .map(|queue| queue.remove(0));
            (latency, failure)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match failure {
            Some(transient) => Err(StoreError::Injected {
                op,
                key: op_key(op, key),
                store: self.inner.url(),
                transient,
            }),
            None => Ok(()),
        }
    }

    fn is_hidden(&self, key: &str) -> bool {
        self.faults().hidden.contains(key)
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for FaultyStore<S> {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.enter(Op::Get, key).await?;
        if self.is_hidden(key) {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        }
        let data = self.inner.get(key).await?;
        if !self.faults().corrupt.contains(key) {
            return Ok(data);
        }
        let mut bytes = data.to_vec();
        if bytes.is_empty() {
            bytes.push(0xff);
        } else {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
        }
        Ok(Bytes::from(bytes))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.enter(Op::Put, key).await?;
        self.inner.put(key, data).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        self.enter(Op::PutIfAbsent, key).await?;
        self.inner.put_if_absent(key, data).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.enter(Op::Exists, key).await?;
        if self.is_hidden(key) {
            return Ok(false);
        }
        self.inner.exists(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.enter(Op::List, prefix).await?;
        let mut keys = self.inner.list(prefix).await?;
        let faults = self.faults();
        keys.retain(|k| !faults.hidden.contains(k));
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.enter(Op::Delete, key).await?;
        self.inner.delete(key).await
    }

    fn url(&self) -> String {
        self.inner.url()
    }
}
