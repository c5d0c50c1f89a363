//! `housekeep seed`: deterministic, realistic, consistent with the store.

use crate::common;
use crate::fixtures;

use common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use housekeep::seed::{seed, SeedOptions};
use housekeep::store::Stores;

/// A digest of everything that must not depend on the moment of seeding.
async fn fingerprint(c: &tokio_postgres::Client) -> String {
    let r = c
        .query_one(
            "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
               SELECT format('a%s/%s/%s/%s/%s/%s/%s/%s/%s', id, project_id, job_id, file_type, size, file_store,
                             file_final_path, locked, expire_at IS NULL) AS x FROM p_ci_job_artifacts
               UNION ALL SELECT format('p%s/%s/%s/%s/%s', id, project_id, ref, status, locked) FROM p_ci_pipelines
               UNION ALL SELECT format('b%s/%s/%s/%s', id, commit_id, name, status) FROM p_ci_builds) s",
            &[],
        )
        .await
        .unwrap();
    r.get(0)
}

fn stores(t: &TestStore) -> Stores {
    Stores { remote: t.store.clone(), local: t.store.clone() }
}

#[tokio::test]
async fn same_seed_same_dataset() {
    let opts = SeedOptions { artifacts: 3000, projects: 7, objects: false, ..SeedOptions::default() };
    let (a, b, c) = (TestDb::migrated().await, TestDb::migrated().await, TestDb::migrated().await);
    seed(&mut a.client().await, None, &opts).await.unwrap();
    seed(&mut b.client().await, None, &opts).await.unwrap();
    seed(&mut c.client().await, None, &SeedOptions { seed: 7, ..opts.clone() }).await.unwrap();
    let (fa, fb, fc) = (fingerprint(&a.client().await).await, fingerprint(&b.client().await).await, fingerprint(&c.client().await).await);
    assert_eq!(fa, fb);
    assert_ne!(fa, fc);
}

#[tokio::test]
async fn dataset_covers_every_state_housekeeping_sees() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let r = seed(&mut c, None, &SeedOptions { artifacts: 5000, objects: false, ..SeedOptions::default() }).await.unwrap();
    assert_eq!(r.artifacts, 5000);
    let n: i64 = c.query_one("SELECT count(*) FROM p_ci_job_artifacts", &[]).await.unwrap().get(0);
    assert_eq!(n, 5000);
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    for (what, sql) in [
        ("expired unlocked", "SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 0 AND file_type <> 3"),
        ("expired unknown", "SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 2"),
        ("expired locked", "SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 1"),
        ("future expiry", "SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at > now()"),
        ("never expire", "SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at IS NULL AND file_type <> 3"),
        ("traces", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_type = 3"),
        ("metadata", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_type = 2"),
        ("junit", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_type = 4"),
        ("@final layout", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_final_path LIKE '%/@final/%'"),
        ("hashed layout", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_final_path IS NULL AND COALESCE(file_location, 2) = 2"),
        ("legacy layout", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_location = 1"),
        ("partition 100 rows", "SELECT count(*) FROM p_ci_job_artifacts WHERE partition_id = 100"),
        ("partition 102 rows", "SELECT count(*) FROM p_ci_job_artifacts WHERE partition_id = 102"),
        ("local rows", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_store = 1"),
        ("remote rows", "SELECT count(*) FROM p_ci_job_artifacts WHERE file_store = 2"),
        ("locked pipelines", "SELECT count(*) FROM p_ci_pipelines WHERE locked = 1"),
        ("unlocked pipelines", "SELECT count(*) FROM p_ci_pipelines WHERE locked = 0"),
        ("failed pipelines", "SELECT count(*) FROM p_ci_pipelines WHERE status = 'failed'"),
        ("refs", "SELECT count(DISTINCT ref) FROM p_ci_pipelines"),
        ("queued objects", "SELECT count(*) FROM ci_deleted_objects"),
        ("stale uploads", "SELECT count(*) FROM housekeep.pending_direct_uploads WHERE created_at < now() - interval '3 hours'"),
        ("fresh uploads", "SELECT count(*) FROM housekeep.pending_direct_uploads WHERE created_at > now() - interval '3 hours'"),
    ] {
        assert!(count(sql).await > 0, "no {what}");
    }
    // Totals are exact.
    let off: i64 = count(
        "SELECT count(*) FROM project_statistics s WHERE s.build_artifacts_size <>
           (SELECT COALESCE(sum(size), 0) FROM p_ci_job_artifacts a WHERE a.project_id = s.project_id)",
    )
    .await;
    assert_eq!(off, 0);
    // Sequences continue after the seeded ids, so a second seed (and real inserts) do not collide.
    seed(&mut c, None, &SeedOptions { artifacts: 100, objects: false, ..SeedOptions::default() }).await.unwrap();
    let fx = fixtures::Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 1).await;
    let j = fx.job(p, pl).await;
    fx.artifact(fixtures::Art::new(p, j)).await;
    fx.queue(2, &housekeep::store::layout::final_key(p, &fixtures::upload_id()), "1 hour").await;
}

async fn objects_match_rows(backend: Backend) {
    let db = TestDb::migrated().await;
    let t = TestStore::new(backend);
    let mut c = db.client().await;
    let opts = SeedOptions { artifacts: 600, projects: 4, orphans: 12, ..SeedOptions::default() };
    let r = seed(&mut c, Some(&stores(&t)), &opts).await.unwrap();
    assert!(r.objects_written > 600);
    let st = housekeep::status::status(&c, Some(&stores(&t)), std::time::Duration::from_secs(3 * 3600)).await.unwrap();
    let scan = st.store.unwrap();
    // Two in three planted orphans are @final objects; pending uploads and queued files are not orphans.
    assert_eq!(scan.orphan_final_objects, (0..12).filter(|i| i % 3 != 2).count() as i64);
    assert_eq!(scan.rows_missing_object, r.missing_objects);
    assert_eq!(scan.objects, r.objects_written);
}

#[tokio::test]
async fn objects_match_rows_on_local_disk() {
    objects_match_rows(Backend::Local).await;
}

#[tokio::test]
async fn objects_match_rows_on_s3() {
    objects_match_rows(Backend::S3).await;
}

#[tokio::test]
async fn seed_and_status_from_the_command_line() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let o = run(housekeep()
        .args(["seed", "--artifacts", "300", "--projects", "3"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("300 artifacts"), "{}", stdout(&o));
    let o = run(housekeep()
        .args(["status", "--scan-store"])
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for label in ["expired, unlocked", "queued objects", "orphan @final objects", "rows whose object is missing"] {
        assert!(out.contains(label), "{label}:\n{out}");
    }
    let o = run(housekeep().args(["status", "--format", "json"]).env("HOUSEKEEP_DATABASE_URL", &db.url));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let states = v["artifacts"].as_object().unwrap();
    let keys: Vec<&str> = states.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for key in ["expired_unlocked", "expired_unknown", "expired_locked", "not_expired", "never_expire", "traces"] {
        assert!(states.contains_key(key), "{key} missing from {keys:?}");
    }
    assert_eq!(states.values().map(|b| b["count"].as_i64().unwrap()).sum::<i64>(), 300);
}
