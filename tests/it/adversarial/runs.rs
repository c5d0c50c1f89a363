//! Task runs under attack: `expedite` while another run holds leases, a task that panics, a
//! database that goes away before a run starts, and a run killed with SIGKILL.

use housekeep::tasks::DeleteObjectsStats;
use std::process::Stdio;
use std::time::{Duration, Instant};

use housekeep::seed::{seed, SeedOptions};
use housekeep::store::Stores;
use housekeep::tasks::{self, Outcome, RunOptions, Stopped, Task};

use crate::common::{housekeep, stdout, Backend, TestDb, TestStore};
use crate::fixtures::faulty::slow_queue;
use crate::fixtures::{self, Fx};

/// Guarantee 6: `expedite` makes queued objects ready, but never the rows a running
/// delete-objects has leased: each object is deleted by exactly one of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expedite_never_shortens_a_lease_another_run_holds() {
    // 40 ready objects behind a store whose deletes take 50 ms each, one at a time: the
    // leaseholder's only batch takes about 2 s.
    let (db, t, slow, counts) = slow_queue(40, Duration::from_millis(50)).await;
    let c = db.client().await;
    let fx = Fx { c: &c };
    // 5 objects queued for later and leased by nobody: expedite makes these ready.
    let p = fx.project().await;
    let mut later = Vec::new();
    for _ in 0..5 {
        let k = housekeep::store::layout::final_key(p, &fixtures::upload_id());
        fixtures::put(&t.store, &k).await;
        fx.queue(2, &k, "30 minutes").await;
        later.push(k);
    }
    let mut config = fixtures::config(&db);
    config.store_concurrency = 1;
    config.tasks[housekeep::registry::Task::DeleteObjects].batch_size = 40;
    let ctx = fixtures::context(config, Stores { remote: slow.clone(), local: slow }).await;
    let holder = tokio::spawn(async move { fixtures::run(&ctx, Task::DeleteObjects).await });

    let t0 = Instant::now();
    while fx.count("SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at > now() + interval '5 minutes' AND pick_up_at < now() + interval '20 minutes'").await < 40 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the first run never leased its batch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = housekeep()
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url)
        .env("HOUSEKEEP_LOG", "warn")
        .arg("expedite")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("deleted=5 "), "expedite must delete exactly the 5 unleased objects: {text}");

    let report = holder.await.unwrap();
    assert_eq!(report.stats::<DeleteObjectsStats>().deleted, 40, "{report:?}");
    let forwarded = counts.lock().unwrap().forwarded.clone();
    assert_eq!(forwarded.len(), 40);
    assert!(forwarded.values().all(|n| *n == 1), "an object went to the store twice");
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    for k in &later {
        assert!(!fixtures::exists(&t.store, k).await, "{k} should be gone");
    }
}

/// A task that panics fails its run, is counted as a failure, and gives its advisory lock back:
/// the next run on the same pool is not skipped.
#[tokio::test]
async fn a_panicking_run_fails_and_releases_its_lock() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    fx.artifact(fixtures::Art::new(p, job).expire("-1 day")).await;
    // A column type the task does not expect makes reading its rows panic. Rows are read back
    // only for their audit records, so those are on (and go nowhere).
    let _audit = tracing::subscriber::set_default(tracing_subscriber::fmt().with_writer(std::io::sink).finish());
    c.batch_execute("ALTER TABLE p_ci_job_artifacts ALTER COLUMN size TYPE integer").await.unwrap();
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let err = tasks::run(&ctx, Task::Expire, RunOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert_eq!(err.exit_code(), 1);
    let held: i64 = c
        .query_one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "the panicking run left its advisory lock held");
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("housekeep_task_runs_total{outcome=\"failure\",task=\"expire\"} 1"),
        "{metrics}"
    );
    let outcome: Option<String> = c.query_one("SELECT outcome FROM housekeep.runs", &[]).await.unwrap().get(0);
    assert_eq!(outcome.as_deref(), Some("failure"));

    c.batch_execute("ALTER TABLE p_ci_job_artifacts ALTER COLUMN size TYPE bigint").await.unwrap();
    // The batch committed before its rows were read back, so the second run finds nothing left;
    // what matters is that it runs instead of being skipped.
    let r = fixtures::run(&ctx, Task::Expire).await;
    assert_eq!((r.outcome, r.stopped), (Outcome::Success, Stopped::Done), "{r:?}");
    assert_eq!(fx.count("SELECT count(*) FROM p_ci_job_artifacts").await, 0);
}

/// A run that cannot even get a connection is still counted as a failure.
#[tokio::test]
async fn a_run_without_a_database_is_counted_as_a_failure() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let admin = crate::common::connect(&std::env::var("HK_TEST_PG_URL").unwrap()).await;
    admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db.name)).await.unwrap();
    for task in [Task::Expire, Task::DeleteObjects] {
        assert!(tasks::run(&ctx, task, RunOptions::default()).await.is_err());
    }
    let metrics = ctx.metrics.render();
    for task in ["expire", "delete-objects"] {
        let line = format!("housekeep_task_runs_total{{outcome=\"failure\",task=\"{task}\"}} 1");
        assert!(metrics.contains(&line), "missing {line}:\n{metrics}");
    }
}

/// A run killed with SIGKILL leaves its `housekeep.runs` row open; the next run of any task
/// closes it as `interrupted`, and never closes a run that is still going.
#[tokio::test]
async fn runs_killed_mid_run_are_closed_as_interrupted_by_the_next_run() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let mut c = db.client().await;
    seed(&mut c, None, &SeedOptions { artifacts: 8000, projects: 5, objects: false, seed: 7, ..Default::default() })
        .await
        .unwrap();
    let mut child = housekeep()
        .env("HOUSEKEEP_DATABASE_URL", &db.url)
        .env("HOUSEKEEP_STORE_URL", &t.url)
        .env("HOUSEKEEP_LOG", "warn")
        .env("HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE", "1")
        .args(["run", "expire"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let fx = Fx { c: &c };
    let queued = fx.count("SELECT count(*) FROM ci_deleted_objects").await;
    while fx.count("SELECT count(*) FROM ci_deleted_objects").await < queued + 20 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(20), "the run never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fx.count("SELECT count(*) FROM housekeep.runs WHERE finished_at IS NULL").await, 1);

    // A live run of another task (its connection still open) is left alone.
    c.batch_execute("INSERT INTO housekeep.runs (task, backend_pid) VALUES ('delete-objects', pg_backend_pid())").await.unwrap();
    // The killed backend may still be finishing its statement.
    let t1 = Instant::now();
    loop {
        let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
        fixtures::dry_run(&ctx, Task::Unlock).await;
        let open: Vec<(String, Option<String>)> = c
            .query("SELECT task, outcome FROM housekeep.runs WHERE task IN ('expire', 'delete-objects') ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if open[0].1.is_some() {
            assert_eq!(open[0], ("expire".to_string(), Some("interrupted".to_string())));
            assert_eq!(open[1], ("delete-objects".to_string(), None), "a live run was closed");
            break;
        }
        assert!(t1.elapsed() < Duration::from_secs(10), "the killed run was never closed: {open:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
