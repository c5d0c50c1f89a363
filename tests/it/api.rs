//! The Job Artifacts API on the worker's listener, with the real binary: every endpoint and
//! status code, tokens (wrong, expired, revoked, a finished job's), roles, path checks, tokens
//! kept out of logs and the database, a 50 MB download with flat memory, and 100 downloads at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, housekeep, stderr, stdout, Backend, TestDb, TestStore};
use crate::fixtures::{self, Art, Fx};

/// An HTTP answer: status, headers (lower-case names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection; `headers` are `Name: value` lines.
pub fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: buf[end + 4..].to_vec() }
}

/// A worker serving the API, with no task scheduled.
pub struct Worker {
    pub port: u16,
    pub log: std::path::PathBuf,
    child: Child,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    pub fn start(db: &TestDb, store_url: &str, env: &[(&str, &str)]) -> Worker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = common::tmp_root().join(format!("{}.log", common::unique("api-worker")));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = housekeep();
        cmd.args(["worker", "--listen", &format!("127.0.0.1:{port}")])
            .env("HOUSEKEEP_DATABASE_URL", &db.url)
            .env("HOUSEKEEP_STORE_URL", store_url)
            .env("HOUSEKEEP_LOG", "trace")
            .env("HOUSEKEEP_LOG_FORMAT", "json")
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f));
        for t in ["UNLOCK", "UNKNOWN", "EXPIRE", "DELETE_OBJECTS", "STALE_UPLOADS"] {
            cmd.env(format!("HOUSEKEEP_TASKS_{t}_ENABLED"), "false");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let w = Worker { port, log, child };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(20), "worker never listened: {}", std::fs::read_to_string(&w.log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        w
    }

    pub fn get(&self, path: &str, headers: &[&str]) -> Answer {
        request(self.port, "GET", path, headers)
    }

    /// Peak resident memory of the worker (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
    }
}

/// A zip archive of `files` (name, content), the first stored, the others deflated.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (i, (name, data)) in files.iter().enumerate() {
        let method = if i == 0 { zip::CompressionMethod::Stored } else { zip::CompressionMethod::Deflated };
        w.start_file(*name, SimpleFileOptions::default().compression_method(method)).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Run `housekeep token …`; returns the token printed on stdout.
pub fn token(db: &TestDb, args: &[&str]) -> String {
    let o = common::run(housekeep().arg("token").args(args).env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_LOG", "warn"));
    assert_eq!(o.status.code(), Some(0), "token {args:?}: {}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "the token, alone on stdout: {out:?}");
    out.trim().to_owned()
}

/// A project with a finished job whose archive (a real zip) is in the store.
struct Scene {
    db: TestDb,
    t: TestStore,
    project: i64,
    job: i64,
    archive: Vec<u8>,
    archive_id: i64,
}

const README: &[u8] = b"hello from the archive\n";

async fn scene() -> Scene {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let project = fx.project().await;
    let pl = fx.pipeline(project, "main", "success", 1).await;
    let job = fx.job(project, pl).await;
    let a = fx.artifact(Art::new(project, job).file_type(1).expire("1 day")).await;
    fx.artifact(Art::new(project, job).file_type(3)).await;
    fx.exact_statistics().await;
    let log: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    let archive = zip_of(&[("README.md", README), ("out/build.log", &log), ("dir/", b"")]);
    t.store.put(&t.store.full_key(&a.key), archive.clone().into()).await.unwrap();
    Scene { db, t, project, job, archive, archive_id: a.id }
}

fn auth(token: &str) -> String {
    format!("PRIVATE-TOKEN: {token}")
}

#[tokio::test]
async fn downloads_stream_the_archive_and_single_files_by_job_and_by_ref() {
    let s = scene().await;
    let reporter = token(&s.db, &["create", "--user", "rita", "--project", &s.project.to_string(), "--role", "reporter"]);
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let h = auth(&reporter);
    let (p, job) = (s.project, s.job);
    let path = format!("group%2Fp-{p}");

    for url in [
        format!("/api/v4/projects/{p}/jobs/{job}/artifacts"),
        format!("/api/v4/projects/{path}/jobs/{job}/artifacts"),
        format!("/api/v4/projects/GROUP%2FP-{p}/jobs/{job}/artifacts"),
        format!("/api/v4/projects/{p}/jobs/artifacts/main/download?job=build"),
    ] {
        let a = w.get(&url, &[&h]);
        assert_eq!(a.status, 200, "{url}: {}", a.text());
        assert!(a.body == s.archive, "{url}: the archive, byte for byte");
        assert_eq!(a.header("content-length"), Some(s.archive.len().to_string().as_str()));
        assert_eq!(a.header("content-type"), Some("application/octet-stream"));
        assert!(a.header("content-disposition").unwrap().starts_with("attachment; filename=\"artifacts.zip\""));
    }
    let log: Vec<u8> = (0..200_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    for (url, want) in [
        (format!("/api/v4/projects/{p}/jobs/{job}/artifacts/README.md"), README.to_vec()),
        (format!("/api/v4/projects/{p}/jobs/{job}/artifacts/out/build.log"), log.clone()),
        (format!("/api/v4/projects/{p}/jobs/artifacts/main/raw/out/build.log?job=build"), log),
    ] {
        let a = w.get(&url, &[&h]);
        assert_eq!(a.status, 200, "{url}: {}", a.text());
        assert!(a.body == want, "{url}: the file's bytes");
    }
    let a = w.get(&format!("/api/v4/projects/{p}/jobs/{job}/artifacts/out/build.log"), &[&h]);
    assert_eq!(a.header("content-disposition"), Some("attachment; filename=\"build.log\"; filename*=UTF-8''build%2Elog"));
    assert_eq!(a.header("content-type"), Some("text/plain; charset=utf-8"));

    // Invalid paths are 400; a path that is not in the archive, or a directory, 404.
    for bad in ["../../etc/passwd", "out/../README.md", "%2Fetc%2Fpasswd", "a%00b", "%2E%2E/x"] {
        let a = w.get(&format!("/api/v4/projects/{p}/jobs/{job}/artifacts/{bad}"), &[&h]);
        assert_eq!((a.status, a.text()), (400, r#"{"message":"400 Bad request"}"#.to_string()), "{bad}");
    }
    for (url, message) in [
        (format!("/api/v4/projects/{p}/jobs/{job}/artifacts/nope.txt"), "404 Not Found"),
        (format!("/api/v4/projects/{p}/jobs/{job}/artifacts/dir/"), "404 Not Found"),
        (format!("/api/v4/projects/{p}/jobs/999999/artifacts"), "404 Not found"),
        (format!("/api/v4/projects/{p}/jobs/artifacts/main/download?job=nope"), "404 Not Found"),
        (format!("/api/v4/projects/{p}/jobs/artifacts/no-such-ref/download?job=build"), "404 Not Found"),
    ] {
        let a = w.get(&url, &[&h]);
        assert_eq!((a.status, a.text()), (404, format!(r#"{{"message":"{message}"}}"#)), "{url}");
    }
    let a = w.get(&format!("/api/v4/projects/{p}/jobs/artifacts/main/download"), &[&h]);
    assert_eq!(a.status, 400, "?job= is required: {}", a.text());

    // Every answer is counted by endpoint and code, and the bytes sent by endpoint.
    let metrics = w.get("/metrics", &[]).text();
    let value = |series: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("{series} missing"))
    };
    assert_eq!(value(r#"housekeep_api_requests_total{code="200",endpoint="download"} "#), 3);
    assert_eq!(value(r#"housekeep_api_requests_total{code="400",endpoint="file"} "#), 5);
    assert_eq!(value(r#"housekeep_api_requests_total{code="404",endpoint="download_by_ref"} "#), 2);
    assert_eq!(value(r#"housekeep_api_sent_bytes_total{endpoint="download"} "#), 3 * s.archive.len() as u64);
    assert_eq!(value(r#"housekeep_api_requests_total{code="200",endpoint="keep"} "#), 0, "every series exists from the start");

    // Expired on an unlocked pipeline: 404 by job id (the answer a CI job gets); the object
    // missing from the store: 404 too.
    let c = s.db.client().await;
    c.execute("UPDATE p_ci_job_artifacts SET expire_at = now() - interval '1 hour' WHERE id = $1", &[&s.archive_id]).await.unwrap();
    assert_eq!(w.get(&format!("/api/v4/projects/{p}/jobs/{job}/artifacts"), &[&h]).status, 200, "a locked pipeline keeps them");
    c.execute("UPDATE p_ci_pipelines SET locked = 0 WHERE project_id = $1", &[&p]).await.unwrap();
    assert_eq!(w.get(&format!("/api/v4/projects/{p}/jobs/{job}/artifacts"), &[&h]).status, 404);
    c.execute("UPDATE p_ci_job_artifacts SET expire_at = NULL WHERE id = $1", &[&s.archive_id]).await.unwrap();
    std::fs::remove_file(s.t.store.local_root().unwrap().join(key_of(&c, s.archive_id).await)).unwrap();
    let a = w.get(&format!("/api/v4/projects/{p}/jobs/{job}/artifacts"), &[&h]);
    assert_eq!((a.status, a.text()), (404, r#"{"message":"404 Not Found"}"#.to_string()));
    assert_eq!(w.get(&format!("/api/v4/projects/{p}/jobs/{job}/artifacts/README.md"), &[&h]).status, 404);
}

async fn key_of(c: &tokio_postgres::Client, id: i64) -> String {
    c.query_one(
        "SELECT housekeep.artifact_store_dir(project_id, created_at, job_id, id, file_final_path, file_location) || '/' || file
         FROM p_ci_job_artifacts WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn credentials_and_roles_give_gitlabs_status_codes() {
    let s = scene().await;
    let c = s.db.client().await;
    let fx = Fx { c: &c };
    let (p, job) = (s.project.to_string(), s.job);
    let public = fx.project().await;
    c.execute("UPDATE projects SET visibility_level = 20 WHERE id = $1", &[&public]).await.unwrap();
    let pub_pl = fx.pipeline(public, "main", "success", 1).await;
    let pub_job = fx.job(public, pub_pl).await;
    let pub_art = fx.artifact(Art::new(public, pub_job).file_type(1)).await;
    s.t.store.put(&s.t.store.full_key(&pub_art.key), s.archive.clone().into()).await.unwrap();
    fx.exact_statistics().await;

    let tok = |user: &str, role: &str| token(&s.db, &["create", "--user", user, "--project", &p, "--role", role]);
    let (guest, reporter, developer, maintainer) = (tok("gus", "guest"), tok("rita", "reporter"), tok("dev", "developer"), tok("mia", "maintainer"));
    let stranger = token(&s.db, &["create", "--user", "sam", "--project", &public.to_string(), "--role", "maintainer"]);
    let expired = tok("old", "maintainer");
    c.execute("UPDATE housekeep.personal_access_tokens t SET expires_at = now() - interval '1 second' FROM housekeep.api_users u WHERE u.id = t.user_id AND u.username = 'old'", &[]).await.unwrap();
    let revoked = tok("rev", "maintainer");
    token_revoke(&s.db, &revoked);
    // A job token: valid while its job runs.
    let runner_job = fx.job(s.project, fx.pipeline(s.project, "dev", "running", 0).await).await;
    c.execute("UPDATE p_ci_builds SET status = 'running' WHERE id = $1", &[&runner_job]).await.unwrap();
    let job_token = token(&s.db, &["create", "--job", &runner_job.to_string()]);

    let w = Worker::start(&s.db, &s.t.url, &[]);
    let archive = format!("/api/v4/projects/{p}/jobs/{job}/artifacts");
    let check = |method: &str, url: &str, headers: &[&str], want: u16, body: Option<&str>| {
        let a = request(w.port, method, url, headers);
        assert_eq!(a.status, want, "{method} {url} {headers:?}: {}", a.text());
        if let Some(b) = body {
            assert_eq!(a.text(), b, "{method} {url}");
            assert_eq!(a.header("content-type"), Some("application/json"));
        }
    };
    const UNAUTHORIZED: Option<&str> = Some(r#"{"message":"401 Unauthorized"}"#);
    const FORBIDDEN: Option<&str> = Some(r#"{"message":"403 Forbidden"}"#);
    check("GET", &archive, &[], 401, UNAUTHORIZED);
    for bad in ["PRIVATE-TOKEN: hkpat-wrong", &auth(&expired), &auth(&revoked), "JOB-TOKEN: hkjob-wrong"] {
        check("GET", &archive, &[bad], 401, UNAUTHORIZED);
    }
    check("GET", &format!("{archive}?private_token={}", expired), &[], 401, UNAUTHORIZED);
    check("GET", &archive, &[&auth(&guest)], 403, FORBIDDEN);
    check("GET", &archive, &[&auth(&stranger)], 404, Some(r#"{"message":"404 Project Not Found"}"#));
    check("GET", "/api/v4/projects/no%2Fsuch/jobs/1/artifacts", &[&auth(&reporter)], 404, Some(r#"{"message":"404 Project Not Found"}"#));
    check("GET", &archive, &[&auth(&reporter)], 200, None);
    check("GET", &archive, &[&format!("Authorization: Bearer {reporter}")], 200, None);
    check("GET", &archive, &[&format!("authorization: bearer {reporter}")], 200, None);
    check("GET", &format!("/api/v4/projects/{public}/jobs/{pub_job}/artifacts"), &[], 200, None);
    check("GET", &format!("/api/v4/projects/{public}/jobs/{pub_job}/artifacts"), &["PRIVATE-TOKEN: wrong"], 401, UNAUTHORIZED);
    // A credential that is not text is refused, not taken for no credentials.
    check("GET", &format!("/api/v4/projects/{public}/jobs/{pub_job}/artifacts"), &["PRIVATE-TOKEN: \u{e9}t\u{e9}"], 401, UNAUTHORIZED);

    // Job tokens: header or parameter, own project only, downloads only, while the job runs.
    check("GET", &archive, &[&format!("JOB-TOKEN: {job_token}")], 200, None);
    check("GET", &format!("{archive}?job_token={job_token}"), &[], 200, None);
    check("GET", &format!("/api/v4/projects/{public}/jobs/{pub_job}/artifacts/README.md"), &[&format!("JOB-TOKEN: {job_token}")], 200, None);
    check("POST", &format!("{archive}/keep"), &[&format!("JOB-TOKEN: {job_token}")], 401, UNAUTHORIZED);
    c.execute("UPDATE p_ci_builds SET status = 'success' WHERE id = $1", &[&runner_job]).await.unwrap();
    check("GET", &archive, &[&format!("JOB-TOKEN: {job_token}")], 401, UNAUTHORIZED);

    // Keep needs Developer; delete needs Maintainer.
    check("POST", &format!("{archive}/keep"), &[], 401, UNAUTHORIZED);
    check("POST", &format!("{archive}/keep"), &[&auth(&reporter)], 403, FORBIDDEN);
    let a = request(w.port, "POST", &format!("{archive}/keep"), &[&auth(&developer)]);
    assert_eq!(a.status, 200, "{}", a.text());
    let j: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!((j["id"].as_i64(), j["artifacts_expire_at"].is_null(), j["pipeline"]["project_id"].as_i64()), (Some(job), true, Some(s.project)));
    assert_eq!(j["artifacts_file"]["filename"], "artifacts.zip");
    assert_eq!(fx.count_owned(format!("SELECT count(*) FROM p_ci_job_artifacts WHERE job_id = {job} AND expire_at IS NOT NULL")).await, 0);
    check("POST", &format!("/api/v4/projects/{p}/jobs/{runner_job}/artifacts/keep"), &[&auth(&developer)], 404, Some(r#"{"message":"404 Not Found"}"#));

    check("DELETE", &archive, &[&auth(&developer)], 403, FORBIDDEN);
    check("DELETE", &archive, &[&auth(&maintainer)], 204, None);
    assert_eq!(fx.count_owned(format!("SELECT count(*) FROM p_ci_job_artifacts WHERE job_id = {job}")).await, 1, "the trace stays");
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 1, "the archive is queued");
    fixtures::assert_statistics_exact(&c).await;
    check("GET", &archive, &[&auth(&reporter)], 404, None);

    // Deleting a project's artifacts is accepted, and done in the background.
    let other_job = fx.job(s.project, fx.pipeline(s.project, "old", "success", 0).await).await;
    fx.artifact(Art::new(s.project, other_job).file_type(1)).await;
    check("DELETE", &format!("/api/v4/projects/{p}/artifacts"), &[&auth(&developer)], 403, FORBIDDEN);
    check("DELETE", &format!("/api/v4/projects/{p}/artifacts"), &[&auth(&maintainer)], 202, None);
    let t0 = Instant::now();
    let expiring = format!("SELECT count(*) FROM p_ci_job_artifacts WHERE job_id = {other_job} AND expire_at <= now()");
    while fx.count_owned(expiring.clone()).await != 1 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the project's artifacts were never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No token reached the log or the database.
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("expire-project-artifacts"), "the log is the worker's: {log}");
    for t in [&guest, &reporter, &developer, &maintainer, &stranger, &expired, &revoked, &job_token] {
        assert!(!log.contains(t.as_str()), "a token is in the worker's log");
        assert!(!log.contains(&t[6..]), "part of a token is in the worker's log");
        assert!(!log.contains(&housekeep::api::token::digest(t)), "a token's digest is in the worker's log");
    }
    let dump = c
        .query_one(
            "SELECT concat((SELECT string_agg(t::text, ',') FROM housekeep.personal_access_tokens t),
                           (SELECT string_agg(j::text, ',') FROM housekeep.job_tokens j))",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(!dump.contains(&reporter[6..]) && !dump.contains(&job_token[6..]), "a token is stored in clear");
}

fn token_revoke(db: &TestDb, token: &str) {
    let mut child = housekeep()
        .args(["token", "revoke", "--token", "-"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = common::run(housekeep().args(["token", "revoke", "--token", token]).env("HOUSEKEEP_DATABASE_URL", &db.url));
    assert_eq!(o.status.code(), Some(0), "revoking twice is not an error: {}", stderr(&o));
}

#[tokio::test]
async fn token_create_refuses_bad_input_and_changes_nothing() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await.to_string();
    for (args, says) in [
        (vec!["create", "--user", "a", "--project", "no/such", "--role", "reporter"], "no such project"),
        (vec!["create", "--user", "a", "--project", &p, "--role", "king"], "king"),
        (vec!["create", "--user", "a", "--project", &p, "--role", "reporter", "--expires", "0s"], "longer than 0s"),
        (vec!["create", "--user", "a", "--project", &p, "--role", "reporter", "--expires=-1d"], "-1d"),
        (vec!["create", "--user", " ", "--project", &p, "--role", "reporter"], "empty"),
        (vec!["create", "--job", "424242"], "no such job"),
        (vec!["revoke", "--id", "9999"], "no token"),
        (vec!["revoke"], "--id"),
        (vec!["create", "--job", "1", "--change-role"], "--change-role"),
    ] {
        let o = common::run(housekeep().arg("token").args(&args).env("HOUSEKEEP_DATABASE_URL", &db.url));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "", "{args:?}: nothing on stdout");
    }
    assert_eq!(fx.count("SELECT count(*) FROM housekeep.personal_access_tokens").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM housekeep.api_users").await, 0);
}

/// A 50 MB archive downloads whole while the worker's peak memory stays where it was.
#[tokio::test]
async fn a_50_mb_download_streams_with_flat_memory() {
    let s = scene().await;
    let c = s.db.client().await;
    let big: Vec<u8> = (0..50 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    s.t.store.put(&s.t.store.full_key(&key_of(&c, s.archive_id).await), big.clone().into()).await.unwrap();
    let reporter = token(&s.db, &["create", "--user", "rita", "--project", &s.project.to_string(), "--role", "reporter"]);
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let url = format!("/api/v4/projects/{}/jobs/{}/artifacts", s.project, s.job);
    // Warm up on a request that sends no file (authentication, the database pool), then measure:
    // a server that buffered the archive would grow by 50 MB on the first download.
    let missing = format!("/api/v4/projects/{}/jobs/{}/artifacts/none.txt", s.project, s.job + 1);
    assert_eq!(w.get(&missing, &[&auth(&reporter)]).status, 404, "warm-up");
    let before = w.peak_rss_kib();
    for _ in 0..3 {
        let a = w.get(&url, &[&auth(&reporter)]);
        assert_eq!(a.status, 200);
        assert!(a.body == big, "50 MB, byte for byte");
    }
    let grew = w.peak_rss_kib().saturating_sub(before);
    assert!(grew < 16 * 1024, "peak memory grew by {grew} KiB over three 50 MB downloads");
}

/// 100 downloads at once, each whole and correct.
#[tokio::test]
async fn a_hundred_concurrent_downloads_are_all_served() {
    let s = scene().await;
    let reporter = token(&s.db, &["create", "--user", "rita", "--project", &s.project.to_string(), "--role", "reporter"]);
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let (port, archive) = (w.port, std::sync::Arc::new(s.archive.clone()));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (archive, h) = (archive.clone(), auth(&reporter));
            let url = if i % 2 == 0 {
                format!("/api/v4/projects/{}/jobs/{}/artifacts", s.project, s.job)
            } else {
                format!("/api/v4/projects/{}/jobs/{}/artifacts/out/build.log", s.project, s.job)
            };
            std::thread::spawn(move || {
                let a = request(port, "GET", &url, &[&h]);
                assert_eq!(a.status, 200, "{url}: {}", a.text());
                if i % 2 == 0 {
                    assert!(a.body == *archive);
                } else {
                    assert_eq!(a.body.len(), (0..200_000u32).map(|i| format!("line {i}\n").len()).sum::<usize>());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a download failed");
    }
}

/// A user's role is changed only when asked: a new token must not silently widen (or narrow)
/// what the user's other tokens may do.
#[tokio::test]
async fn a_second_token_with_another_role_needs_change_role() {
    let s = scene().await;
    let p = s.project.to_string();
    let first = token(&s.db, &["create", "--user", "al", "--project", &p, "--role", "reporter"]);
    let o = common::run(
        housekeep().args(["token", "create", "--user", "al", "--project", &p, "--role", "maintainer"]).env("HOUSEKEEP_DATABASE_URL", &s.db.url),
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--change-role") && stdout(&o).is_empty(), "{}", stderr(&o));
    token(&s.db, &["create", "--user", "al", "--project", &p, "--role", "reporter"]);
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let archive = format!("/api/v4/projects/{p}/jobs/{}/artifacts", s.job);
    assert_eq!(request(w.port, "DELETE", &archive, &[&auth(&first)]).status, 403, "still a reporter");
    token(&s.db, &["create", "--user", "al", "--project", &p, "--role", "maintainer", "--change-role"]);
    assert_eq!(request(w.port, "DELETE", &archive, &[&auth(&first)]).status, 204, "the role is the user's");
}

/// An archive's `accessibility`: private ones need Developer, `none` ones nobody; a keep of an
/// expired archive is 404, as in GitLab.
#[tokio::test]
async fn private_and_hidden_archives_and_keeping_expired_ones() {
    let s = scene().await;
    let c = s.db.client().await;
    let p = s.project.to_string();
    c.execute("UPDATE projects SET visibility_level = 20 WHERE id = $1", &[&s.project]).await.unwrap();
    let reporter = token(&s.db, &["create", "--user", "rita", "--project", &p, "--role", "reporter"]);
    let developer = token(&s.db, &["create", "--user", "dev", "--project", &p, "--role", "developer"]);
    let maintainer = token(&s.db, &["create", "--user", "mia", "--project", &p, "--role", "maintainer"]);
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let archive = format!("/api/v4/projects/{p}/jobs/{}/artifacts", s.job);
    let file = format!("{archive}/README.md");
    let by_ref = format!("/api/v4/projects/{p}/jobs/artifacts/main/download?job=build");
    let status = |url: &str, t: Option<&str>| {
        let h = t.map(auth);
        request(w.port, "GET", url, &h.iter().map(String::as_str).collect::<Vec<_>>()).status
    };
    assert_eq!(status(&archive, None), 200, "public");
    c.execute("UPDATE p_ci_job_artifacts SET accessibility = 1 WHERE id = $1", &[&s.archive_id]).await.unwrap();
    for url in [&archive, &file, &by_ref] {
        assert_eq!(status(url, None), 401, "{url}");
        assert_eq!(status(url, Some(&reporter)), 403, "{url}");
        assert_eq!(status(url, Some(&developer)), 200, "{url}");
    }
    c.execute("UPDATE p_ci_job_artifacts SET accessibility = 2 WHERE id = $1", &[&s.archive_id]).await.unwrap();
    assert_eq!(status(&archive, Some(&maintainer)), 403, "none: nobody");

    c.execute("UPDATE p_ci_job_artifacts SET accessibility = 0, expire_at = now() - interval '1 minute' WHERE id = $1", &[&s.archive_id])
        .await
        .unwrap();
    c.execute("UPDATE p_ci_pipelines SET locked = 0 WHERE project_id = $1", &[&s.project]).await.unwrap();
    let keep = request(w.port, "POST", &format!("{archive}/keep"), &[&auth(&developer)]);
    assert_eq!(keep.status, 404, "{}", keep.text());
    let expired: i64 = c
        .query_one("SELECT count(*) FROM p_ci_job_artifacts WHERE id = $1 AND expire_at < now()", &[&s.archive_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(expired, 1, "an expired archive is not revived");
}

/// Many `DELETE /projects/:id/artifacts` while a run waits for the action's lock: all accepted,
/// and they join one waiting run, not one run each.
#[tokio::test]
async fn project_deletes_are_coalesced() {
    let s = scene().await;
    let c = s.db.client().await;
    let p = s.project.to_string();
    let maintainer = token(&s.db, &["create", "--user", "mia", "--project", &p, "--role", "maintainer"]);
    let lock = housekeep::registry::Action::ExpireProjectArtifacts.spec().lock_key;
    let holder = s.db.client().await;
    holder.execute("SELECT pg_advisory_lock($1)", &[&lock]).await.unwrap();
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let (port, h) = (w.port, auth(&maintainer));
    let delete = |h: String| {
        let url = format!("/api/v4/projects/{p}/artifacts");
        std::thread::spawn(move || request(port, "DELETE", &url, &[&h]).status)
    };
    // The first request's run starts and waits for the lock; the others queue behind it.
    assert_eq!(delete(h.clone()).join().unwrap(), 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let threads: Vec<_> = (0..50).map(|_| delete(h.clone())).collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap() == 202));
    holder.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await.unwrap();
    let runs = || async {
        c.query_one("SELECT count(*) FROM housekeep.runs WHERE task = 'expire-project-artifacts' AND outcome = 'success'", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let t0 = Instant::now();
    while runs().await < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "{} runs", runs().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs().await, 2, "51 requests: the one running, and one more for all that came during it");
}

/// A symbolic link planted in a local store serves nothing: neither the archive nor a file of it.
#[tokio::test]
async fn a_symbolic_link_in_the_store_is_not_followed() {
    let s = scene().await;
    let c = s.db.client().await;
    let root = s.t.store.local_root().unwrap().to_path_buf();
    let key = key_of(&c, s.archive_id).await;
    let secret = root.join("../outside.zip");
    std::fs::write(&secret, zip_of(&[("README.md", b"secret\n")])).unwrap();
    std::fs::remove_file(root.join(&key)).unwrap();
    std::os::unix::fs::symlink(&secret, root.join(&key)).unwrap();
    let reporter = token(&s.db, &["create", "--user", "rita", "--project", &s.project.to_string(), "--role", "reporter"]);
    let w = Worker::start(&s.db, &s.t.url, &[]);
    let archive = format!("/api/v4/projects/{}/jobs/{}/artifacts", s.project, s.job);
    for url in [archive.clone(), format!("{archive}/README.md")] {
        let a = w.get(&url, &[&auth(&reporter)]);
        assert!(a.status == 404 || a.status == 500, "{url}: {} {}", a.status, a.text());
        assert!(!a.text().contains("secret") && a.body.len() < 100, "{url}: the link's target was served");
    }
    std::fs::remove_file(secret).unwrap();
}
