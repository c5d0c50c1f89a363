//! Slow and idle clients against the worker's HTTP listener: a connection that sends nothing,
//! half a request line, or half a body is closed after its timeout, and a flood of such
//! connections beyond the cap holds no more than the cap open in the process while `/healthz`
//! keeps being answered. The timeouts are made short through `Limits`; the daemon uses the
//! defaults (checked here too).

use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use housekeep::worker::listener::{self, Limits, OpenConnections};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

struct Server {
    addr: std::net::SocketAddr,
    open: OpenConnections,
    cancel: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

async fn start(limits: Limits) -> Server {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        // Reads its whole body: a client that stops sending leaves the request in progress.
        .route("/upload", post(|body: bytes::Bytes| async move { format!("{} bytes\n", body.len()) }));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (open, cancel) = (OpenConnections::default(), CancellationToken::new());
    let done = tokio::spawn(listener::serve(tcp, app, limits, open.clone(), cancel.clone()));
    Server { addr, open, cancel, done }
}

/// Read until the server closes the connection; None if it is still open after `wait`.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
    let body = closed_within(&mut s, Duration::from_secs(10)).await.expect("a /healthz answer");
    String::from_utf8_lossy(&body).into_owned()
}

/// Descriptors this process holds (sockets of both ends included).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn the_daemon_uses_the_documented_limits() {
    let d = Limits::default();
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.idle_timeout, Duration::from_secs(60));
    assert_eq!(d.max_connections, 256);
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed_after_the_timeout() {
    let timeout = Duration::from_millis(400);
    let srv = start(Limits { header_read_timeout: timeout, idle_timeout: Duration::from_secs(30), max_connections: 16 }).await;
    let t0 = Instant::now();
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut half_line = TcpStream::connect(srv.addr).await.unwrap();
    half_line.write_all(b"GET /heal").await.unwrap();
    let mut half_head = TcpStream::connect(srv.addr).await.unwrap();
    half_head.write_all(b"GET /healthz HTTP/1.1\r\nHost: te").await.unwrap();
    // A kept-alive connection after one answered request.
    let mut kept = TcpStream::connect(srv.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    let mut first = [0u8; 256];
    let n = kept.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first[..n]));

    for (what, s) in [("silent", &mut silent), ("half a request line", &mut half_line), ("half a head", &mut half_head), ("kept alive", &mut kept)] {
        let got = closed_within(s, Duration::from_secs(5)).await;
        assert!(got.is_some(), "a {what} connection is still open 5 s after connecting (timeout {timeout:?})");
    }
    let took = t0.elapsed();
    assert!(took >= timeout - Duration::from_millis(50), "closed before the timeout: {took:?}");
    assert_eq!(healthz(srv.addr).await.lines().last(), Some("ok"));
    assert!(srv.open.get() <= 1, "{} connections still counted open", srv.open.get());
}

#[tokio::test]
async fn a_request_that_stops_moving_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let srv = start(Limits { header_read_timeout: Duration::from_secs(30), idle_timeout: idle, max_connections: 16 }).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\nthe first few bytes").await.unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await.is_some(), "a stalled body kept its connection open");
    assert!(t0.elapsed() >= idle - Duration::from_millis(50), "closed before the idle timeout: {:?}", t0.elapsed());
    // A body that keeps moving is not cut off, even past the idle timeout in total.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 8\r\n\r\n").await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(idle / 2).await;
        s.write_all(b"xx").await.unwrap();
    }
    let body = closed_within(&mut s, Duration::from_secs(5)).await.expect("answered");
    assert!(String::from_utf8_lossy(&body).ends_with("8 bytes\n"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn a_flood_beyond_the_cap_holds_only_the_cap_and_healthz_still_answers() {
    let (timeout, cap, flood) = (Duration::from_millis(500), 4usize, 24usize);
    let srv = start(Limits { header_read_timeout: timeout, idle_timeout: Duration::from_secs(30), max_connections: cap }).await;
    assert_eq!(healthz(srv.addr).await.lines().last(), Some("ok"));
    let baseline = open_fds();
    let mut idle = Vec::new();
    for _ in 0..flood {
        idle.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // While the flood is waiting: the server side holds at most `cap` of them.
    let mut max_open = 0;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        max_open = max_open.max(srv.open.get());
        let server_side = open_fds().saturating_sub(baseline + flood);
        assert!(server_side <= cap, "{server_side} accepted sockets held for a cap of {cap}");
    }
    assert_eq!(max_open, cap, "the cap is used");
    // A real client arriving during the flood is answered once idle connections are dropped.
    let t0 = Instant::now();
    assert_eq!(healthz(srv.addr).await.lines().last(), Some("ok"));
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // Every flooding connection was eventually accepted and closed, a wave of `cap` at a time.
    for s in &mut idle {
        assert!(closed_within(s, Duration::from_secs(10)).await.is_some(), "a flooding connection was never closed");
    }
    drop(idle);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(srv.open.get(), 0);

    // Shutdown stops the listener promptly, with a silent connection open.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    srv.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), srv.done).await.expect("serve returns after cancel").unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(1)).await.is_some());
}
