//! Finding what the database and the stores disagree on: orphan objects (`list-orphans`,
//! `delete-orphans`) and rows whose object is missing (`verify`).

pub mod delete;
pub mod files;
pub mod list;
pub mod manifest;
pub mod verify;

use std::collections::HashSet;

use crate::error::Result;

/// Of these layout keys (relative to the store prefix), the ones no artifact row references, that
/// are not a pending direct upload and not already queued for deletion. One query per call.
pub async fn unreferenced(client: &tokio_postgres::Client, keys: &[&str]) -> Result<HashSet<String>> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = client
        .query(
            "SELECT k FROM unnest($1::text[]) AS k
             WHERE NOT EXISTS (SELECT 1 FROM ci_job_artifacts a WHERE a.file_final_path = k)
               AND NOT EXISTS (SELECT 1 FROM pending_direct_uploads u WHERE u.object_key = k)
               AND NOT EXISTS (SELECT 1 FROM ci_deleted_objects d
                               WHERE d.file = regexp_replace(k, '^.*/', '')
                                 AND d.store_dir = regexp_replace(k, '/[^/]*$', ''))",
            &[&keys],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
