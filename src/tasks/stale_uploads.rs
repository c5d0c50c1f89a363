//! `stale-uploads`: direct uploads that never became an artifact row. Entries of
//! `housekeep.pending_direct_uploads` (GitLab keeps them in Redis) older than `max_age` (3 h) have their object deleted from the remote
//! store, then their entry. An entry whose key an artifact row references was saved after all:
//! only the entry goes.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::{Outcome, Run};
use crate::error::Result;
use crate::store::layout;

const PICK: &str = "SELECT u.object_key,
       EXISTS (SELECT 1 FROM p_ci_job_artifacts a WHERE a.file_final_path = u.object_key) AS referenced,
       u.created_at
     FROM housekeep.pending_direct_uploads u
     WHERE u.created_at < now() - make_interval(secs => $1) AND (u.created_at, u.object_key) > ($3, $4)
     ORDER BY u.created_at, u.object_key LIMIT $2";

const REMOVE: &str = "DELETE FROM housekeep.pending_direct_uploads WHERE object_key = ANY($1) AND created_at < now() - make_interval(secs => $2)";

pub async fn run(run: &mut Run<'_>) -> Result<()> {
    let client = run.ctx.pool.get().await?;
    let max_age = run.cfg.max_age.map(|d| d.0).unwrap_or(Duration::from_secs(3 * 3600)).as_secs_f64();
    if run.dry_run {
        let n: i64 = client
            .query_one("SELECT count(*) FROM housekeep.pending_direct_uploads WHERE created_at < now() - make_interval(secs => $1)", &[&max_age])
            .await?
            .get(0);
        run.report.add("would_delete", n);
        return Ok(());
    }
    let store = &run.ctx.stores.remote;
    let limit = run.batch_size();
    // A keyset cursor: entries that cannot be deleted now are passed over, not retried forever
    // in front of the others; the next run tries them again.
    let mut cursor: (DateTime<Utc>, String) = (Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(), String::new());
    while run.keep_going() {
        let rows = client.query(PICK, &[&max_age, &limit, &cursor.0, &cursor.1]).await?;
        let Some(last) = rows.last() else { break };
        cursor = (last.get("created_at"), last.get("object_key"));
        let rows: Vec<(String, bool)> = rows.iter().map(|r| (r.get("object_key"), r.get("referenced"))).collect();
        let mut gone: Vec<String> = Vec::new();
        let mut to_delete: Vec<String> = Vec::new();
        for (key, referenced) in rows {
            if referenced {
                run.audit.object("kept", None, &key, None, "stale upload entry, but an artifact row references the object");
                gone.push(key);
            } else if let Err(e) = layout::check_segments(&key) {
                tracing::warn!(key, error = %e, "pending upload has an invalid key; left alone");
                run.report.add("invalid", 1);
            } else {
                to_delete.push(key);
            }
        }
        let full: Vec<String> = to_delete.iter().map(|k| store.full_key(k)).collect();
        let results = store.delete_many(&full, run.ctx.config.store_concurrency).await;
        for ((key, full), res) in to_delete.into_iter().zip(&full).zip(results) {
            match res {
                Ok(()) => {
                    run.audit.object("deleted", None, full, None, "stale direct upload");
                    gone.push(key);
                }
                Err(e) => {
                    tracing::warn!(key = %full, error = %e, "could not delete stale upload; will retry");
                    run.report.outcome = Outcome::Partial;
                    run.report.add("failed", 1);
                }
            }
        }
        let n = client.execute(REMOVE, &[&gone, &max_age]).await? as i64;
        run.report.add("deleted", n);
        run.ctx.metrics.stale_uploads_deleted.inc_by(n as u64);
    }
    Ok(())
}
