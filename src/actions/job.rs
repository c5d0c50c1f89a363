//! One job's artifacts, as GitLab's Job Artifacts API does: `keep` (`POST …/artifacts/keep`)
//! makes them never expire — every row's `expire_at` and the job's `artifacts_expire_at` become
//! NULL; `delete-artifacts` (`DELETE …/jobs/:id/artifacts`) deletes them now, whatever their lock
//! and expiry, traces aside, through the deletion queue. Each is one step in one transaction.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::tasks::moved::{MoveSql, MovedAudit, move_to_queue_sql};
use crate::tasks::runner::{BatchTask, Run, Step};
use crate::tasks::stats::{TaskStats, add_fields};

const FIND_JOB: &str = "
SELECT b.id, b.partition_id, b.project_id, b.name, b.status, b.erased_at IS NOT NULL AS erased,
       (SELECT count(*) FROM p_ci_job_artifacts a WHERE a.job_id = b.id AND a.partition_id = b.partition_id AND a.file_type <> 3) AS artifacts
FROM p_ci_builds b WHERE b.id = $1";

const KEEP: &str = "
WITH kept AS (
  UPDATE p_ci_job_artifacts a SET expire_at = NULL
  WHERE a.job_id = $1 AND a.partition_id = $2 AND a.expire_at IS NOT NULL
  RETURNING 1
), job AS (
  UPDATE p_ci_builds b SET artifacts_expire_at = NULL WHERE b.id = $1 AND b.partition_id = $2
)
SELECT count(*) AS kept FROM kept";

/// The job's artifacts, traces aside, whatever their lock and expiry.
const DELETE: MoveSql = move_to_queue_sql!(
    "SELECT a.id, a.partition_id FROM p_ci_job_artifacts a WHERE a.job_id = $1 AND a.partition_id = $2 AND a.file_type <> 3 FOR UPDATE"
);

/// Keep job `id`'s artifacts (in `partition_id`): the rows that still expired are counted.
pub(crate) async fn keep(client: &tokio_postgres::Client, id: i64, partition_id: i64) -> Result<i64> {
    Ok(client.query_one(KEEP, &[&id, &partition_id]).await?.get("kept"))
}

/// Delete job `id`'s artifacts (traces aside) through the deletion queue.
pub(crate) async fn delete(client: &tokio_postgres::Client, id: i64, partition_id: i64, audit: &mut MovedAudit) -> Result<DeleteArtifactsStats> {
    let rows = client.query(audit.statement(&DELETE), &[&id, &partition_id]).await?;
    let (deleted, deleted_bytes) = audit.push(rows).await?;
    Ok(DeleteArtifactsStats { deleted, deleted_bytes })
}

/// A job, as found before acting on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub project_id: i64,
    pub name: Option<String>,
    pub status: Option<String>,
    pub erased: bool,
    /// Artifact rows, traces aside.
    pub artifacts: i64,
    #[serde(skip)]
    partition_id: i64,
}

/// The job `id`, or exit 2 naming it.
async fn find(client: &tokio_postgres::Client, id: i64) -> Result<Job> {
    let r = client
        .query_opt(FIND_JOB, &[&id])
        .await?
        .ok_or_else(|| Error::Input(format!("--job {id}: no such job")))?;
    Ok(Job {
        id,
        project_id: r.get("project_id"),
        name: r.get("name"),
        status: r.get("status"),
        erased: r.get("erased"),
        artifacts: r.get("artifacts"),
        partition_id: r.get("partition_id"),
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeepStats {
    /// Artifact rows whose `expire_at` became NULL (rows already kept are not counted).
    pub kept: i64,
}

impl TaskStats for KeepStats {
    add_fields!(kept);
}

/// `keep --job ID`.
pub struct Keep {
    client: deadpool_postgres::Object,
    job: Job,
}

impl BatchTask for Keep {
    type Stats = KeepStats;
    type Plan = Job;
    /// The job's id.
    type Args = i64;

    /// Refuses a job that does not exist or has no artifacts (GitLab answers 404), before anything changes.
    async fn open(run: &Run<'_>, id: i64) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let job = find(&client, id).await?;
        if job.artifacts == 0 {
            return Err(Error::Input(format!("--job {id}: the job has no artifacts to keep")));
        }
        Ok(Keep { client, job })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<Job> {
        Ok(self.job.clone())
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<KeepStats>> {
        let kept = keep(&self.client, self.job.id, self.job.partition_id).await?;
        run.audit.job("kept", self.job.id, "keep: artifacts never expire");
        Ok(Step::done(KeepStats { kept }))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteArtifactsStats {
    /// Artifact rows moved to the deletion queue.
    pub deleted: i64,
    pub deleted_bytes: i64,
}

impl TaskStats for DeleteArtifactsStats {
    add_fields!(deleted, deleted_bytes);
}

/// `delete-artifacts --job ID`.
pub struct DeleteArtifacts {
    client: deadpool_postgres::Object,
    job: Job,
    audit: MovedAudit,
}

impl BatchTask for DeleteArtifacts {
    type Stats = DeleteArtifactsStats;
    type Plan = Job;
    /// The job's id.
    type Args = i64;

    async fn open(run: &Run<'_>, id: i64) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let job = find(&client, id).await?;
        Ok(DeleteArtifacts {
            client,
            job,
            audit: MovedAudit::new(run, "deleted", "delete-artifacts: deleted on request"),
        })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<Job> {
        Ok(self.job.clone())
    }

    async fn step(&mut self, _run: &Run<'_>) -> Result<Step<DeleteArtifactsStats>> {
        let stats = delete(&self.client, self.job.id, self.job.partition_id, &mut self.audit).await?;
        Ok(Step::done(stats))
    }

    async fn close(&mut self, _run: &Run<'_>) -> Result<DeleteArtifactsStats> {
        self.audit.finish().await?;
        Ok(DeleteArtifactsStats::default())
    }
}
