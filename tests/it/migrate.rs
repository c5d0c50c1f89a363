//! `housekeep migrate`: two versioned, checksummed sets (GitLab's tables, standalone only, and
//! schema `housekeep`), a no-op the second time, safe in parallel, and explicit about databases
//! it does not know; and the schema it leaves: GitLab's names, types, defaults, checks,
//! partitions and id triggers, and an index for every hot query.

use crate::common;

use std::collections::{BTreeSet, HashMap};

use common::{housekeep, run, stderr, stdout, TestDb};
use housekeep::db::migrate::{available, GITLAB_MIGRATION_TABLE, MIGRATION_TABLE};

fn migrate(db: &TestDb) -> std::process::Output {
    run(housekeep().arg("migrate").env("HOUSEKEEP_DATABASE_URL", &db.url))
}

/// How many migrations of a set the binary carries.
fn in_set(set: &str) -> i64 {
    available().iter().filter(|m| m.set == set).count() as i64
}

async fn history(c: &tokio_postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn migrate_twice_is_a_noop() {
    let db = TestDb::empty().await;
    let first = migrate(&db);
    assert!(first.status.success(), "{}", stderr(&first));
    for name in ["applied gitlab/V1__gitlab_tables", "applied housekeep/V1__state"] {
        assert!(stdout(&first).contains(name), "{name}:\n{}", stdout(&first));
    }
    let second = migrate(&db);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(stdout(&second).contains("schema is up to date"), "{}", stdout(&second));
    assert!(!stdout(&second).contains("applied"), "{}", stdout(&second));
    let c = db.client().await;
    assert_eq!(history(&c, MIGRATION_TABLE).await, in_set("housekeep"));
    assert_eq!(history(&c, GITLAB_MIGRATION_TABLE).await, in_set("gitlab"));
    assert!(in_set("housekeep") >= 1 && in_set("gitlab") >= 1);
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
    for name in ["applied gitlab/V1__gitlab_tables", "applied housekeep/V1__state"] {
        let applied = outputs.iter().filter(|o| stdout(o).contains(name)).count();
        assert_eq!(applied, 1, "exactly one process applies {name}");
    }
    let c = db.client().await;
    assert_eq!(history(&c, MIGRATION_TABLE).await, in_set("housekeep"));
    assert_eq!(history(&c, GITLAB_MIGRATION_TABLE).await, in_set("gitlab"));
}

#[tokio::test]
async fn a_changed_migration_is_refused() {
    for (table, name) in [(MIGRATION_TABLE, "housekeep/V1__state"), (GITLAB_MIGRATION_TABLE, "gitlab/V1__gitlab_tables")] {
        let db = TestDb::migrated().await;
        let c = db.client().await;
        c.execute(&format!("UPDATE {table} SET checksum = '12345' WHERE version = 1"), &[]).await.unwrap();
        let o = migrate(&db);
        assert_eq!(o.status.code(), Some(1), "{table}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("{name} was changed after it was applied")), "{err}");
    }
}

#[tokio::test]
async fn unknown_database_state_is_explained() {
    // A database without the schema: commands that need it say so instead of failing on SQL.
    let db = TestDb::empty().await;
    let o = run(housekeep().args(["status"]).env("HOUSEKEEP_DATABASE_URL", &db.url));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("housekeep migrate"), "{}", stderr(&o));

    // A database that is neither empty nor GitLab's: migrate names what is missing, exits 2 and
    // creates nothing.
    let db = TestDb::empty().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE projects (id bigserial PRIMARY KEY, name text)").await.unwrap();
    let o = migrate(&db);
    assert_eq!(o.status.code(), Some(2), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("neither empty nor a GitLab database") && err.contains("p_ci_job_artifacts"), "{err}");
    assert!(err.contains("projects.namespace_id"), "a missing column is named: {err}");
    let created: bool = c
        .query_one("SELECT to_regnamespace('housekeep') IS NOT NULL OR to_regclass('public.ci_deleted_objects') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!created, "a refused migrate created something");
}

/// The tables of GitLab's schemas, as one digest.
async fn gitlab_tables(c: &tokio_postgres::Client) -> String {
    c.query_one(
        "SELECT md5(string_agg(table_schema || '.' || table_name, ',' ORDER BY table_schema, table_name))
         FROM information_schema.tables WHERE table_schema IN ('public', 'gitlab_partitions_dynamic')",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// A database that has GitLab's tables but not housekeep's history of them (a live GitLab
/// database): only schema `housekeep` is created, GitLab's tables are left as they are.
#[tokio::test]
async fn on_gitlab_tables_only_the_housekeep_set_is_applied() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("DROP SCHEMA housekeep CASCADE").await.unwrap();
    let before = gitlab_tables(&c).await;
    let o = migrate(&db);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("found GitLab's tables") && out.contains("applied housekeep/V1__state"), "{out}");
    assert!(!out.contains("applied gitlab/"), "{out}");
    assert_eq!(gitlab_tables(&c).await, before, "GitLab's tables changed");
    assert_eq!(history(&c, MIGRATION_TABLE).await, in_set("housekeep"));
    let gitlab_history: bool = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&GITLAB_MIGRATION_TABLE]).await.unwrap().get(0);
    assert!(!gitlab_history, "no history of GitLab's tables on GitLab's database");
    let again = migrate(&db);
    assert!(again.status.success() && stdout(&again).contains("schema is up to date"), "{}", stdout(&again));
}

#[tokio::test]
async fn schema_has_gitlab_names_types_and_defaults() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    // Ids come from the triggers: the explicit pipeline id is ignored (with a warning).
    let pipeline: i64 = c
        .query_one(
            "INSERT INTO p_ci_pipelines (id, partition_id, project_id, ref, status) VALUES (987654, 102, 1, 'main', 'success') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(pipeline, 987_654, "an explicit id was kept");
    let job: i64 = c
        .query_one(
            "INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name) VALUES (102, 1, $1, 'build') RETURNING id",
            &[&pipeline],
        )
        .await
        .unwrap()
        .get(0);
    let artifact: i64 = c
        .query_one(
            "INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, size, file, created_at, updated_at)
             VALUES (102, 1, $1, 1, 10, 'artifacts.zip', now(), now()) RETURNING id",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    c.execute("INSERT INTO ci_deleted_objects (store_dir, file, project_id) VALUES ('a/b', 'c', 1)", &[]).await.unwrap();
    let r = c.query_one("SELECT locked, file_store, file_type, expire_at IS NULL FROM p_ci_job_artifacts", &[]).await.unwrap();
    assert_eq!((r.get::<_, i16>(0), r.get::<_, i32>(1), r.get::<_, i32>(2), r.get::<_, bool>(3)), (2, 1, 1, true));
    let r = c.query_one("SELECT locked, tag FROM p_ci_pipelines", &[]).await.unwrap();
    assert_eq!((r.get::<_, i16>(0), r.get::<_, Option<bool>>(1)), (1, Some(false)));
    let r = c.query_one("SELECT file_store, pick_up_at <= now(), created_at IS NOT NULL FROM ci_deleted_objects", &[]).await.unwrap();
    assert_eq!((r.get::<_, i16>(0), r.get::<_, bool>(1), r.get::<_, bool>(2)), (1, true, true));
    c.execute("INSERT INTO housekeep.deleted_object_state (deleted_object_id) SELECT id FROM ci_deleted_objects", &[]).await.unwrap();
    let attempts: i32 = c.query_one("SELECT attempts FROM housekeep.deleted_object_state", &[]).await.unwrap().get(0);
    assert_eq!(attempts, 0);
    // Partition 102 lives in gitlab_partitions_dynamic, 100 and 101 in the first partitions.
    let r = c
        .query_one(
            "SELECT (SELECT count(*) FROM gitlab_partitions_dynamic.ci_job_artifacts_102 WHERE id = $1),
                    (SELECT count(*) FROM public.ci_job_artifacts WHERE id = $1)",
            &[&artifact],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (1, 0));
    // GitLab's troubleshooting query for unknown rows runs unchanged (on the parent).
    c.query(
        "SELECT expire_at, file_type, locked, COUNT(*) FROM p_ci_job_artifacts
         WHERE expire_at IS NOT NULL AND file_type != 3
         GROUP BY expire_at, file_type, locked HAVING COUNT(*) > 1",
        &[],
    )
    .await
    .unwrap();
    // GitLab's checks and keys are enforced.
    for (what, sql) in [
        ("file_store NULL", "UPDATE p_ci_job_artifacts SET file_store = NULL"),
        ("file_final_path over 1024", "UPDATE p_ci_job_artifacts SET file_final_path = repeat('x', 1025)"),
        ("a second archive of one job", "INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, created_at, updated_at) SELECT 102, 1, job_id, 1, now(), now() FROM p_ci_job_artifacts"),
        ("an artifact of a job in another partition", "INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, created_at, updated_at) SELECT 100, 1, job_id, 2, now(), now() FROM p_ci_job_artifacts"),
        ("a job without its pipeline", "INSERT INTO p_ci_builds (partition_id, project_id, commit_id) VALUES (102, 1, -1)"),
        ("a partition that does not exist", "INSERT INTO p_ci_pipelines (partition_id, project_id) VALUES (999, 1)"),
        ("a queue row without project", "INSERT INTO ci_deleted_objects (store_dir, file) VALUES ('a/b', 'd')"),
        ("a queue row with a store_dir over 1024", "INSERT INTO ci_deleted_objects (store_dir, file, project_id) VALUES (repeat('x', 1025), 'd', 1)"),
    ] {
        assert!(c.execute(sql, &[]).await.is_err(), "{what} was accepted");
    }
    // A pipeline's jobs and artifacts go with it.
    c.execute("DELETE FROM p_ci_pipelines WHERE id = $1", &[&pipeline]).await.unwrap();
    let left: i64 =
        c.query_one("SELECT (SELECT count(*) FROM p_ci_builds) + (SELECT count(*) FROM p_ci_job_artifacts)", &[]).await.unwrap().get(0);
    assert_eq!(left, 0);
    // GitLab's column types.
    let types: HashMap<String, String> = c
        .query(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name IN ('p_ci_job_artifacts', 'p_ci_pipelines', 'p_ci_builds')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (col, ty) in [
        ("p_ci_job_artifacts.file_type", "integer"),
        ("p_ci_job_artifacts.file_store", "integer"),
        ("p_ci_job_artifacts.locked", "smallint"),
        ("p_ci_job_artifacts.expire_at", "timestamp with time zone"),
        ("p_ci_pipelines.source", "integer"),
        ("p_ci_pipelines.locked", "smallint"),
        ("p_ci_pipelines.created_at", "timestamp without time zone"),
        ("p_ci_pipelines.finished_at", "timestamp without time zone"),
        ("p_ci_builds.finished_at", "timestamp without time zone"),
        ("p_ci_builds.partition_id", "bigint"),
    ] {
        assert_eq!(types.get(col).map(String::as_str), Some(ty), "{col}");
    }
    // Every table housekeep uses exists, GitLab's in public and housekeep's in its own schema.
    for t in [
        "projects", "routes", "project_ci_cd_settings", "ci_refs", "p_ci_pipelines", "p_ci_builds", "p_ci_job_artifacts",
        "ci_sources_pipelines", "ci_pipeline_artifacts", "ci_deleted_objects", "project_statistics",
        "housekeep.unlock_requests", "housekeep.pending_direct_uploads", "housekeep.runs", "housekeep.deleted_object_state",
    ] {
        let ok: bool = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&t]).await.unwrap().get(0);
        assert!(ok, "table {t}");
    }
    // The parents are partitioned; housekeep adds nothing to GitLab's tables.
    let partitioned: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_partitioned_table WHERE partrelid IN ('p_ci_pipelines'::regclass, 'p_ci_builds'::regclass, 'p_ci_job_artifacts'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(partitioned, 3);
    let extra: Vec<String> = c
        .query(
            "SELECT table_name || '.' || column_name FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = 'ci_deleted_objects'
               AND column_name NOT IN ('id', 'file_store', 'pick_up_at', 'store_dir', 'file', 'project_id', 'created_at')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(extra.is_empty(), "columns GitLab does not have: {extra:?}");
}

/// The indexes a plan scans, each named by its family: a partition's index by the parent index
/// it is attached to.
async fn indexes_of(c: &tokio_postgres::Client, plan: &serde_json::Value) -> (BTreeSet<String>, Vec<String>) {
    fn walk(v: &serde_json::Value, indexes: &mut Vec<String>, nodes: &mut Vec<String>) {
        if let Some(o) = v.as_object() {
            if let Some(n) = o.get("Node Type").and_then(|n| n.as_str()) {
                nodes.push(format!("{n} on {}", o.get("Relation Name").and_then(|r| r.as_str()).unwrap_or("?")));
            }
            if let Some(i) = o.get("Index Name").and_then(|i| i.as_str()) {
                indexes.push(i.to_string());
            }
            o.values().for_each(|x| walk(x, indexes, nodes));
        } else if let Some(a) = v.as_array() {
            a.iter().for_each(|x| walk(x, indexes, nodes));
        }
    }
    let (mut indexes, mut nodes) = (Vec::new(), Vec::new());
    walk(plan, &mut indexes, &mut nodes);
    let parents: HashMap<String, String> = c
        .query(
            "SELECT ci.relname::text, pi.relname::text FROM pg_inherits i
             JOIN pg_class ci ON ci.oid = i.inhrelid JOIN pg_class pi ON pi.oid = i.inhparent WHERE ci.relkind = 'i'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let families = indexes.into_iter().map(|i| parents.get(&i).cloned().unwrap_or(i)).collect();
    (families, nodes)
}

/// Each task's hot query can be answered by an index (planner forced off sequential scans, so
/// the plan shows which index serves it); on the partitioned tables every partition is scanned
/// through the partition's index of the expected family.
#[tokio::test]
async fn hot_queries_are_index_scans() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let cases: [(&str, &[&str]); 10] = [
        (
            "SELECT id, partition_id FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 0 AND file_type <> 3 LIMIT 100",
            &["p_ci_job_artifacts_expire_at_idx"],
        ),
        (
            "SELECT id, partition_id FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 2 ORDER BY expire_at LIMIT 100",
            &["p_ci_job_artifacts_expire_at_job_id_idx1"],
        ),
        (
            "SELECT id FROM ci_deleted_objects WHERE pick_up_at < now() ORDER BY pick_up_at LIMIT 100 FOR UPDATE SKIP LOCKED",
            &["index_ci_deleted_objects_on_pick_up_at"],
        ),
        ("SELECT id FROM p_ci_job_artifacts WHERE file_final_path = ANY($1)", &["p_ci_job_artifacts_file_final_path_idx"]),
        (
            "SELECT DISTINCT ci_ref_id FROM p_ci_pipelines WHERE locked = 1 AND ci_ref_id IS NOT NULL",
            &["p_ci_pipelines_ci_ref_id_id_idx"],
        ),
        (
            "SELECT id FROM p_ci_pipelines WHERE ci_ref_id = 7 AND locked = 1 AND id < 1000",
            &["p_ci_pipelines_ci_ref_id_id_idx"],
        ),
        ("SELECT id FROM p_ci_builds WHERE commit_id = 5 AND partition_id = 101", &["p_ci_builds_commit_id_status_type_idx"]),
        (
            "SELECT id FROM p_ci_job_artifacts WHERE job_id = ANY($1) AND partition_id = 102",
            &["p_ci_job_artifacts_job_id_file_type_partition_id_idx", "p_ci_job_artifacts_partition_id_job_id_idx"],
        ),
        (
            "SELECT object_key FROM housekeep.pending_direct_uploads WHERE created_at < now()",
            &["index_pending_direct_uploads_on_created_at"],
        ),
        (
            "SELECT pipeline_id FROM housekeep.unlock_requests ORDER BY enqueued_at, pipeline_id LIMIT 50",
            &["index_unlock_requests_on_enqueued_at"],
        ),
    ];
    for (sql, families) in cases {
        let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
        let stmt = c.prepare(&explain).await.unwrap();
        let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync>> = stmt
            .params()
            .iter()
            .map(|t| -> Box<dyn tokio_postgres::types::ToSql + Sync> {
                if *t == tokio_postgres::types::Type::TEXT_ARRAY {
                    Box::new(vec!["k".to_string()])
                } else if *t == tokio_postgres::types::Type::INT8_ARRAY {
                    Box::new(vec![1i64])
                } else {
                    Box::new("k".to_string())
                }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|b| b.as_ref()).collect();
        let plan: serde_json::Value = c.query_one(&stmt, &refs).await.unwrap().get(0);
        let (used, nodes) = indexes_of(&c, &plan).await;
        let seq: Vec<&String> = nodes.iter().filter(|n| n.starts_with("Seq Scan")).collect();
        assert!(seq.is_empty(), "{sql}: sequential scans {seq:?}\n{plan:#}");
        assert!(!used.is_empty(), "{sql}: no index scanned\n{plan:#}");
        assert!(used.iter().all(|u| families.contains(&u.as_str())), "{sql}: scans {used:?}, expected {families:?}\n{plan:#}");
    }
}
