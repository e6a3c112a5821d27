//! An in-process S3 server for tests and benchmarks.
//!
//! S3 tests run against a real S3 implementation (s3s-fs: the s3s protocol
//! stack over a directory) on loopback, so they need no container or
//! external service and run in CI as they do on a laptop. The server owns
//! a tokio runtime on its own thread, so it works the same from a plain
//! `#[test]` and from inside `#[tokio::test]` (whose runtime may have a
//! single thread that a test body keeps busy).
//!
//! Every accepted socket gets TCP_NODELAY: without it, Nagle's algorithm and
//! delayed ACKs hold the tail of each response, and a 512 KiB GET stalls
//! about 40 ms.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::S3Options;

/// An S3 server on `127.0.0.1`, serving a directory; stopped on drop.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    root: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    /// Access key id the server accepts.
    pub const ACCESS_KEY_ID: &'static str = "kindling-test-key";
    /// Secret access key the server checks signatures with.
    pub const SECRET_ACCESS_KEY: &'static str = "kindling-test-secret";
    /// The bucket created at start.
    pub const BUCKET: &'static str = "kindling";

    /// Serves `root` (created if missing; bucket [`Self::BUCKET`] is the
    /// directory `root/kindling`) on an ephemeral loopback port.
    pub fn start(root: &Path) -> io::Result<S3Server> {
        std::fs::create_dir_all(root.join(Self::BUCKET))?;
        let root = root.canonicalize()?;
        let fs = s3s_fs::FileSystem::new(&root).map_err(|e| io::Error::other(format!("{e:?}")))?;
        let service = {
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(SimpleAuth::from_single(
                Self::ACCESS_KEY_ID,
                Self::SECRET_ACCESS_KEY,
            ));
            builder.build()
        };

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // Two workers: enough for the concurrent tests, and no more than the
        // 2-core machines this runs on.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-server")
            .enable_all()
            .build()?;
        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("s3-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, service, stop).await,
                        Err(e) => tracing::error!("s3 test server: cannot listen: {e}"),
                    }
                });
                // Drops open connections; file work in flight finishes.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(S3Server {
            addr,
            root,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// "http://127.0.0.1:PORT".
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        Self::BUCKET
    }

    /// The directory served; objects of the bucket are under
    /// `root/kindling/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// "s3://kindling" or "s3://kindling/PREFIX", for [`crate::open`].
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", Self::BUCKET)
        } else {
            format!("s3://{}/{prefix}", Self::BUCKET)
        }
    }

    /// Options that reach this server with its credentials.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: Some(crate::s3::DEFAULT_REGION.to_owned()),
            access_key_id: Some(Self::ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(Self::SECRET_ACCESS_KEY.to_owned()),
            session_token: None,
            allow_http: true,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, service: S3Service, mut stop: oneshot::Receiver<()>) {
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!("s3 test server: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::warn!("s3 test server: cannot set TCP_NODELAY: {e}");
        }
        let connection = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            // A client closing its connection is no server error.
            let _ = connection.await;
        });
    }
}
