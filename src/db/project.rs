//! Naming a project on the command line: a numeric id, or a full path as GitLab's `routes` holds
//! it (`group/subgroup/project`).

use crate::error::{Error, Result};

const BY_ID: &str = "SELECT id FROM projects WHERE id = $1";
const BY_PATH: &str = "SELECT source_id AS id FROM routes WHERE source_type = 'Project' AND path = $1";

/// The id of the project `spec` names; an unknown project is bad input (exit 2).
pub async fn resolve(client: &tokio_postgres::Client, spec: &str) -> Result<i64> {
    let spec = spec.trim();
    let found = match spec.parse::<i64>() {
        Ok(id) => client.query_opt(BY_ID, &[&id]).await?,
        Err(_) => client.query_opt(BY_PATH, &[&spec]).await?,
    };
    found
        .map(|r| r.get("id"))
        .ok_or_else(|| Error::Input(format!("--project {spec:?}: no such project (give its id or its full path, as group/project)")))
}
