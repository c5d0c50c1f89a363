//! Manifests used carelessly or maliciously: two processes on one manifest (and a holder killed
//! with SIGKILL), deletions that fail and must be retried by a plain re-run, `--force-restart`
//! that must not lose the record of earlier deletions, duplicate lines, a 50 MB line, control
//! characters in keys, CRLF and blank lines, and `--filename` values that cannot be manifests.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use housekeep::orphans::delete::{delete_orphans, DeleteOptions};
use housekeep::store::{layout, Store};
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use sha2::{Digest, Sha256};

use crate::common::{self, housekeep, run, stderr, stdout, Backend, TestDb, TestStore};

fn upload(i: u64) -> String {
    hex::encode(Sha256::digest(format!("adversarial-upload-{i}").as_bytes()))
}

/// Put `n` unreferenced @final objects of 10 bytes; returns their full keys.
async fn plant(store: &Store, n: u64) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| store.full_key(&layout::final_key((i % 20 + 1) as i64, &upload(i)))).collect();
    futures::stream::iter(keys.iter().map(|k| {
        let (s, k) = (store.clone(), k.clone());
        async move { s.put(&k, Bytes::from(vec![7u8; 10])).await.unwrap() }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    keys
}

fn manifest_of(keys: &[String]) -> String {
    keys.iter().map(|k| format!("{k},10\n")).collect()
}

fn cmd(db: &TestDb, t: &TestStore) -> Command {
    let mut c = housekeep();
    c.env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &t.url).env("HOUSEKEEP_LOG", "warn");
    c
}

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("hk-manifests").tempdir_in(common::tmp_root()).unwrap()
}

/// The first field of every line of a CSV file.
fn keys_in(path: &Path) -> Vec<String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_path(path).unwrap();
    rdr.records().map(|r| r.unwrap()[0].to_string()).collect()
}

fn counts(keys: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for k in keys {
        *m.entry(k.clone()).or_default() += 1;
    }
    m
}

fn spawn(c: &mut Command) -> Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Run a command that must finish within `secs`; killed and failed otherwise.
fn run_within(c: &mut Command, secs: u64) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = spawn(c);
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!("still running after {secs}s (it should have been refused at once):\n{}", stderr(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until `child` is at work on a manifest: it has written `progress` (which it does only
/// once it holds the manifest).
fn wait_for_holder(child: &mut Child, progress: &Path) {
    let started = Instant::now();
    while !progress.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the first process ended ({status}) before it wrote {progress:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{progress:?} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A transaction that holds ci_job_artifacts, so that list-orphans and delete-orphans wait in
/// their first database check — after they took the manifest — until it ends.
async fn block_checks(db: &TestDb) -> tokio_postgres::Client {
    let c = db.client().await;
    c.batch_execute("BEGIN; LOCK TABLE ci_job_artifacts IN ACCESS EXCLUSIVE MODE").await.unwrap();
    c
}

fn assert_refused_naming(o: &Output, took: Duration, holder: u32, command: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(10), "refused at once, not after {took:?}");
    assert!(err.contains(&format!("pid {holder}")) && err.contains(command) && err.contains("host"), "names the holder:\n{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_on_a_manifest_is_refused_and_the_first_finishes_intact() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let orphans = plant(&t.store, 60).await;
    let w = work_dir();
    let file = w.path().join("orphans.csv");

    let blocker = block_checks(&db).await;
    let mut first = spawn(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&file));
    wait_for_holder(&mut first, &w.path().join("orphans.csv.progress"));
    let (o, took) = run_within(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, first.id(), "list-orphans");
    let (o, took) = run_within(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--force-restart", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, first.id(), "list-orphans");
    let (o, took) = run_within(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, first.id(), "list-orphans");
    assert!(first.try_wait().unwrap().is_none(), "the first process was holding the manifest all along");

    blocker.batch_execute("ROLLBACK").await.unwrap();
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = keys_in(&file);
    assert_eq!(listed.len(), orphans.len(), "every orphan exactly once");
    assert_eq!(listed.iter().collect::<BTreeSet<_>>(), orphans.iter().collect::<BTreeSet<_>>());
    assert!(!w.path().join("orphans.csv.lock").exists(), "the lock file goes with its holder");

    // The same for delete-orphans: a second one, and a list-orphans of its manifest, are refused.
    let blocker = block_checks(&db).await;
    let mut first = spawn(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    wait_for_holder(&mut first, &w.path().join("deleted_from--orphans.csv.progress"));
    let (o, took) = run_within(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, first.id(), "delete-orphans");
    let (o, took) = run_within(cmd(&db, &t).args(["list-orphans", "--force-restart", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, first.id(), "delete-orphans");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(keys_in(&file), listed, "list-orphans --force-restart was refused before it emptied the manifest");
    let deleted = keys_in(&w.path().join("deleted_from--orphans.csv"));
    assert_eq!(deleted.len(), orphans.len());
    assert!(counts(&deleted).values().all(|n| *n == 1), "each object recorded once");
    for k in &orphans {
        assert!(t.store.head(k).await.unwrap().is_none(), "{k} deleted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_killed_with_sigkill_does_not_block_the_next_run() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let orphans = plant(&t.store, 40).await;
    let w = work_dir();
    let file = w.path().join("o.csv");

    let blocker = block_checks(&db).await;
    let mut holder = spawn(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&file));
    wait_for_holder(&mut holder, &w.path().join("o.csv.progress"));
    let (o, took) = run_within(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, holder.id(), "list-orphans");
    holder.kill().unwrap(); // SIGKILL
    holder.wait().unwrap();
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert!(w.path().join("o.csv.lock").exists(), "a killed holder leaves its lock file behind");

    let (o, _) = run_within(cmd(&db, &t).args(["list-orphans", "--min-age", "0s", "--filename"]).arg(&file), 120);
    assert!(o.status.success(), "the next run proceeds: {}", stderr(&o));
    let listed = keys_in(&file);
    assert_eq!(listed.len(), orphans.len());
    assert_eq!(listed.iter().collect::<BTreeSet<_>>(), orphans.iter().collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_held_through_the_library_refuses_the_command_until_released() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 3).await;
    let w = work_dir();
    let file = w.path().join("m.csv");
    std::fs::write(&file, manifest_of(&keys)).unwrap();

    let held = housekeep::orphans::manifest::lock(&file, "a test").unwrap();
    let (o, took) = run_within(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file), 20);
    assert_refused_naming(&o, took, std::process::id(), "a test");
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_some(), "a refused run deletes nothing");
    }
    drop(held);
    let (o, _) = run_within(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file), 120);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(keys_in(&w.path().join("deleted_from--m.csv")).len(), 3);
}

/// Deletes of the keys in `fail` fail; every delete attempt is counted per key.
#[derive(Default)]
struct Control {
    fail: HashSet<String>,
    /// Deleted, but reported failed (a timeout after the store did the work).
    fail_after: HashSet<String>,
    fail_all: bool,
    attempts: HashMap<String, u32>,
}

struct Failing {
    inner: Arc<dyn ObjectStore>,
    control: Arc<Mutex<Control>>,
}

impl fmt::Debug for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failing({})", self.inner)
    }
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failing({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Failing {
    async fn put_opts(&self, location: &ObjPath, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &ObjPath, opts: PutMultipartOptions) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &ObjPath, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, object_store::Result<ObjPath>>) -> BoxStream<'static, object_store::Result<ObjPath>> {
        let (inner, control) = (self.inner.clone(), self.control.clone());
        locations
            .map(move |loc| {
                let (inner, control) = (inner.clone(), control.clone());
                async move {
                    let loc = loc?;
                    let key = loc.to_string();
                    let (fail, fail_after) = {
                        let mut c = control.lock().unwrap();
                        *c.attempts.entry(key.clone()).or_default() += 1;
                        (c.fail_all || c.fail.contains(&key), c.fail_after.contains(&key))
                    };
                    if fail {
                        return Err(object_store::Error::Generic { store: "failing", source: format!("refused to delete {key}").into() });
                    }
                    inner.delete(&loc).await?;
                    if fail_after {
                        return Err(object_store::Error::Generic { store: "failing", source: format!("timed out deleting {key}").into() });
                    }
                    Ok(loc)
                }
            })
            .buffered(8)
            .boxed()
    }

    fn list(&self, prefix: Option<&ObjPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&ObjPath>, offset: &ObjPath) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &ObjPath, to: &ObjPath, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn failing_store(t: &TestStore, bulk: bool) -> (Store, Arc<Mutex<Control>>) {
    let control = Arc::new(Mutex::new(Control::default()));
    let f = Failing { inner: t.inner(), control: control.clone() };
    (Store::from_parts(Arc::new(f), t.store.prefix(), &format!("failing+{}", t.url), bulk), control)
}

#[tokio::test]
async fn failed_deletions_are_retried_by_a_plain_rerun_and_the_record_is_never_lost() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::S3);
    let keys = plant(&t.store, 20).await;
    let (store, control) = failing_store(&t, true);
    let w = work_dir();
    let file = w.path().join("orphans.csv");
    std::fs::write(&file, manifest_of(&keys)).unwrap();
    let deleted_from = w.path().join("deleted_from--orphans.csv");
    let opts = DeleteOptions { filename: file.clone(), force_restart: false, dry_run: false, concurrency: 4 };
    let c = db.client().await;
    let bad: Vec<String> = vec![keys[3].clone(), keys[17].clone()];
    control.lock().unwrap().fail = bad.iter().cloned().collect();
    let attempts = |k: &String| control.lock().unwrap().attempts.get(k).copied().unwrap_or(0);

    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.failed), (18, 2), "{s:?}");
    // The cause is still there: the failed lines are tried again, and only they.
    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.failed), (18, 2), "a re-run retries, it does not say 'already complete': {s:?}");
    for k in &keys {
        assert_eq!(attempts(k), if bad.contains(k) { 2 } else { 1 }, "{k}");
    }
    assert!(t.store.head(&keys[3]).await.unwrap().is_some());
    // The cause is gone: a plain re-run deletes exactly the failed lines and completes.
    control.lock().unwrap().fail.clear();
    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.deleted_bytes, s.failed), (20, 200, 0), "{s:?}");
    for k in &keys {
        assert_eq!(attempts(k), if bad.contains(k) { 3 } else { 1 }, "{k}");
        assert!(t.store.head(k).await.unwrap().is_none(), "{k} deleted");
    }
    let recorded = keys_in(&deleted_from);
    assert_eq!(recorded.iter().cloned().collect::<BTreeSet<_>>(), keys.iter().cloned().collect::<BTreeSet<_>>());
    assert!(counts(&recorded).values().all(|n| *n == 1), "each deleted object recorded once: {recorded:?}");
    // Now it is complete: nothing more is tried.
    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.failed), (20, 0));
    assert_eq!(attempts(&keys[0]), 1);

    // --force-restart walks the manifest again but keeps every recorded line.
    let before = std::fs::read(&deleted_from).unwrap();
    let s = delete_orphans(&c, &store, &DeleteOptions { force_restart: true, ..opts.clone() }).await.unwrap();
    assert_eq!((s.deleted, s.skipped_missing, s.failed), (0, 20, 0), "{s:?}");
    assert_eq!(std::fs::read(&deleted_from).unwrap(), before, "the record of earlier deletions is kept");
}

#[tokio::test]
async fn a_deletion_reported_failed_that_went_through_is_recorded_once() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::S3);
    let keys = plant(&t.store, 5).await;
    let (store, control) = failing_store(&t, true);
    let w = work_dir();
    let file = w.path().join("orphans.csv");
    std::fs::write(&file, manifest_of(&keys)).unwrap();
    let opts = DeleteOptions { filename: file.clone(), force_restart: false, dry_run: false, concurrency: 4 };
    let c = db.client().await;
    control.lock().unwrap().fail_after.insert(keys[1].clone());

    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.failed), (4, 1), "{s:?}");
    assert!(t.store.head(&keys[1]).await.unwrap().is_none(), "the store did delete it");
    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.deleted_bytes, s.skipped_missing, s.failed), (5, 50, 0, 0), "{s:?}");
    let recorded = keys_in(&w.path().join("deleted_from--orphans.csv"));
    assert_eq!(recorded.iter().cloned().collect::<BTreeSet<_>>(), keys.iter().cloned().collect::<BTreeSet<_>>(), "every deleted object is on record");
    assert_eq!(recorded.len(), 5, "once each");
}

#[tokio::test]
async fn a_store_that_keeps_failing_stops_the_run_and_the_next_run_finishes_exactly_once() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 1100).await;
    let (store, control) = failing_store(&t, false);
    let w = work_dir();
    let file = w.path().join("orphans.csv");
    std::fs::write(&file, manifest_of(&keys)).unwrap();
    let opts = DeleteOptions { filename: file.clone(), force_restart: false, dry_run: false, concurrency: 8 };
    let c = db.client().await;

    control.lock().unwrap().fail_all = true;
    let err = delete_orphans(&c, &store, &opts).await.unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("1000 deletions failed"), "{err}");
    let tried = control.lock().unwrap().attempts.len();
    assert_eq!(tried, 1000, "stopped after the batch that reached the limit, not at the end of the manifest");

    control.lock().unwrap().fail_all = false;
    let s = delete_orphans(&c, &store, &opts).await.unwrap();
    assert_eq!((s.deleted, s.failed), (1100, 0), "{s:?}");
    let recorded = keys_in(&w.path().join("deleted_from--orphans.csv"));
    assert_eq!(recorded.len(), 1100);
    assert_eq!(counts(&recorded).len(), 1100, "each object recorded once");
    for k in keys.iter().step_by(97) {
        assert!(t.store.head(k).await.unwrap().is_none());
    }
}

/// Makes a file undeletable even by root (the immutable attribute) until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: PathBuf) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").arg(&path).status().is_ok_and(|s| s.success());
        ok.then_some(Immutable(path))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[tokio::test]
async fn an_undeletable_object_exits_3_and_a_plain_rerun_retries_it() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 6).await;
    let w = work_dir();
    let file = w.path().join("orphans.csv");
    std::fs::write(&file, manifest_of(&keys)).unwrap();
    let deleted_from = w.path().join("deleted_from--orphans.csv");
    let root = t.store.local_root().unwrap().to_path_buf();
    let Some(stuck) = Immutable::set(root.join(&keys[2])) else {
        eprintln!("chattr +i is not available here; the library-level retry test covers this");
        return;
    };
    let delete = || {
        let mut c = cmd(&db, &t);
        c.args(["delete-orphans", "--filename"]).arg(&file);
        c
    };

    let o = run(&mut delete());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("again to retry"), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 5") && stdout(&o).contains("1 failed"), "{}", stdout(&o));
    let o = run(delete().env("HOUSEKEEP_LOG", "info"));
    assert_eq!(o.status.code(), Some(3), "still undeletable, still reported: {}", stderr(&o));
    assert!(!stderr(&o).contains("already complete"), "{}", stderr(&o));
    drop(stuck);
    let o = run(&mut delete());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 6 (60 bytes)") && stdout(&o).contains("0 failed"), "{}", stdout(&o));
    assert!(t.store.head(&keys[2]).await.unwrap().is_none());
    let recorded = keys_in(&deleted_from);
    assert_eq!(recorded.iter().cloned().collect::<BTreeSet<_>>(), keys.iter().cloned().collect::<BTreeSet<_>>());
    assert!(counts(&recorded).values().all(|n| *n == 1), "{recorded:?}");

    // A crash while appending leaves a partial line: --force-restart cuts it and nothing else.
    let whole = std::fs::read(&deleted_from).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(b"partial/key/of/a/cra");
    std::fs::write(&deleted_from, &torn).unwrap();
    let o = run(delete().arg("--force-restart"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&deleted_from).unwrap(), whole, "every earlier line kept, the partial one cut");
}

#[tokio::test]
async fn a_dry_run_still_reads_a_manifest_in_a_directory_it_cannot_write() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 2).await;
    let w = work_dir();
    let ro = w.path().join("handed-over");
    std::fs::create_dir(&ro).unwrap();
    let file = ro.join("orphans.csv");
    std::fs::write(&file, manifest_of(&keys)).unwrap();
    let Some(_frozen) = Immutable::set(ro.clone()) else {
        eprintln!("chattr +i is not available here");
        return;
    };
    let o = run(cmd(&db, &t).args(["delete-orphans", "--dry-run", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("would delete 2"), "{}", stdout(&o));
    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    assert!(!o.status.success(), "a real run needs to write beside the manifest");
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn duplicate_lines_delete_and_record_an_object_once() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 3).await;
    let w = work_dir();
    let file = w.path().join("dups.csv");
    // GitLab's rake task writes duplicates; CRLF endings and blank lines come from editors.
    let body = format!("{a},10\r\n{b},10\r\n\r\n{a},10\r\n{c},10\r\n{a},10\r\n\r\n", a = keys[0], b = keys[1], c = keys[2]);
    std::fs::write(&file, body).unwrap();

    let o = run(cmd(&db, &t).args(["delete-orphans", "--dry-run", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("would delete 3 (30 bytes)") && stdout(&o).contains("2 duplicate lines"), "{}", stdout(&o));
    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 3 (30 bytes)") && stdout(&o).contains("2 duplicate lines"), "{}", stdout(&o));
    let recorded = keys_in(&w.path().join("deleted_from--dups.csv"));
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert_eq!(recorded.iter().collect::<BTreeSet<_>>(), keys.iter().collect::<BTreeSet<_>>());
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_50_mb_line_is_refused_by_number_without_being_echoed() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 2).await;
    let w = work_dir();
    let file = w.path().join("huge.csv");
    let mut body = format!("{},10\n", keys[0]).into_bytes();
    body.extend(std::iter::repeat_n(b'A', 50 * 1024 * 1024));
    body.extend_from_slice(b",10\n");
    body.extend_from_slice(format!("{},10\n", keys[1]).as_bytes());
    std::fs::write(&file, body).unwrap();

    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{}", &err[..err.len().min(2000)]);
    assert!(err.len() < 1024, "a short message, not the line: {} bytes", err.len());
    assert!(err.contains("line 2:") && !err.contains("line 1:") && !err.contains("line 3:"), "{err}");
    assert!(!err.contains("AAAAAAAA"), "{err}");
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_some(), "nothing deleted");
    }
}

/// The peak resident memory of this process (each test runs in a process of its own).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn validating_a_100_mb_line_keeps_memory_flat() {
    let w = work_dir();
    let root = w.path().join("store");
    std::fs::create_dir(&root).unwrap();
    let store = Store::open(&format!("file://{}", root.display())).unwrap();
    let file = w.path().join("huge.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let chunk = vec![b'B'; 1 << 20];
        for _ in 0..100 {
            std::io::Write::write_all(&mut f, &chunk).unwrap();
        }
        std::io::Write::write_all(&mut f, b",1\n").unwrap();
    }
    let before = peak_rss_kib();
    let err = housekeep::orphans::delete::validate(&file, &store).unwrap_err();
    let grown = peak_rss_kib().saturating_sub(before);
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("line 1:") && err.to_string().len() < 1024, "{}", &err.to_string()[..200]);
    assert!(grown < 32 * 1024, "peak memory grew by {grown} KiB reading one 100 MB line");
}

#[tokio::test]
async fn control_characters_in_keys_are_shown_escaped() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 2).await;
    let w = work_dir();
    let file = w.path().join("ctl.csv");
    let escape = keys[0].replacen("/@final/", "/@final\x1b[31m/", 1);
    let cr = keys[1].replacen("/@final/", "/@fi\rnal/", 1);
    std::fs::write(&file, format!("{escape},10\n\"{cr}\",10\n")).unwrap();

    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err:?}");
    assert!(!err.contains('\x1b') && !err.contains('\r'), "control characters reached the terminal raw: {err:?}");
    assert!(err.contains("line 1:") && err.contains("@final\\u{1b}[31m"), "{err}");
    assert!(err.contains("line 2:") && err.contains("@fi\\rnal"), "{err}");
}

#[tokio::test]
async fn line_numbers_count_crlf_and_blank_lines() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let keys = plant(&t.store, 3).await;
    let w = work_dir();
    let file = w.path().join("crlf.csv");
    // Lines: 1 good, 2 blank, 3 good, 4 blank, 5 bad size, 6 good, 7 blank, 8 three fields.
    let body = format!("{a},10\r\n\r\n{b},10\r\n\r\n{c},ten\r\n{a},10\r\n\r\n{b},10,x\r\n", a = keys[0], b = keys[1], c = keys[2]);
    std::fs::write(&file, body).unwrap();
    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(&file));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let numbers: Vec<&str> = err.match_indices("line ").map(|(i, _)| err[i..].split(':').next().unwrap()).collect();
    assert_eq!(numbers, ["line 5", "line 8"], "{err}");
    assert!(err.contains("line 5: size \"ten\" is not a number"), "{err}");
    for k in &keys {
        assert!(t.store.head(k).await.unwrap().is_some(), "nothing deleted");
    }
}

#[tokio::test]
async fn filenames_that_cannot_be_manifests_are_named_as_such() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let w = work_dir();
    let missing_dir = w.path().join("nonexistent/dir/x.csv");
    for command in ["list-orphans", "delete-orphans"] {
        let o = run(cmd(&db, &t).args([command, "--filename"]).arg(&missing_dir));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains("does not exist") && err.contains("nonexistent/dir\""), "{command}: {err}");
        assert!(!err.contains(".progress"), "{command} names an internal file: {err}");

        let o = run(cmd(&db, &t).args([command, "--filename"]).arg(w.path()));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{command}: {err}");
        assert!(err.contains("is a directory") && !err.contains("already has lines"), "{command}: {err}");
    }
    let o = run(cmd(&db, &t).args(["delete-orphans", "--filename"]).arg(w.path().join("absent.csv")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("absent.csv\" does not exist"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(w.path()).unwrap().count(), 0, "nothing left beside the manifests");
}
