//! housekeep on a live GitLab database: a database shaped as GitLab's (tests/fixtures/
//! gitlab_shape.sql, with two partitions per CI table, one of them in gitlab_partitions_dynamic).
//! `migrate` creates only schema `housekeep`; every task, orphan command and report runs and
//! touches rows in every partition; GitLab's table definitions are byte-identical before and
//! after; the tasks that change GitLab's rows run only when named in `gitlab_tasks`.

use crate::common;

use std::path::PathBuf;
use std::process::Output;

use bytes::Bytes;
use common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use housekeep::store::layout;

const SHAPE: &str = include_str!("fixtures/gitlab_shape.sql");

/// An empty database with GitLab's tables and nothing of housekeep.
pub(crate) async fn gitlab_db() -> TestDb {
    let db = TestDb::empty().await;
    db.client().await.batch_execute(SHAPE).await.expect("GitLab shape");
    db
}

fn pg_dump() -> PathBuf {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pg_dump")))
        .filter(|p| p.exists())
        .collect();
    bins.sort();
    bins.pop().expect("pg_dump")
}

/// The definitions of everything GitLab owns: every schema but housekeep's.
fn gitlab_schema_dump(db: &TestDb) -> String {
    let out = std::process::Command::new(pg_dump())
        .args(["--schema-only", "--no-owner", "--schema=public", "--schema=gitlab_partitions_dynamic", "--schema=gitlab_partitions_static"])
        .arg(&db.url)
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    // pg_dump marks each dump with a random \restrict key.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hk(db: &TestDb, store: &TestStore, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = housekeep();
    cmd.args(args)
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &store.url)
        .env("HOUSEKEEP_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

const ENABLED: (&str, &str) = ("HOUSEKEEP_GITLAB_TASKS", "unlock,unknown,expire");

/// What one partition holds: ids of the rows the tasks are expected to change.
struct PartitionRows {
    old_pipeline: i64,
    /// A locked artifact (kept) and its object.
    kept_artifact: i64,
    kept_key: String,
    expired_artifact: i64,
    unknown_artifact: i64,
    expired_key: String,
    unknown_key: String,
}

/// A project with rows in partition `partition`: two finished pipelines on main (the older one
/// to unlock, with a locked artifact), an expired unlocked artifact and an expired unknown one
/// on an already unlocked pipeline. Objects are written to the store.
async fn rows_in_partition(c: &tokio_postgres::Client, store: &TestStore, project: i64, partition: i64) -> PartitionRows {
    let ref_id: i64 = c
        .query_one(
            "INSERT INTO ci_refs (project_id, ref_path) VALUES ($1, 'refs/heads/main')
             ON CONFLICT (project_id, ref_path) DO UPDATE SET status = ci_refs.status RETURNING id",
            &[&project],
        )
        .await
        .unwrap()
        .get(0);
    let pipeline = |locked: i16| {
        async move {
            c.query_one(
                "INSERT INTO p_ci_pipelines (partition_id, project_id, ref, status, source, locked, ci_ref_id, created_at, updated_at, finished_at)
                 VALUES ($1, $2, 'main', 'success', 1, $3, $4, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')
                 RETURNING id",
                &[&partition, &project, &locked, &ref_id],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let unlocked = pipeline(0).await;
    let old = pipeline(1).await;
    let _newest = pipeline(1).await;
    let job = |pipeline: i64| {
        async move {
            c.query_one(
                "INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, type, status, created_at, finished_at)
                 VALUES ($1, $2, $3, 'build', 'main', 'Ci::Build', 'success', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id",
                &[&partition, &project, &pipeline],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    let artifact = |job: i64, file_type: i32, expire: &'static str, locked: i16| {
        async move {
            let key = layout::final_key(project, &hex::encode(rand::random::<[u8; 32]>()));
            let id: i64 = c
                .query_one(
                    "INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, size, file_store,
                                                     file, file_final_path, expire_at, locked, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, 2, 100, 2, 'artifacts.zip', $5, now() + $6::text::interval, $7, now(), now()) RETURNING id",
                    &[&partition, &project, &job, &file_type, &key, &expire, &locked],
                )
                .await
                .unwrap()
                .get(0);
            (id, key)
        }
    };
    let done_job = job(unlocked).await;
    let (expired_artifact, expired_key) = artifact(done_job, 1, "-2 days", 0).await;
    let (unknown_artifact, unknown_key) = artifact(done_job, 4, "-2 days", 2).await;
    let old_job = job(old).await;
    let (kept_artifact, locked_key) = artifact(old_job, 1, "30 days", 1).await;
    for k in [&expired_key, &unknown_key, &locked_key] {
        store.store.put(&store.store.full_key(k), Bytes::from_static(b"0123456789")).await.unwrap();
    }
    c.execute(
        "UPDATE project_statistics SET build_artifacts_size = build_artifacts_size + 300, storage_size = storage_size + 300 WHERE project_id = $1",
        &[&project],
    )
    .await
    .unwrap();
    for k in [&expired_key, &unknown_key, &locked_key] {
        age(store, k);
    }
    PartitionRows { old_pipeline: old, kept_artifact, kept_key: locked_key, expired_artifact, unknown_artifact, expired_key, unknown_key }
}

/// Make a local object a day old, past any --min-age of the test.
fn age(store: &TestStore, key: &str) {
    let path = PathBuf::from(store.url.trim_start_matches("file://")).join(store.store.full_key(key));
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86_400)).unwrap();
}

pub(crate) async fn project(c: &tokio_postgres::Client, path: &str) -> i64 {
    let id: i64 = c
        .query_one(
            "INSERT INTO projects (name, path, namespace_id, organization_id, project_namespace_id) VALUES ('app', 'app', 1, 1, 2) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    c.execute("INSERT INTO routes (source_id, source_type, path, namespace_id) VALUES ($1, 'Project', $2, 1)", &[&id, &path])
        .await
        .unwrap();
    c.execute(
        "INSERT INTO project_statistics (project_id, namespace_id, repository_size, storage_size) VALUES ($1, 1, 1000, 1000)",
        &[&id],
    )
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn migrate_creates_only_schema_housekeep_and_every_command_works_on_every_partition() {
    let db = gitlab_db().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let p = project(&c, "grp/app").await;
    let rows = [rows_in_partition(&c, &t, p, 100).await, rows_in_partition(&c, &t, p, 101).await];
    let before = gitlab_schema_dump(&db);

    let o = hk(&db, &t, &["migrate"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("found GitLab's tables: creating only schema housekeep"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("gitlab/V1"), "GitLab's tables must not be created: {}", stdout(&o));
    let created: Vec<String> = c
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public', 'gitlab_partitions_dynamic', 'gitlab_partitions_static')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(created.iter().all(|t| t.starts_with("housekeep.")), "{created:?}");
    let o = hk(&db, &t, &["migrate"], &[]);
    assert!(stdout(&o).contains("schema is up to date"), "{}", stdout(&o));

    // Without gitlab_tasks, the tasks that change GitLab's rows refuse (exit 2) and say what to do.
    for task in ["expire", "unknown", "unlock"] {
        let o = hk(&db, &t, &["run", task], &[]);
        assert_eq!(o.status.code(), Some(2), "{task}: {}", stderr(&o));
        assert!(stderr(&o).contains("gitlab_tasks"), "{task}: {}", stderr(&o));
    }
    let o = hk(&db, &t, &["worker", "--once"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).matches("skipped on a live GitLab database").count(), 3, "{}", stdout(&o));

    // Enabled: every task runs and touches both partitions.
    for task in ["unlock", "unknown", "expire"] {
        let o = hk(&db, &t, &["run", task], &[ENABLED]);
        assert_eq!(o.status.code(), Some(0), "{task}: {}{}", stdout(&o), stderr(&o));
    }
    for r in &rows {
        let locked: i16 = c.query_one("SELECT locked FROM p_ci_pipelines WHERE id = $1", &[&r.old_pipeline]).await.unwrap().get(0);
        assert_eq!(locked, 0, "pipeline {} was not unlocked", r.old_pipeline);
        for id in [r.expired_artifact, r.unknown_artifact] {
            let n: i64 = c.query_one("SELECT count(*) FROM p_ci_job_artifacts WHERE id = $1", &[&id]).await.unwrap().get(0);
            assert_eq!(n, 0, "artifact {id} was not moved to the queue");
        }
    }
    let queued: i64 = c.query_one("SELECT count(*) FROM ci_deleted_objects", &[]).await.unwrap().get(0);
    assert_eq!(queued, 4);
    // Statistics moved additively, storage_size with build_artifacts_size.
    let (build, storage): (i64, i64) = {
        let r = c.query_one("SELECT build_artifacts_size, storage_size FROM project_statistics WHERE project_id = $1", &[&p]).await.unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((build, storage), (200, 1200));

    let o = hk(&db, &t, &["run", "delete-objects"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("deleted=4 "), "{}", stdout(&o));
    for r in &rows {
        for k in [&r.expired_key, &r.unknown_key] {
            assert!(t.store.head(&t.store.full_key(k)).await.unwrap().is_none(), "{k} still there");
        }
    }
    let o = hk(&db, &t, &["run", "stale-uploads"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // Orphans: a day-old object no row knows is listed; the objects of rows in both partitions
    // are not.
    let orphan = layout::final_key(p, &hex::encode(rand::random::<[u8; 32]>()));
    t.store.put(&t.store.full_key(&orphan), Bytes::from_static(b"orphan")).await.unwrap();
    age(&t, &orphan);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("orphans.csv");
    let m = manifest.to_str().unwrap();
    // Pending uploads live in GitLab's Redis, which housekeep does not read: a min-age below the
    // 3 h stale-upload window is refused.
    for short in ["1h", "0"] {
        let o = hk(&db, &t, &["list-orphans", "--filename", m, "--min-age", short], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("3h"), "{}", stderr(&o));
    }
    let o = hk(&db, &t, &["list-orphans", "--filename", m, "--min-age", "3h"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listed = std::fs::read_to_string(&manifest).unwrap();
    assert_eq!(listed, format!("{},6\n", t.store.full_key(&orphan)), "only the orphan, not the objects of rows in partitions 100 and 101");
    let o = hk(&db, &t, &["delete-orphans", "--filename", m, "--dry-run"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = hk(&db, &t, &["delete-orphans", "--filename", m], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(t.store.head(&t.store.full_key(&orphan)).await.unwrap().is_none());
    for r in &rows {
        assert!(t.store.head(&t.store.full_key(&r.kept_key)).await.unwrap().is_some(), "{} was deleted", r.kept_key);
    }
    let o = hk(&db, &t, &["status", "--scan-store", "--format", "json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // verify: rows whose object is missing, in both partitions.
    for r in &rows {
        t.store.delete_many(&[t.store.full_key(&r.kept_key)], 1).await.into_iter().for_each(|r| r.unwrap());
    }
    let o = hk(&db, &t, &["verify"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let missing: Vec<i64> = stdout(&o).lines().filter_map(|l| l.split(',').next()?.parse().ok()).collect();
    assert_eq!(missing, rows.iter().map(|r| r.kept_artifact).collect::<Vec<_>>(), "{}", stdout(&o));

    let after = gitlab_schema_dump(&db);
    let changed: Vec<(&str, &str)> = before.lines().zip(after.lines()).filter(|(a, b)| a != b).take(5).collect();
    assert!(before == after, "GitLab's table definitions changed ({} lines before, {} after): {changed:?}", before.lines().count(), after.lines().count());
}

/// A database that is neither empty nor GitLab's: nothing is created, and the one line says what
/// is missing.
#[tokio::test]
async fn a_database_of_neither_shape_is_refused_with_what_is_missing() {
    let db = TestDb::empty().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    c.batch_execute("CREATE TABLE projects (id bigserial PRIMARY KEY, name text)").await.unwrap();
    let o = hk(&db, &t, &["migrate"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("p_ci_job_artifacts") && err.contains("projects.namespace_id"), "{err}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = 'housekeep'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing may be created");
    let old: bool = c.query_one("SELECT to_regclass('housekeep_schema_migrations') IS NULL", &[]).await.unwrap().get(0);
    assert!(old);
}

/// A GitLab older than the partitioned artifacts table is named as such.
#[tokio::test]
async fn a_gitlab_without_partitioned_artifacts_is_refused() {
    let db = TestDb::empty().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    c.batch_execute(
        "CREATE TABLE ci_job_artifacts (id bigserial PRIMARY KEY, project_id bigint, job_id bigint, file_type integer);
         CREATE TABLE ci_deleted_objects (id bigserial PRIMARY KEY, store_dir text, file text);",
    )
    .await
    .unwrap();
    let o = hk(&db, &t, &["migrate"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("GitLab 17.10 or later"), "{}", stderr(&o));
}

/// The bulk actions on GitLab's own tables: rows of both partitions change, files go through
/// `ci_deleted_objects`, GitLab's table definitions do not change, and refresh-stats is refused
/// (GitLab's pending counter increments are in Redis).
#[tokio::test]
async fn bulk_actions_work_on_every_partition_and_refresh_stats_is_refused() {
    let db = gitlab_db().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let p = project(&c, "grp/app").await;
    let rows = [rows_in_partition(&c, &t, p, 100).await, rows_in_partition(&c, &t, p, 101).await];
    let o = hk(&db, &t, &["migrate"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let before = gitlab_schema_dump(&db);
    let queued = |key: String| {
        let c = &c;
        async move {
            c.query_one("SELECT count(*) FROM ci_deleted_objects WHERE store_dir || '/' || file = $1", &[&key]).await.unwrap().get::<_, i64>(0)
        }
    };

    // delete-artifacts: the expired and the unknown artifact of each partition's job, queued.
    for r in &rows {
        let job: i64 = c.query_one("SELECT job_id FROM p_ci_job_artifacts WHERE id = $1", &[&r.expired_artifact]).await.unwrap().get(0);
        let o = hk(&db, &t, &["delete-artifacts", "--job", &job.to_string()], &[]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains("deleted=2 deleted_bytes=200"), "{}", stdout(&o));
        assert_eq!((queued(r.expired_key.clone()).await, queued(r.unknown_key.clone()).await), (1, 1));
    }

    // expire-project-artifacts leaves the locked pipelines' artifacts alone.
    let o = hk(&db, &t, &["expire-project-artifacts", "--project", "grp/app"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("expired=0"), "{}", stdout(&o));

    // delete-old takes the old jobs' artifacts, locked ones too, in both partitions.
    c.execute("UPDATE p_ci_builds SET finished_at = (now() AT TIME ZONE 'UTC') - interval '40 days'", &[]).await.unwrap();
    let o = hk(&db, &t, &["delete-old", "artifacts", "--older-than", "30d", "--project", "grp/app"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted=2 deleted_bytes=200"), "{}", stdout(&o));
    for r in &rows {
        assert_eq!(queued(r.kept_key.clone()).await, 1);
    }

    // delete-old pipelines takes the pipelines of both partitions, their jobs and what was left
    // of their artifacts (the logs), through the queue.
    c.execute("UPDATE p_ci_pipelines SET finished_at = (now() AT TIME ZONE 'UTC') - interval '40 days'", &[]).await.unwrap();
    let left: i64 = c.query_one("SELECT count(*) FROM p_ci_job_artifacts", &[]).await.unwrap().get(0);
    let pipelines: i64 = c.query_one("SELECT count(*) FROM p_ci_pipelines", &[]).await.unwrap().get(0);
    assert!(pipelines >= 2, "{pipelines} pipelines");
    let o = hk(&db, &t, &["delete-old", "pipelines", "--older-than", "30d", "--project", "grp/app"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("deleted={left} ")) && out.contains(&format!("pipelines_deleted={pipelines}")), "{out}");
    let rest: i64 = c
        .query_one("SELECT (SELECT count(*) FROM p_ci_pipelines) + (SELECT count(*) FROM p_ci_builds) + (SELECT count(*) FROM p_ci_job_artifacts)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rest, 0);

    let csv = common::tmp_root().join(format!("{}.csv", common::unique("projects")));
    std::fs::write(&csv, format!("PROJECT_ID\n{p}\n")).unwrap();
    let o = hk(&db, &t, &["refresh-stats", "--filename", csv.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("rake task"), "{}", stderr(&o));

    assert!(gitlab_schema_dump(&db) == before, "GitLab's table definitions changed");
}

/// The Job Artifacts API on a live GitLab database: GitLab's own personal access tokens
/// (digested with the `db_key_base` of the secrets file), roles from `project_authorizations`,
/// administrators, blocked users, scopes, and job tokens in both of GitLab's encrypted forms,
/// valid only while the job runs. Without the secrets file every token is refused.
#[tokio::test]
async fn the_api_checks_gitlabs_own_tokens_with_the_secrets_file() {
    use crate::api::{request, zip_of, Worker};
    use housekeep::api::gitlab_auth::GitlabAuth;

    let db = gitlab_db().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let p = project(&c, "grp/app").await;
    assert_eq!(hk(&db, &t, &["migrate"], &[]).status.code(), Some(0));
    let key_base = hex::encode(rand::random::<[u8; 64]>());
    let g = GitlabAuth::new(&key_base);
    let secrets = common::tmp_root().join(format!("{}.json", common::unique("gitlab-secrets")));
    std::fs::write(&secrets, serde_json::json!({ "gitlab_rails": { "db_key_base": key_base } }).to_string()).unwrap();

    // Users: a reporter, a blocked maintainer, an administrator with no role; their tokens.
    let user = |name: &str, admin: bool, state: &str| {
        let (c, name, state) = (&c, name.to_owned(), state.to_owned());
        async move {
            c.query_one("INSERT INTO users (username, admin, state) VALUES ($1, $2, $3) RETURNING id", &[&name, &admin, &state])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let (rita, bob, root) = (user("rita", false, "active").await, user("bob", false, "blocked").await, user("root", true, "active").await);
    for (u, level) in [(rita, 20), (rita, 10), (bob, 40)] {
        c.execute("INSERT INTO project_authorizations (user_id, project_id, access_level) VALUES ($1, $2, $3)", &[&u, &p, &level])
            .await
            .unwrap();
    }
    let pat = |u: i64, token: &'static str, scopes: &'static str, expires: &'static str, revoked: bool| {
        let (c, digest) = (&c, g.token_digest(token));
        async move {
            c.execute(
                "INSERT INTO personal_access_tokens (user_id, name, revoked, expires_at, created_at, updated_at, scopes, token_digest)
                 VALUES ($1, 't', $2, CASE WHEN $3 = '' THEN NULL ELSE $3::date END, now(), now(), $4, $5)",
                &[&u, &revoked, &expires, &scopes, &digest],
            )
            .await
            .unwrap();
        }
    };
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Days::new(1)).to_string().leak() as &'static str;
    let today = chrono::Utc::now().date_naive().to_string().leak() as &'static str;
    pat(rita, "glpat-rita", "---\n- api\n", tomorrow, false).await;
    pat(rita, "glpat-rita-read", "---\n- read_api\n", "", false).await;
    pat(rita, "glpat-rita-repo", "---\n- read_repository\n", "", false).await;
    pat(rita, "glpat-rita-expired", "---\n- api\n", today, false).await;
    pat(rita, "glpat-rita-revoked", "---\n- api\n", "", true).await;
    pat(bob, "glpat-bob", "---\n- api\n", "", false).await;
    pat(root, "glpat-root", "---\n- api\n", "", false).await;

    // A running job (its token in the current form) and a finished one (the older form), in a
    // dynamic partition, each with an archive in the store.
    let pl: i64 = c
        .query_one(
            "INSERT INTO p_ci_pipelines (partition_id, project_id, ref, status, source, locked, created_at, updated_at, finished_at)
             VALUES (101, $1, 'main', 'success', 1, 1, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC') RETURNING id",
            &[&p],
        )
        .await
        .unwrap()
        .get(0);
    let archive = zip_of(&[("report.txt", b"from GitLab's tables\n")]);
    let mut jobs = Vec::new();
    for (status, token, form) in [("running", "glcbt-65_runningjobtoken0000", 0), ("success", "glcbt-65_finishedjobtoken000", 1)] {
        let encrypted = g.token_encrypted(token)[form].clone();
        let job: i64 = c
            .query_one(
                "INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, type, status, created_at, token_encrypted, user_id)
                 VALUES (101, $1, $2, 'build', 'main', 'Ci::Build', $3, now() AT TIME ZONE 'UTC', $4, $5) RETURNING id",
                &[&p, &pl, &status, &encrypted, &rita],
            )
            .await
            .unwrap()
            .get(0);
        let key = layout::final_key(p, &hex::encode(rand::random::<[u8; 32]>()));
        c.execute(
            "INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, size, file_store, file, file_final_path,
                                             locked, created_at, updated_at)
             VALUES (101, $1, $2, 1, 2, $3, 2, 'artifacts.zip', $4, 1, now(), now())",
            &[&p, &job, &(archive.len() as i64), &key],
        )
        .await
        .unwrap();
        t.store.put(&t.store.full_key(&key), Bytes::from(archive.clone())).await.unwrap();
        jobs.push((job, token));
    }
    let (running, finished) = (jobs[0], jobs[1]);

    // GitLab's JWT job token signing key, encrypted under db_key_base as GitLab stores it.
    let signing_pem = rsa_private_pem();
    let iv: [u8; 12] = rand::random();
    let sealed = {
        use aes_gcm::aead::{Aead, KeyInit};
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key_base.as_bytes()[..32]).unwrap();
        cipher.encrypt(aes_gcm::Nonce::from_slice(&iv), signing_pem.as_slice()).unwrap()
    };
    c.execute(
        "INSERT INTO application_settings (encrypted_ci_job_token_signing_key, encrypted_ci_job_token_signing_key_iv) VALUES ($1, $2)",
        &[&sealed, &iv.as_slice()],
    )
    .await
    .unwrap();

    let w = Worker::start(&db, &t.url, &[("HOUSEKEEP_GITLAB_SECRETS_FILE", secrets.to_str().unwrap())]);
    let url = |job: i64| format!("/api/v4/projects/grp%2Fapp/jobs/{job}/artifacts");
    let status = |method: &str, u: &str, h: &str| request(w.port, method, u, &[h]).status;
    let (r, f) = (running.0, finished.0);
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-rita"), 200);
    assert_eq!(request(w.port, "GET", &format!("{}/report.txt", url(f)), &["PRIVATE-TOKEN: glpat-rita"]).text(), "from GitLab's tables\n");
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-rita-read"), 200, "read_api reads");
    assert_eq!(status("POST", &format!("{}/keep", url(f)), "PRIVATE-TOKEN: glpat-rita-read"), 403, "but does not write");
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-rita-repo"), 403, "a scope without the API");
    assert_eq!(status("POST", &format!("{}/keep", url(f)), "PRIVATE-TOKEN: glpat-rita"), 403, "a reporter does not keep");
    for bad in ["glpat-rita-expired", "glpat-rita-revoked", "glpat-nobody"] {
        assert_eq!(status("GET", &url(f), &format!("PRIVATE-TOKEN: {bad}")), 401, "{bad}");
    }
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-bob"), 403, "a blocked user");
    assert_eq!(status("DELETE", &url(r), "PRIVATE-TOKEN: glpat-root"), 204, "an administrator");
    // Job tokens: the running job's (current form) reads as its user; the finished job's (older
    // form) no longer does.
    assert_eq!(status("GET", &url(f), &format!("JOB-TOKEN: {}", running.1)), 200);
    assert_eq!(status("GET", &url(f), &format!("JOB-TOKEN: {}", finished.1)), 401);
    c.execute("UPDATE p_ci_builds SET status = 'running' WHERE id = $1", &[&f]).await.unwrap();
    assert_eq!(status("GET", &url(f), &format!("JOB-TOKEN: {}", finished.1)), 200, "the older form is found too");

    // JWT job tokens, signed with GitLab's key: valid while the job runs and the token is.
    let now = chrono::Utc::now().timestamp();
    let jwt = |pem: &[u8], job: i64, nbf: i64, exp: i64| format!("JOB-TOKEN: glcbt-{}", sign_jwt(pem, job, nbf, exp));
    assert_eq!(status("GET", &url(f), &jwt(&signing_pem, r, now - 5, now + 600)), 200, "a JWT job token");
    assert_eq!(status("GET", &url(f), &jwt(&signing_pem, r, now - 600, now - 60)), 401, "an expired one");
    assert_eq!(status("GET", &url(f), &jwt(&signing_pem, r, now + 300, now + 600)), 401, "one not valid yet");
    assert_eq!(status("GET", &url(f), &jwt(&rsa_private_pem(), r, now - 5, now + 600)), 401, "one signed by another key");
    c.execute("UPDATE p_ci_builds SET status = 'success' WHERE id = $1", &[&r]).await.unwrap();
    assert_eq!(status("GET", &url(f), &jwt(&signing_pem, r, now - 5, now + 600)), 401, "its job finished");
    c.execute("UPDATE p_ci_builds SET status = 'running' WHERE id = $1", &[&r]).await.unwrap();

    // Who may see the project's jobs: a public project's, anyone, unless its pipelines are not
    // public (members only) or CI/CD is off (nobody); a project being deleted is not found.
    c.execute("UPDATE projects SET visibility_level = 20 WHERE id = $1", &[&p]).await.unwrap();
    assert_eq!(request(w.port, "GET", &url(f), &[]).status, 200, "a public project");
    c.execute("UPDATE projects SET public_builds = false WHERE id = $1", &[&p]).await.unwrap();
    assert_eq!(request(w.port, "GET", &url(f), &[]).status, 401, "public pipelines off");
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-rita"), 200, "a member still reads");
    c.execute("INSERT INTO project_features (project_id, builds_access_level) VALUES ($1, 0)", &[&p]).await.unwrap();
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-rita"), 403, "CI/CD off");
    c.execute("UPDATE projects SET pending_delete = true WHERE id = $1", &[&p]).await.unwrap();
    assert_eq!(status("GET", &url(f), "PRIVATE-TOKEN: glpat-root"), 404, "being deleted");
    c.execute("UPDATE projects SET pending_delete = false, public_builds = true, visibility_level = 0 WHERE id = $1", &[&p]).await.unwrap();
    c.execute("DELETE FROM project_features WHERE project_id = $1", &[&p]).await.unwrap();
    // Neither GitLab's key nor a token reached the log (the worker logs at trace).
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(!log.contains(&key_base[..32]), "db_key_base is in the worker's log");
    for t in ["glpat-rita", running.1, finished.1, &g.token_digest("glpat-rita")] {
        assert!(!log.contains(t), "a token or its digest is in the worker's log");
    }
    drop(w);

    // Without GitLab's secrets no token can be checked: 401, and the worker says why.
    let w = Worker::start(&db, &t.url, &[]);
    assert_eq!(request(w.port, "GET", &url(f), &["PRIVATE-TOKEN: glpat-rita"]).status, 401);
    assert!(std::fs::read_to_string(&w.log).unwrap().contains("gitlab_secrets_file"));
    let o = hk(&db, &t, &["token", "create", "--user", "x", "--project", "grp/app", "--role", "reporter"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("GitLab"), "{}", stderr(&o));
}

/// A new 2048-bit RSA private key, PEM (PKCS#1, as GitLab writes its signing key).
fn rsa_private_pem() -> Vec<u8> {
    let o = std::process::Command::new("openssl").args(["genrsa", "-traditional", "2048"]).output().expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// A job token JWT as GitLab's `Ci::JobToken::Jwt` makes one (without the prefix).
fn sign_jwt(pem: &[u8], job: i64, nbf: i64, exp: i64) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs1KeyDer::from_pem_slice(pem).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_der(der.secret_pkcs1_der());
    let claims = serde_json::json!({
        "sub": format!("gid://gitlab/Ci::Build/{job}"), "iss": "gitlab.example.com", "aud": "gitlab-authz-token",
        "version": "0.1.0", "jti": "j", "iat": nbf + 5, "nbf": nbf, "exp": exp,
    });
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap()
}
