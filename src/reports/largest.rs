//! `report largest --project P`: a project's largest artifacts, traces included (they take
//! space too), as GitLab's snippet (`order(size: :desc).limit(50)`).
//!
//! Index: `p_ci_job_artifacts_project_id_id_idx1 (project_id, id)` finds the project's rows;
//! GitLab has no index on `size`, so every row of the project is read and the largest kept
//! (a top-N heap of `limit` rows). The cost grows with the project, not with the table: see
//! docs/BENCHMARKS.md for a project of a million rows.

use super::{ArtifactRow, Limit, artifact_columns, route_join};
use crate::error::Result;

const QUERY: &str = concat!(
    "SELECT ",
    artifact_columns!(),
    "
         FROM (SELECT * FROM p_ci_job_artifacts WHERE project_id = $1
               ORDER BY size DESC NULLS LAST, id DESC LIMIT $2) a
         ",
    route_join!(),
    "
         ORDER BY a.size DESC NULLS LAST, a.id DESC"
);

pub async fn largest(client: &tokio_postgres::Client, project_id: i64, limit: Limit) -> Result<Vec<ArtifactRow>> {
    let rows = client.query(QUERY, &[&project_id, &limit.get()]).await?;
    Ok(rows.iter().map(ArtifactRow::from_row).collect())
}
