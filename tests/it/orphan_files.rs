//! `housekeep orphan-files`: artifact directories without a row on a local-disk store.

use crate::common;

use std::path::Path;

use common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use housekeep::seed::{seed, SeedOptions};
use housekeep::store::{layout, Stores};

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| if e.file_type().unwrap().is_dir() { count_files(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn removes_only_orphan_artifact_directories() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let root = t.store.local_root().unwrap().to_path_buf();
    let stores = Stores { remote: t.store.clone(), local: t.store.clone() };
    let mut c = db.client().await;
    // 12 planted orphans: 4 of them hashed-layout directories (every third).
    seed(&mut c, Some(&stores), &SeedOptions { artifacts: 300, projects: 3, orphans: 12, ..SeedOptions::default() }).await.unwrap();
    // Files of deletions still queued have no row either: 5 of them (the seed's minimum).
    let queued: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
    assert_eq!(queued, 5);
    // An empty directory left behind by a deletion, and a fresh orphan (an upload in flight).
    let old = chrono::Utc::now() - chrono::Duration::days(3);
    let empty = root.join(layout::hashed_dir(1, old, 999_999, 999_999));
    std::fs::create_dir_all(&empty).unwrap();
    let fresh = root.join(layout::hashed_key(1, old, 999_998, 999_998, "artifacts.zip"));
    std::fs::create_dir_all(fresh.parent().unwrap()).unwrap();
    std::fs::write(&fresh, b"uploading").unwrap();
    let before = count_files(&root);

    let cmd = |args: &[&str]| {
        let mut c = housekeep();
        c.env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &t.url).env("HOUSEKEEP_LOG", "warn").arg("orphan-files").args(args);
        run(&mut c)
    };
    // Dry run is the default.
    let o = cmd(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("1 recent skipped"), "{out}");
    assert_eq!(count_files(&root), before, "dry run removes nothing");
    assert!(empty.exists());
    let would: usize = out.lines().filter(|l| l.starts_with("would remove")).count();
    assert_eq!(would, 4 + 5, "{out}");
    assert!(out.lines().filter(|l| l.starts_with("would remove")).all(|l| !l.contains("/pipelines/") && !l.contains("/@final/")));

    // --limit
    let o = cmd(&["--dry-run", "false", "--limit", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("removed 1 orphan"), "{}", stdout(&o));

    let o = cmd(&["--dry-run", "false"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!empty.exists(), "empty artifact directory removed");
    assert!(fresh.exists(), "recent files are left alone");
    // What is left: every row's object, pipeline artifacts, @final objects, pending uploads.
    let o = cmd(&[]);
    assert!(stdout(&o).contains("found 0 orphan"), "{}", stdout(&o));
    let st = housekeep::status::status(&c, Some(&stores), std::time::Duration::from_secs(3 * 3600)).await.unwrap().store.unwrap();
    assert_eq!(st.objects as usize, before - would, "exactly the orphan directories went");
    let pipelines = walkdir_count(&root, "pipelines");
    assert!(pipelines > 0, "pipeline artifacts are still there");
}

fn walkdir_count(dir: &Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().unwrap().is_dir())
                .map(|e| usize::from(e.file_name() == name) + walkdir_count(&e.path(), name))
                .sum()
        })
        .unwrap_or(0)
}
