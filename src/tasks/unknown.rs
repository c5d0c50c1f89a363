//! `unknown`: resolve expired rows whose lock status is unknown (`locked = 2`), up to `max_rows`
//! per run, as GitLab's `UpdateUnknownLockedStatusService`. A batch takes the oldest such rows
//! (row by row, so `max_rows` is exact); rows whose job's pipeline is locked become `locked = 1`;
//! the others — pipeline unlocked, or job or pipeline gone — are destroyed like expired rows,
//! traces included, as GitLab's service does (only `expire` spares traces). A row with no file at
//! all is deleted without queueing anything. Rows with NULL `expire_at` are never touched. Each
//! batch is one transaction.

use chrono::{DateTime, Utc};

use super::{move_to_queue_sql, MoveSql, MovedAudit, Run};
use crate::error::Result;

const PICK_ROWS: &str = "SELECT id, partition_id FROM p_ci_job_artifacts
       WHERE expire_at < $1 AND locked = 2
       ORDER BY expire_at LIMIT $2 FOR UPDATE SKIP LOCKED";

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
const DESTROY_ROWS: MoveSql = move_to_queue_sql!(
    "SELECT a.id, a.partition_id FROM p_ci_job_artifacts a
     JOIN unnest($2::bigint[], $3::bigint[]) AS t(id, partition_id) ON a.id = t.id AND a.partition_id = t.partition_id
     WHERE a.expire_at < $1 AND a.locked = 2
       AND NOT EXISTS (SELECT 1 FROM p_ci_builds b JOIN p_ci_pipelines p ON p.id = b.commit_id AND p.partition_id = b.partition_id
                       WHERE b.id = a.job_id AND b.partition_id = a.partition_id AND p.locked = 1)
     FOR UPDATE OF a"
);

const DRY_RUN: &str = concat!(
    "SELECT count(*) FILTER (WHERE locked_pipeline) AS would_lock, count(*) FILTER (WHERE NOT locked_pipeline) AS would_remove,
            COALESCE(sum(size) FILTER (WHERE NOT locked_pipeline), 0)::bigint AS would_remove_bytes
     FROM (SELECT a.size, ",
    pipeline_locked!(),
    " AS locked_pipeline
           FROM (SELECT id, partition_id, job_id, size FROM p_ci_job_artifacts
                 WHERE expire_at < $1 AND locked = 2 ORDER BY expire_at LIMIT $2) a) x"
);

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let mut client = run.ctx.pool.get().await?;
    let start: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let max_rows = if run.cfg.max_rows > 0 { run.cfg.max_rows } else { i64::MAX };
    if run.dry_run {
        let r = client.query_one(DRY_RUN, &[&start, &max_rows]).await?;
        for key in ["would_lock", "would_remove", "would_remove_bytes"] {
            run.report.add(key, r.get(key));
        }
        return Ok(());
    }
    let mut done = 0i64;
    let mut audit = MovedAudit::new(run, "removed", "unknown lock, pipeline not locked");
    while run.keep_going() {
        if done >= max_rows {
            run.report.stopped = super::Stopped::MaxRows;
            break;
        }
        let limit = run.batch_size().min(max_rows - done);
        let (locked, removed_rows) = match batch(&mut client, audit.statement(&DESTROY_ROWS), start, limit).await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                let _ = audit.finish().await;
                return Err(e);
            }
        };
        let (removed, bytes) = audit.push(removed_rows).await?;
        run.report.add("locked", locked);
        run.report.add("removed", removed);
        run.report.add("removed_bytes", bytes);
        let m = &run.ctx.metrics;
        m.unknown_locked.inc_by(locked as u64);
        m.unknown_removed.inc_by(removed as u64);
        m.unknown_removed_bytes.inc_by(bytes.max(0) as u64);
        let progressed = locked + removed;
        done += progressed;
        if progressed == 0 {
            // Every row of these jobs is held by another transaction; try again next run.
            break;
        }
    }
    audit.finish().await
}

/// One batch in one transaction: pick the oldest unknown rows, lock or remove them. Returns
/// (rows locked, rows removed), or `None` when no row is left (or every one is held by another
/// transaction).
async fn batch(
    client: &mut deadpool_postgres::Object,
    destroy: &str,
    start: DateTime<Utc>,
    limit: i64,
) -> Result<Option<(i64, Vec<tokio_postgres::Row>)>> {
    let tx = client.transaction().await?;
    let picked = tx.query(PICK_ROWS, &[&start, &limit]).await?;
    if picked.is_empty() {
        tx.commit().await?;
        return Ok(None);
    }
    let ids: Vec<i64> = picked.iter().map(|r| r.get("id")).collect();
    let partitions: Vec<i64> = picked.iter().map(|r| r.get("partition_id")).collect();
    let locked = tx.query(LOCK_ROWS, &[&start, &ids, &partitions]).await?.len() as i64;
    let removed_rows = tx.query(destroy, &[&start, &ids, &partitions]).await?;
    tx.commit().await?;
    Ok(Some((locked, removed_rows)))
}
