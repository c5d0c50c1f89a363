//! `delete-old pipelines`: delete the pipelines finished before a date, as GitLab's
//! `Ci::DestroyPipelineService` does — the pipeline, its jobs, every artifact of those jobs (logs
//! included), the pipeline's own artifacts (`ci_pipeline_artifacts`, counted in
//! `pipeline_artifacts_size`) and its parent/child links. For one project or the whole instance.
//!
//! Files are never deleted inline: job artifacts go to the deletion queue exactly as `expire`
//! moves them, and pipeline artifacts are queued under their own key
//! (`P/pipelines/<pipeline_id>/artifacts/<id>/<file>`), both with their project totals decremented
//! in the same statement. Each batch of pipelines is one transaction, so an interrupted run loses
//! nothing and a second run continues. On a live GitLab database, the rows that hang off a job or a
//! pipeline in tables housekeep does not know (metadata, variables, …) go with GitLab's own
//! `ON DELETE CASCADE` foreign keys and loose-foreign-key triggers, as they do when GitLab deletes
//! a pipeline.

use chrono::NaiveDateTime;
use serde::Serialize;

use super::delete_old::cutoff;
use crate::error::Result;
use crate::tasks::moved::{MoveSql, MovedAudit, move_to_queue_sql};
use crate::tasks::runner::{BatchTask, Run, Step};
use crate::tasks::stats::{TaskStats, add_fields};

/// The arguments of a run.
#[derive(Debug, Clone, Copy)]
pub struct DeleteOldPipelinesArgs {
    /// Pipelines finished more than this many seconds ago.
    pub older_than_secs: f64,
    /// One project, or the whole instance.
    pub project_id: Option<i64>,
}

/// Old pipelines ($1 the cutoff, in GitLab's UTC `timestamp without time zone`; $2 a project or NULL).
macro_rules! old_pipelines {
    () => {
        "p.finished_at < $1 AND ($2::bigint IS NULL OR p.project_id = $2)"
    };
}

/// A batch of old pipelines, locked for the transaction.
const PICK: &str = concat!(
    "SELECT p.id, p.partition_id FROM p_ci_pipelines p WHERE ",
    old_pipelines!(),
    " ORDER BY p.id LIMIT $3 FOR UPDATE SKIP LOCKED"
);

/// Every artifact of the picked pipelines' jobs, logs included ($1 ids, $2 partitions).
const JOB_ARTIFACTS: MoveSql = move_to_queue_sql!(
    "SELECT a.id, a.partition_id FROM p_ci_job_artifacts a
     JOIN p_ci_builds b ON b.id = a.job_id AND b.partition_id = a.partition_id
     JOIN unnest($1::bigint[], $2::bigint[]) AS p(id, partition_id) ON b.commit_id = p.id AND b.partition_id = p.partition_id
     FOR UPDATE OF a"
);

/// The picked pipelines' own artifacts: rows deleted, files queued (due now: the pipeline is
/// gone), sizes kept in housekeep's state, `pipeline_artifacts_size` and `storage_size`
/// decremented additively. Returns the count and bytes.
const PIPELINE_ARTIFACTS: &str = "
WITH del AS (
  DELETE FROM ci_pipeline_artifacts a USING unnest($1::bigint[], $2::bigint[]) AS p(id, partition_id)
  WHERE a.pipeline_id = p.id AND a.partition_id = p.partition_id
  RETURNING a.id, a.pipeline_id, a.project_id, a.size::bigint AS size, a.file_store, a.file
),
to_queue AS (
  SELECT d.*, nextval('ci_deleted_objects_id_seq') AS object_id FROM del d WHERE d.file IS NOT NULL
),
queued AS (
  INSERT INTO ci_deleted_objects (id, file_store, pick_up_at, store_dir, file, project_id)
  SELECT object_id, file_store, now(),
         housekeep.project_dir(project_id) || '/pipelines/' || pipeline_id || '/artifacts/' || id, file, project_id
  FROM to_queue
  RETURNING 1
),
sizes AS (
  INSERT INTO housekeep.deleted_object_state (deleted_object_id, size) SELECT object_id, size FROM to_queue RETURNING 1
),
stats AS (
  UPDATE project_statistics s SET pipeline_artifacts_size = s.pipeline_artifacts_size - d.total,
                                  storage_size = s.storage_size - d.total
  FROM (SELECT project_id, sum(size) AS total FROM del GROUP BY project_id) d
  WHERE s.project_id = d.project_id
  RETURNING 1
)
SELECT count(*) AS n, COALESCE(sum(size), 0)::bigint AS bytes FROM del";

/// Parent/child and multi-project links from or to the picked pipelines.
const LINKS: &str = "
DELETE FROM ci_sources_pipelines s USING unnest($1::bigint[], $2::bigint[]) AS p(id, partition_id)
WHERE (s.pipeline_id = p.id AND s.partition_id = p.partition_id)
   OR (s.source_pipeline_id = p.id AND s.source_partition_id = p.partition_id)";

/// The picked pipelines' jobs (bridges too); their artifact rows are already queued.
const JOBS: &str = "
DELETE FROM p_ci_builds b USING unnest($1::bigint[], $2::bigint[]) AS p(id, partition_id)
WHERE b.commit_id = p.id AND b.partition_id = p.partition_id";

const PIPELINES: &str = "
DELETE FROM p_ci_pipelines x USING unnest($1::bigint[], $2::bigint[]) AS p(id, partition_id)
WHERE x.id = p.id AND x.partition_id = p.partition_id";

const PLAN: &str = concat!(
    "WITH p AS (SELECT p.id, p.partition_id FROM p_ci_pipelines p WHERE ",
    old_pipelines!(),
    ")
     SELECT (SELECT count(*) FROM p) AS pipelines,
            (SELECT count(*) FROM p_ci_builds b JOIN p ON b.commit_id = p.id AND b.partition_id = p.partition_id) AS jobs,
            count(a.id) AS would_delete, COALESCE(sum(a.size), 0)::bigint AS would_delete_bytes,
            (SELECT count(*) FROM ci_pipeline_artifacts x JOIN p ON x.pipeline_id = p.id AND x.partition_id = p.partition_id)
              AS pipeline_artifacts,
            (SELECT COALESCE(sum(x.size), 0)::bigint FROM ci_pipeline_artifacts x JOIN p ON x.pipeline_id = p.id AND x.partition_id = p.partition_id)
              AS pipeline_artifacts_bytes
     FROM p JOIN p_ci_builds b ON b.commit_id = p.id AND b.partition_id = p.partition_id
     JOIN p_ci_job_artifacts a ON a.job_id = b.id AND a.partition_id = b.partition_id"
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteOldPipelinesStats {
    pub pipelines_deleted: i64,
    pub jobs_deleted: i64,
    /// Job artifact rows moved to the deletion queue.
    pub deleted: i64,
    pub deleted_bytes: i64,
    /// Pipeline artifact rows (`ci_pipeline_artifacts`) deleted, their files queued.
    pub pipeline_artifacts_deleted: i64,
    pub pipeline_artifacts_bytes: i64,
}

impl TaskStats for DeleteOldPipelinesStats {
    add_fields!(pipelines_deleted, jobs_deleted, deleted, deleted_bytes, pipeline_artifacts_deleted, pipeline_artifacts_bytes);
    fn items(&self) -> u64 {
        self.pipelines_deleted as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeleteOldPipelinesPlan {
    pub pipelines: i64,
    pub jobs: i64,
    /// Job artifacts that would be queued.
    pub would_delete: i64,
    pub would_delete_bytes: i64,
    pub pipeline_artifacts: i64,
    pub pipeline_artifacts_bytes: i64,
}

pub struct DeleteOldPipelines {
    client: deadpool_postgres::Object,
    args: DeleteOldPipelinesArgs,
    /// Pipelines finished before this (UTC) are old; fixed for the run.
    cutoff: NaiveDateTime,
    audit: MovedAudit,
}

impl BatchTask for DeleteOldPipelines {
    type Stats = DeleteOldPipelinesStats;
    type Plan = DeleteOldPipelinesPlan;
    type Args = DeleteOldPipelinesArgs;

    async fn open(run: &Run<'_>, args: DeleteOldPipelinesArgs) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let cutoff = cutoff(&client, args.older_than_secs).await?;
        let audit = MovedAudit::new(run, "deleted", "delete-old pipelines: pipeline finished before the cutoff, deleted");
        Ok(DeleteOldPipelines { client, args, cutoff, audit })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<DeleteOldPipelinesPlan> {
        let r = self.client.query_one(PLAN, &[&self.cutoff, &self.args.project_id]).await?;
        Ok(DeleteOldPipelinesPlan {
            pipelines: r.get("pipelines"),
            jobs: r.get("jobs"),
            would_delete: r.get("would_delete"),
            would_delete_bytes: r.get("would_delete_bytes"),
            pipeline_artifacts: r.get("pipeline_artifacts"),
            pipeline_artifacts_bytes: r.get("pipeline_artifacts_bytes"),
        })
    }

    /// One batch of pipelines in one transaction: their files to the queue, then the rows.
    async fn step(&mut self, run: &Run<'_>) -> Result<Step<DeleteOldPipelinesStats>> {
        let move_sql = self.audit.statement(&JOB_ARTIFACTS);
        let tx = self.client.transaction().await?;
        let picked = tx.query(PICK, &[&self.cutoff, &self.args.project_id, &run.batch_size()]).await?;
        let ids: Vec<i64> = picked.iter().map(|r| r.get("id")).collect();
        let partitions: Vec<i64> = picked.iter().map(|r| r.get("partition_id")).collect();
        let batch: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&ids, &partitions];
        let moved = tx.query(move_sql, &batch).await?;
        let pipeline_artifacts = tx.query_one(PIPELINE_ARTIFACTS, &batch).await?;
        tx.execute(LINKS, &batch).await?;
        let jobs_deleted = tx.execute(JOBS, &batch).await? as i64;
        let pipelines_deleted = tx.execute(PIPELINES, &batch).await? as i64;
        tx.commit().await?;
        for id in &ids {
            run.audit.pipeline("deleted", *id, "delete-old pipelines: finished before the cutoff");
        }
        let (deleted, deleted_bytes) = self.audit.push(moved).await?;
        let stats = DeleteOldPipelinesStats {
            pipelines_deleted,
            jobs_deleted,
            deleted,
            deleted_bytes,
            pipeline_artifacts_deleted: pipeline_artifacts.get("n"),
            pipeline_artifacts_bytes: pipeline_artifacts.get("bytes"),
        };
        Ok(if ids.is_empty() { Step::done(stats) } else { Step::more(stats) })
    }

    async fn close(&mut self, _run: &Run<'_>) -> Result<DeleteOldPipelinesStats> {
        self.audit.finish().await?;
        Ok(DeleteOldPipelinesStats::default())
    }
}
