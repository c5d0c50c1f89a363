//! `report unknown`: artifacts whose lock status is unknown (`locked = 2`, rows from before
//! GitLab 15.0's housekeeping), grouped by `expire_at` and `file_type` as GitLab's
//! troubleshooting query groups them, the earliest first: the expired groups at the top are
//! what the `unknown` task resolves next. Traces are counted (GitLab's query leaves them out,
//! but the unknown task resolves them like every other type). Rows with a NULL `expire_at` are
//! never touched by housekeeping and are not in this summary (`never-expiring` lists those that
//! are not traces).
//!
//! Index: `p_ci_job_artifacts_expire_at_job_id_idx1 (expire_at, job_id) WHERE locked = 2 AND
//! expire_at IS NOT NULL`, read in `expire_at` order and grouped as it streams, stopping once
//! `limit` groups are complete.

use super::{FileType, Limit, Locked, UnknownRow};
use crate::error::Result;

const QUERY: &str = "
SELECT expire_at, file_type, count(*) AS count, COALESCE(sum(size), 0)::bigint AS bytes
FROM p_ci_job_artifacts
WHERE locked = 2 AND expire_at IS NOT NULL
GROUP BY expire_at, file_type
ORDER BY expire_at, file_type
LIMIT $1";

pub async fn unknown(client: &tokio_postgres::Client, limit: Limit) -> Result<Vec<UnknownRow>> {
    let rows = client.query(QUERY, &[&limit.get()]).await?;
    Ok(rows
        .iter()
        .map(|r| UnknownRow {
            expire_at: r.get("expire_at"),
            file_type: FileType(r.get("file_type")),
            locked: Locked(Some(2)),
            count: r.get("count"),
            bytes: r.get("bytes"),
        })
        .collect())
}
