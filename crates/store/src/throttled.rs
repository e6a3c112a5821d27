//! An emulated network in front of a store, for benchmarks: every request
//! waits a fixed latency, and response bytes share one link of fixed
//! bandwidth (a request's bytes are queued behind those already on the
//! link). The cold-start benchmark puts the same link in front of the
//! lazy path and of pull-and-unpack, so the two are compared on equal
//! terms.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Bytes, Store, StoreError};

/// A link: per-request latency and shared bandwidth.
#[derive(Debug)]
pub struct Link {
    latency: Duration,
    bytes_per_sec: f64,
    /// When the link is next free to send.
    busy_until: Mutex<Instant>,
}

impl Link {
    /// `bytes_per_sec` of 0 means unlimited.
    pub fn new(latency: Duration, bytes_per_sec: f64) -> Arc<Link> {
        Arc::new(Link {
            latency,
            bytes_per_sec,
            busy_until: Mutex::new(Instant::now()),
        })
    }

    /// Reserves the link for `n` bytes; returns when they will have arrived.
    fn reserve(&self, n: usize) -> Instant {
        let now = Instant::now();
        if self.bytes_per_sec <= 0.0 {
            return now;
        }
        let mut b = self.busy_until.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*b).max(now);
        *b = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
        *b
    }

    /// One request returning `n` bytes, async.
    ///
    /// Waits only when there is something to wait for: tokio's timer
    /// ticks in milliseconds, so even a zero sleep costs about 1 ms, which
    /// made every origin read on a "no latency, no bandwidth cap" link 2 ms
    /// slower than the unthrottled store.
    pub async fn transfer(&self, n: usize) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let until = self.reserve(n);
        if until > Instant::now() {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// A reader whose bytes arrive over this link (one request: the
    /// latency once, at the first read).
    pub fn reader<R: Read>(self: &Arc<Self>, inner: R) -> LinkReader<R> {
        LinkReader {
            inner,
            link: self.clone(),
            started: false,
        }
    }
}

/// See [`Link::reader`].
#[derive(Debug)]
pub struct LinkReader<R> {
    inner: R,
    link: Arc<Link>,
    started: bool,
}

impl<R: Read> Read for LinkReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.started {
            self.started = true;
            std::thread::sleep(self.link.latency);
        }
        let n = self.inner.read(buf)?;
        let until = self.link.reserve(n);
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
        Ok(n)
    }
}

/// A store whose reads cross a [`Link`]. Writes and listings are not
/// delayed: the benchmark only reads.
#[derive(Debug)]
pub struct Throttled<S> {
    inner: S,
    link: Arc<Link>,
}

impl<S: Store> Throttled<S> {
    pub fn new(inner: S, link: Arc<Link>) -> Self {
        Throttled { inner, link }
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Throttled<S> {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let b = self.inner.get(key).await?;
        self.link.transfer(b.len()).await;
        Ok(b)
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, data).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        self.inner.put_if_absent(key, data).await
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.link.transfer(0).await;
        self.inner.exists(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn url(&self) -> String {
        self.inner.url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unlimited_link_never_sleeps() {
        use std::future::Future;
        // Polled once, a transfer over a link with nothing to wait for is
        // already done: no trip through the timer.
        let link = Link::new(Duration::ZERO, 0.0);
        let mut t = std::pin::pin!(link.transfer(1 << 20));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(t.as_mut().poll(&mut cx).is_ready());
        let slow = Link::new(Duration::from_millis(5), 0.0);
        let mut t = std::pin::pin!(slow.transfer(1));
        assert!(t.as_mut().poll(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn latency_and_bandwidth_add_up() {
        let link = Link::new(Duration::from_millis(20), 10e6);
        let t = Instant::now();
        // Two 100 kB transfers at once share the link: ~20 ms + 20 ms.
        tokio::join!(link.transfer(100_000), link.transfer(100_000));
        let e = t.elapsed();
        assert!(
            e >= Duration::from_millis(38) && e < Duration::from_millis(200),
            "{e:?}"
        );
        let mut r = link.reader(&[0u8; 50_000][..]);
        let t = Instant::now();
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(24),
            "{:?}",
            t.elapsed()
        );
    }
}
