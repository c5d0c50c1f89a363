//! GitLab's housekeeping rules, each a case from GitLab's own service specs
//! (`spec/services/ci/job_artifacts/*`, `spec/services/ci/unlock_pipeline_service_spec.rb`,
//! `spec/services/ci/refs/enqueue_pipelines_to_unlock_service_spec.rb`), on housekeep's
//! standalone database.

use housekeep::tasks::{DeleteObjectsStats, ExpireStats, UnknownStats, UnlockStats};
use crate::common;
use crate::fixtures;

use common::{housekeep, run, stderr, stdout, Backend, TestDb, TestStore};
use fixtures::{Art, Fx};
use housekeep::tasks::Task;

async fn setup() -> (TestDb, TestStore, tokio_postgres::Client, housekeep::tasks::Context) {
    let db = TestDb::migrated().await;
    let t = TestStore::new(Backend::Local);
    let c = db.client().await;
    let ctx = fixtures::context(fixtures::config(&db), fixtures::stores(&t.store, &t.store)).await;
    (db, t, c, ctx)
}

/// DestroyBatchService: a row that has no file at all is deleted and queues nothing (it would
/// otherwise stay expired forever and keep the backlog above zero).
#[tokio::test]
async fn expired_rows_without_a_file_are_deleted_and_queue_nothing() {
    let (_db, _t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    let a = fx.artifact(Art::new(p, job).expire("-1 day")).await;
    let u = fx.artifact(Art::new(p, job).file_type(4).expire("-1 day").locked(2)).await;
    c.execute("UPDATE p_ci_job_artifacts SET file = NULL, file_final_path = NULL", &[]).await.unwrap();
    fx.exact_statistics().await;
    let r = fixtures::run(&ctx, Task::Expire).await;
    assert_eq!(r.stats::<ExpireStats>().expired, 1, "{r:?}");
    let r = fixtures::run(&ctx, Task::Unknown).await;
    assert_eq!(r.stats::<UnknownStats>().removed, 1, "{r:?}");
    assert_eq!(fx.artifact_locked(a.id).await, None);
    assert_eq!(fx.artifact_locked(u.id).await, None);
    assert_eq!(fx.count("SELECT count(*) FROM ci_deleted_objects").await, 0);
    fixtures::assert_statistics_exact(&c).await;
    ctx.metrics.render();
    housekeep::tasks::refresh_backlog(&ctx).await.unwrap();
    assert!(ctx.metrics.render().contains("housekeep_backlog{kind=\"expired_rows\"} 0"));
}

/// JobArtifactUploader: a row with `file_location = 1` lives at its legacy key
/// `YYYY_MM/<project_id>/<job_id>/<file>`; that key is queued and its object deleted.
#[tokio::test]
async fn legacy_rows_queue_and_delete_their_legacy_key() {
    let (_db, t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    let a = fx.artifact(Art::new(p, job).local().legacy().expire("-1 day")).await;
    assert!(!a.key.contains("/@final/") && a.key.split('/').count() == 4, "{}", a.key);
    fixtures::put(&t.store, &a.key).await;
    fx.exact_statistics().await;
    fixtures::run(&ctx, Task::Expire).await;
    let queued = fixtures::queue_keys(&c).await;
    assert_eq!(queued.get(&a.key), Some(&1), "{queued:?}");
    c.execute("UPDATE ci_deleted_objects SET pick_up_at = now() - interval '1 second'", &[]).await.unwrap();
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    assert_eq!(r.stats::<DeleteObjectsStats>().deleted, 1, "{r:?}");
    assert!(!fixtures::exists(&t.store, &a.key).await, "the legacy object leaked");
}

/// A legacy row still referenced keeps its object: the queue row is dropped, not the file.
#[tokio::test]
async fn a_queued_legacy_key_still_referenced_is_not_deleted() {
    let (_db, t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    let a = fx.artifact(Art::new(p, job).local().legacy()).await;
    fixtures::put(&t.store, &a.key).await;
    fx.queue(1, &a.key, "-1 minute").await;
    let r = fixtures::run(&ctx, Task::DeleteObjects).await;
    assert_eq!((r.stats::<DeleteObjectsStats>().deleted, r.stats::<DeleteObjectsStats>().kept_referenced), (0, 1), "{r:?}");
    assert!(fixtures::exists(&t.store, &a.key).await);
}

/// EnqueuePipelinesToUnlockService: the newest successful pipeline's family (its child
/// pipelines, through ci_sources_pipelines) stays locked with it.
#[tokio::test]
async fn unlock_keeps_the_children_of_the_newest_successful_pipeline() {
    let (_db, _t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let older = fx.pipeline(p, "main", "success", 1).await;
    let older_child = fx.pipeline(p, "main", "success", 1).await;
    fx.child_of(older_child, older).await;
    let success = fx.pipeline(p, "main", "success", 1).await;
    let child = fx.pipeline(p, "main", "success", 1).await;
    fx.child_of(child, success).await;
    let grandchild = fx.pipeline(p, "main", "failed", 1).await;
    fx.child_of(grandchild, child).await;
    let newest = fx.pipeline(p, "main", "failed", 1).await;
    let r = fixtures::run(&ctx, Task::Unlock).await;
    assert_eq!(r.stats::<UnlockStats>().pipelines_unlocked, 2, "{r:?}");
    assert_eq!(fx.pipeline_locked(older).await, 0);
    assert_eq!(fx.pipeline_locked(older_child).await, 0);
    for (id, what) in [(success, "newest successful"), (child, "its child"), (grandchild, "its grandchild"), (newest, "newest finished")] {
        assert_eq!(fx.pipeline_locked(id).await, 1, "{what} must stay locked");
    }
}

/// Refs are ci_refs: a merge-request pipeline of a branch belongs to the branch's ref, so a newer
/// merge-request pipeline unlocks the branch's older pipelines.
#[tokio::test]
async fn unlock_counts_merge_request_pipelines_on_their_branch_ref() {
    let (_db, _t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let old = fx.pipeline(p, "feature", "success", 1).await;
    let mr = fx.pipeline(p, "refs/merge-requests/1/head", "success", 1).await;
    c.execute(
        "UPDATE p_ci_pipelines SET source = 10,
           ci_ref_id = (SELECT ci_ref_id FROM p_ci_pipelines WHERE id = $2)
         WHERE id = $1",
        &[&mr, &old],
    )
    .await
    .unwrap();
    let r = fixtures::run(&ctx, Task::Unlock).await;
    assert_eq!(r.stats::<UnlockStats>().pipelines_unlocked, 1, "{r:?}");
    assert_eq!(fx.pipeline_locked(old).await, 0);
    assert_eq!(fx.pipeline_locked(mr).await, 1);
}

/// UnlockPipelineService: a queued pipeline that is already unlocked is skipped; its artifacts
/// (unknown ones included) are left as they are.
#[tokio::test]
async fn a_queued_pipeline_already_unlocked_is_skipped() {
    let (_db, _t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    let a = fx.artifact(Art::new(p, job).locked(2)).await;
    c.execute(
        "INSERT INTO housekeep.unlock_requests (pipeline_id, partition_id) SELECT id, partition_id FROM p_ci_pipelines WHERE id = $1",
        &[&pl],
    )
    .await
    .unwrap();
    let r = fixtures::run(&ctx, Task::Unlock).await;
    assert_eq!((r.stats::<UnlockStats>().already_unlocked, r.stats::<UnlockStats>().artifacts_unlocked), (1, 0), "{r:?}");
    assert_eq!(fx.artifact_locked(a.id).await, Some(2), "an unknown row of an unlocked pipeline must stay unknown");
    assert_eq!(fx.count("SELECT count(*) FROM housekeep.unlock_requests").await, 0);
}

/// UpdateUnknownLockedStatusService destroys the expired unknown rows of unlocked pipelines,
/// traces included (only the expiry worker spares traces).
#[tokio::test]
async fn unknown_destroys_expired_unknown_traces_of_unlocked_pipelines() {
    let (_db, _t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    let trace = fx.artifact(Art::new(p, job).file_type(3).expire("-1 day").locked(2)).await;
    let kept = fx.pipeline(p, "main", "success", 1).await;
    let kept_job = fx.job(p, kept).await;
    let kept_trace = fx.artifact(Art::new(p, kept_job).file_type(3).expire("-1 day").locked(2)).await;
    fx.exact_statistics().await;
    let r = fixtures::run(&ctx, Task::Unknown).await;
    assert_eq!((r.stats::<UnknownStats>().removed, r.stats::<UnknownStats>().locked), (1, 1), "{r:?}");
    assert_eq!(fx.artifact_locked(trace.id).await, None);
    assert_eq!(fixtures::queue_keys(&c).await.get(&trace.key), Some(&1));
    assert_eq!(fx.artifact_locked(kept_trace.id).await, Some(1));
    fixtures::assert_statistics_exact(&c).await;
}

/// RefDeleteUnlockArtifactsWorker: when a branch or tag is deleted, every locked pipeline of it
/// is unlocked — the newest ones too. `--project` takes a full path or an id.
#[tokio::test]
async fn unlock_ref_unlocks_every_pipeline_of_a_deleted_ref() {
    let (db, t, c, ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let a = fx.pipeline(p, "gone", "success", 1).await;
    let b = fx.pipeline(p, "gone", "failed", 1).await;
    let tag = fx.tag_pipeline(p, "gone", "success", 1).await;
    let path: String = c.query_one("SELECT path FROM routes WHERE source_id = $1", &[&p]).await.unwrap().get(0);
    let hk = |args: &[&str]| {
        run(housekeep().args(args).env("HOUSEKEEP_DATABASE_URL", &db.url).env("HOUSEKEEP_STORE_URL", &t.url).env("HOUSEKEEP_LOG", "warn"))
    };
    let o = hk(&["unlock-ref", "--project", &path, "--ref", "refs/heads/gone"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 pipelines of refs/heads/gone queued"), "{}", stdout(&o));
    let r = fixtures::run(&ctx, Task::Unlock).await;
    assert_eq!(r.stats::<UnlockStats>().pipelines_unlocked, 2, "{r:?}");
    assert_eq!((fx.pipeline_locked(a).await, fx.pipeline_locked(b).await), (0, 0));
    assert_eq!(fx.pipeline_locked(tag).await, 1, "the tag of the same name is another ref");

    let o = hk(&["unlock-ref", "--project", &p.to_string(), "--ref", "refs/tags/gone"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (args, what) in [
        (["unlock-ref", "--project", "no/such", "--ref", "refs/heads/x"], "no such project"),
        (["unlock-ref", "--project", &path, "--ref", "gone"], "not a full ref"),
    ] {
        let o = hk(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(what), "{}", stderr(&o));
    }
}

/// A run whose audit records could not be written fails (exit 1), even though its batches
/// committed: the records are the only trace of what was destroyed.
#[tokio::test]
async fn a_run_whose_audit_records_are_lost_exits_non_zero() {
    let (db, t, c, _ctx) = setup().await;
    let fx = Fx { c: &c };
    let p = fx.project().await;
    let pl = fx.pipeline(p, "main", "success", 0).await;
    let job = fx.job(p, pl).await;
    fx.artifact(Art::new(p, job).expire("-1 day")).await;
    fx.exact_statistics().await;
    // A column type the audit writer does not expect makes writing the records fail.
    c.batch_execute("ALTER TABLE p_ci_job_artifacts ALTER COLUMN file_type TYPE bigint").await.unwrap();
    let o = run(
        housekeep()
            .args(["run", "expire"])
            .env("HOUSEKEEP_DATABASE_URL", &db.url)
            .env("HOUSEKEEP_STORE_URL", &t.url)
            .env("HOUSEKEEP_LOG", "warn,housekeep::audit=info"),
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("audit"), "{}", stderr(&o));
}
