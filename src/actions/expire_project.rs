//! `expire-project-artifacts`: expire a project's deletable artifacts now, as GitLab's
//! `DELETE /projects/:id/artifacts` (`ExpireProjectBuildArtifactsService`) does: every artifact
//! row of the project whose pipeline is unlocked gets `locked = 0` and an `expire_at` no later
//! than now (rows kept with a NULL `expire_at` too); traces and the artifacts of still-locked
//! pipelines (the latest of each ref, and those queued for unlocking) are left alone. The next
//! `expire` run moves them to the deletion queue. A keyset pass by id, 1,000 rows a batch.

use serde::Serialize;

use crate::error::Result;
use crate::tasks::runner::{BatchTask, Run, Step};
use crate::tasks::stats::{TaskStats, add_fields};

/// Rows of project $1 that this action changes: not traces, not yet expired and unlocked, of a
/// pipeline that is unlocked.
macro_rules! deletable {
    () => {
        "a.project_id = $1 AND a.file_type <> 3
         AND (a.expire_at IS NULL OR a.expire_at > now() OR a.locked IS DISTINCT FROM 0)
         AND EXISTS (SELECT 1 FROM p_ci_builds b JOIN p_ci_pipelines p ON p.id = b.commit_id AND p.partition_id = b.partition_id
                     WHERE b.id = a.job_id AND b.partition_id = a.partition_id AND p.locked = 0)"
    };
}

const BATCH: &str = concat!(
    "WITH batch AS (
       SELECT id, partition_id FROM p_ci_job_artifacts WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3
     ), changed AS (
       UPDATE p_ci_job_artifacts a SET locked = 0, expire_at = LEAST(COALESCE(a.expire_at, now()), now())
       FROM batch WHERE a.id = batch.id AND a.partition_id = batch.partition_id AND ",
    deletable!(),
    " RETURNING COALESCE(a.size, 0) AS size
     )
     SELECT (SELECT max(id) FROM batch) AS last_id, count(*) AS expired, COALESCE(sum(size), 0)::bigint AS expired_bytes FROM changed"
);

const PLAN: &str = concat!(
    "SELECT count(*) AS would_expire, COALESCE(sum(a.size), 0)::bigint AS would_expire_bytes FROM p_ci_job_artifacts a WHERE ",
    deletable!()
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpireProjectStats {
    /// Rows now expired and unlocked: the next `expire` run queues their files.
    pub expired: i64,
    pub expired_bytes: i64,
}

impl TaskStats for ExpireProjectStats {
    add_fields!(expired, expired_bytes);
    fn items(&self) -> u64 {
        self.expired as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpireProjectPlan {
    pub would_expire: i64,
    pub would_expire_bytes: i64,
}

pub struct ExpireProject {
    client: deadpool_postgres::Object,
    project_id: i64,
    /// The keyset cursor: the last artifact id of the batch before.
    last_id: i64,
}

impl BatchTask for ExpireProject {
    type Stats = ExpireProjectStats;
    type Plan = ExpireProjectPlan;
    /// The project's id.
    type Args = i64;

    async fn open(run: &Run<'_>, project_id: i64) -> Result<Self> {
        Ok(ExpireProject {
            client: run.ctx.pool.get().await?,
            project_id,
            last_id: 0,
        })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<ExpireProjectPlan> {
        let r = self.client.query_one(PLAN, &[&self.project_id]).await?;
        Ok(ExpireProjectPlan {
            would_expire: r.get("would_expire"),
            would_expire_bytes: r.get("would_expire_bytes"),
        })
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<ExpireProjectStats>> {
        let r = self
            .client
            .query_one(BATCH, &[&self.project_id, &self.last_id, &run.batch_size()])
            .await?;
        let stats = ExpireProjectStats {
            expired: r.get("expired"),
            expired_bytes: r.get("expired_bytes"),
        };
        match r.get::<_, Option<i64>>("last_id") {
            Some(last) => {
                self.last_id = last;
                Ok(Step::more(stats))
            }
            None => Ok(Step::done(stats)),
        }
    }
}
