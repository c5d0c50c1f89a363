//! The one-off bulk actions (SPEC §6) with the real binary: `delete-old`, `keep`,
//! `delete-artifacts` and `expire-project-artifacts` change exactly what GitLab's own API and
//! console snippets do, dry runs change nothing, instance-wide deletes need a confirmation, files
//! only ever go through the deletion queue, and a delete killed mid-run loses nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, housekeep, stderr, stdout, Backend, TestDb, TestStore};
use crate::fixtures::{self, assert_no_duplicate_queue_rows, assert_statistics_exact, digest, Art, Fx};

fn cmd(db: &TestDb, t: &TestStore, args: &[&str]) -> Command {
    let mut c = housekeep();
    c.args(args).env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &t.url).env("HOUSEKEEP_LOG", "warn");
    c
}

/// Run, expect exit 0; returns stdout (then stderr, for the messages of failed assertions).
fn ok(c: &mut Command) -> String {
    let o = common::run(c);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    format!("{}{}", stdout(&o), stderr(&o))
}

/// A job of `project` finished `days_ago` days ago, with an archive (100 bytes), metadata
/// (10 bytes, never expiring) and a trace (1 byte).
async fn job_with_artifacts(fx: &Fx<'_>, project: i64, pipeline: i64, days_ago: i32) -> i64 {
    let job = fx.job(project, pipeline).await;
    fx.c.execute(
        "UPDATE p_ci_builds SET finished_at = (now() AT TIME ZONE 'UTC') - make_interval(days => $2) WHERE id = $1",
        &[&job, &days_ago],
    )
    .await
    .unwrap();
    fx.artifact(Art::new(project, job).file_type(1).size(100).expire("1 day")).await;
    fx.artifact(Art::new(project, job).file_type(2).size(10)).await;
    fx.artifact(Art::new(project, job).file_type(3).size(1).expire("1 day")).await;
    job
}

/// `n` jobs of pipeline `pipeline`, finished `days_ago` days ago, each with an archive of `size`
/// bytes expiring after `expire` (an interval; never when None), unlocked: in one statement.
async fn jobs_with_an_archive(c: &tokio_postgres::Client, pipeline: i64, n: i32, size: i64, expire: Option<&str>, days_ago: i32) {
    c.execute(
        "WITH jobs AS (
           INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, tag, type, status, created_at, finished_at)
           SELECT partition_id, project_id, id, 'build', ref, tag, 'Ci::Build', 'success',
                  (now() AT TIME ZONE 'UTC') - make_interval(days => $5 + 10), (now() AT TIME ZONE 'UTC') - make_interval(days => $5)
           FROM p_ci_pipelines, generate_series(1, $2) WHERE id = $1
           RETURNING id, partition_id, project_id)
         INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store,
                                         file, expire_at, locked, created_at, updated_at)
         SELECT partition_id, project_id, id, 1, 2, 2, $3, 2, 'artifacts.zip', now() + $4::text::interval, 0, now(), now() FROM jobs",
        &[&pipeline, &n, &size, &expire, &days_ago],
    )
    .await
    .unwrap();
}

async fn types_of(c: &tokio_postgres::Client, job: i64) -> Vec<i32> {
    c.query("SELECT file_type::int AS t FROM p_ci_job_artifacts WHERE job_id = $1 ORDER BY 1", &[&job])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("t"))
        .collect()
}

#[tokio::test]
async fn delete_old_artifacts_then_jobs_by_age_and_project() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let (p, other) = (fx.project().await, fx.project().await);
    let pl = fx.pipeline(p, "main", "success", 1).await;
    let pl_other = fx.pipeline(other, "main", "success", 1).await;
    let old = job_with_artifacts(&fx, p, pl, 40).await;
    let new = job_with_artifacts(&fx, p, pl, 2).await;
    let old_elsewhere = job_with_artifacts(&fx, other, pl_other, 40).await;
    fx.exact_statistics().await;
    let path = format!("group/p-{p}");

    let before = digest(&c).await;
    let out = ok(&mut cmd(&db, &t, &["delete-old", "artifacts", "--older-than", "30d", "--project", &path, "--dry-run"]));
    assert!(out.contains("would delete 2 artifacts (110 bytes)"), "{out}");
    assert_eq!(digest(&c).await, before, "a dry run changed the database");

    // Archive and metadata of the old job go (kept and locked ones too); its trace, the new job
    // and the other project stay.
    let out = ok(&mut cmd(&db, &t, &["delete-old", "artifacts", "--older-than", "30d", "--project", &p.to_string()]));
    assert!(out.contains("deleted=2 deleted_bytes=110"), "{out}");
    assert_eq!(types_of(&c, old).await, vec![3]);
    assert_eq!(types_of(&c, new).await, vec![1, 2, 3]);
    assert_eq!(types_of(&c, old_elsewhere).await, vec![1, 2, 3]);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 2);
    assert_statistics_exact(&c).await;

    // Erasing the old jobs takes the log too and marks the job erased; the new one is left.
    let out = ok(&mut cmd(&db, &t, &["delete-old", "jobs", "--older-than", "30d", "--project", &path, "--dry-run"]));
    assert!(out.contains("erase 1 jobs, 1 artifacts (1 bytes)"), "{out}");
    let out = ok(&mut cmd(&db, &t, &["delete-old", "jobs", "--older-than", "30d", "--project", &path]));
    assert!(out.contains("jobs_erased=1") && out.contains("deleted=1 deleted_bytes=1"), "{out}");
    assert_eq!(types_of(&c, old).await, Vec::<i32>::new());
    let erased = |id: i64| fx.count_owned(format!("SELECT count(*) FROM p_ci_builds WHERE id = {id} AND erased_at IS NOT NULL"));
    assert_eq!((erased(old).await, erased(new).await, erased(old_elsewhere).await), (1, 0, 0));
    assert_statistics_exact(&c).await;
    assert_no_duplicate_queue_rows(&c).await;

    // A second run finds nothing left.
    let out = ok(&mut cmd(&db, &t, &["delete-old", "jobs", "--older-than", "30d", "--project", &path]));
    assert!(out.contains("deleted=0 deleted_bytes=0 jobs_erased=0"), "{out}");
}

#[tokio::test]
async fn delete_old_across_the_instance_needs_yes_off_a_terminal_and_refuses_bad_input() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    job_with_artifacts(&fx, p, pl, 40).await;
    fx.exact_statistics().await;
    let before = digest(&c).await;
    for (args, says) in [
        (vec!["delete-old", "artifacts", "--older-than", "30d"], "--yes"),
        (vec!["delete-old", "artifacts", "--older-than", "30d", "--project", "no/such", "--yes"], "no such project"),
        (vec!["delete-old", "artifacts", "--older-than", "soon", "--yes"], "soon"),
        (vec!["delete-old", "artifacts", "--older-than", "0s", "--yes"], "longer than 0s"),
        (vec!["delete-old", "artifacts", "--older-than=-5d", "--yes"], "-5d"),
        (vec!["delete-old", "everything", "--older-than", "30d", "--yes"], "everything"),
        (vec!["delete-old", "pipelines", "--older-than", "30d"], "--yes"),
    ] {
        let o = common::run(cmd(&db, &t, &args).stdin(std::process::Stdio::null()));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(digest(&c).await, before, "refused input changed the database");
    let out = ok(cmd(&db, &t, &["delete-old", "artifacts", "--older-than", "30d", "--yes"]).stdin(std::process::Stdio::null()));
    assert!(out.contains("deleted=2"), "{out}");
    assert_statistics_exact(&c).await;
}

/// Run `args` (a delete-old) and kill it while a batch waits on `last`'s statistics row after
/// at least `queued` files were queued by committed batches; returns once the killed process's
/// statements have ended on the server.
async fn kill_while_blocked(db: &TestDb, t: &TestStore, c: &mut tokio_postgres::Client, args: &[&str], last: i64, queued: i64) {
    // The batch that reaches the last project's rows waits on its statistics row (and, for pipelines,
    // so do the first project's rows in that batch).
    let blocker = c.transaction().await.unwrap();
    blocker.execute("SELECT 1 FROM project_statistics WHERE project_id = $1 FOR UPDATE", &[&last]).await.unwrap();
    let watch = db.client().await;
    let mut child = cmd(db, t, args).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        let n: i64 = watch.query_one("SELECT count(*) AS n FROM ci_deleted_objects", &[]).await.unwrap().get("n");
        let waiting: i64 = watch
            .query_one(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'housekeep'
                   AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get("n");
        if n >= queued && waiting > 0 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the run never reached the blocked batch (queued {n})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    blocker.rollback().await.unwrap();
    // The killed process's last statement ends on the server, committed or not.
    common::wait_for_housekeep_backends(&watch).await;
}

/// Killed while a batch waits on a lock after earlier batches committed, then run again: every
/// artifact is either still a row or queued exactly once, and the project totals are exact.
#[tokio::test]
async fn delete_old_killed_mid_run_loses_nothing_and_a_second_run_finishes() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    let fx = Fx { c: &c };
    let (first, last) = (fx.project().await, fx.project().await);
    for (p, n) in [(first, 2500i32), (last, 10)] {
        let pl = fx.pipeline(p, "main", "success", 0).await;
        jobs_with_an_archive(&c, pl, n, 7, None, 40).await;
    }
    fx.exact_statistics().await;
    let total = fx.count("SELECT count(*) FROM p_ci_job_artifacts").await;
    assert_eq!(total, 2510);

    let args = ["delete-old", "artifacts", "--older-than", "30d", "--yes"];
    kill_while_blocked(&db, &t, &mut c, &args, last, 2000).await;
    let c = &c;
    let fx = Fx { c };
    let queued_after_kill = fx.count("SELECT count(*) FROM ci_deleted_objects").await;
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_job_artifacts").await + queued_after_kill, total, "rows lost or doubled by the kill");
    assert_statistics_exact(c).await;

    let out = ok(cmd(&db, &t, &args).stdin(std::process::Stdio::null()));
    assert!(out.contains(&format!("deleted={}", total - queued_after_kill)), "{out}");
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_job_artifacts").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, total);
    assert_no_duplicate_queue_rows(c).await;
    assert_statistics_exact(c).await;
}

/// The same for pipelines: killed mid-run, each pipeline is either whole (its jobs and artifact
/// rows all there) or gone with every file queued exactly once; a second run finishes.
#[tokio::test]
async fn delete_old_pipelines_killed_mid_run_loses_nothing_and_a_second_run_finishes() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    let fx = Fx { c: &c };
    let (first, last) = (fx.project().await, fx.project().await);
    for (p, n) in [(first, 380), (last, 5)] {
        for _ in 0..n {
            let pl = fx.pipeline(p, "main", "success", 0).await;
            finished_days_ago(&c, pl, 40).await;
            jobs_with_an_archive(&c, pl, 2, 7, None, 40).await;
        }
    }
    fx.exact_statistics().await;
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_job_artifacts").await, 770);

    let args = ["delete-old", "pipelines", "--older-than", "30d", "--yes"];
    kill_while_blocked(&db, &t, &mut c, &args, last, 300).await;
    let c = &c;
    let fx = Fx { c };
    let whole = fx
        .count(
            "SELECT count(*) FROM p_ci_pipelines p WHERE (SELECT count(*) FROM p_ci_job_artifacts a JOIN p_ci_builds b
               ON b.id = a.job_id AND b.partition_id = a.partition_id WHERE b.commit_id = p.id) = 2",
        )
        .await;
    let pipelines = fx.count("SELECT count(*) FROM p_ci_pipelines").await;
    assert!(pipelines > 5 && pipelines < 385, "the kill came mid-run: {pipelines} pipelines left");
    assert_eq!(whole, pipelines, "a pipeline was left half deleted");
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, (385 - pipelines) * 2, "files lost or doubled by the kill");
    assert_statistics_exact(c).await;

    let out = ok(cmd(&db, &t, &args).stdin(std::process::Stdio::null()));
    assert!(out.contains(&format!("pipelines_deleted={pipelines}")), "{out}");
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_pipelines").await + fx.count("SELECT count(*) FROM p_ci_builds").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 770);
    assert_no_duplicate_queue_rows(c).await;
    assert_statistics_exact(c).await;
}

/// A pipeline artifact (`ci_pipeline_artifacts`) of `pipeline`, counted in the project's
/// `pipeline_artifacts_size` and `storage_size`; returns its object key.
async fn pipeline_artifact(c: &tokio_postgres::Client, pipeline: i64, size: i32) -> String {
    let r = c
        .query_one(
            "WITH a AS (
               INSERT INTO ci_pipeline_artifacts (created_at, updated_at, pipeline_id, project_id, size, file_store, file_type, file_format, file, partition_id)
               SELECT now(), now(), id, project_id, $2, 2, 1, 1, 'code_coverage.json', partition_id FROM p_ci_pipelines WHERE id = $1
               RETURNING id, project_id),
             s AS (UPDATE project_statistics s SET pipeline_artifacts_size = pipeline_artifacts_size + $2, storage_size = storage_size + $2
                   FROM a WHERE s.project_id = a.project_id)
             SELECT housekeep.project_dir(project_id) || '/pipelines/' || $1::bigint || '/artifacts/' || id || '/code_coverage.json' AS key FROM a",
            &[&pipeline, &size],
        )
        .await
        .unwrap();
    r.get("key")
}

async fn finished_days_ago(c: &tokio_postgres::Client, pipeline: i64, days: i32) {
    c.execute(
        "UPDATE p_ci_pipelines SET finished_at = (now() AT TIME ZONE 'UTC') - make_interval(days => $2) WHERE id = $1",
        &[&pipeline, &days],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn delete_old_pipelines_takes_jobs_artifacts_logs_and_pipeline_artifacts_through_the_queue() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let (p, other) = (fx.project().await, fx.project().await);
    let old = fx.pipeline(p, "main", "success", 0).await;
    let new = fx.pipeline(p, "main", "success", 1).await;
    let child = fx.pipeline(p, "main", "success", 0).await;
    let old_elsewhere = fx.pipeline(other, "main", "success", 0).await;
    fx.child_of(child, old).await;
    for (pl, days) in [(old, 40), (new, 2), (child, 2), (old_elsewhere, 40)] {
        finished_days_ago(&c, pl, days).await;
    }
    let old_jobs = [job_with_artifacts(&fx, p, old, 40).await, job_with_artifacts(&fx, p, old, 40).await];
    let new_job = job_with_artifacts(&fx, p, new, 2).await;
    job_with_artifacts(&fx, other, old_elsewhere, 40).await;
    fx.exact_statistics().await;
    let old_key = pipeline_artifact(&c, old, 50).await;
    let new_key = pipeline_artifact(&c, new, 5).await;
    fixtures::put(&t.store, &old_key).await;
    fixtures::put(&t.store, &new_key).await;
    assert_statistics_exact(&c).await;
    let path = format!("group/p-{p}");

    let before = digest(&c).await;
    let out = ok(&mut cmd(&db, &t, &["delete-old", "pipelines", "--older-than", "30d", "--project", &path, "--dry-run"]));
    assert!(
        out.contains("would delete 1 pipelines with 2 jobs, 6 job artifacts (222 bytes) and 1 pipeline artifacts (50 bytes)"),
        "{out}"
    );
    assert_eq!(digest(&c).await, before, "a dry run changed the database");

    let out = ok(&mut cmd(&db, &t, &["delete-old", "pipelines", "--older-than", "30d", "--project", &path]));
    for want in ["pipelines_deleted=1", "jobs_deleted=2", "deleted=6 deleted_bytes=222", "pipeline_artifacts_bytes=50 pipeline_artifacts_deleted=1"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let gone = |sql: String| fx.count_owned(sql);
    assert_eq!(gone(format!("SELECT count(*) FROM p_ci_pipelines WHERE id = {old}")).await, 0);
    assert_eq!(gone(format!("SELECT count(*) FROM p_ci_builds WHERE id IN ({}, {})", old_jobs[0], old_jobs[1])).await, 0);
    assert_eq!(gone(format!("SELECT count(*) FROM ci_sources_pipelines WHERE source_pipeline_id = {old}")).await, 0);
    assert_eq!(gone(format!("SELECT count(*) FROM ci_pipeline_artifacts WHERE pipeline_id = {old}")).await, 0);
    // The new pipeline, the child (finished recently) and the other project's pipeline stay whole.
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_pipelines").await, 3);
    assert_eq!(types_of(&c, new_job).await, vec![1, 2, 3]);
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_job_artifacts").await, 6);
    assert_eq!(fx.count_owned(format!("SELECT pipeline_artifacts_size FROM project_statistics WHERE project_id = {p}")).await, 5);
    assert_statistics_exact(&c).await;
    // Every file, the logs and the pipeline artifact included, waits in the queue, once.
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 7);
    assert!(fixtures::queue_keys(&c).await.contains_key(&old_key), "the pipeline artifact is queued under its key");
    assert_no_duplicate_queue_rows(&c).await;

    // delete-objects then removes the pipeline artifact's object, and only that one.
    ok(&mut cmd(&db, &t, &["run", "delete-objects"]));
    assert!(!fixtures::exists(&t.store, &old_key).await);
    assert!(fixtures::exists(&t.store, &new_key).await);
    assert!(!fixtures::queue_keys(&c).await.contains_key(&old_key), "its queue row is done");

    let out = ok(&mut cmd(&db, &t, &["delete-old", "pipelines", "--older-than", "30d", "--project", &path]));
    assert!(out.contains("pipelines_deleted=0"), "{out}");
}

#[tokio::test]
async fn keep_and_delete_artifacts_act_on_one_job_as_gitlabs_api() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 1).await;
    let job = job_with_artifacts(&fx, p, pl, 1).await;
    let bare = fx.job(p, pl).await;
    fx.exact_statistics().await;

    let before = digest(&c).await;
    let out = ok(&mut cmd(&db, &t, &["keep", "--job", &job.to_string(), "--dry-run"]));
    assert!(out.contains("would keep the 2 artifacts"), "{out}");
    assert_eq!(digest(&c).await, before);
    let out = ok(&mut cmd(&db, &t, &["keep", "--job", &job.to_string()]));
    assert!(out.contains("kept=2"), "{out}");
    let expiring = fx.count_owned(format!("SELECT count(*) FROM p_ci_job_artifacts WHERE job_id = {job} AND expire_at IS NOT NULL")).await;
    assert_eq!(expiring, 0, "keep leaves no expire_at on the job's rows, its trace's included");

    for (args, says) in [
        (vec!["keep", "--job", &bare.to_string()], "no artifacts"),
        (vec!["keep", "--job", "999999"], "no such job"),
        (vec!["delete-artifacts", "--job", "999999"], "no such job"),
    ] {
        let o = common::run(&mut cmd(&db, &t, &args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }

    // Deleted now, although kept and locked; the trace stays.
    let out = ok(&mut cmd(&db, &t, &["delete-artifacts", "--job", &job.to_string()]));
    assert!(out.contains("deleted=2 deleted_bytes=110"), "{out}");
    assert_eq!(types_of(&c, job).await, vec![3]);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 2);
    assert_statistics_exact(&c).await;
}

#[tokio::test]
async fn expire_project_artifacts_expires_all_but_traces_and_locked_pipelines() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let (p, other) = (fx.project().await, fx.project().await);
    let unlocked = fx.pipeline(p, "main", "success", 0).await;
    let locked = fx.pipeline(p, "main", "success", 1).await;
    let job_unlocked = job_with_artifacts(&fx, p, unlocked, 1).await;
    let job_locked = job_with_artifacts(&fx, p, locked, 1).await;
    let pl_other = fx.pipeline(other, "main", "success", 0).await;
    job_with_artifacts(&fx, other, pl_other, 1).await;
    fx.exact_statistics().await;

    let before = digest(&c).await;
    let out = ok(&mut cmd(&db, &t, &["expire-project-artifacts", "--project", &p.to_string(), "--dry-run"]));
    assert!(out.contains("would_expire=2 would_expire_bytes=110"), "{out}");
    assert_eq!(digest(&c).await, before);

    let out = ok(&mut cmd(&db, &t, &["expire-project-artifacts", "--project", &format!("group/p-{p}")]));
    assert!(out.contains("expired=2 expired_bytes=110"), "{out}");
    let expired_now = |job: i64| {
        fx.count_owned(format!(
            "SELECT count(*) FROM p_ci_job_artifacts WHERE job_id = {job} AND expire_at <= now() AND locked = 0 AND file_type <> 3"
        ))
    };
    assert_eq!((expired_now(job_unlocked).await, expired_now(job_locked).await), (2, 0));

    // The next expire run queues them; the trace, the locked pipeline's and the other project's stay.
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    fixtures::run(&ctx, housekeep::tasks::Task::Expire).await;
    assert_eq!(types_of(&c, job_unlocked).await, vec![3]);
    assert_eq!(types_of(&c, job_locked).await, vec![1, 2, 3]);
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_job_artifacts").await, 3 + 3 + 1);
    assert_statistics_exact(&c).await;

    let o = common::run(&mut cmd(&db, &t, &["expire-project-artifacts", "--project", "nope/nope"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// refresh-stats corrects wrong totals while expire removes rows of the same projects: the end
/// is exact, and no reader ever sees 0 (each project's true total never is).
#[tokio::test]
async fn refresh_stats_under_concurrent_expiry_ends_exact() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let projects = [fx.project().await, fx.project().await];
    for &p in &projects {
        let pl = fx.pipeline(p, "main", "success", 0).await;
        // 3,000 expired rows of 7 bytes and 10 never-expiring ones of 1,000 bytes.
        for (n, size, expire) in [(3000, 7, Some("-1 day")), (10, 1000, None)] {
            jobs_with_an_archive(&c, pl, n, size, expire, 0).await;
        }
    }
    // Wrong totals, as a lost counter flush leaves them (storage_size consistent with them).
    c.execute("UPDATE project_statistics SET build_artifacts_size = 12345, storage_size = 12345 + repository_size + pipeline_artifacts_size", &[])
        .await
        .unwrap();
    let csv = common::tmp_root().join(format!("{}.csv", common::unique("projects")));
    std::fs::write(&csv, format!("PROJECT_ID\n{}\n{}\n", projects[0], projects[1])).unwrap();
    let csv = csv.to_str().unwrap().to_string();

    let before = digest(&c).await;
    let out = ok(&mut cmd(&db, &t, &["refresh-stats", "--filename", &csv, "--dry-run"]));
    assert!(out.contains("2 projects, 2 with a wrong build_artifacts_size"), "{out}");
    assert_eq!(digest(&c).await, before, "a dry run changed the database");

    // expire in small batches, and refresh-stats at the same time, while a reader watches.
    let mut expire = cmd(&db, &t, &["run", "expire"]);
    expire.env("HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE", "50");
    let mut expire = expire.spawn().unwrap();
    let watch = db.client().await;
    let refresh = std::thread::spawn({
        let (url, store, csv) = (db.url.clone(), t.url.clone(), csv.clone());
        move || {
            let mut c = housekeep();
            c.args(["refresh-stats", "--filename", &csv]).env("HOUSEKEEP_DATABASE_URL", url).env("HOUSEKEEP_STORE_URL", store);
            common::run(&mut c)
        }
    });
    while !refresh.is_finished() {
        let zero: i64 = watch
            .query_one("SELECT count(*) AS n FROM project_statistics WHERE build_artifacts_size <= 0", &[])
            .await
            .unwrap()
            .get("n");
        assert_eq!(zero, 0, "a reader saw a total of 0 while refresh-stats ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let o = refresh.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(expire.wait().unwrap().success());
    assert_statistics_exact(&c).await;
    assert_eq!(fx.count("SELECT sum(build_artifacts_size)::bigint FROM project_statistics").await, 2 * 10 * 1000);

    // Bad input changes nothing and names every bad line.
    let bad = common::tmp_root().join(format!("{}.csv", common::unique("bad")));
    for (text, says) in [("PROJECT_ID\n1\nx\n-3\n", "line 3"), ("ID\n1\n", "header PROJECT_ID"), ("PROJECT_ID\n", "more than")] {
        std::fs::write(&bad, text).unwrap();
        if says == "more than" {
            // A huge file (sparse: nothing is written) is refused before it is read.
            std::fs::OpenOptions::new().write(true).open(&bad).unwrap().set_len(1 << 40).unwrap();
        }
        let before = digest(&c).await;
        let o = common::run(&mut cmd(&db, &t, &["refresh-stats", "--filename", bad.to_str().unwrap()]));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        if says == "line 3" {
            assert!(stderr(&o).contains("line 4"), "{}", stderr(&o));
        }
        assert_eq!(digest(&c).await, before);
    }
}
