//! list-orphans, delete-orphans: exactly-once manifests across SIGKILL, re-checks before
//! deleting, validation before anything is deleted, sharding, and what is never an orphan.
//! On local disk and on the S3 API.

use crate::common;
use crate::fixtures;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{housekeep, run, stderr, stdout, unique, Backend, TestDb, TestStore};
use futures::StreamExt;
use housekeep::store::{layout, Store};
use rand::Rng;
use sha2::{Digest, Sha256};

fn upload(i: u64) -> String {
    hex::encode(Sha256::digest(format!("upload-{i}").as_bytes()))
}

/// An artifact row (of a job of its own) that references `final_key`.
async fn reference(c: &tokio_postgres::Client, final_key: &str) {
    let fx = fixtures::Fx { c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 1).await;
    let j = fx.job(p, pl).await;
    c.execute(
        "INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_store, file, file_final_path, created_at, updated_at)
         SELECT partition_id, project_id, id, 1, 2, 'a.zip', $2, now(), now() FROM p_ci_builds WHERE id = $1",
        &[&j, &final_key],
    )
    .await
    .unwrap();
}

/// Put `n` unreferenced @final objects spread over projects 1..=50; returns their full keys.
async fn plant(store: &Store, n: u64, from: u64) -> Vec<String> {
    let keys: Vec<String> = (from..from + n).map(|i| store.full_key(&layout::final_key((i % 50 + 1) as i64, &upload(i)))).collect();
    futures::stream::iter(keys.iter().map(|k| {
        let s = store.clone();
        let k = k.clone();
        async move { s.put(&k, Bytes::from(vec![7u8; 10 + (k.len() % 7)])).await.unwrap() }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    keys
}

fn cmd(db: &TestDb, t: &TestStore) -> Command {
    let mut c = housekeep();
    c.env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &t.url).env("HOUSEKEEP_LOG", "warn");
    c
}

fn manifest_keys(path: &Path) -> Vec<String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_path(path).unwrap();
    rdr.records().map(|r| r.unwrap()[0].to_string()).collect()
}

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("hk-orphans").tempdir_in(common::tmp_root()).unwrap()
}

async fn lists_exactly_the_orphans(backend: Backend) {
    let db = TestDb::migrated().await;
    let t = TestStore::new(backend);
    let orphans = plant(&t.store, 40, 0).await;
    // Not orphans: referenced by a row, a pending upload, a queued deletion, a pipeline artifact,
    // a hashed-layout object.
    let referenced = plant(&t.store, 3, 1000).await;
    let c = db.client().await;
    let rel = |k: &String| t.store.relative(k).unwrap().to_string();
    reference(&c, &rel(&referenced[0])).await;
    c.execute("INSERT INTO housekeep.pending_direct_uploads (object_key) VALUES ($1)", &[&rel(&referenced[1])]).await.unwrap();
    let (dir, file) = layout::split_dir_file(&referenced[2]);
    let (dir, file) = (t.store.relative(dir).unwrap().to_string(), file.to_string());
    c.execute("INSERT INTO ci_deleted_objects (store_dir, file, project_id) VALUES ($1, $2, 1)", &[&dir, &file]).await.unwrap();
    let pipeline_key = t.store.full_key(&format!("{}/pipelines/7/artifacts/1/code_coverage.json", layout::project_dir(1)));
    t.store.put(&pipeline_key, Bytes::from_static(b"{}")).await.unwrap();

    let w = work_dir();
    let file = w.path().join("orphans.csv");
    // Everything is younger than the default 6h: nothing is listed.
    let o = run(cmd(&db, &t).args(["list-orphans", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(manifest_keys(&file).is_empty());
    let o = run(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--force-restart", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = manifest_keys(&file);
    assert_eq!(listed.iter().collect::<BTreeSet<_>>(), orphans.iter().collect::<BTreeSet<_>>());
    assert_eq!(listed.len(), orphans.len(), "no duplicates");
    assert!(stdout(&o).contains("40 orphans"), "{}", stdout(&o));

    // Shards are disjoint and together give the unsharded result.
    let mut union = Vec::new();
    for i in 0..3 {
        let f = w.path().join(format!("shard{i}.csv"));
        let o = run(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--shard", &format!("{i}/3"), "--filename"]).arg(&f));
        assert!(o.status.success(), "{}", stderr(&o));
        union.extend(manifest_keys(&f));
    }
    union.sort();
    let mut all = listed.clone();
    all.sort();
    assert_eq!(union, all);

    // Between listing and deleting: one key becomes referenced, one object changes size.
    reference(&c, &rel(&listed[0])).await;
    t.store.put(&listed[1], Bytes::from_static(b"a different size now")).await.unwrap();
    let o = run(cmd(&db, &t).args(["delete-orphans", "--dry-run", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("would delete 38"), "{}", stdout(&o));
    assert!(t.store.head(&listed[2]).await.unwrap().is_some(), "dry run deletes nothing");
    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 38") && stdout(&o).contains("1 now referenced") && stdout(&o).contains("1 size changed"), "{}", stdout(&o));
    assert!(t.store.head(&listed[0]).await.unwrap().is_some(), "referenced key kept");
    assert!(t.store.head(&listed[1]).await.unwrap().is_some(), "changed object kept");
    for k in &listed[2..] {
        assert!(t.store.head(k).await.unwrap().is_none(), "{k} deleted");
    }
    for k in referenced.iter().chain([&pipeline_key]) {
        assert!(t.store.head(k).await.unwrap().is_some(), "{k} must never be deleted");
    }
    let deleted_from = w.path().join("deleted_from--orphans.csv");
    let deleted = manifest_keys(&deleted_from);
    assert_eq!(deleted.len(), 38);
    assert_eq!(deleted.iter().collect::<BTreeSet<_>>(), listed[2..].iter().collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn lists_and_deletes_exactly_the_orphans_on_local_disk() {
    lists_exactly_the_orphans(Backend::Local).await;
}

#[tokio::test]
async fn lists_and_deletes_exactly_the_orphans_on_s3() {
    lists_exactly_the_orphans(Backend::S3).await;
}

#[tokio::test]
async fn keys_with_commas_quotes_and_non_ascii_round_trip() {
    let db = TestDb::migrated().await;
    let bucket = std::env::var("HK_TEST_S3_BUCKET").unwrap();
    let url = format!("s3://{bucket}/{}/we,ird \"pré\"fix", unique("t"));
    let store = Store::open(&url).unwrap();
    let keys = plant(&store, 5, 0).await;
    let w = work_dir();
    let file = w.path().join("o.csv");
    let base = |args: &[&str]| {
        let mut c = housekeep();
        c.env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &url).env("HOUSEKEEP_LOG", "warn");
        c.args(args).arg("--filename").arg(&file);
        c
    };
    let o = run(&mut base(&["list-orphans", "--min-age", "0s"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.contains("\"\"pré\"\"fix"), "RFC 4180 quoting: {raw}");
    assert_eq!(manifest_keys(&file).into_iter().collect::<BTreeSet<_>>(), keys.iter().cloned().collect());
    let o = run(&mut base(&["delete-orphans"]));
    assert!(o.status.success(), "{}", stderr(&o));
    for k in &keys {
        assert!(store.head(k).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_malformed_manifest_deletes_nothing() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 3, 0).await;
    let w = work_dir();
    let file = w.path().join("bad.csv");
    let outside = "zz/not/in/the/layout";
    let hashed = layout::hashed_key(1, chrono::Utc::now(), 1, 1, "artifacts.zip");
    let dotdot = keys[0].replace("/@final/", "/../");
    let lines = [
        format!("{},13", keys[0]),
        format!("{},twelve", keys[1]),
        format!("{outside},1"),
        format!("{hashed},1"),
        format!("{dotdot},1"),
        format!("{},1,extra", keys[2]),
        keys[2].replace("/@final/", "//@final/") + ",1",
        format!("{},1", keys[2]),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    for n in 2..=7 {
        assert!(err.contains(&format!("line {n}:")), "line {n} not reported:\n{err}");
    }
    assert!(!err.contains("line 1:") && !err.contains("line 8:"), "{err}");
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_some(), "nothing deleted");
    }
    assert!(!w.path().join("deleted_from--bad.csv").exists());
}

/// Run a command, SIGKILL it after a random delay, until it finishes on its own.
fn run_with_kills(mut make: impl FnMut() -> Command, max_delay_ms: u64, kills: &mut u32) {
    let mut rng = rand::rng();
    for attempt in 0..200 {
        let mut child = make().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let delay = if attempt < 60 { rng.random_range(0..max_delay_ms) } else { 60_000 };
        let deadline = std::time::Instant::now() + Duration::from_millis(delay);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(status.success(), "{err}");
                return;
            }
            if std::time::Instant::now() >= deadline {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                *kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    panic!("never finished");
}

fn lines_of(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

async fn exactly_once_under_sigkill(backend: Backend, orphans: u64, trials: u32) {
    let db = TestDb::migrated().await;
    let t = TestStore::new(backend);
    let keys = plant(&t.store, orphans, 0).await;
    let w = work_dir();
    let reference = w.path().join("reference.csv");
    let t0 = std::time::Instant::now();
    let o = run(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&reference));
    assert!(o.status.success(), "{}", stderr(&o));
    // Kill within the time a whole run takes here, so (almost) every trial is cut off somewhere.
    let list_ms = (t0.elapsed().as_millis() as u64).clamp(20, 400);
    let mut expected = lines_of(&reference);
    assert_eq!(expected.len() as u64, orphans);
    expected.sort();

    let mut kills = 0;
    for trial in 0..trials {
        let file = w.path().join(format!("trial{trial}.csv"));
        run_with_kills(|| {
            let mut c = cmd(&db, &t);
            c.args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&file);
            c
        }, list_ms, &mut kills);
        let mut got = lines_of(&file);
        got.sort();
        assert_eq!(got, expected, "trial {trial}: every orphan exactly once");
    }

    // Delete under kills; the deleted_from file ends with every object exactly once.
    run_with_kills(|| {
        let mut c = cmd(&db, &t);
        c.args(["delete-orphans", "--filename"]).arg(&reference);
        c
    }, 300, &mut kills);
    let deleted = lines_of(&w.path().join("deleted_from--reference.csv"));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for l in &deleted {
        *counts.entry(l.rsplitn(3, ',').nth(2).unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(counts.len() as u64, orphans, "every object recorded");
    assert!(counts.values().all(|n| *n == 1), "exactly once");
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_none());
    }
    assert!(kills >= trials / 2, "the processes were actually killed ({kills} kills in {trials} trials)");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_delete_are_exactly_once_under_sigkill_on_local_disk() {
    exactly_once_under_sigkill(Backend::Local, 1500, 20).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_delete_are_exactly_once_under_sigkill_on_s3() {
    exactly_once_under_sigkill(Backend::S3, 800, 3).await;
}
