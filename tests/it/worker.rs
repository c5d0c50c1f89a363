//! `housekeep worker` as a process: the HTTP listener (/healthz, /readyz, /metrics), systemd's
//! notify protocol (READY=1, WATCHDOG=1, STOPPING=1), SIGTERM, and `worker --once`.

use crate::common;
use crate::fixtures;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use housekeep::seed::{seed, SeedOptions};

/// A raw HTTP/1.1 GET: (status code, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sigterm(child: &Child) {
    common::sigterm(child.id());
}

/// Wait for the child to exit, at most `limit`; kill it and fail beyond.
fn wait_exit(child: &mut Child, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("worker still running {limit:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Receives systemd notifications on a datagram socket of the test's own.
struct NotifySocket {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new().prefix("hk-notify").tempdir_in(common::tmp_root()).unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        NotifySocket { sock, path, _dir: dir, seen: Vec::new() }
    }

    /// Read until a message containing `line` arrives or `limit` passes.
    fn wait_for(&mut self, line: &str, limit: Duration) -> bool {
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        if self.seen.iter().any(|(_, m)| m.lines().any(|l| l == line)) {
            return true;
        }
        while t0.elapsed() < limit {
            if let Ok(n) = self.sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == line);
                self.seen.push((Instant::now(), msg));
                if hit {
                    return true;
                }
            }
        }
        false
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|(_, m)| m.lines().any(|l| l == line)).count()
    }

    fn messages(&self) -> Vec<String> {
        self.seen.iter().map(|(_, m)| m.clone()).collect()
    }
}

fn worker(db: &TestDb, store_url: &str, port: u16, log: &std::path::Path) -> Command {
    let mut cmd = housekeep();
    let f = std::fs::File::create(log).unwrap();
    cmd.args(["worker", "--listen", &format!("127.0.0.1:{port}")])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", store_url)
        .env("HOUSEKEEP_LOG", "info")
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
    // Every task due every second, so that runs happen during the test.
    for task in ["UNLOCK", "UNKNOWN", "EXPIRE", "DELETE_OBJECTS", "STALE_UPLOADS"] {
        cmd.env(format!("HOUSEKEEP_TASKS_{task}_SCHEDULE"), "* * * * * *");
    }
    cmd
}

fn show(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test]
async fn worker_serves_health_readiness_metrics_and_speaks_systemd_notify() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    seed(&mut c, Some(&fixtures::stores(&t.store, &t.store)), &SeedOptions { artifacts: 300, projects: 3, ..Default::default() })
        .await
        .unwrap();
    let port = free_port();
    let log = common::tmp_root().join(format!("{}.log", common::unique("worker")));
    let mut notify = NotifySocket::bind();
    let mut child = worker(&db, &t.url, port, &log)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .spawn()
        .unwrap();

    assert!(notify.wait_for("READY=1", Duration::from_secs(20)), "no READY=1: {:?}\n{}", notify.messages(), show(&log));
    // READY=1 means the listener is bound: the first request succeeds.
    assert_eq!(get(port, "/healthz").unwrap().0, 200, "listener not bound at READY=1");
    assert_eq!(get(port, "/readyz").unwrap(), (200, "ready\n".to_string()));
    let (code, body) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("housekeep_build_info{version=\""), "{body}");

    // Watchdog pings from the scheduler loop, about every second.
    let t0 = Instant::now();
    while notify.count("WATCHDOG=1") < 3 && t0.elapsed() < Duration::from_secs(10) {
        notify.wait_for("never", Duration::from_millis(200));
    }
    assert!(notify.count("WATCHDOG=1") >= 3, "watchdog pings: {:?}", notify.messages());
    let pings: Vec<Instant> = notify.seen.iter().filter(|(_, m)| m.contains("WATCHDOG=1")).map(|(t, _)| *t).collect();
    for w in pings.windows(2) {
        assert!(w[1] - w[0] < Duration::from_millis(1900), "pings more than WATCHDOG_USEC/2 apart: {:?}", w[1] - w[0]);
    }

    // After the scheduled runs, /metrics counts them (the series exist from the start at 0).
    let succeeded = |body: &str, task: &str| {
        let series = format!("housekeep_task_runs_total{{outcome=\"success\",task=\"{task}\"}} ");
        body.lines().any(|l| l.strip_prefix(&series).is_some_and(|n| n != "0"))
    };
    let t0 = Instant::now();
    let body = loop {
        let (_, body) = get(port, "/metrics").unwrap();
        let all_ran = ["unlock", "unknown", "expire", "delete-objects", "stale-uploads"].iter().all(|task| succeeded(&body, task));
        if all_ran || t0.elapsed() > Duration::from_secs(20) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for task in ["unlock", "unknown", "expire", "delete-objects", "stale-uploads"] {
        assert!(
            succeeded(&body, task),
            "no successful {task} run in /metrics:\n{body}\n{}",
            show(&log)
        );
    }
    for name in ["housekeep_task_last_success_timestamp_seconds", "housekeep_task_duration_seconds", "housekeep_backlog", "housekeep_up 1"] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
    let (code, _) = get(port, "/nope").unwrap();
    assert_eq!(code, 404);

    sigterm(&child);
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(30)), "no STOPPING=1: {:?}", notify.messages());
    let (status, took) = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}\n{}", show(&log));
    assert!(took < Duration::from_secs(30));
    // STOPPING=1 is the last word; READY=1 was said once.
    assert_eq!(notify.count("READY=1"), 1, "{:?}", notify.messages());
    let last = notify.seen.iter().rposition(|(_, m)| m.contains("STOPPING=1")).unwrap();
    assert!(notify.seen[last + 1..].iter().all(|(_, m)| !m.contains("WATCHDOG=1")), "watchdog pings after STOPPING=1");
    assert!(get(port, "/healthz").is_err(), "the listener should be closed after exit");
}

/// /healthz makes no database call, /readyz does: with the database gone, the first stays 200
/// and the second answers 503 naming the database; the worker keeps running and stops cleanly.
#[tokio::test]
async fn readyz_fails_when_the_database_is_gone_but_healthz_does_not() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let port = free_port();
    let log = common::tmp_root().join(format!("{}.log", common::unique("worker")));
    let mut notify = NotifySocket::bind();
    let mut child = worker(&db, &t.url, port, &log).env("NOTIFY_SOCKET", &notify.path).spawn().unwrap();
    assert!(notify.wait_for("READY=1", Duration::from_secs(20)), "no READY=1\n{}", show(&log));
    assert_eq!(get(port, "/readyz").unwrap().0, 200);

    let admin = common::connect(&std::env::var("HK_TEST_PG_URL").unwrap()).await;
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db.name)).await.unwrap();
    let (code, body) = get(port, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("database"), "{body}");
    assert!(!body.contains("postgres://"), "a URL in a response: {body}");
    assert_eq!(get(port, "/healthz").unwrap(), (200, "ok\n".to_string()));
    assert!(child.try_wait().unwrap().is_none(), "the worker died with its database\n{}", show(&log));

    sigterm(&child);
    let (status, _) = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}\n{}", show(&log));
    assert!(notify.wait_for("STOPPING=1", Duration::from_secs(1)));
}

#[tokio::test]
async fn worker_once_runs_every_task_once_in_order() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    let r = seed(&mut c, Some(&fixtures::stores(&t.store, &t.store)), &SeedOptions { artifacts: 600, projects: 3, ..Default::default() })
        .await
        .unwrap();
    assert!(r.queued_objects > 0);
    let expirable: i64 = c
        .query_one("SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() - interval '1 day' AND locked = 0 AND file_type <> 3", &[])
        .await
        .unwrap()
        .get(0);
    assert!(expirable > 0);

    let o = run(housekeep()
        .args(["worker", "--once"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url)
        .env("HOUSEKEEP_LOG", "warn"));
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    let order = ["unlock", "unknown", "expire", "delete-objects", "stale-uploads"];
    assert_eq!(lines.len(), 5, "one line per task:\n{out}");
    for (line, task) in lines.iter().zip(order) {
        assert!(line.starts_with(&format!("{task}: ")), "expected {task} in {line:?}\n{out}");
    }
    let runs: Vec<(String, Option<String>)> =
        c.query("SELECT task, outcome FROM housekeep.runs ORDER BY id", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(runs.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), order);
    assert!(runs.iter().all(|r| r.1.as_deref() == Some("success")), "{runs:?}");
    // delete-objects ran after expire: rows expired more than a day ago were queued ready and
    // are already deleted; nothing ready is left in the queue.
    let count = |line: &str, key: &str| -> i64 {
        line.split(|ch: char| ch.is_whitespace() || ch == '(' || ch == ')')
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let expired = count(lines[2], "expired=");
    assert!(expired >= expirable, "expire moved {expired} rows, at least {expirable} were expirable");
    let ready: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at < now()", &[]).await.unwrap().get(0);
    assert_eq!(ready, 0, "delete-objects left ready rows:\n{out}");
    let deleted = count(lines[3], "deleted=");
    assert!(deleted >= expirable, "delete-objects deleted {deleted}, expire queued at least {expirable} ready rows");
}
