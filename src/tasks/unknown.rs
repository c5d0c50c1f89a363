//! `unknown`: resolve expired rows whose lock status is unknown (`locked = 2`), up to `max_rows`
//! per run. A batch takes the oldest such rows (row by row, so `max_rows` is exact); rows whose
//! job's pipeline is locked become `locked = 1`; the others are destroyed like expired rows — except traces, which the
//! pipeline never expires: they become `locked = 0` and stay. Rows with NULL `expire_at` are
//! never touched. Each batch is one transaction.

use chrono::{DateTime, Utc};

use super::{move_to_queue_sql, MovedAudit, Run};
use crate::error::Result;

const PICK_ROWS: &str = "SELECT id FROM ci_job_artifacts
       WHERE expire_at < $1 AND locked = 2 AND (file IS NOT NULL OR file_final_path IS NOT NULL)
       ORDER BY expire_at LIMIT $2 FOR UPDATE SKIP LOCKED";

const LOCK_ROWS: &str = "UPDATE ci_job_artifacts a SET locked = 1
     FROM ci_builds b JOIN ci_pipelines p ON p.id = b.commit_id
     WHERE a.id = ANY($2) AND b.id = a.job_id AND p.locked = 1 AND a.expire_at < $1 AND a.locked = 2
     RETURNING a.id";

/// Pipelines only ever move from locked to unlocked, so "not locked now" stays true.
const DESTROY_ROWS: &str = move_to_queue_sql!(
    "SELECT a.id FROM ci_job_artifacts a
     WHERE a.id = ANY($2) AND a.expire_at < $1 AND a.locked = 2 AND a.file_type <> 3
       AND NOT EXISTS (SELECT 1 FROM ci_builds b JOIN ci_pipelines p ON p.id = b.commit_id
                       WHERE b.id = a.job_id AND p.locked = 1)
     FOR UPDATE OF a SKIP LOCKED"
);

const UNLOCK_TRACES: &str = "UPDATE ci_job_artifacts a SET locked = 0
     WHERE a.id = ANY($2) AND a.expire_at < $1 AND a.locked = 2 AND a.file_type = 3
       AND NOT EXISTS (SELECT 1 FROM ci_builds b JOIN ci_pipelines p ON p.id = b.commit_id
                       WHERE b.id = a.job_id AND p.locked = 1)
     RETURNING a.id";

const DRY_RUN: &str = "SELECT count(*) FILTER (WHERE p.locked = 1),
            count(*) FILTER (WHERE p.locked IS DISTINCT FROM 1 AND a.file_type <> 3),
            count(*) FILTER (WHERE p.locked IS DISTINCT FROM 1 AND a.file_type = 3)
     FROM (SELECT id, job_id, file_type FROM ci_job_artifacts
           WHERE expire_at < $1 AND locked = 2 AND (file IS NOT NULL OR file_final_path IS NOT NULL)
           ORDER BY expire_at LIMIT $2) a
     LEFT JOIN ci_builds b ON b.id = a.job_id LEFT JOIN ci_pipelines p ON p.id = b.commit_id";

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let mut client = run.ctx.pool.get().await?;
    let start: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let max_rows = if run.cfg.max_rows > 0 { run.cfg.max_rows } else { i64::MAX };
    if run.dry_run {
        let r = client.query_one(DRY_RUN, &[&start, &max_rows]).await?;
        run.report.add("would_lock", r.get(0));
        run.report.add("would_remove", r.get(1));
        run.report.add("would_keep_traces", r.get(2));
        return Ok(());
    }
    let mut done = 0i64;
    let mut audit = MovedAudit::new(run, "removed", "unknown lock, pipeline not locked");
    while run.keep_going() {
        if done >= max_rows {
            run.report.stopped = "max_rows";
            break;
        }
        let limit = run.batch_size().min(max_rows - done);
        let (locked, removed_rows, traces) = match batch(&mut client, start, limit).await {
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
        run.report.add("traces_unlocked", traces);
        let m = &run.ctx.metrics;
        m.unknown_locked.inc_by(locked as u64);
        m.unknown_removed.inc_by(removed as u64);
        m.unknown_removed_bytes.inc_by(bytes.max(0) as u64);
        let progressed = locked + removed + traces;
        done += progressed;
        if progressed == 0 {
            // Every row of these jobs is held by another transaction; try again next run.
            break;
        }
    }
    audit.finish().await
}

/// One batch in one transaction: pick the oldest unknown rows, lock or remove them, unlock the
/// traces among them. Returns (rows locked, rows removed, traces unlocked), or `None` when no
/// row is left (or every one is held by another transaction).
async fn batch(
    client: &mut deadpool_postgres::Object,
    start: DateTime<Utc>,
    limit: i64,
) -> Result<Option<(i64, Vec<tokio_postgres::Row>, i64)>> {
    let tx = client.transaction().await?;
    let ids: Vec<i64> = tx.query(PICK_ROWS, &[&start, &limit]).await?.iter().map(|r| r.get(0)).collect();
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(None);
    }
    let locked = tx.query(LOCK_ROWS, &[&start, &ids]).await?.len() as i64;
    let removed_rows = tx.query(DESTROY_ROWS, &[&start, &ids]).await?;
    let traces = tx.query(UNLOCK_TRACES, &[&start, &ids]).await?.len() as i64;
    tx.commit().await?;
    Ok(Some((locked, removed_rows, traces)))
}
