//! `report artifacts --project P`: a project's artifacts, newest first, with the job, size,
//! type, times and where the object is (its key and store) — what GitLab's "list artifacts in
//! a single project" snippet prints. `largest` lists them by size instead.
//!
//! Index: `p_ci_job_artifacts_project_id_id_idx1 (project_id, id)`, read backwards in each
//! partition (Merge Append), stopping at the limit.

use super::{ArtifactRow, Limit, artifact_columns, route_join};
use crate::error::Result;

const QUERY: &str = concat!(
    "SELECT ",
    artifact_columns!(),
    "
         FROM (SELECT * FROM p_ci_job_artifacts WHERE project_id = $1 ORDER BY id DESC LIMIT $2) a
         ",
    route_join!(),
    "
         ORDER BY a.id DESC"
);

pub async fn artifacts(client: &tokio_postgres::Client, project_id: i64, limit: Limit) -> Result<Vec<ArtifactRow>> {
    let rows = client.query(QUERY, &[&project_id, &limit.get()]).await?;
    Ok(rows.iter().map(ArtifactRow::from_row).collect())
}
