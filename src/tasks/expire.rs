//! `expire`: rows with `expire_at` before the run's start, `locked = 0`, not traces, move to the
//! deletion queue — row deleted, object queued (none for a row with no file), project totals
//! decremented — one transaction per batch. The start time is fixed for the run, so rows
//! expiring meanwhile wait for the next one.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::moved::{move_to_queue_sql, MoveSql, MovedAudit};
use super::stats::{add_fields, TaskStats};
use super::runner::{BatchTask, Run, Step};
use crate::error::Result;
use crate::metrics::Metrics;

/// GitLab's predicate (`DestroyAllExpiredService`), served by its partial index on `expire_at`.
macro_rules! expired_rows {
    () => {
        "FROM p_ci_job_artifacts WHERE expire_at < $1 AND locked = 0 AND file_type <> 3"
    };
}

/// Rows with no file at all are deleted without queueing anything.
const EXPIRE_BATCH: MoveSql = move_to_queue_sql!(concat!("SELECT id, partition_id ", expired_rows!(), " LIMIT $2 FOR UPDATE SKIP LOCKED"));

const PLAN: &str =
    concat!("SELECT count(*) AS would_expire, COALESCE(sum(size), 0)::bigint AS would_expire_bytes ", expired_rows!());

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpireStats {
    /// Rows moved to the deletion queue (or deleted, for rows with no file).
    pub expired: i64,
    pub expired_bytes: i64,
}

impl TaskStats for ExpireStats {
    add_fields!(expired, expired_bytes);
    fn record(&self, m: &Metrics) {
        m.artifacts_expired.inc_by(self.expired as u64);
        m.artifacts_expired_bytes.inc_by(self.expired_bytes.max(0) as u64);
    }
    fn items(&self) -> u64 {
        self.expired as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ExpirePlan {
    pub would_expire: i64,
    pub would_expire_bytes: i64,
}

pub struct Expire {
    client: deadpool_postgres::Object,
    /// The batch statement, prepared for this run: a batch costs one round trip and no parsing.
    batch: tokio_postgres::Statement,
    /// The run's start: rows expiring later wait for the next run.
    start: DateTime<Utc>,
    audit: MovedAudit,
}

impl BatchTask for Expire {
    type Stats = ExpireStats;
    type Plan = ExpirePlan;
    type Args = ();

    async fn open(run: &Run<'_>, (): ()) -> Result<Self> {
        let client = run.ctx.pool.get().await?;
        let start = client.query_one("SELECT now() AS start", &[]).await?.get("start");
        let audit = MovedAudit::new(run, "expired", "expire_at passed, unlocked");
        let batch = client.prepare(audit.statement(&EXPIRE_BATCH)).await?;
        Ok(Expire { client, batch, start, audit })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<ExpirePlan> {
        let r = self.client.query_one(PLAN, &[&self.start]).await?;
        Ok(ExpirePlan { would_expire: r.get("would_expire"), would_expire_bytes: r.get("would_expire_bytes") })
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<ExpireStats>> {
        let rows = self.client.query(&self.batch, &[&self.start, &run.batch_size()]).await?;
        let (expired, expired_bytes) = self.audit.push(rows).await?;
        let stats = ExpireStats { expired, expired_bytes };
        Ok(if expired == 0 { Step::done(stats) } else { Step::more(stats) })
    }

    async fn close(&mut self, _run: &Run<'_>) -> Result<ExpireStats> {
        self.audit.finish().await?;
        Ok(ExpireStats::default())
    }
}
