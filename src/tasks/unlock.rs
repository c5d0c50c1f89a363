//! `unlock` (keep latest artifacts): for every ref (a branch and a tag of the same name are two
//! refs) with locked pipelines, pipelines older than the
//! newest finished one are enqueued in `ci_unlock_pipeline_requests`, except the newest finished
//! and the newest successful pipeline (CI sources only, as GitLab). Draining the queue sets the
//! artifacts of queued pipelines `locked = 0` in batches, then the pipelines' `locked = 0` and the
//! request's removal last, in one transaction: an interrupted drain resumes where it stopped.

use super::Run;
use crate::error::Result;

/// Statuses that end a pipeline (GitLab's trigger for unlocking older ones).
/// Sources that are not "CI sources" in GitLab (webide, parent_pipeline, on-demand DAST,
/// security policies, container registry push, duo workflow, policy schedules) never count as
/// the newest pipeline of a ref.
const CANDIDATES: &str = "
WITH refs AS (
  SELECT DISTINCT project_id, ref, tag FROM ci_pipelines WHERE locked = 1 AND ref IS NOT NULL
), latest AS (
  SELECT r.project_id, r.ref, r.tag,
    (SELECT p.id FROM ci_pipelines p
      WHERE p.project_id = r.project_id AND p.ref = r.ref AND p.tag = r.tag
        AND p.status IN ('success', 'failed', 'canceled', 'skipped', 'manual')
        AND COALESCE(p.source, 0) NOT IN (9, 12, 13, 14, 15, 16, 17, 18)
      ORDER BY p.id DESC LIMIT 1) AS finished_id,
    (SELECT p.id FROM ci_pipelines p
      WHERE p.project_id = r.project_id AND p.ref = r.ref AND p.tag = r.tag AND p.status = 'success'
        AND COALESCE(p.source, 0) NOT IN (9, 12, 13, 14, 15, 16, 17, 18)
      ORDER BY p.id DESC LIMIT 1) AS success_id
  FROM refs r
)
SELECT p.id FROM latest l
JOIN ci_pipelines p ON p.project_id = l.project_id AND p.ref = l.ref AND p.tag = l.tag
WHERE p.locked = 1 AND p.id < l.finished_id AND p.id IS DISTINCT FROM l.success_id";

const QUEUED: &str = "SELECT pipeline_id FROM ci_unlock_pipeline_requests ORDER BY enqueued_at, pipeline_id LIMIT $1";

const UNLOCK_ARTIFACTS: &str = "UPDATE ci_job_artifacts SET locked = 0 WHERE id IN (
       SELECT a.id FROM ci_builds b JOIN ci_job_artifacts a ON a.job_id = b.id
       WHERE b.commit_id = ANY($1) AND a.locked <> 0 LIMIT $2)";

const UNLOCK_PIPELINES: &str = "UPDATE ci_pipelines SET locked = 0, updated_at = now() WHERE id = ANY($1) AND locked = 1 RETURNING id";
const DEQUEUE: &str = "DELETE FROM ci_unlock_pipeline_requests WHERE pipeline_id = ANY($1)";

/// Pipelines drained together; their artifacts are unlocked `batch_size` rows at a time.
const PIPELINES_PER_DRAIN: i64 = 50;

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let mut client = run.ctx.pool.get().await?;
    if run.dry_run {
        let candidates: Vec<i64> = client.query(CANDIDATES, &[]).await?.iter().map(|r| r.get(0)).collect();
        let queued: Vec<i64> =
            client.query("SELECT pipeline_id FROM ci_unlock_pipeline_requests", &[]).await?.iter().map(|r| r.get(0)).collect();
        let mut all = candidates.clone();
        all.extend(&queued);
        let artifacts: i64 = client
            .query_one(
                "SELECT count(*) FROM ci_builds b JOIN ci_job_artifacts a ON a.job_id = b.id WHERE b.commit_id = ANY($1) AND a.locked <> 0",
                &[&all],
            )
            .await?
            .get(0);
        run.report.add("would_enqueue", candidates.iter().filter(|c| !queued.contains(c)).count() as i64);
        run.report.add("already_queued", queued.len() as i64);
        run.report.add("would_unlock_artifacts", artifacts);
        return Ok(());
    }

    let enqueued = client
        .query(
            &format!("INSERT INTO ci_unlock_pipeline_requests (pipeline_id) {CANDIDATES} ON CONFLICT (pipeline_id) DO NOTHING RETURNING pipeline_id"),
            &[],
        )
        .await?;
    for r in &enqueued {
        run.audit.pipeline("enqueued", r.get(0), "older than the newest finished pipeline of its ref");
    }
    run.report.add("enqueued", enqueued.len() as i64);
    run.ctx.metrics.pipelines_enqueued.inc_by(enqueued.len() as u64);

    let unlock_artifacts = client.prepare(UNLOCK_ARTIFACTS).await?;
    let limit = run.batch_size();
    'drain: while run.keep_going() {
        let pipelines: Vec<i64> = client.query(QUEUED, &[&PIPELINES_PER_DRAIN]).await?.iter().map(|r| r.get(0)).collect();
        if pipelines.is_empty() {
            break;
        }
        loop {
            let n = client.execute(&unlock_artifacts, &[&pipelines, &limit]).await? as i64;
            run.report.add("artifacts_unlocked", n);
            run.ctx.metrics.artifacts_unlocked.inc_by(n as u64);
            if n == 0 {
                break;
            }
            if !run.keep_going() {
                // The pipelines stay locked and queued; the next run finishes them.
                break 'drain;
            }
        }
        let tx = client.transaction().await?;
        // Rows added since the last batch (new uploads copy the pipeline's lock) go with the pipeline.
        let late = tx.execute(&unlock_artifacts, &[&pipelines, &i64::MAX]).await? as i64;
        run.report.add("artifacts_unlocked", late);
        run.ctx.metrics.artifacts_unlocked.inc_by(late as u64);
        let unlocked = tx.query(UNLOCK_PIPELINES, &[&pipelines]).await?;
        tx.execute(DEQUEUE, &[&pipelines]).await?;
        tx.commit().await?;
        for r in &unlocked {
            run.audit.pipeline("unlocked", r.get(0), "keep-latest: a newer pipeline finished on the ref");
        }
        run.report.add("pipelines_unlocked", unlocked.len() as i64);
        run.ctx.metrics.pipelines_unlocked.inc_by(unlocked.len() as u64);
    }
    Ok(())
}
