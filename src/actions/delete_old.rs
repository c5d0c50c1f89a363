//! `delete-old artifacts | jobs` (`pipelines` is [`super::delete_old_pipelines`]): what administrators do by age. `artifacts` deletes every
//! artifact of the jobs finished before a date, kept (never-expiring) and locked ones too, traces
//! aside; `jobs` erases those jobs, as GitLab's erase does: all their artifacts, the log (trace)
//! included, and `erased_at` set. For one project or the whole instance. Rows go to the deletion
//! queue exactly as `expire` moves them (project totals decremented, one audit record per row);
//! each batch is one transaction, so an interrupted run loses nothing and a second run continues.

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::error::Result;
use crate::tasks::moved::{MoveSql, MovedAudit, move_to_queue_sql};
use crate::tasks::runner::{BatchTask, Run, Step};
use crate::tasks::stats::{TaskStats, add_fields};

/// What to delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The artifacts of old jobs (not their logs).
    Artifacts,
    /// Old jobs: their artifacts and logs; the job is marked erased.
    Jobs,
}

/// The arguments of a run.
#[derive(Debug, Clone, Copy)]
pub struct DeleteOldArgs {
    pub kind: Kind,
    /// Jobs finished more than this many seconds ago.
    pub older_than_secs: f64,
    /// One project, or the whole instance.
    pub project_id: Option<i64>,
}

/// Old jobs ($1 the cutoff, in GitLab's UTC `timestamp without time zone`; $2 a project or NULL).
macro_rules! old_jobs {
    () => {
        "b.finished_at < $1 AND ($2::bigint IS NULL OR b.project_id = $2)"
    };
}

/// Artifacts of old jobs, traces aside.
const ARTIFACTS_BATCH: MoveSql = move_to_queue_sql!(concat!(
    "SELECT a.id, a.partition_id FROM p_ci_job_artifacts a
     JOIN p_ci_builds b ON b.id = a.job_id AND b.partition_id = a.partition_id
     WHERE a.file_type <> 3 AND ($2::bigint IS NULL OR a.project_id = $2) AND ",
    old_jobs!(),
    " ORDER BY a.id LIMIT $3 FOR UPDATE OF a SKIP LOCKED"
));

const ARTIFACTS_PLAN: &str = concat!(
    "SELECT count(*) AS would_delete, COALESCE(sum(a.size), 0)::bigint AS would_delete_bytes, 0::bigint AS jobs
     FROM p_ci_job_artifacts a JOIN p_ci_builds b ON b.id = a.job_id AND b.partition_id = a.partition_id
     WHERE a.file_type <> 3 AND ($2::bigint IS NULL OR a.project_id = $2) AND ",
    old_jobs!()
);

/// Old jobs not erased yet (builds only, not bridges).
const PICK_JOBS: &str = concat!(
    "SELECT b.id, b.partition_id FROM p_ci_builds b
     WHERE b.erased_at IS NULL AND b.type = 'Ci::Build' AND ",
    old_jobs!(),
    " ORDER BY b.id LIMIT $3 FOR UPDATE SKIP LOCKED"
);

/// Every artifact of the picked jobs, the log included.
const JOB_ARTIFACTS: MoveSql = move_to_queue_sql!(
    "SELECT a.id, a.partition_id FROM p_ci_job_artifacts a
     JOIN unnest($1::bigint[], $2::bigint[]) AS j(id, partition_id) ON a.job_id = j.id AND a.partition_id = j.partition_id
     FOR UPDATE OF a"
);

const ERASE_JOBS: &str = "
UPDATE p_ci_builds b SET erased_at = now() AT TIME ZONE 'UTC', updated_at = now() AT TIME ZONE 'UTC'
FROM unnest($1::bigint[], $2::bigint[]) AS j(id, partition_id)
WHERE b.id = j.id AND b.partition_id = j.partition_id";

const JOBS_PLAN: &str = concat!(
    "SELECT count(DISTINCT b.id) AS jobs, count(a.id) AS would_delete, COALESCE(sum(a.size), 0)::bigint AS would_delete_bytes
     FROM p_ci_builds b LEFT JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id
     WHERE b.erased_at IS NULL AND b.type = 'Ci::Build' AND ",
    old_jobs!()
);

/// The database's now, in GitLab's UTC `timestamp without time zone`, less `older_than_secs`:
/// what finished before it is old. Fixed for a run.
pub(crate) async fn cutoff(client: &tokio_postgres::Client, older_than_secs: f64) -> Result<NaiveDateTime> {
    Ok(client
        .query_one("SELECT (now() AT TIME ZONE 'UTC') - make_interval(secs => $1) AS cutoff", &[&older_than_secs])
        .await?
        .get("cutoff"))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteOldStats {
    /// Jobs erased (`delete-old jobs`).
    pub jobs_erased: i64,
    /// Artifact rows moved to the deletion queue.
    pub deleted: i64,
    pub deleted_bytes: i64,
}

impl TaskStats for DeleteOldStats {
    add_fields!(jobs_erased, deleted, deleted_bytes);
    fn items(&self) -> u64 {
        match self.jobs_erased {
            0 => self.deleted as u64,
            jobs => jobs as u64,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteOldPlan {
    /// Jobs that would be erased (`delete-old jobs`).
    pub jobs: i64,
    pub would_delete: i64,
    pub would_delete_bytes: i64,
}

pub struct DeleteOld {
    client: deadpool_postgres::Object,
    args: DeleteOldArgs,
    /// Jobs finished before this (UTC) are old; fixed for the run.
    cutoff: NaiveDateTime,
    audit: MovedAudit,
}

impl BatchTask for DeleteOld {
    type Stats = DeleteOldStats;
    type Plan = DeleteOldPlan;
    type Args = DeleteOldArgs;

    async fn open(run: &Run<'_>, args: DeleteOldArgs) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let cutoff = cutoff(&client, args.older_than_secs).await?;
        let reason = match args.kind {
            Kind::Artifacts => "delete-old artifacts: job finished before the cutoff",
            Kind::Jobs => "delete-old jobs: job finished before the cutoff, erased",
        };
        Ok(DeleteOld {
            client,
            args,
            cutoff,
            audit: MovedAudit::new(run, "deleted", reason),
        })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<DeleteOldPlan> {
        let sql = match self.args.kind {
            Kind::Artifacts => ARTIFACTS_PLAN,
            Kind::Jobs => JOBS_PLAN,
        };
        let r = self.client.query_one(sql, &[&self.cutoff, &self.args.project_id]).await?;
        Ok(DeleteOldPlan {
            jobs: r.get("jobs"),
            would_delete: r.get("would_delete"),
            would_delete_bytes: r.get("would_delete_bytes"),
        })
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<DeleteOldStats>> {
        let stats = match self.args.kind {
            Kind::Artifacts => {
                let sql = self.audit.statement(&ARTIFACTS_BATCH);
                let rows = self
                    .client
                    .query(sql, &[&self.cutoff, &self.args.project_id, &run.batch_size()])
                    .await?;
                let (deleted, deleted_bytes) = self.audit.push(rows).await?;
                DeleteOldStats {
                    jobs_erased: 0,
                    deleted,
                    deleted_bytes,
                }
            }
            Kind::Jobs => self.erase_jobs(run).await?,
        };
        Ok(if stats.deleted == 0 && stats.jobs_erased == 0 {
            Step::done(stats)
        } else {
            Step::more(stats)
        })
    }

    async fn close(&mut self, _run: &Run<'_>) -> Result<DeleteOldStats> {
        self.audit.finish().await?;
        Ok(DeleteOldStats::default())
    }
}

impl DeleteOld {
    /// One batch of jobs in one transaction: their artifacts to the queue, then `erased_at`.
    async fn erase_jobs(&mut self, run: &Run<'_>) -> Result<DeleteOldStats> {
        let move_sql = self.audit.statement(&JOB_ARTIFACTS);
        let tx = self.client.transaction().await?;
        let jobs = tx
            .query(PICK_JOBS, &[&self.cutoff, &self.args.project_id, &run.batch_size()])
            .await?;
        let ids: Vec<i64> = jobs.iter().map(|r| r.get("id")).collect();
        let partitions: Vec<i64> = jobs.iter().map(|r| r.get("partition_id")).collect();
        let moved = tx.query(move_sql, &[&ids, &partitions]).await?;
        let erased = tx.execute(ERASE_JOBS, &[&ids, &partitions]).await? as i64;
        tx.commit().await?;
        for id in &ids {
            run.audit.job("erased", *id, "delete-old jobs: finished before the cutoff");
        }
        let (deleted, deleted_bytes) = self.audit.push(moved).await?;
        Ok(DeleteOldStats {
            jobs_erased: erased,
            deleted,
            deleted_bytes,
        })
    }
}
