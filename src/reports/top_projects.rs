//! `report top-projects`: the projects storing the most artifact bytes, as GitLab's snippet
//! reads them: `project_statistics.build_artifacts_size`, the counter GitLab shows in the usage
//! quota (it can drift from the rows; `refresh-stats` recomputes it).
//!
//! `project_statistics` has one row per project, so this is a top-N sort of a table the size of
//! `projects`, whatever the number of artifacts; the project's path is looked up for the
//! returned rows only.

use super::{Limit, ProjectRow};
use crate::error::Result;

const QUERY: &str = "
SELECT s.project_id, r.path AS project_path, s.build_artifacts_size
FROM (SELECT project_id, build_artifacts_size FROM project_statistics
      ORDER BY build_artifacts_size DESC, project_id LIMIT $1) s
LEFT JOIN routes r ON r.source_type = 'Project' AND r.source_id = s.project_id
ORDER BY s.build_artifacts_size DESC, s.project_id";

pub async fn top_projects(client: &tokio_postgres::Client, limit: Limit) -> Result<Vec<ProjectRow>> {
    let rows = client.query(QUERY, &[&limit.get()]).await?;
    Ok(rows
        .iter()
        .map(|r| ProjectRow {
            project_id: r.get("project_id"),
            project_path: r.get("project_path"),
            build_artifacts_size: r.get("build_artifacts_size"),
        })
        .collect())
}
