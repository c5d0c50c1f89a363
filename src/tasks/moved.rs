//! Moving artifact rows to the deletion queue, shared by `expire` and `unknown`: the statement
//! and the audit records of the rows it moved.

use super::runner::Run;
use crate::audit::{ArtifactRecord, Audit};
use crate::error::{Error, Result};

/// Shared SQL: move the artifact rows chosen by a `batch` CTE (`id, partition_id` of rows locked
/// FOR UPDATE) to the deletion queue in one statement, as GitLab's `DestroyBatchService` does —
/// delete the rows, queue their objects with `pick_up_at` = expire_at clamped to [now − 1 day,
/// now + 1 hour] (a row with no file at all queues nothing), keep each object's size in
/// housekeep's state, and decrement the project totals additively (`storage_size` too, as GitLab's
/// counter flush does) — and return what was moved: every row, for the audit records, or only
/// the count and bytes when audit records are off (the rows then never leave the server).
macro_rules! move_to_queue_sql {
    (@ $select:literal; $($batch:tt)+) => {
        concat!(
            "WITH batch AS (",
            $($batch)+,
            "),
            del AS (
              DELETE FROM p_ci_job_artifacts a USING batch b
              WHERE a.id = b.id AND a.partition_id = b.partition_id
                -- The ids as an array too: the planner then probes each partition's primary key
                -- instead of choosing a hash join over whole partitions for some batches.
                AND a.id = ANY(ARRAY(SELECT id FROM batch))
              RETURNING a.id, a.project_id, a.job_id, a.file_type, COALESCE(a.size, 0) AS size, a.file_store::smallint AS file_store, a.expire_at,
                        housekeep.artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, a.file_final_path, a.file_location) AS store_dir,
                        housekeep.artifact_file(a.file, a.file_final_path) AS file
            ),
            to_queue AS (
              SELECT d.*, nextval('ci_deleted_objects_id_seq') AS object_id FROM del d WHERE d.file IS NOT NULL
            ),
            queued AS (
              INSERT INTO ci_deleted_objects (id, file_store, pick_up_at, store_dir, file, project_id)
              SELECT object_id, file_store,
                     LEAST(GREATEST(COALESCE(expire_at, now()), now() - interval '1 day'), now() + interval '1 hour'),
                     store_dir, file, project_id
              FROM to_queue
              RETURNING 1
            ),
            sizes AS (
              INSERT INTO housekeep.deleted_object_state (deleted_object_id, size)
              SELECT object_id, size FROM to_queue
              RETURNING 1
            ),
            stats AS (
              UPDATE project_statistics s SET build_artifacts_size = s.build_artifacts_size - d.total,
                                              storage_size = s.storage_size - d.total
              FROM (SELECT project_id, sum(size) AS total FROM del GROUP BY project_id) d
              WHERE s.project_id = d.project_id
              RETURNING 1
            )
            ",
            $select
        )
    };
    ($($batch:tt)+) => {
        $crate::tasks::moved::MoveSql {
            rows: move_to_queue_sql!(@ "SELECT id, project_id, job_id, file_type, size, store_dir || '/' || file AS key FROM del"; $($batch)+),
            totals: move_to_queue_sql!(@ "SELECT count(*) AS moved, COALESCE(sum(size), 0)::bigint AS moved_bytes FROM del"; $($batch)+),
        }
    };
}
pub(crate) use move_to_queue_sql;

/// The two forms of one move statement (see [`move_to_queue_sql!`]).
pub(crate) struct MoveSql {
    /// Returns every moved row (`id, project_id, job_id, file_type, size, key`).
    pub rows: &'static str,
    /// Returns one row: `moved, moved_bytes`.
    pub totals: &'static str,
}

/// Audit records of the artifact rows a move statement returned, one batch behind: a batch's
/// records are formatted and written on a blocking thread while the next batch runs in the
/// database. `finish` waits for the last batch; a run calls it before it reports.
pub(crate) struct MovedAudit {
    audit: Audit,
    /// Whether audit records are written at all (`housekeep::audit` not filtered out).
    enabled: bool,
    action: &'static str,
    reason: &'static str,
    behind: Option<tokio::task::JoinHandle<()>>,
}

impl MovedAudit {
    pub(crate) fn new(run: &Run<'_>, action: &'static str, reason: &'static str) -> MovedAudit {
        MovedAudit::with(run.audit.clone(), action, reason)
    }

    /// Records made with `audit` (a run's, or an API request's).
    pub(crate) fn with(audit: Audit, action: &'static str, reason: &'static str) -> MovedAudit {
        let enabled = tracing::enabled!(target: "housekeep::audit", tracing::Level::INFO);
        MovedAudit { audit, enabled, action, reason, behind: None }
    }

    /// The form of a move statement this run needs: the rows when they are audited, else totals.
    pub(crate) fn statement(&self, sql: &MoveSql) -> &'static str {
        if self.enabled {
            sql.rows
        } else {
            sql.totals
        }
    }

    /// Count a batch's rows and bytes now and audit them in the background; returns (rows, bytes).
    /// `rows` is what the statement chosen by [`MovedAudit::statement`] returned. Fails when the
    /// previous batch's records could not be written.
    pub(crate) async fn push(&mut self, rows: Vec<tokio_postgres::Row>) -> Result<(i64, i64)> {
        if !self.enabled {
            return Ok(rows.first().map_or((0, 0), |r| (r.get("moved"), r.get("moved_bytes"))));
        }
        let counts = (rows.len() as i64, rows.iter().map(|r| r.get::<_, i64>("size")).sum());
        self.finish().await?;
        if !rows.is_empty() {
            let (audit, action, reason) = (self.audit.clone(), self.action, self.reason);
            // The records go where this run's logs go (the default subscriber of this thread).
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            self.behind = Some(tokio::task::spawn_blocking(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for r in &rows {
                        let key: Option<String> = r.get("key");
                        let record = ArtifactRecord {
                            artifact_id: r.get("id"),
                            project_id: r.get("project_id"),
                            job_id: r.get("job_id"),
                            file_type: r.get("file_type"),
                            key: key.as_deref().unwrap_or(""),
                            size: r.get("size"),
                        };
                        audit.artifact(action, &record, reason);
                    }
                })
            }));
        }
        Ok(counts)
    }

    /// Wait for the records of the last batch; a run whose records were lost fails.
    pub(crate) async fn finish(&mut self) -> Result<()> {
        match self.behind.take() {
            Some(h) => h.await.map_err(|e| Error::other(format!("writing audit records failed: {e}"))),
            None => Ok(()),
        }
    }
}
