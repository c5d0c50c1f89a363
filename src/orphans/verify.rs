//! `housekeep verify`: artifact rows whose object is missing from its store, as CSV
//! `artifact_id,project_id,job_id,object_path` (the full key, store prefix included).
//!
//! Rows are read in id order a page at a time and their objects checked with concurrent HEAD
//! requests, so memory stays flat and the database is never held in a long transaction.

use std::io::Write;

use futures::StreamExt;

use crate::error::Result;
use crate::store::Stores;

const PAGE: &str = "SELECT id, project_id, job_id, file_store::smallint AS file_store,
        housekeep.artifact_store_dir(project_id, created_at, job_id, id, file_final_path, file_location) || '/' ||
        COALESCE(housekeep.artifact_file(file, file_final_path), '') AS key
     FROM p_ci_job_artifacts WHERE id > $1 ORDER BY id LIMIT $2";

#[derive(Debug, Default, Clone, Copy)]
pub struct VerifyReport {
    pub checked: u64,
    pub missing: u64,
}

pub async fn verify(
    client: &tokio_postgres::Client,
    stores: &Stores,
    concurrency: usize,
    out: &mut (dyn Write + Send),
) -> Result<VerifyReport> {
    crate::db::require_schema(client).await?;
    let mut csv = csv::WriterBuilder::new().has_headers(false).from_writer(out);
    csv.write_record(["artifact_id", "project_id", "job_id", "object_path"])?;
    let mut report = VerifyReport::default();
    let mut last = 0i64;
    let page_size = 5000i64;
    loop {
        let rows = client.query(PAGE, &[&last, &page_size]).await?;
        let Some(tail) = rows.last() else { break };
        last = tail.get("id");
        let checks = rows.iter().map(|r| {
            let store = stores.for_file_store(r.get("file_store")).clone();
            let (id, project_id, job_id): (i64, i64, i64) = (r.get("id"), r.get("project_id"), r.get("job_id"));
            let key = store.full_key(&r.get::<_, String>("key"));
            async move {
                let exists = store.head(&key).await.map(|m| m.is_some());
                (id, project_id, job_id, key, exists)
            }
        });
        let results: Vec<_> = futures::stream::iter(checks).buffered(concurrency.max(1)).collect().await;
        for (id, project_id, job_id, key, exists) in results {
            report.checked += 1;
            if !exists? {
                report.missing += 1;
                csv.write_record([
                    id.to_string(),
                    project_id.to_string(),
                    job_id.to_string(),
                    key,
                ])?;
            }
        }
    }
    csv.flush()?;
    Ok(report)
}
