//! `housekeep migrate`: versioned, checksummed, a no-op the second time, safe in parallel; and
//! the schema it leaves: GitLab's names and defaults, and indexes for every hot query.

mod common;

use common::{housekeep, run, stderr, stdout, TestDb};

fn migrate(db: &TestDb) -> std::process::Output {
    run(housekeep().arg("migrate").env("HOUSEKEEP_DATABASE_URL", &db.url))
}

#[tokio::test]
async fn migrate_twice_is_a_noop() {
    let db = TestDb::empty().await;
    let first = migrate(&db);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("applied V1__schema"), "{}", stdout(&first));
    let second = migrate(&db);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stdout(&second).contains("schema is up to date"), "{}", stdout(&second));
    let c = db.client().await;
    let n: i64 = c.query_one("SELECT count(*) FROM housekeep_schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(n as usize, housekeep::db::migrate::available().len());
}

#[tokio::test]
async fn three_concurrent_migrations_succeed() {
    let db = TestDb::empty().await;
    let children: Vec<_> = (0..3)
        .map(|_| {
            housekeep()
                .arg("migrate")
                .env("HOUSEKEEP_DATABASE_URL", &db.url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outputs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let applied = outputs.iter().filter(|o| stdout(o).contains("applied V1__schema")).count();
    assert_eq!(applied, 1, "exactly one process applies the migration");
    let c = db.client().await;
    let n: i64 = c.query_one("SELECT count(*) FROM housekeep_schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(n as usize, housekeep::db::migrate::available().len());
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.execute("UPDATE housekeep_schema_migrations SET checksum = '12345' WHERE version = 1", &[]).await.unwrap();
    let o = migrate(&db);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("V1__schema was changed after it was applied"), "{err}");
}

#[tokio::test]
async fn unknown_database_state_is_explained() {
    // A database without the schema: commands that need it say so instead of failing on SQL.
    let db = TestDb::empty().await;
    let o = run(housekeep().args(["status"]).env("HOUSEKEEP_DATABASE_URL", &db.url));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("housekeep migrate"), "{}", stderr(&o));
}

#[tokio::test]
async fn schema_has_gitlab_names_and_defaults() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute(
        "INSERT INTO ci_pipelines (id, project_id, ref, status) VALUES (1, 1, 'main', 'success');
         INSERT INTO ci_builds (id, project_id, commit_id, name) VALUES (1, 1, 1, 'build');
         INSERT INTO ci_job_artifacts (project_id, job_id, file_type, size, file) VALUES (1, 1, 1, 10, 'artifacts.zip');
         INSERT INTO ci_deleted_objects (store_dir, file) VALUES ('a/b', 'c');",
    )
    .await
    .unwrap();
    let r = c.query_one("SELECT locked, file_store, expire_at IS NULL FROM ci_job_artifacts", &[]).await.unwrap();
    assert_eq!((r.get::<_, i16>(0), r.get::<_, i16>(1), r.get::<_, bool>(2)), (2, 1, true));
    let r = c.query_one("SELECT locked FROM ci_pipelines", &[]).await.unwrap();
    assert_eq!(r.get::<_, i16>(0), 1);
    let r = c.query_one("SELECT file_store, attempts, pick_up_at <= now() FROM ci_deleted_objects", &[]).await.unwrap();
    assert_eq!((r.get::<_, i16>(0), r.get::<_, i32>(1), r.get::<_, bool>(2)), (1, 0, true));
    // GitLab's troubleshooting query for unknown rows runs unchanged.
    c.query(
        "SELECT expire_at, file_type, locked, COUNT(*) FROM ci_job_artifacts
         WHERE expire_at IS NOT NULL AND file_type != 3
         GROUP BY expire_at, file_type, locked HAVING COUNT(*) > 1",
        &[],
    )
    .await
    .unwrap();
    // The enums are enforced.
    assert!(c.execute("UPDATE ci_job_artifacts SET locked = 3", &[]).await.is_err());
    // Every table of the spec exists.
    for t in [
        "projects", "ci_pipelines", "ci_builds", "ci_job_artifacts", "ci_deleted_objects", "project_statistics",
        "ci_unlock_pipeline_requests", "pending_direct_uploads", "housekeep_runs",
    ] {
        let ok: bool = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&t]).await.unwrap().get(0);
        assert!(ok, "table {t}");
    }
}

/// Each task's hot query can be answered by an index (planner forced off sequential scans, so
/// the plan shows which index serves it).
#[tokio::test]
async fn hot_queries_are_index_scans() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let cases = [
        (
            "SELECT id FROM ci_job_artifacts WHERE expire_at < now() AND locked = 0 AND file_type <> 3 LIMIT 100",
            "index_ci_job_artifacts_expire_at_unlocked_non_trace",
        ),
        (
            "SELECT job_id FROM ci_job_artifacts WHERE expire_at < now() AND locked = 2 ORDER BY expire_at LIMIT 100",
            "index_ci_job_artifacts_expire_at_unknown",
        ),
        (
            "SELECT id FROM ci_deleted_objects WHERE pick_up_at < now() ORDER BY pick_up_at LIMIT 100 FOR UPDATE SKIP LOCKED",
            "index_ci_deleted_objects_on_pick_up_at",
        ),
        ("SELECT id FROM ci_job_artifacts WHERE file_final_path = ANY($1)", "index_ci_job_artifacts_on_file_final_path"),
        ("SELECT id FROM ci_deleted_objects WHERE file = $1 AND store_dir = $2", "index_ci_deleted_objects_on_file_and_store_dir"),
        ("SELECT id FROM ci_pipelines WHERE project_id = 1 AND ref = 'main' AND locked = 1 ORDER BY id DESC", "index_ci_pipelines"),
        ("SELECT id FROM ci_builds WHERE commit_id = 5", "index_ci_builds_on_commit_id"),
        ("SELECT id FROM ci_job_artifacts WHERE job_id = ANY($1)", "index_ci_job_artifacts_on_job_id_and_file_type"),
        ("SELECT object_key FROM pending_direct_uploads WHERE created_at < now()", "index_pending_direct_uploads_on_created_at"),
    ];
    for (sql, index) in cases {
        let explain = format!("EXPLAIN {sql}");
        let stmt = c.prepare(&explain).await.unwrap();
        let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync>> = stmt
            .params()
            .iter()
            .map(|t| -> Box<dyn tokio_postgres::types::ToSql + Sync> {
                if *t == tokio_postgres::types::Type::TEXT_ARRAY { Box::new(vec!["k".to_string()]) }
                else if *t == tokio_postgres::types::Type::INT8_ARRAY { Box::new(vec![1i64]) }
                else { Box::new("k".to_string()) }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|b| b.as_ref()).collect();
        let plan: Vec<String> = c.query(&stmt, &refs).await.unwrap().iter().map(|r| r.get(0)).collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index) && !plan.contains("Seq Scan"), "{sql}\n{plan}");
    }
}
