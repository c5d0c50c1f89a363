//! Backlog gauges: what is waiting for each task.

use super::context::Context;
use crate::error::Result;

const BACKLOG: &str = "
SELECT (SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 0 AND file_type <> 3) AS expired_rows,
       (SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 2) AS unknown_rows,
       (SELECT count(*) FROM ci_deleted_objects) AS queued_objects,
       (SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at < now()) AS ready_objects,
       (SELECT count(*) FROM housekeep.unlock_requests) AS unlock_requests";

/// Refresh `housekeep_backlog{kind}`.
pub async fn refresh(ctx: &Context) -> Result<()> {
    let c = ctx.pool.get().await?;
    let row = c.query_one(BACKLOG, &[]).await?;
    for kind in crate::metrics::BACKLOG_KINDS {
        ctx.metrics.backlog.with_label_values(&[kind]).set(row.get::<_, i64>(kind));
    }
    Ok(())
}
