//! Retries for any store, driven by the errors' own classification.
//!
//! Backends do not retry (the S3 backend switches `object_store`'s retries
//! off), so this one wrapper decides for all of them: transient errors
//! ([`StoreError::is_transient`]) are retried with exponential backoff and
//! jitter, a bounded number of times, within an overall time budget per call;
//! anything else, `NotFound` included, is returned at once.
//!
//! Retrying `put_if_absent` is safe but can answer `false` for an object that
//! this very call wrote, when the first attempt succeeded on the server and
//! only its answer was lost. Callers that upload content-addressed objects
//! read `false` as "present", which is still true.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::op_key;
use crate::{Bytes, Op, Store, StoreError};

/// How [`Retrying`] retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included. Default: 5, which with the
    /// default backoff spans about 1.5 s of waiting: long enough to ride out
    /// a dropped connection or a burst of S3 throttling, short enough that a
    /// dead origin is reported quickly.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled after each retry. Default:
    /// 100 ms, about one S3 request round trip under load.
    pub initial_backoff: Duration,
    /// Cap on the wait between attempts. Default: 2 s.
    pub max_backoff: Duration,
    /// Budget for a whole call, attempts and waits included; past it the
    /// call fails with [`StoreError::Timeout`]. Default: 30 s, longer than
    /// one S3 request may take (20 s, see the S3 backend).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after `retry` failed attempts (1-based), before jitter.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// "Equal jitter": half the wait fixed, half random, so that clients failing
/// together do not retry together, while the wait still grows.
fn jitter(wait: Duration) -> Duration {
    let half = wait / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// A store that retries the transient errors of another.
#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Store> Retrying<S> {
    /// Wraps `inner` with the default [`RetryPolicy`].
    pub fn new(inner: S) -> Self {
        Self::with_policy(inner, RetryPolicy::default())
    }

    /// Wraps `inner` with `policy`.
    pub fn with_policy(inner: S, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The policy in use.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    async fn run<T, F, Fut>(&self, op: Op, key: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let deadline = Instant::now() + self.policy.timeout;
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout_at(deadline, call()).await {
                Ok(result) => result,
                Err(_) => {
                    return Err(StoreError::Timeout {
                        op,
                        key: op_key(op, key),
                        store: self.inner.url(),
                        after: self.policy.timeout,
                    })
                }
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(e) if !e.is_transient() || attempt >= self.policy.max_attempts => {
                    return Err(e)
                }
                Err(e) => e,
            };
            let wait = jitter(self.policy.backoff(attempt));
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::warn!(
                store = %self.inner.url(),
                %op,
                key,
                attempt,
                error = %error,
                "retrying in {wait:?}"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Retrying<S> {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.run(Op::Get, key, || self.inner.get(key)).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.run(Op::Put, key, || self.inner.put(key, data.clone()))
            .await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        self.run(Op::PutIfAbsent, key, || {
            self.inner.put_if_absent(key, data.clone())
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.run(Op::Exists, key, || self.inner.exists(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.run(Op::List, prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(Op::Delete, key, || self.inner.delete(key)).await
    }

    fn url(&self) -> String {
        self.inner.url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(5), Duration::from_millis(1600));
        assert_eq!(p.backoff(6), Duration::from_secs(2));
        assert_eq!(p.backoff(100), Duration::from_secs(2));
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }
}
