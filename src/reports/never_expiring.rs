//! `report never-expiring`: artifacts whose `expire_at` is NULL (kept with the Keep button or
//! the keep API, `expire_in: never`, or uploaded when the instance default was "never"), oldest
//! job first. Traces are left out: housekeeping never expires them, whatever their `expire_at`.
//!
//! Index: `p_ci_job_artifacts_expire_at_job_id_idx (expire_at, job_id)`, whose NULL section is
//! read in job order in each partition (Merge Append), stopping at the limit.

use super::{ArtifactRow, Limit, artifact_columns, route_join};
use crate::error::Result;

/// `ORDER BY expire_at` is constant here (all NULL) but lets the planner take the rows in the
/// index's order instead of sorting every never-expiring row.
const QUERY: &str = concat!(
    "SELECT ",
    artifact_columns!(),
    "
         FROM (SELECT * FROM p_ci_job_artifacts
               WHERE expire_at IS NULL AND file_type <> 3
               ORDER BY expire_at, job_id, id LIMIT $1) a
         ",
    route_join!(),
    "
         ORDER BY a.job_id, a.id"
);

pub async fn never_expiring(client: &tokio_postgres::Client, limit: Limit) -> Result<Vec<ArtifactRow>> {
    let rows = client.query(QUERY, &[&limit.get()]).await?;
    Ok(rows.iter().map(ArtifactRow::from_row).collect())
}
