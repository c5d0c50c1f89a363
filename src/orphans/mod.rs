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
    // ci_deleted_objects holds keys split in directory and file name; split them here once.
    let (dirs, files): (Vec<&str>, Vec<&str>) = keys.iter().map(|k| crate::store::layout::split_dir_file(k)).unzip();
    let rows = client
        .query(
            "SELECT x.k AS key FROM unnest($1::text[], $2::text[], $3::text[]) AS x(k, d, f)
             WHERE NOT EXISTS (SELECT 1 FROM p_ci_job_artifacts a WHERE a.file_final_path = x.k)
               AND NOT EXISTS (SELECT 1 FROM housekeep.pending_direct_uploads u WHERE u.object_key = x.k)
               AND NOT EXISTS (SELECT 1 FROM ci_deleted_objects o WHERE o.file = x.f AND o.store_dir = x.d)",
            &[&keys, &dirs, &files],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get("key")).collect())
}
