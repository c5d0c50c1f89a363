//! `stale-uploads`: direct uploads that never became an artifact row. Entries of
//! `housekeep.pending_direct_uploads` (GitLab keeps them in Redis) older than `max_age` (3 h) have their object deleted from the remote
//! store, then their entry. An entry whose key an artifact row references was saved after all:
//! only the entry goes.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::stats::{add_fields, TaskStats};
use super::runner::{BatchTask, Run, Step};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::registry::{Limit, Task};
use crate::store::layout;

/// Entries older than `max_age` ($1 seconds).
macro_rules! stale {
    () => {
        "FROM housekeep.pending_direct_uploads u WHERE u.created_at < now() - make_interval(secs => $1)"
    };
}

const PICK: &str = concat!(
    "SELECT u.object_key, u.created_at,
            EXISTS (SELECT 1 FROM p_ci_job_artifacts a WHERE a.file_final_path = u.object_key) AS referenced ",
    stale!(),
    " AND (u.created_at, u.object_key) > ($3, $4) ORDER BY u.created_at, u.object_key LIMIT $2"
);

const PLAN: &str = concat!("SELECT count(*) AS would_delete ", stale!());

const REMOVE: &str = "DELETE FROM housekeep.pending_direct_uploads WHERE object_key = ANY($1) AND created_at < now() - make_interval(secs => $2)";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StaleUploadsStats {
    /// Entries removed (their object deleted, or referenced after all).
    pub deleted: i64,
    /// Objects that could not be deleted; retried next run.
    pub failed: i64,
    /// Entries whose key is not a valid layout key; left alone.
    pub invalid: i64,
}

impl TaskStats for StaleUploadsStats {
    add_fields!(deleted, failed, invalid);
    fn record(&self, m: &Metrics) {
        m.stale_uploads_deleted.inc_by(self.deleted as u64);
    }
    fn items(&self) -> u64 {
        (self.deleted + self.failed + self.invalid) as u64
    }
    fn failed(&self) -> i64 {
        self.failed
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StaleUploadsPlan {
    pub would_delete: i64,
}

pub struct StaleUploads {
    client: deadpool_postgres::Object,
    max_age: f64,
    /// A keyset cursor: entries that cannot be deleted now are passed over, not retried forever
    /// in front of the others; the next run tries them again.
    cursor: (DateTime<Utc>, String),
}

impl BatchTask for StaleUploads {
    type Stats = StaleUploadsStats;
    type Plan = StaleUploadsPlan;
    type Args = ();

    async fn open(run: &Run<'_>, (): ()) -> Result<Self> {
        Ok(StaleUploads {
            client: run.ctx.pool.get().await?,
            max_age: run.cfg.duration_limit(Task::StaleUploads, Limit::MaxAge).as_secs_f64(),
            cursor: (Utc.with_ymd_and_hms(1900, 1, 1, 0, 0, 0).unwrap(), String::new()),
        })
    }

    async fn plan(&mut self, _run: &Run<'_>) -> Result<StaleUploadsPlan> {
        Ok(StaleUploadsPlan { would_delete: self.client.query_one(PLAN, &[&self.max_age]).await?.get("would_delete") })
    }

    async fn step(&mut self, run: &Run<'_>) -> Result<Step<StaleUploadsStats>> {
        let mut stats = StaleUploadsStats::default();
        let rows = self.client.query(PICK, &[&self.max_age, &run.batch_size(), &self.cursor.0, &self.cursor.1]).await?;
        let Some(last) = rows.last() else { return Ok(Step::done(stats)) };
        self.cursor = (last.get("created_at"), last.get("object_key"));
        let store = &run.ctx.stores.remote;
        let mut gone: Vec<String> = Vec::new();
        let mut to_delete: Vec<String> = Vec::new();
        for r in &rows {
            let key: String = r.get("object_key");
            if r.get("referenced") {
                run.audit.object("kept", None, &key, None, "stale upload entry, but an artifact row references the object");
                gone.push(key);
            } else if let Err(e) = layout::check_segments(&key) {
                tracing::warn!(key, error = %e, "pending upload has an invalid key; left alone");
                stats.invalid += 1;
            } else {
                to_delete.push(key);
            }
        }
        let full: Vec<String> = to_delete.iter().map(|k| store.full_key(k)).collect();
        let results = store.delete_many(&full, run.ctx.config.store_concurrency).await;
        for ((key, full), res) in to_delete.into_iter().zip(&full).zip(results) {
            match res {
                Ok(()) => {
                    run.audit.object("deleted", None, full, None, "stale direct upload");
                    gone.push(key);
                }
                Err(e) => {
                    tracing::warn!(key = %full, error = %e, "could not delete stale upload; will retry");
                    stats.failed += 1;
                }
            }
        }
        stats.deleted = self.client.execute(REMOVE, &[&gone, &self.max_age]).await? as i64;
        Ok(Step::more(stats))
    }
}
