//! `report expiring-after DUR`: artifacts that expire more than DUR from now, the farthest
//! first (GitLab's snippet: `artifacts_expire_at > 7.days.from_now`). Traces are left out, as
//! in `never-expiring`.
//!
//! Index: `p_ci_job_artifacts_expire_at_job_id_idx (expire_at, job_id)`, read backwards from its
//! last non-NULL entry in each partition (Merge Append), stopping at the limit.

use std::time::Duration;

use super::{ArtifactRow, Limit, artifact_columns, route_join};
use crate::error::Result;

const QUERY: &str = concat!(
    "SELECT ",
    artifact_columns!(),
    "
         FROM (SELECT * FROM p_ci_job_artifacts
               WHERE expire_at > now() + make_interval(secs => $1) AND file_type <> 3
               ORDER BY expire_at DESC, job_id DESC, id DESC LIMIT $2) a
         ",
    route_join!(),
    "
         ORDER BY a.expire_at DESC, a.job_id DESC, a.id DESC"
);

/// `after` is at most 100 years ([`crate::duration::HumanDuration`]), so `now() + after` is
/// always a valid time.
pub async fn expiring_after(client: &tokio_postgres::Client, after: Duration, limit: Limit) -> Result<Vec<ArtifactRow>> {
    let rows = client.query(QUERY, &[&after.as_secs_f64(), &limit.get()]).await?;
    Ok(rows.iter().map(ArtifactRow::from_row).collect())
}
