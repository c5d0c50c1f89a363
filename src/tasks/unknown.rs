//! `unknown`: resolve expired rows whose lock status is unknown (`locked = 2`), up to `max_rows`
//! per run, as GitLab's `UpdateUnknownLockedStatusService`. A batch takes the oldest such rows
//! (row by row, so `max_rows` is exact); rows whose job's pipeline is locked become `locked = 1`;
//! the others — pipeline unlocked, or job or pipeline gone — are destroyed like expired rows,
//! traces included, as GitLab's service does (only `expire` spares traces). A row with no file at
//! all is deleted without queueing anything. Rows with NULL `expire_at` are never touched. Each
//! batch is one transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::moved::{move_to_queue_sql, MoveSql, MovedAudit};
use super::outcome::Stopped;
use super::stats::{add_fields, TaskStats};
use super::runner::{BatchTask, Next, Run, Step};
use crate::error::Result;
use crate::metrics::Metrics;

/// Expired rows of unknown lock status, oldest first.
macro_rules! unknown_rows {
    () => {
        "FROM p_ci_job_artifacts WHERE expire_at < $1 AND locked = 2 ORDER BY expire_at LIMIT $2"
    };
}

const PICK_ROWS: &str = concat!("SELECT id, partition_id ", unknown_rows!(), " FOR UPDATE SKIP LOCKED");

/// Whether the job's pipeline is locked (builds and pipelines joined within their partition).
macro_rules! pipeline_locked {
    () => {
        "EXISTS (SELECT 1 FROM p_ci_builds b JOIN p_ci_pipelines p ON p.id = b.commit_id AND p.partition_id = b.partition_id
                 WHERE b.id = a.job_id AND b.partition_id = a.partition_id AND p.locked = 1)"
    };
}

const LOCK_ROWS: &str = concat!(
    "UPDATE p_ci_job_artifacts a SET locked = 1
     FROM unnest($2::bigint[], $3::bigint[]) AS t(id, partition_id)
     WHERE a.id = t.id AND a.partition_id = t.partition_id AND a.expire_at < $1 AND a.locked = 2 AND ",
    pipeline_locked!(),
    " RETURNING a.id"
);

/// Pipelines only ever move from locked to unlocked, so "not locked now" stays true.
const DESTROY_ROWS: MoveSql = move_to_queue_sql!(concat!(
    "SELECT a.id, a.partition_id FROM p_ci_job_artifacts a
     JOIN unnest($2::bigint[], $3::bigint[]) AS t(id, partition_id) ON a.id = t.id AND a.partition_id = t.partition_id
     WHERE a.expire_at < $1 AND a.locked = 2 AND NOT ",
    pipeline_locked!(),
    " FOR UPDATE OF a"
));

const PLAN: &str = concat!(
    "SELECT count(*) FILTER (WHERE locked_pipeline) AS would_lock, count(*) FILTER (WHERE NOT locked_pipeline) AS would_remove,
            COALESCE(sum(size) FILTER (WHERE NOT locked_pipeline), 0)::bigint AS would_remove_bytes
     FROM (SELECT a.size, ",
    pipeline_locked!(),
    " AS locked_pipeline FROM (SELECT id, partition_id, job_id, size ",
    unknown_rows!(),
    ") a) x"
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnknownStats {
    /// Rows of locked pipelines, now `locked = 1`.
    pub locked: i64,
    /// Rows of unlocked (or gone) pipelines, moved to the deletion queue.
    pub removed: i64,
    pub removed_bytes: i64,
}

impl TaskStats for UnknownStats {
    add_fields!(locked, removed, removed_bytes);
    fn record(&self, m: &Metrics) {
        m.unknown_locked.inc_by(self.locked as u64);
        m.unknown_removed.inc_by(self.removed as u64);
        m.unknown_removed_bytes.inc_by(self.removed_bytes.max(0) as u64);
    }
    fn items(&self) -> u64 {
        (self.locked + self.removed) as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnknownPlan {
    pub would_lock: i64,
    pub would_remove: i64,
    pub would_remove_bytes: i64,
}

pub struct Unknown {
    client: deadpool_postgres::Object,
    /// PICK_ROWS, LOCK_ROWS and DESTROY_ROWS, prepared for this run.
    statements: [tokio_postgres::Statement; 3],
    start: DateTime<Utc>,
    /// Rows still allowed in this run (`max_rows`).
    left: i64,
    audit: MovedAudit,
}

impl BatchTask for Unknown {
    type Stats = UnknownStats;
    type Plan = UnknownPlan;
    type Args = ();

    async fn open(run: &Run<'_>, (): ()) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let start = client.query_one("SELECT now() AS start", &[]).await?.get("start");
        let left = if run.cfg.max_rows > 0 { run.cfg.max_rows } else { i64::MAX };
        let audit = MovedAudit::new(run, "removed", "unknown lock, pipeline not locked");
        let statements = [
            client.prepare(PICK_ROWS).await?,
            client.prepare(LOCK_ROWS).await?,
            client.prepare(audit.statement(&DESTROY_ROWS)).await?,
        ];
        Ok(Unknown { client, statements, start, left, audit })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<UnknownPlan> {
        let r = self.client.query_one(PLAN, &[&self.start, &self.left]).await?;
        Ok(UnknownPlan { would_lock: r.get("would_lock"), would_remove: r.get("would_remove"), would_remove_bytes: r.get("would_remove_bytes") })
    }

    /// One batch in one transaction: pick the oldest unknown rows, lock or remove them.
    async fn step(&mut self, run: &Run<'_>) -> Result<Step<UnknownStats>> {
        if self.left <= 0 {
            return Ok(Step { stats: UnknownStats::default(), next: Next::Stop(Stopped::MaxRows) });
        }
        let limit = run.batch_size().min(self.left);
        let [pick, lock, destroy] = self.statements.clone();
        let tx = self.client.transaction().await?;
        let picked = tx.query(&pick, &[&self.start, &limit]).await?;
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(Step::done(UnknownStats::default()));
        }
        let ids: Vec<i64> = picked.iter().map(|r| r.get("id")).collect();
        let partitions: Vec<i64> = picked.iter().map(|r| r.get("partition_id")).collect();
        let locked = tx.query(&lock, &[&self.start, &ids, &partitions]).await?.len() as i64;
        let removed_rows = tx.query(&destroy, &[&self.start, &ids, &partitions]).await?;
        tx.commit().await?;
        let (removed, removed_bytes) = self.audit.push(removed_rows).await?;
        self.left -= locked + removed;
        let stats = UnknownStats { locked, removed, removed_bytes };
        // No progress: every row of these jobs is held by another transaction; the next run tries again.
        Ok(if locked + removed == 0 { Step::done(stats) } else { Step::more(stats) })
    }

    async fn close(&mut self, _run: &Run<'_>) -> Result<UnknownStats> {
        self.audit.finish().await?;
        Ok(UnknownStats::default())
    }
}
