//! Test harness: each test gets its own PostgreSQL database and its own S3 prefix or directory,
//! so tests run in parallel against the real servers `scripts/test.sh` starts.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::Arc;

use housekeep::store::Store;
use rand::Rng;

fn env_or_explain(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite through scripts/test.sh, which starts PostgreSQL and the S3 API")
    })
}

pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}_{n:016x}")
}

/// A database of the test's own, dropped at the end of the test process's life by the cluster
/// going away (scripts/test.sh removes the whole cluster).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// An empty database.
    pub async fn empty() -> TestDb {
        let admin_url = env_or_explain("HK_TEST_PG_URL");
        let name = unique("hk");
        let admin = connect(&admin_url).await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        let base = admin_url.rsplit_once('/').expect("url has a database").0;
        TestDb { url: format!("{base}/{name}"), name }
    }

    /// A database with the schema applied.
    pub async fn migrated() -> TestDb {
        let db = TestDb::empty().await;
        let mut c = db.client().await;
        housekeep::db::migrate::run(&mut c).await.expect("migrate");
        db
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to test database");
    tokio::spawn(conn);
    client
}

/// Which backend a store test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Local,
    S3,
}

/// A store of the test's own: a fresh directory, or a fresh prefix in the test bucket.
pub struct TestStore {
    pub url: String,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    pub fn new(backend: Backend) -> TestStore {
        match backend {
            Backend::Local => {
                let dir = tempfile::Builder::new().prefix("hk-store").tempdir_in(tmp_root()).expect("tempdir");
                let url = format!("file://{}", dir.path().display());
                TestStore { store: Store::open(&url).expect("open local store"), url, _dir: Some(dir) }
            }
            Backend::S3 => {
                let bucket = env_or_explain("HK_TEST_S3_BUCKET");
                let url = format!("s3://{bucket}/{}", unique("t"));
                TestStore { store: Store::open(&url).expect("open s3 store"), url, _dir: None }
            }
        }
    }

    pub fn inner(&self) -> Arc<dyn object_store::ObjectStore> {
        self.store.inner().clone()
    }
}

pub fn tmp_root() -> std::path::PathBuf {
    std::env::var("HK_TEST_TMP").map(Into::into).unwrap_or_else(|_| std::env::temp_dir())
}

/// The housekeep binary with a clean HOUSEKEEP_* environment.
pub fn housekeep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_housekeep"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HOUSEKEEP_") {
            c.env_remove(k);
        }
    }
    c.env("HOUSEKEEP_LOG_FORMAT", "text");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run housekeep")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every full key under `under` (the whole store when None) after `offset`, sorted.
pub async fn listed(store: &Store, under: Option<&str>, offset: Option<&str>) -> Vec<String> {
    use futures::TryStreamExt;
    let mut keys: Vec<String> =
        store.list_from(under, offset).map_ok(|m| m.location.to_string()).try_collect().await.expect("list the store");
    keys.sort();
    keys
}

/// Send SIGTERM to a process.
pub fn sigterm(pid: u32) {
    let s = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(s.success());
}

/// Log output captured in memory: a `tracing_subscriber` writer whose text a test reads back.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Wait until the killed process's statements are over: a SIGKILLed client's backend finishes
/// (or rolls back) its statement on its own.
pub async fn wait_for_housekeep_backends(c: &tokio_postgres::Client) {
    let t0 = std::time::Instant::now();
    loop {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'housekeep'
                   AND state IS DISTINCT FROM 'idle'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(20), "backends of a killed process still busy");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
