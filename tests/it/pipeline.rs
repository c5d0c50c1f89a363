//! The housekeeping pipeline (SPEC §4) through the library: each task on a small hand-built
//! dataset whose every row has a known fate, checked row by row, with the guarantees of §10
//! (1 referenced objects are never deleted, 2 queue rows go only after their object, 3 an
//! artifact is a row or a queue row, never both nor neither, 4 locked/unknown rows and traces
//! never expire).

use crate::common;
use crate::fixtures;

use common::{Backend, TestDb, TestStore};
use fixtures::{assert_accounted, assert_statistics_exact, digest, dry_run, exists, put, run, Art, Fx};
use housekeep::store::layout;
use housekeep::tasks::{
    DeleteObjectsPlan, DeleteObjectsStats, ExpirePlan, ExpireStats, Outcome, StaleUploadsPlan, StaleUploadsStats, Stopped,
    Task, UnknownPlan, UnknownStats, UnlockPlan, UnlockStats,
};

/// The queue row of a key: (file_store, project_id, size, pick_up_at is within `secs` of `expected`).
async fn queue_row(c: &tokio_postgres::Client, key: &str) -> tokio_postgres::Row {
    let (dir, file) = layout::split_dir_file(key);
    let rows = c
        .query(
            "SELECT o.file_store, o.project_id, s.size, o.pick_up_at, now() AS now FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id
             WHERE o.store_dir = $1 AND o.file = $2",
            &[&dir, &file],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "exactly one queue row for {key}");
    rows.into_iter().next().unwrap()
}

#[tokio::test]
async fn expire_moves_only_expired_unlocked_non_trace_rows() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let (p1, p2) = (fx.project().await, fx.project().await);
    let pl1 = fx.pipeline(p1, "main", "success", 0).await;
    let pl2 = fx.pipeline(p2, "main", "success", 0).await;
    // One job per artifact keeps (job_id, file_type) unique.
    macro_rules! art {
        ($p:expr, $pl:expr, $a:expr) => {{
            let j = fx.job($p, $pl).await;
            fx.artifact($a(Art::new($p, j))).await
        }};
    }
    // Expirable: expired, locked = 0, not a trace.
    let a_old = art!(p1, pl1, |a: Art| a.expire("-2 days").size(100));
    let a_final = art!(p1, pl1, |a: Art| a.expire("-10 minutes").size(200).file_type(2).final_path());
    let a_local = art!(p2, pl2, |a: Art| a.expire("-3 hours").size(50).file_type(4).local());
    // Not expirable.
    let future = art!(p1, pl1, |a: Art| a.expire("2 hours").size(1));
    let locked = art!(p1, pl1, |a: Art| a.expire("-2 days").locked(1).size(2));
    let unknown = art!(p1, pl1, |a: Art| a.expire("-2 days").locked(2).size(4));
    let trace = art!(p1, pl1, |a: Art| a.expire("-2 days").file_type(3).size(8));
    let never = art!(p1, pl1, |a: Art| a.size(16));
    let locked_p2 = art!(p2, pl2, |a: Art| a.expire("-1 day").locked(1).size(32));
    fx.exact_statistics().await;
    let all = vec![
        a_old.clone(),
        a_final.clone(),
        a_local.clone(),
        future.clone(),
        locked.clone(),
        unknown.clone(),
        trace.clone(),
        never.clone(),
        locked_p2.clone(),
    ];
    let (s1, s2) = (fx.statistics(p1).await, fx.statistics(p2).await);
    assert_eq!((s1, s2), (100 + 200 + 1 + 2 + 4 + 8 + 16, 50 + 32));

    let mut config = fixtures::config(&db);
    config.tasks[Task::Expire].batch_size = 2;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;

    // Dry run: counts, no change.
    let before = digest(&c).await;
    let r = dry_run(&ctx, Task::Expire).await;
    assert!(r.dry_run);
    assert_eq!((r.stats::<ExpirePlan>().would_expire, r.stats::<ExpirePlan>().would_expire_bytes), (3, 350), "{r:?}");
    assert!(r.stats_as::<ExpirePlan>().is_some() && r.stats_as::<ExpireStats>().is_none(), "a dry run reports a plan, nothing expired: {r:?}");
    assert_eq!(digest(&c).await, before, "a dry run changed the database");

    let r = run(&ctx, Task::Expire).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!((r.stats::<ExpireStats>().expired, r.stats::<ExpireStats>().expired_bytes), (3, 350), "{r:?}");
    assert_eq!(ctx.metrics.artifacts_expired.get(), 3);
    assert_eq!(ctx.metrics.artifacts_expired_bytes.get(), 350);
    assert_eq!(ctx.metrics.backlog.with_label_values(&["expired_rows"]).get(), 0);
    assert_eq!(ctx.metrics.backlog.with_label_values(&["queued_objects"]).get(), 3);
    assert_eq!(ctx.metrics.backlog.with_label_values(&["ready_objects"]).get(), 3);
    assert_eq!(ctx.metrics.backlog.with_label_values(&["unknown_rows"]).get(), 1);

    // Exactly the expirable rows are gone, each queued once under its layout key.
    let ids = fixtures::artifact_ids(&c).await;
    for a in [&a_old, &a_final, &a_local] {
        assert!(!ids.contains(&a.id), "artifact {} should have expired", a.id);
    }
    for a in [&future, &locked, &unknown, &trace, &never, &locked_p2] {
        assert!(ids.contains(&a.id), "artifact {} (type {}) must not expire", a.id, a.file_type);
    }
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 3);
    assert!(a_final.key.contains("/@final/"), "{}", a_final.key);
    for (a, store) in [(&a_old, 2i16), (&a_final, 2), (&a_local, 1)] {
        let row = queue_row(&c, &a.key).await;
        assert_eq!(row.get::<_, i16>("file_store"), store);
        assert_eq!(row.get::<_, Option<i64>>("project_id"), Some(a.project_id));
        assert_eq!(row.get::<_, Option<i64>>("size"), Some(a.size));
    }
    // pick_up_at = expire_at clamped to [now - 1 day, now + 1 hour].
    let old = queue_row(&c, &a_old.key).await;
    let (pick, now): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (old.get("pick_up_at"), old.get("now"));
    let lag = (now - chrono::Duration::days(1) - pick).num_seconds().abs();
    assert!(lag < 120, "pick_up_at {pick} should be about now - 1 day ({now})");
    for a in [&a_final, &a_local] {
        let row = queue_row(&c, &a.key).await;
        assert_eq!(Some(row.get::<_, chrono::DateTime<chrono::Utc>>("pick_up_at")), a.expire_at, "{}", a.key);
    }
    // Totals decremented by exactly the bytes moved.
    assert_eq!(fx.statistics(p1).await, s1 - 300);
    assert_eq!(fx.statistics(p2).await, s2 - 50);
    assert_statistics_exact(&c).await;
    assert_accounted(&c, &all, None).await;

    // Idempotent: nothing left to do.
    let before = digest(&c).await;
    let r = run(&ctx, Task::Expire).await;
    assert_eq!(r.stats::<ExpireStats>().expired, 0, "{r:?}");
    assert_eq!(digest(&c).await, before);
}

/// The move statement sends its rows back only when audit records are written, otherwise only
/// their count and bytes: both forms move the same rows and report the same stats.
#[tokio::test]
async fn expire_and_unknown_move_the_same_with_audit_records_on_and_off() {
    let mut seen = Vec::new();
    for audited in [false, true] {
        let db = TestDb::migrated().await;
        let t = TestStore::new(Backend::Local);
        let c = db.client().await;
        let fx = Fx { c: &c };
        let p = fx.project().await;
        let pl = fx.pipeline(p, "main", "success", 0).await;
        let job = fx.job(p, pl).await;
        for (file_type, size) in [(1, 10), (2, 20), (4, 30)] {
            fx.artifact(Art::new(p, job).file_type(file_type).expire("-1 day").size(size)).await;
        }
        let other_job = fx.job(p, pl).await;
        fx.artifact(Art::new(p, other_job).expire("-1 day").size(40).locked(2)).await;
        fx.exact_statistics().await;
        let mut config = fixtures::config(&db);
        config.tasks[Task::Expire].batch_size = 2;
        let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;
        let records = common::Captured::default();
        let _on = audited.then(|| {
            tracing::subscriber::set_default(tracing_subscriber::fmt().json().with_writer(records.clone()).finish())
        });
        let e = *run(&ctx, Task::Expire).await.stats::<ExpireStats>();
        let u = *run(&ctx, Task::Unknown).await.stats::<UnknownStats>();
        let audit_records = records.text().matches("\"housekeep::audit\"").count();
        assert_eq!(audit_records, if audited { 4 } else { 0 }, "{}", records.text());
        seen.push((e, u, fx.statistics(p).await, fx.count("SELECT count(*) FROM ci_deleted_objects").await));
    }
    assert_eq!(seen[0], seen[1]);
    let expire = ExpireStats { expired: 3, expired_bytes: 60 };
    let unknown = UnknownStats { locked: 0, removed: 1, removed_bytes: 40 };
    assert_eq!(seen[0], (expire, unknown, 0, 4));
}

#[tokio::test]
async fn expire_and_unknown_delete_rows_without_a_file_name_without_queueing() {
    // A row with neither `file` nor `file_final_path` has no object to delete: expire (and
    // unknown, for an unlocked pipeline) delete the row and queue nothing.
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let (j1, j2) = (fx.job(p, pl).await, fx.job(p, pl).await);
    let a = fx.artifact(Art::new(p, j1).expire("-1 day").size(3)).await;
    let u = fx.artifact(Art::new(p, j2).expire("-1 day").locked(2).size(5)).await;
    c.execute("UPDATE p_ci_job_artifacts SET file = NULL WHERE id = ANY($1)", &[&vec![a.id, u.id]]).await.unwrap();
    fx.exact_statistics().await;
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let r = run(&ctx, Task::Expire).await;
    assert_eq!((r.stats::<ExpireStats>().expired, r.stats::<ExpireStats>().expired_bytes), (1, 3), "{r:?}");
    assert_eq!(fx.artifact_locked(a.id).await, None);
    let r = run(&ctx, Task::Unknown).await;
    assert_eq!((r.stats::<UnknownStats>().removed, r.stats::<UnknownStats>().removed_bytes), (1, 5), "{r:?}");
    assert_eq!(fx.artifact_locked(u.id).await, None);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    assert_eq!(fx.count("SELECT count(*) FROM housekeep.deleted_object_state").await, 0);
    assert_statistics_exact(&c).await;
}

#[tokio::test]
async fn unknown_locks_rows_of_locked_pipelines_and_destroys_the_others() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl_locked = fx.pipeline(p, "main", "success", 1).await;
    let pl_unlocked = fx.pipeline(p, "main", "success", 0).await;
    let (j1, j2, j3) = (fx.job(p, pl_locked).await, fx.job(p, pl_unlocked).await, fx.job(p, pl_unlocked).await);
    // j1: pipeline locked.
    let u_lock_archive = fx.artifact(Art::new(p, j1).expire("-1 day").locked(2).size(1)).await;
    let u_lock_trace = fx.artifact(Art::new(p, j1).file_type(3).expire("-1 day").locked(2).size(2)).await;
    let u_lock_future = fx.artifact(Art::new(p, j1).file_type(4).expire("1 day").locked(2).size(4)).await;
    // j2, j3: pipeline unlocked.
    let u_destroy = fx.artifact(Art::new(p, j2).expire("-1 day").locked(2).size(70)).await;
    let u_trace = fx.artifact(Art::new(p, j2).file_type(3).expire("-1 day").locked(2).size(8)).await;
    let u_never = fx.artifact(Art::new(p, j2).file_type(2).locked(2).size(16)).await;
    let u_destroy_final = fx.artifact(Art::new(p, j3).expire("-2 days").locked(2).final_path().size(30)).await;
    let unlocked_expired = fx.artifact(Art::new(p, j3).file_type(2).expire("-2 days").locked(0).size(64)).await;
    fx.exact_statistics().await;
    let total = fx.statistics(p).await;
    let all = vec![
        u_lock_archive.clone(),
        u_lock_trace.clone(),
        u_lock_future.clone(),
        u_destroy.clone(),
        u_trace.clone(),
        u_never.clone(),
        u_destroy_final.clone(),
        unlocked_expired.clone(),
    ];

    let mut config = fixtures::config(&db);
    config.tasks[Task::Unknown].batch_size = 1;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;

    let before = digest(&c).await;
    let r = dry_run(&ctx, Task::Unknown).await;
    assert_eq!((r.stats::<UnknownPlan>().would_lock, r.stats::<UnknownPlan>().would_remove, r.stats::<UnknownPlan>().would_remove_bytes), (2, 3, 108), "{r:?}");
    assert_eq!(digest(&c).await, before, "a dry run changed the database");

    let r = run(&ctx, Task::Unknown).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!((r.stats::<UnknownStats>().locked, r.stats::<UnknownStats>().removed, r.stats::<UnknownStats>().removed_bytes), (2, 3, 108), "{r:?}");
    assert_eq!(fx.artifact_locked(u_lock_archive.id).await, Some(1));
    assert_eq!(fx.artifact_locked(u_lock_trace.id).await, Some(1));
    assert_eq!(fx.artifact_locked(u_lock_future.id).await, Some(2), "not expired yet: untouched");
    assert_eq!(fx.artifact_locked(u_destroy.id).await, None);
    assert_eq!(fx.artifact_locked(u_destroy_final.id).await, None);
    assert_eq!(fx.artifact_locked(u_trace.id).await, None, "traces of unlocked pipelines are destroyed too (GitLab's service)");
    assert_eq!(fx.artifact_locked(u_never.id).await, Some(2), "NULL expire_at is never touched");
    assert_eq!(fx.artifact_locked(unlocked_expired.id).await, Some(0), "locked = 0 rows are expire's, not unknown's");
    for a in [&u_destroy, &u_destroy_final, &u_trace] {
        let row = queue_row(&c, &a.key).await;
        assert_eq!(row.get::<_, Option<i64>>("size"), Some(a.size));
    }
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 3);
    assert_eq!(fx.statistics(p).await, total - 108);
    assert_statistics_exact(&c).await;
    assert_accounted(&c, &all, None).await;
    assert_eq!(ctx.metrics.unknown_locked.get(), 2);
    assert_eq!(ctx.metrics.unknown_removed.get(), 3);

    // Nothing left for a second run.
    let r = run(&ctx, Task::Unknown).await;
    assert_eq!((r.stats::<UnknownStats>().locked, r.stats::<UnknownStats>().removed), (0, 0), "{r:?}");
}

#[tokio::test]
async fn unknown_respects_max_rows_per_run() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    // Two rows on each of the first two jobs: the cap counts rows, not jobs.
    let (j1, j2, j3) = (fx.job(p, pl).await, fx.job(p, pl).await, fx.job(p, pl).await);
    let mut arts = Vec::new();
    for (j, file_type, age) in [(j1, 1, "-5 days"), (j1, 2, "-4 days"), (j2, 1, "-3 days"), (j2, 2, "-2 days"), (j3, 1, "-1 day")] {
        arts.push(fx.artifact(Art::new(p, j).file_type(file_type).expire(age).locked(2).size(10)).await);
    }
    fx.exact_statistics().await;
    let mut config = fixtures::config(&db);
    config.tasks[Task::Unknown].batch_size = 2;
    config.tasks[Task::Unknown].max_rows = 3;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;

    let r = dry_run(&ctx, Task::Unknown).await;
    assert_eq!(r.stats::<UnknownPlan>().would_remove, 3, "a dry run reports one run's worth: {r:?}");
    let r = run(&ctx, Task::Unknown).await;
    assert_eq!(r.stats::<UnknownStats>().removed, 3, "{r:?}");
    assert_eq!(r.stopped, Stopped::MaxRows, "{r:?}");
    // The oldest three went first.
    let left = fixtures::artifact_ids(&c).await;
    assert_eq!(left, [arts[3].id, arts[4].id].into_iter().collect());
    let r = run(&ctx, Task::Unknown).await;
    assert_eq!(r.stats::<UnknownStats>().removed, 2, "{r:?}");
    assert!(fixtures::artifact_ids(&c).await.is_empty());
    assert_statistics_exact(&c).await;
    assert_accounted(&c, &arts, None).await;
}

/// Keep-latest per ref. Pipelines are created in id order, interleaving refs.
#[tokio::test]
async fn unlock_keeps_the_newest_finished_and_newest_successful_pipeline_of_each_ref() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let other = fx.project().await;
    let mut pipelines = Vec::new();
    let mut artifacts = Vec::new();
    // (name, project, ref, status, expected locked after the run)
    let plan: [(&str, i64, &str, &str, i16); 12] = [
        ("m1", p, "main", "success", 0),
        ("d1", p, "develop", "failed", 0),
        ("m2", p, "main", "failed", 0),
        ("d2", p, "develop", "canceled", 0),
        ("m3", p, "main", "success", 1),     // newest success of main
        ("d3", p, "develop", "failed", 1),   // develop has no success: newest finished only
        ("m4", p, "main", "failed", 1),      // newest finished of main, after its newest success
        ("f1", p, "feature", "success", 1),  // a lone pipeline
        ("m5", p, "main", "running", 1),     // not finished: does not count, is not older
        ("o1", other, "main", "success", 0), // another project's main is a ref of its own
        ("o2", other, "main", "success", 1),
        ("m6", p, "main", "pending", 1),
    ];
    for (name, project, r, status, expect) in plan {
        let id = fx.pipeline(project, r, status, 1).await;
        let job = fx.job(project, id).await;
        // Each pipeline holds three artifacts: locked, locked, and one of unknown lock status.
        let arts = vec![
            fx.artifact(Art::new(project, job).locked(1).expire("1 day")).await,
            fx.artifact(Art::new(project, job).file_type(2).locked(1).expire("-1 day")).await,
            fx.artifact(Art::new(project, job).file_type(3).locked(2)).await,
        ];
        pipelines.push((name, id, expect));
        artifacts.push((name, arts, expect));
    }

    let mut config = fixtures::config(&db);
    config.tasks[Task::Unlock].batch_size = 1;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;

    let before = digest(&c).await;
    let r = dry_run(&ctx, Task::Unlock).await;
    assert_eq!((r.stats::<UnlockPlan>().would_enqueue, r.stats::<UnlockPlan>().would_unlock_artifacts), (5, 15), "{r:?}");
    assert_eq!(digest(&c).await, before, "a dry run changed the database");

    let r = run(&ctx, Task::Unlock).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!((r.stats::<UnlockStats>().enqueued, r.stats::<UnlockStats>().pipelines_unlocked, r.stats::<UnlockStats>().artifacts_unlocked), (5, 5, 15), "{r:?}");
    assert_eq!((ctx.metrics.pipelines_unlocked.get(), ctx.metrics.artifacts_unlocked.get()), (5, 15));
    for (name, id, expect) in &pipelines {
        assert_eq!(fx.pipeline_locked(*id).await, *expect, "pipeline {name}");
    }
    for (name, arts, expect) in &artifacts {
        for (i, a) in arts.iter().enumerate() {
            let want = if *expect == 0 { 0 } else if i == 2 { 2 } else { 1 };
            assert_eq!(fx.artifact_locked(a.id).await, Some(want), "artifact {i} of pipeline {name}");
        }
    }
    // An unlocked pipeline never keeps a locked artifact; the request queue is drained.
    let inconsistent = fx
        .count(
            "SELECT count(*) FROM p_ci_pipelines p
             JOIN p_ci_builds b ON b.commit_id = p.id AND b.partition_id = p.partition_id
             JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id
             WHERE p.locked = 0 AND a.locked <> 0",
        )
        .await;
    assert_eq!(inconsistent, 0);
    assert_eq!(fx.count("SELECT count(*) FROM housekeep.unlock_requests").await, 0);

    // Idempotent.
    let r = run(&ctx, Task::Unlock).await;
    assert_eq!((r.stats::<UnlockStats>().enqueued, r.stats::<UnlockStats>().pipelines_unlocked, r.stats::<UnlockStats>().artifacts_unlocked), (0, 0, 0), "{r:?}");

    // A newer failed pipeline on main: everything older goes (m4, and m5 and m6, which never
    // finished but are older than the newest finished one), except m3, still the newest success.
    let m7 = fx.pipeline(p, "main", "failed", 1).await;
    let r = run(&ctx, Task::Unlock).await;
    assert_eq!((r.stats::<UnlockStats>().enqueued, r.stats::<UnlockStats>().pipelines_unlocked, r.stats::<UnlockStats>().artifacts_unlocked), (3, 3, 9), "{r:?}");
    let locked_of = |name: &str| pipelines.iter().find(|p| p.0 == name).unwrap().1;
    for (name, want) in [("m3", 1), ("m4", 0), ("m5", 0), ("m6", 0), ("d3", 1), ("f1", 1), ("o2", 1)] {
        assert_eq!(fx.pipeline_locked(locked_of(name)).await, want, "pipeline {name} after m7");
    }
    assert_eq!(fx.pipeline_locked(m7).await, 1);
    // A newer success: m3 and m7 go.
    let m8 = fx.pipeline(p, "main", "success", 1).await;
    let r = run(&ctx, Task::Unlock).await;
    assert_eq!(r.stats::<UnlockStats>().pipelines_unlocked, 2, "m3 and m7: {r:?}");
    assert_eq!(fx.pipeline_locked(locked_of("m3")).await, 0, "m3");
    assert_eq!(fx.pipeline_locked(m7).await, 0, "m7");
    assert_eq!(fx.pipeline_locked(m8).await, 1, "m8");
    assert_eq!(
        fx.count(
            "SELECT count(*) FROM p_ci_pipelines p
             JOIN p_ci_builds b ON b.commit_id = p.id AND b.partition_id = p.partition_id
             JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id
             WHERE p.locked = 0 AND a.locked <> 0",
        )
        .await,
        0
    );
}

#[tokio::test]
async fn unlock_resumes_an_interrupted_drain() {
    // A drain that stopped after unlocking some artifacts of a queued pipeline: the pipeline is
    // still locked and queued; the next run finishes it.
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let old = fx.pipeline(p, "main", "success", 1).await;
    let new = fx.pipeline(p, "main", "success", 1).await;
    let mut arts = Vec::new();
    for _ in 0..3 {
        let j = fx.job(p, old).await;
        arts.push(fx.artifact(Art::new(p, j).locked(1)).await);
    }
    c.execute("INSERT INTO housekeep.unlock_requests (pipeline_id, partition_id) SELECT id, partition_id FROM p_ci_pipelines WHERE id = $1", &[&old])
        .await
        .unwrap();
    c.execute("UPDATE p_ci_job_artifacts SET locked = 0 WHERE id = $1", &[&arts[0].id]).await.unwrap();
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let r = run(&ctx, Task::Unlock).await;
    assert_eq!((r.stats::<UnlockStats>().enqueued, r.stats::<UnlockStats>().pipelines_unlocked, r.stats::<UnlockStats>().artifacts_unlocked), (0, 1, 2), "{r:?}");
    assert_eq!(fx.pipeline_locked(old).await, 0);
    assert_eq!(fx.pipeline_locked(new).await, 1);
    for a in &arts {
        assert_eq!(fx.artifact_locked(a.id).await, Some(0));
    }
}

async fn delete_objects(backend: Backend) {
    let db = TestDb::migrated().await;
    let remote = TestStore::new(backend);
    let local = TestStore::new(Backend::Local);
    let stores = fixtures::stores(&remote.store, &local.store);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;

    // Ready, object present, nothing references it.
    let mut gone = Vec::new();
    for i in 0..4 {
        let key = layout::hashed_key(p, chrono::Utc::now(), 900_000 + i, 800_000 + i, "artifacts.zip");
        put(&remote.store, &key).await;
        fx.queue(2, &key, "-1 hour").await;
        gone.push(key);
    }
    // A local-store object; the same key on the remote store is another object and stays.
    let local_key = layout::final_key(p, &fixtures::upload_id());
    put(&local.store, &local_key).await;
    put(&remote.store, &local_key).await;
    fx.queue(1, &local_key, "-1 hour").await;
    // Ready, object already gone: "not found" counts as deleted.
    let missing = layout::final_key(p, &fixtures::upload_id());
    fx.queue(2, &missing, "-5 minutes").await;
    // Ready, but live artifact rows reference the keys (hashed and @final layouts).
    let j1 = fx.job(p, pl).await;
    let live_hashed = fx.artifact(Art::new(p, j1)).await;
    let live_final = fx.artifact(Art::new(p, j1).file_type(2).final_path()).await;
    for a in [&live_hashed, &live_final] {
        put(&remote.store, &a.key).await;
        fx.queue(2, &a.key, "-1 hour").await;
    }
    // Not ready yet.
    let future = layout::final_key(p, &fixtures::upload_id());
    put(&remote.store, &future).await;
    let future_id = fx.queue(2, &future, "1 hour").await;

    let mut config = fixtures::config(&db);
    config.tasks[Task::DeleteObjects].batch_size = 3;
    let ctx = fixtures::context(config, stores.clone()).await;

    let before = digest(&c).await;
    let r = dry_run(&ctx, Task::DeleteObjects).await;
    assert_eq!((r.stats::<DeleteObjectsPlan>().would_delete, r.stats::<DeleteObjectsPlan>().queued), (8, 9), "{r:?}");
    assert_eq!(digest(&c).await, before, "a dry run changed the database");
    assert!(exists(&remote.store, &gone[0]).await, "a dry run deleted an object");

    let r = run(&ctx, Task::DeleteObjects).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!((r.stats::<DeleteObjectsStats>().deleted, r.stats::<DeleteObjectsStats>().kept_referenced, r.stats::<DeleteObjectsStats>().failed), (6, 2, 0), "{r:?}");

    for key in &gone {
        assert!(!exists(&remote.store, key).await, "{key} should be deleted");
    }
    assert!(!exists(&local.store, &local_key).await, "the local object should be deleted");
    assert!(exists(&remote.store, &local_key).await, "a file_store = 1 row deleted from the remote store");
    // Guarantee 1.
    assert!(exists(&remote.store, &live_hashed.key).await, "referenced (hashed) object deleted");
    assert!(exists(&remote.store, &live_final.key).await, "referenced (@final) object deleted");
    assert!(exists(&remote.store, &future).await, "an object not ready yet was deleted");
    // Only the row not ready yet is left, untouched.
    let left: Vec<(i64, i32)> =
        c.query("SELECT o.id, COALESCE(s.attempts, 0) FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id", &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(left, vec![(future_id, 0)]);
    let pick_in: f64 = c
        .query_one("SELECT extract(epoch FROM pick_up_at - now())::float8 FROM ci_deleted_objects", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pick_in > 3000.0 && pick_in <= 3600.0, "pick_up_at changed: {pick_in}s from now");
    // The artifacts whose objects were kept are still rows.
    assert_eq!(fixtures::artifact_ids(&c).await, [live_hashed.id, live_final.id].into_iter().collect());
    assert_eq!(ctx.metrics.objects_deleted.with_label_values(&["0-1h"]).get(), 6);
}

#[tokio::test]
async fn delete_objects_on_local_disk() {
    delete_objects(Backend::Local).await;
}

#[tokio::test]
async fn delete_objects_on_s3() {
    delete_objects(Backend::S3).await;
}

async fn stale_uploads(backend: Backend) {
    let db = TestDb::migrated().await;
    let t = TestStore::new(backend);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let j = fx.job(p, pl).await;
    let key = || layout::final_key(p, &fixtures::upload_id());
    let (stale, fresh, stale_missing) = (key(), key(), key());
    for k in [&stale, &fresh] {
        put(&t.store, k).await;
    }
    fx.pending_upload(&stale, "4 hours").await;
    fx.pending_upload(&fresh, "10 minutes").await;
    fx.pending_upload(&stale_missing, "2 days").await;
    // A stale entry whose upload became an artifact after all.
    let saved = fx.artifact(Art::new(p, j).final_path()).await;
    put(&t.store, &saved.key).await;
    fx.pending_upload(&saved.key, "5 hours").await;
    // An object nobody mentions is not stale-uploads' business.
    let other = key();
    put(&t.store, &other).await;

    let mut config = fixtures::config(&db);
    config.tasks[Task::StaleUploads].batch_size = 2;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;
    let before = digest(&c).await;
    let r = dry_run(&ctx, Task::StaleUploads).await;
    assert_eq!(r.stats::<StaleUploadsPlan>().would_delete, 3, "{r:?}");
    assert_eq!(digest(&c).await, before);

    let r = run(&ctx, Task::StaleUploads).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
    assert_eq!((r.stats::<StaleUploadsStats>().deleted, r.stats::<StaleUploadsStats>().failed), (3, 0), "{r:?}");
    let left: Vec<String> =
        c.query("SELECT object_key FROM housekeep.pending_direct_uploads", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left, vec![fresh.clone()]);
    assert!(!exists(&t.store, &stale).await, "the stale upload's object should be deleted");
    assert!(exists(&t.store, &fresh).await, "a fresh upload was deleted");
    assert!(exists(&t.store, &saved.key).await, "an upload an artifact references was deleted (guarantee 1)");
    assert!(exists(&t.store, &other).await);
    assert_eq!(fixtures::artifact_ids(&c).await, [saved.id].into_iter().collect());
}

#[tokio::test]
async fn stale_uploads_on_local_disk() {
    stale_uploads(Backend::Local).await;
}

#[tokio::test]
async fn stale_uploads_on_s3() {
    stale_uploads(Backend::S3).await;
}

/// The whole pipeline in SPEC order, twice, on one dataset: every artifact ends up accounted
/// for, objects of destroyed rows gone, objects of live rows kept.
#[tokio::test]
async fn the_pipeline_end_to_end_accounts_for_every_artifact() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let mut all = Vec::new();
    let old = fx.pipeline(p, "main", "success", 1).await;
    let new = fx.pipeline(p, "main", "success", 1).await;
    let stale_unknown = fx.pipeline(p, "old", "success", 0).await;
    for (pl, locked) in [(old, 1i16), (new, 1), (stale_unknown, 2)] {
        let j = fx.job(p, pl).await;
        all.push(fx.artifact(Art::new(p, j).expire("-1 day").locked(locked).size(10)).await);
        all.push(fx.artifact(Art::new(p, j).file_type(2).expire("-1 day").locked(locked).final_path().size(20)).await);
        all.push(fx.artifact(Art::new(p, j).file_type(3).expire("-1 day").locked(locked).size(40)).await);
        all.push(fx.artifact(Art::new(p, j).file_type(4).locked(locked).size(80)).await);
    }
    for a in &all {
        put(&t.store, &a.key).await;
    }
    fx.exact_statistics().await;
    let stores = fixtures::stores(&t.store, &t.store);
    let ctx = fixtures::context(fixtures::config(&db), stores.clone()).await;
    for _ in 0..2 {
        for task in Task::ALL {
            run(&ctx, task).await;
            assert_accounted(&c, &all, Some(&stores)).await;
            assert_statistics_exact(&c).await;
        }
    }
    // `old` was unlocked and its expired non-trace rows destroyed; `stale_unknown`'s unknown
    // expired rows destroyed, its trace included; `old`'s trace and never-expiring rows stay;
    // `new` is kept.
    let ids = fixtures::artifact_ids(&c).await;
    let kept: Vec<usize> = (0..all.len()).filter(|&i| ids.contains(&all[i].id)).collect();
    assert_eq!(kept, vec![2, 3, 4, 5, 6, 7, 11]);
    for (i, a) in all.iter().enumerate() {
        assert_eq!(exists(&t.store, &a.key).await, kept.contains(&i), "object of artifact {i}");
    }
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    assert_eq!(fx.statistics(p).await, 2 * 40 + 3 * 80 + 10 + 20);
}

/// GitLab's refs are `refs/heads/X` and `refs/tags/X`: a branch and a tag of the same name are
/// two refs, each keeping its own newest pipelines.
#[tokio::test]
async fn unlock_treats_a_branch_and_a_tag_of_the_same_name_as_different_refs() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let branch_old = fx.pipeline(p, "v1.0", "success", 1).await;
    let branch_new = fx.pipeline(p, "v1.0", "success", 1).await;
    let tag = fx.tag_pipeline(p, "v1.0", "success", 1).await;
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let r = run(&ctx, Task::Unlock).await;
    assert_eq!(fx.pipeline_locked(branch_old).await, 0, "older branch pipeline: {r:?}");
    assert_eq!(fx.pipeline_locked(tag).await, 1, "the only pipeline of the tag");
    assert_eq!(fx.pipeline_locked(branch_new).await, 1, "the newest pipeline of the branch v1.0 (the tag v1.0 is another ref)");
}

/// Unknown rows whose job has no pipeline are not protected by any lock: they are destroyed like
/// expired rows (GitLab's behaviour). On GitLab's schema an artifact cannot outlive its job nor a
/// job its pipeline (foreign keys, ON DELETE CASCADE); a job without a pipeline is one whose
/// `commit_id` is NULL.
#[tokio::test]
async fn unknown_destroys_rows_whose_job_has_no_pipeline() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 1).await;
    let j = fx.job(p, pl).await;
    c.execute("UPDATE p_ci_builds SET commit_id = NULL WHERE id = $1", &[&j]).await.unwrap();
    let no_pipeline = fx.artifact(Art::new(p, j).expire("-1 day").locked(2).size(7)).await;
    fx.exact_statistics().await;
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let r = run(&ctx, Task::Unknown).await;
    assert_eq!((r.stats::<UnknownStats>().removed, r.stats::<UnknownStats>().removed_bytes, r.stats::<UnknownStats>().locked), (1, 7, 0), "{r:?}");
    assert_accounted(&c, std::slice::from_ref(&no_pipeline), None).await;
    assert!(fixtures::artifact_ids(&c).await.is_empty());
    assert_statistics_exact(&c).await;
}

/// Guarantee 7: a queued key with `..` or empty segments is never sent to the store; the row
/// stays with its error and does not hold up the others.
#[tokio::test]
async fn delete_objects_refuses_keys_with_dot_dot_or_empty_segments() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    // What a `..` key would resolve to.
    let victim = format!("{}/victim/artifacts.zip", layout::project_dir(p));
    put(&t.store, &victim).await;
    let dotdot = format!("{}/@final/aa/../../victim/artifacts.zip", layout::project_dir(p));
    let empty = format!("{}//victim/artifacts.zip", layout::project_dir(p));
    for k in [&dotdot, &empty] {
        let (dir, file) = layout::split_dir_file(k);
        c.execute(
            "INSERT INTO ci_deleted_objects (file_store, pick_up_at, store_dir, file, project_id) VALUES (2, now() - interval '1 hour', $1, $2, $3)",
            &[&dir, &file, &p],
        )
        .await
        .unwrap();
    }
    let good = layout::final_key(p, &fixtures::upload_id());
    put(&t.store, &good).await;
    fx.queue(2, &good, "-1 minute").await;
    let mut config = fixtures::config(&db);
    config.tasks[Task::DeleteObjects].batch_size = 2;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;
    let r = run(&ctx, Task::DeleteObjects).await;
    assert_eq!((r.stats::<DeleteObjectsStats>().deleted, r.stats::<DeleteObjectsStats>().failed), (1, 2), "{r:?}");
    assert_eq!(r.outcome, Outcome::Partial);
    assert!(exists(&t.store, &victim).await, "a bad key deleted another object");
    assert!(!exists(&t.store, &good).await);
    let rows: Vec<(i32, Option<String>)> = c
        .query("SELECT COALESCE(s.attempts, 0), s.last_error FROM ci_deleted_objects o LEFT JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id ORDER BY o.id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for ((attempts, err), key) in rows.iter().zip([&dotdot, &empty]) {
        assert_eq!(*attempts, 1);
        let err = err.clone().unwrap_or_default();
        assert!(err.contains(key.as_str()), "the error names the key: {err}");
    }
}

/// Entries that cannot be deleted (a malformed key here) must not keep stale-uploads from the
/// valid entries behind them, run after run.
#[tokio::test]
async fn stale_uploads_are_not_blocked_by_entries_that_cannot_be_deleted() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let dir = layout::project_dir(p);
    fx.pending_upload(&format!("{dir}/@final/aa//bad-one"), "10 hours").await;
    fx.pending_upload(&format!("{dir}/@final/aa/../bad-two"), "10 hours").await;
    let good = layout::final_key(p, &fixtures::upload_id());
    put(&t.store, &good).await;
    fx.pending_upload(&good, "5 hours").await;
    let mut config = fixtures::config(&db);
    config.tasks[Task::StaleUploads].batch_size = 2;
    let ctx = fixtures::context(config, fixtures::stores(&t.store, &t.store)).await;
    for _ in 0..3 {
        run(&ctx, Task::StaleUploads).await;
    }
    assert!(!exists(&t.store, &good).await, "a valid stale upload was never deleted");
    let left: i64 = fx.count("SELECT count(*) FROM housekeep.pending_direct_uploads").await;
    assert_eq!(left, 2, "only the two malformed entries stay");
}

/// Every task but delete-objects is skipped while another session holds its advisory lock, and
/// runs once the lock is free.
#[tokio::test]
async fn every_locking_task_is_skipped_while_its_advisory_lock_is_held() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    for task in Task::ALL {
        let Some(key) = task.lock_key() else {
            assert_eq!(task, Task::DeleteObjects);
            continue;
        };
        c.execute("SELECT pg_advisory_lock($1)", &[&key]).await.unwrap();
        let r = run(&ctx, task).await;
        assert_eq!((r.outcome, r.stopped), (Outcome::Skipped, Stopped::Locked), "{task}: {r:?}");
        c.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.unwrap();
        let r = run(&ctx, task).await;
        assert_eq!(r.outcome, Outcome::Success, "{task}: {r:?}");
    }
}

/// A run that fails right after taking its lock (here: recording the run is refused) gives the
/// lock back; the pooled connection would otherwise keep it and skip every later run.
#[tokio::test]
async fn a_run_failing_after_taking_its_lock_gives_it_back() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    c.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON housekeep.runs FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await
    .unwrap();
    let e = housekeep::tasks::run(&ctx, Task::Expire, Default::default()).await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    c.batch_execute("DROP TRIGGER refuse ON housekeep.runs").await.unwrap();
    let held = Fx { c: &c }.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").await;
    assert_eq!(held, 0, "advisory locks left held");
    let r = run(&ctx, Task::Expire).await;
    assert_eq!(r.outcome, Outcome::Success, "{r:?}");
}

/// Each task run holds its advisory lock: while one run of a task is busy, another run of the
/// same task (another worker) is skipped, and runs once the first is done.
#[tokio::test]
async fn a_second_run_of_a_task_is_skipped_while_the_first_holds_its_lock() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let old = fx.pipeline(p, "main", "success", 1).await;
    let _new = fx.pipeline(p, "main", "success", 1).await;
    let j = fx.job(p, old).await;
    let a = fx.artifact(Art::new(p, j).locked(1)).await;
    let expiring = fx.artifact(Art::new(p, j).file_type(2).locked(0).expire("-1 day")).await;
    fx.exact_statistics().await;

    let ctx1 = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let ctx2 = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    let mut blocker = db.client().await;
    for (task, lock_sql, id) in [
        (Task::Unlock, "SELECT 1 FROM p_ci_job_artifacts WHERE id = $1 FOR UPDATE", a.id),
        (Task::Expire, "SELECT 1 FROM project_statistics WHERE project_id = $1 FOR UPDATE", p),
    ] {
        // Hold a row the first run must write, so that it stays busy with its lock held.
        let tx = blocker.transaction().await.unwrap();
        tx.execute(lock_sql, &[&id]).await.unwrap();
        let first = {
            let ctx = ctx1.clone();
            tokio::spawn(async move { housekeep::tasks::run(&ctx, task, Default::default()).await })
        };
        let t0 = std::time::Instant::now();
        while fx
            .count(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'housekeep'
                 AND wait_event_type = 'Lock'",
            )
            .await
            == 0
        {
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "{task} never blocked");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let second = run(&ctx2, task).await;
        assert_eq!(second.outcome, Outcome::Skipped, "{task}: {second:?}");
        assert_eq!(second.stopped, Stopped::Locked);
        assert_eq!(ctx2.metrics.task_runs.with_label_values(&[task.name(), "skipped"]).get(), 1);
        tx.commit().await.unwrap();
        let r = first.await.unwrap().unwrap();
        assert_eq!(r.outcome, Outcome::Success, "{r:?}");
        match task {
            Task::Unlock => assert_eq!(r.stats::<UnlockStats>().pipelines_unlocked, 1, "{r:?}"),
            _ => assert_eq!(r.stats::<ExpireStats>().expired, 1, "{r:?}"),
        }
        // Once the first run is over, the other worker runs.
        let third = run(&ctx2, task).await;
        assert_eq!(third.outcome, Outcome::Success, "{third:?}");
    }
    assert_eq!(fx.artifact_locked(expiring.id).await, None);
    assert_statistics_exact(&c).await;
}

/// One structured audit record (JSON) per destroyed row and per deleted object, with the run
/// id, task, action, ids, key, size and reason. The log format is left at its default (`auto`):
/// stderr is a pipe here, so every line is JSON.
#[tokio::test]
async fn every_destroyed_row_and_deleted_object_leaves_one_audit_record() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let mut expirable = Vec::new();
    for i in 0..3 {
        let j = fx.job(p, pl).await;
        let a = fx.artifact(Art::new(p, j).expire("-2 days").size(10 + i)).await;
        put(&t.store, &a.key).await;
        expirable.push(a);
    }
    let j = fx.job(p, pl).await;
    fx.artifact(Art::new(p, j).size(1)).await;
    // An expired row of unknown lock status on an unlocked pipeline: `unknown` destroys it.
    let j = fx.job(p, pl).await;
    let unknown = fx.artifact(Art::new(p, j).expire("-3 days").locked(2).size(7)).await;
    put(&t.store, &unknown.key).await;
    fx.exact_statistics().await;

    let audit = |task: &str| -> (Vec<serde_json::Value>, String) {
        let o = common::run(
            common::housekeep()
                .args(["run", task])
                .env("HOUSEKEEP_DATABASE_URL", &db.url)
                .env("HOUSEKEEP_STORE_URL", &t.url)
                .env_remove("HOUSEKEEP_LOG_FORMAT"),
        );
        let err = common::stderr(&o);
        assert!(o.status.success(), "{err}");
        let lines: Vec<serde_json::Value> = err
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}")))
            .collect();
        assert!(lines.iter().any(|v| v["message"] == "run finished"), "{err}");
        let records = lines.into_iter().filter(|v| v["target"] == "housekeep::audit").collect();
        (records, common::stdout(&o))
    };
    let (records, out) = audit("unknown");
    assert!(out.contains("removed=1"), "{out}");
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!((r["task"].as_str(), r["action"].as_str()), (Some("unknown"), Some("removed")), "{r}");
    assert_eq!((r["artifact_id"].as_i64(), r["size"].as_i64()), (Some(unknown.id), Some(7)), "{r}");
    assert_eq!(r["key"].as_str(), Some(unknown.key.as_str()), "{r}");

    let (records, out) = audit("expire");
    assert!(out.contains("expired=3"), "{out}");
    assert_eq!(records.len(), 3, "{records:#?}");
    let mut keys: Vec<&str> = records.iter().map(|r| r["key"].as_str().unwrap_or_default()).collect();
    keys.sort();
    let mut want: Vec<&str> = expirable.iter().map(|a| a.key.as_str()).collect();
    want.sort();
    assert_eq!(keys, want);
    for r in &records {
        assert_eq!(r["task"], "expire", "{r}");
        assert_eq!(r["action"], "expired", "{r}");
        assert!(r["run_id"].as_i64().is_some() && r["timestamp"].is_string() && r["reason"].is_string(), "{r}");
        let a = expirable.iter().find(|a| a.key == r["key"].as_str().unwrap()).unwrap();
        assert_eq!(r["artifact_id"].as_i64(), Some(a.id), "{r}");
        assert_eq!(r["size"].as_i64(), Some(a.size), "{r}");
    }
    let (records, out) = audit("delete-objects");
    assert!(out.contains("deleted=4"), "{out}");
    assert_eq!(records.len(), 4, "{records:#?}");
    want.push(&unknown.key);
    for r in &records {
        assert_eq!((r["task"].as_str(), r["action"].as_str()), (Some("delete-objects"), Some("deleted")), "{r}");
        assert!(r["object_id"].as_i64().is_some() && r["size"].as_i64().is_some(), "{r}");
        assert!(want.iter().any(|k| r["key"].as_str().unwrap_or_default().ends_with(k)), "{r}");
    }
}

/// `housekeep expedite` makes every queued object ready (future and backed-off rows included)
/// and drains the queue; `--dry-run` only counts. Partial failures exit 3.
#[tokio::test]
async fn expedite_drains_the_whole_queue_and_failures_exit_3() {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let mut keys = Vec::new();
    for pick in ["-1 hour", "30 minutes", "1 day"] {
        let k = layout::final_key(p, &fixtures::upload_id());
        put(&t.store, &k).await;
        fx.queue(2, &k, pick).await;
        keys.push(k);
    }
    let n = c
        .execute(
            "UPDATE housekeep.deleted_object_state s SET attempts = 3, last_error = 'earlier failure' FROM ci_deleted_objects o
             WHERE s.deleted_object_id = o.id AND o.pick_up_at > now() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let hk = |args: &[&str]| {
        common::run(
            common::housekeep()
                .args(args)
                .env("HOUSEKEEP_DATABASE_URL", &db.url)
                .env("HOUSEKEEP_STORE_URL", &t.url)
                .env("HOUSEKEEP_LOG", "warn"),
        )
    };
    let o = hk(&["expedite", "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("would delete 3 queued objects (30 bytes)"), "{}", common::stdout(&o));
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at > now()").await, 2);
    let o = hk(&["expedite"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("deleted=3"), "{}", common::stdout(&o));
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    for k in &keys {
        assert!(!exists(&t.store, k).await);
    }

    // A row that cannot be deleted: `run delete-objects` and `worker --once` exit 3.
    c.execute(
        "INSERT INTO ci_deleted_objects (file_store, pick_up_at, store_dir, file, project_id) VALUES (2, now() - interval '1 minute', 'a/../b', 'c', $1)",
        &[&p],
    )
    .await
    .unwrap();
    let o = hk(&["run", "delete-objects"]);
    assert_eq!(o.status.code(), Some(3), "{}\n{}", common::stdout(&o), common::stderr(&o));
    assert!(common::stdout(&o).contains("failed=1"), "{}", common::stdout(&o));
    c.execute("UPDATE ci_deleted_objects SET pick_up_at = now() - interval '1 second'", &[]).await.unwrap();
    let o = hk(&["worker", "--once"]);
    assert_eq!(o.status.code(), Some(3), "{}\n{}", common::stdout(&o), common::stderr(&o));
    assert_eq!(common::stdout(&o).lines().count(), 5, "{}", common::stdout(&o));
}
