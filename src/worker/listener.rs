//! The worker's HTTP listener, with limits no slow or idle client can outlast.
//!
//! `axum::serve` keeps a connection open for as long as the client likes: 800 connections that
//! sent half a request line, or nothing, all stayed open. Here every connection is held to:
//!
//! - [`HEADER_READ_TIMEOUT`]: a request head must arrive whole within this time of the server
//!   starting to wait for it. hyper starts that wait as soon as a connection is idle, so it is
//!   also the longest a kept-alive connection stays open between requests.
//! - [`IDLE_TIMEOUT`]: a connection with a request in progress that moves no byte either way for
//!   this long (a body trickled in, a response never read) is closed.
//! - [`MAX_CONNECTIONS`] open at once. Beyond that the listener stops accepting: further
//!   connections wait in the kernel's accept queue (its length bounded by the kernel, costing
//!   this process no descriptor and no memory) and are served in order as others close, which
//!   the timeouts above guarantee happens. Closing them instead would fail a Prometheus scrape
//!   that merely arrived during a flood.
//! - [`MAX_REQUEST_HEAD`] bytes of request head per connection (431 beyond).
//!
//! On shutdown the listener stops accepting, idle connections close at once and requests in
//! progress finish (the daemon gives them 2 s).
//!
//! [`serve`] takes its [`Limits`] as an argument so tests can make the timeouts short; the
//! daemon uses [`Limits::default`], the values above.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Time for a request head to arrive whole, and for a kept-alive connection to send its next one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may go without moving a byte while a request is in progress.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request head (request line and headers) read; ours are a few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// The limits of one listener; the default is the production values above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read_timeout: HEADER_READ_TIMEOUT, idle_timeout: IDLE_TIMEOUT, max_connections: MAX_CONNECTIONS }
    }
}

/// How many connections a listener holds open right now.
#[derive(Debug, Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts a connection as open until dropped.
struct Open(OpenConnections);

impl Open {
    fn new(o: &OpenConnections) -> Open {
        o.0.fetch_add(1, Ordering::Relaxed);
        Open(o.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve `app` on `listener` until `shutdown` is cancelled, then until the open connections
/// have finished.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, open: OpenConnections, shutdown: CancellationToken) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    loop {
        // A free slot first: a connection is accepted only when it can be served.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, go on.
                    tracing::warn!(error = %e, "HTTP listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (app, open, shutdown) = (app.clone(), Open::new(&open), shutdown.clone());
        tokio::spawn(async move {
            connection(stream, app, limits, shutdown).await;
            drop((open, slot));
        });
    }
    drop(listener);
    // Every connection gives its slot back when it ends: holding them all means none is left.
    let _ = slots.acquire_many(max as u32).await;
}

async fn connection(stream: TcpStream, app: Router, limits: Limits, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Tracked { inner: stream, start, last: last.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .keep_alive(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_until = start + Duration::from_millis(last.load(Ordering::Relaxed)) + limits.idle_timeout;
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection closed");
                }
                return;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(idle_until) => {
                let quiet = Instant::now().saturating_duration_since(start + Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= limits.idle_timeout {
                    tracing::debug!("HTTP connection idle for {}s; closed", quiet.as_secs());
                    return; // dropping the connection closes the socket
                }
            }
        }
    }
}

/// A stream that records when it last moved a byte (milliseconds since `start`).
struct Tracked {
    inner: TcpStream,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
