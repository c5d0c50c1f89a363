//! Keys that lead out of the store or that the store cannot represent.
//!
//! - A symbolic link inside a `file://` store (a directory on the way of a key, or the key's last
//!   segment): `delete-orphans`, `run delete-objects` and `run stale-uploads` never delete what
//!   is behind it, report the key as failed (and keep its queue row or pending-upload entry for a
//!   later run), and still delete the ordinary key next to it. Listing does not follow links.
//! - An S3 object whose key object_store cannot parse (`//`, `.`/`..` segments, control
//!   characters): `list-orphans` and `status --scan-store` skip it, say so, and lose none of the
//!   real orphans before or after it in key order.

use housekeep::tasks::{DeleteObjectsStats, StaleUploadsStats};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use housekeep::store::{layout, Store};
use housekeep::tasks::{Outcome, Task};

use crate::common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use crate::fixtures::{self, exists, put, Fx};

/// A directory outside every store, holding the files a link points to.
fn outside_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("hk-outside").tempdir_in(crate::common::tmp_root()).unwrap()
}

fn write(path: &Path, body: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// A store directory made into a link to `target`: `<root>/<dir>` → `target`.
fn link_dir(store: &Store, dir: &str, target: &Path) -> PathBuf {
    let at = store.local_root().unwrap().join(dir);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(target, &at).unwrap();
    at
}

/// The three shapes of one attack on project `p`: `(through, victim)`, a key whose
/// `@final/xx/yy` directory is a link out of the store and the file outside it would reach;
/// `(last, target)`, a key that is itself a link to a file outside.
struct Attack {
    through: String,
    victim: PathBuf,
    last: String,
    target: PathBuf,
}

fn attack(store: &Store, p: i64, outside: &Path) -> Attack {
    let through = layout::final_key(p, &format!("ab{}", &fixtures::upload_id()[2..]));
    let (dir, file) = layout::split_dir_file(&through);
    link_dir(store, dir, outside);
    let victim = outside.join(file);
    write(&victim, b"precious bytes outside the store");

    let last = layout::final_key(p, &format!("cd{}", &fixtures::upload_id()[2..]));
    let target = outside.join("target-of-a-file-link");
    write(&target, b"another file outside the store");
    let at = store.local_root().unwrap().join(&last);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    symlink(&target, &at).unwrap();
    Attack { through, victim, last, target }
}

fn assert_outside_untouched(a: &Attack) {
    assert_eq!(std::fs::read(&a.victim).unwrap(), b"precious bytes outside the store", "a file outside the store was deleted");
    assert_eq!(std::fs::read(&a.target).unwrap(), b"another file outside the store", "a link's target was deleted");
}

fn link_gone(store: &Store, key: &str) -> bool {
    std::fs::symlink_metadata(store.local_root().unwrap().join(key)).is_err()
}

#[tokio::test]
async fn delete_orphans_never_deletes_through_a_symlink() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let outside = outside_dir();
    let a = attack(&t.store, 7, outside.path());
    let normal = layout::final_key(7, &fixtures::upload_id());
    put(&t.store, &normal).await;
    let size = |k: &str| std::fs::metadata(t.store.local_root().unwrap().join(k)).unwrap().len();
    let w = outside_dir();
    let manifest = w.path().join("orphans.csv");
    std::fs::write(
        &manifest,
        format!("{},{}\n{},{}\n{},{}\n", a.through, size(&a.through), normal, size(&normal), a.last, size(&a.last)),
    )
    .unwrap();

    let o = run(housekeep()
        .args(["delete-orphans", "--filename"])
        .arg(&manifest)
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(3), "the refused line makes it a partial run\n{out}\n{err}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(
        err.contains(&a.through) && err.contains("symbolic link") && err.contains("never deletes outside the store root"),
        "the refusal names the key and says why:\n{err}"
    );
    assert_outside_untouched(&a);
    assert!(!exists(&t.store, &normal).await, "the ordinary orphan next to it was not deleted");
    assert!(link_gone(&t.store, &a.last), "a link as the last segment is removed as a link");
}

#[tokio::test]
async fn delete_objects_never_deletes_through_a_symlinked_store_dir() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let outside = outside_dir();
    let a = attack(&t.store, p, outside.path());
    let through_id = fx.queue(2, &a.through, "-1 hour").await;
    fx.queue(2, &a.last, "-1 hour").await;
    let normal = layout::final_key(p, &fixtures::upload_id());
    put(&t.store, &normal).await;
    fx.queue(2, &normal, "-1 hour").await;

    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    assert_eq!(r.outcome, Outcome::Partial, "{r:?}");
    assert_eq!((r.stats::<DeleteObjectsStats>().deleted, r.stats::<DeleteObjectsStats>().failed), (2, 1), "{r:?}");
    assert_outside_untouched(&a);
    assert!(!exists(&t.store, &normal).await);
    assert!(link_gone(&t.store, &a.last));
    // The refused row stays, with its error, for an operator to see; it is not "not found".
    let rows: Vec<(i64, i32, Option<String>)> = c
        .query(
            "SELECT o.id, s.attempts, s.last_error FROM ci_deleted_objects o
             JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (id, attempts, err) = &rows[0];
    assert_eq!((*id, *attempts), (through_id, 1));
    let err = err.as_deref().unwrap_or_default();
    assert!(err.contains(&a.through) && err.contains("symbolic link"), "{err}");
}

#[tokio::test]
async fn stale_uploads_never_delete_through_a_symlinked_directory() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let outside = outside_dir();
    let a = attack(&t.store, p, outside.path());
    let normal = layout::final_key(p, &fixtures::upload_id());
    put(&t.store, &normal).await;
    for k in [&a.through, &a.last, &normal] {
        fx.pending_upload(k, "4 hours").await;
    }

    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let r = fixtures::run(&ctx, Task::StaleUploads).await;
    assert_eq!(r.outcome, Outcome::Partial, "{r:?}");
    assert_eq!((r.stats::<StaleUploadsStats>().deleted, r.stats::<StaleUploadsStats>().failed), (2, 1), "{r:?}");
    assert_outside_untouched(&a);
    assert!(!exists(&t.store, &normal).await);
    assert!(link_gone(&t.store, &a.last));
    let left: Vec<String> =
        c.query("SELECT object_key FROM housekeep.pending_direct_uploads", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left, vec![a.through.clone()], "the refused entry stays for a later run");
}

/// `status --scan-store` (the store's own listing) counts what `list-orphans` would see: links,
/// to a directory or to a file, are not objects of the store.
#[tokio::test]
async fn listing_a_local_store_does_not_follow_links() {
    let t = TestStore::new(Backend::Local);
    let outside = outside_dir();
    for i in 0..3 {
        write(&outside.path().join(format!("d/f{i}")), b"x");
    }
    put(&t.store, "real/one").await;
    link_dir(&t.store, "real/linked", &outside.path().join("d"));
    symlink(outside.path().join("d/f0"), t.store.local_root().unwrap().join("real/file-link")).unwrap();
    // A link loop would make a following walk fail (or run forever).
    link_dir(&t.store, "real/loop", t.store.local_root().unwrap());
    let listed: Vec<String> = t.store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
    assert_eq!(listed, ["real/one"]);
}

/// Write objects with raw keys through boto3 (object_store refuses to write such keys).
fn put_raw(bucket: &str, keys: &[String]) {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = r#"
import json, os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
for k in json.loads(sys.argv[2]):
    s3.put_object(Bucket=sys.argv[1], Key=k, Body=b"odd")
"#;
    let o = std::process::Command::new(py)
        .args(["-c", script, bucket, &serde_json::to_string(keys).unwrap()])
        .output()
        .expect("run .venv/bin/python (scripts/test.sh installs it)");
    assert!(o.status.success(), "boto3 put failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test]
async fn odd_s3_keys_do_not_stop_list_orphans_or_the_store_scan() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::S3);
    let bucket = std::env::var("HK_TEST_S3_BUCKET").unwrap();
    // Real orphans in projects whose directories sort before and after the odd keys, and two
    // inside the same @final directory as one of them.
    let mut orphans = Vec::new();
    for p in 1..=12 {
        for _ in 0..2 {
            let k = t.store.full_key(&layout::final_key(p, &fixtures::upload_id()));
            orphans.push(k);
        }
    }
    let mut by_dir = orphans.clone();
    by_dir.sort();
    let (in_dir, _) = layout::split_dir_file(&by_dir[10]);
    let in_dir = in_dir.to_string();
    for k in &orphans {
        t.store.put(k, Bytes::from_static(b"orphan")).await.unwrap();
    }
    let project_of = |k: &str| k.split('/').take(4).collect::<Vec<_>>().join("/"); // prefix/d1/d2/H
    let odd: Vec<String> = vec![
        t.store.full_key("00/weird//double"),
        format!("{}/@final/aa/../bb", project_of(&by_dir[4])),
        format!("{in_dir}/../escape"),
        format!("{in_dir}//empty"),
        format!("{}/./dot", project_of(&by_dir[16])),
        format!("{}/@final/ct/rl/x\u{1}y", project_of(&by_dir[20])),
        t.store.full_key("ff/zz//last"),
    ];
    put_raw(&bucket, &odd);

    let w = outside_dir();
    let file = w.path().join("orphans.csv");
    let o = run(housekeep()
        .args(["list-orphans", "--min-age", "0s", "--filename"])
        .arg(&file)
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url));
    let err = stderr(&o);
    assert!(o.status.success(), "list-orphans failed on odd keys:\n{err}");
    let mut listed: Vec<String> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(&file)
        .unwrap()
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, by_dir, "exactly the real orphans, none lost around the odd keys");
    // Each odd key is reported, escaped.
    assert!(err.contains("weird//double") && err.contains("x\\u{1}y"), "{err}");

    let o = run(housekeep()
        .args(["status", "--scan-store", "--format", "json"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url));
    assert!(o.status.success(), "status --scan-store failed on odd keys:\n{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["store"]["objects"], orphans.len() as i64, "{v}");
    assert_eq!(v["store"]["orphan_final_objects"], orphans.len() as i64, "{v}");
}

/// `list-orphans --shard` lists a shard's leading directory by name: a link there is not
/// followed either, so the shards together still give exactly the unsharded result.
#[tokio::test]
async fn sharded_list_orphans_does_not_follow_a_linked_leading_directory() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let outside = outside_dir();
    // Project 1's directory is 6b/86/6b86…: make 6b a link to a tree holding one of its objects.
    let behind = layout::final_key(1, &fixtures::upload_id());
    write(&outside.path().join(behind.strip_prefix("6b/").unwrap()), b"behind a link");
    link_dir(&t.store, "6b", outside.path());
    let real = layout::final_key(2, &fixtures::upload_id());
    put(&t.store, &real).await;
    let w = outside_dir();
    let list = |args: &[&str], file: &str| {
        let f = w.path().join(file);
        let o = run(housekeep()
            .args(["list-orphans", "--min-age", "0s", "--filename"])
            .arg(&f)
            .args(args)
            .env("HOUSEKEEP_DATABASE_URL", &db.url)
            .env("HOUSEKEEP_STORE_URL", &t.url));
        assert!(o.status.success(), "{}", stderr(&o));
        let mut keys: Vec<String> =
            csv::ReaderBuilder::new().has_headers(false).from_path(&f).unwrap().records().map(|r| r.unwrap()[0].to_string()).collect();
        keys.sort();
        keys
    };
    let whole = list(&[], "all.csv");
    assert_eq!(whole, vec![real.clone()]);
    let mut shards = list(&["--shard", "0/2"], "s0.csv");
    shards.extend(list(&["--shard", "1/2"], "s1.csv"));
    shards.sort();
    assert_eq!(shards, whole, "the shards listed through a link the unsharded listing skips");
}
