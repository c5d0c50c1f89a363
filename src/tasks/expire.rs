//! `expire`: rows with `expire_at` before the run's start, `locked = 0`, not traces, move to the
//! deletion queue — row deleted, object queued (none for a row with no file), project totals
//! decremented — one transaction per batch. The start time is fixed for the run, so rows expiring meanwhile wait for the next one.

use chrono::{DateTime, Utc};

use super::{move_to_queue_sql, MoveSql, MovedAudit, Run};
use crate::error::Result;

/// GitLab's predicate (`DestroyAllExpiredService`), served by its partial index on `expire_at`.
/// Rows with no file at all are deleted without queueing anything.
const EXPIRE_BATCH: MoveSql = move_to_queue_sql!(
    "SELECT id, partition_id FROM p_ci_job_artifacts
     WHERE expire_at < $1 AND locked = 0 AND file_type <> 3
     LIMIT $2 FOR UPDATE SKIP LOCKED"
);

const EXPIRE_COUNT: &str = "SELECT count(*) AS would_expire, COALESCE(sum(size), 0)::bigint AS would_expire_bytes FROM p_ci_job_artifacts
     WHERE expire_at < $1 AND locked = 0 AND file_type <> 3";

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let client = run.ctx.pool.get().await?;
    let start: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    if run.dry_run {
        let r = client.query_one(EXPIRE_COUNT, &[&start]).await?;
        for key in ["would_expire", "would_expire_bytes"] {
            run.report.add(key, r.get(key));
        }
        return Ok(());
    }
    let limit = run.batch_size();
    let mut audit = MovedAudit::new(run, "expired", "expire_at passed, unlocked");
    let stmt = client.prepare(audit.statement(&EXPIRE_BATCH)).await?;
    while run.keep_going() {
        let rows = match client.query(&stmt, &[&start, &limit]).await {
            Ok(rows) => rows,
            Err(e) => {
                let _ = audit.finish().await;
                return Err(e.into());
            }
        };
        let (n, bytes) = audit.push(rows).await?;
        run.report.add("expired", n);
        run.report.add("expired_bytes", bytes);
        run.ctx.metrics.artifacts_expired.inc_by(n as u64);
        run.ctx.metrics.artifacts_expired_bytes.inc_by(bytes.max(0) as u64);
        if n == 0 {
            break;
        }
    }
    audit.finish().await
}
