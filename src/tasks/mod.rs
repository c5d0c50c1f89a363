//! The housekeeping pipeline (SPEC §4): unlock, unknown, expire, delete-objects, stale-uploads.
//!
//! Each task is a plain async function over a [`Context`], run the same way by `housekeep run`,
//! `worker --once` and the scheduler. A run takes the task's advisory lock (except
//! delete-objects, which shares work through row leases), works in bounded batches of one
//! transaction each, stops when a batch comes back empty, when its time budget is spent or when
//! shutdown is requested, and records itself in `housekeep_runs` and the metrics.

pub mod delete_objects;
pub mod expire;
pub mod stale_uploads;
pub mod unknown;
pub mod unlock;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::{Config, TaskConfig};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::store::Stores;

/// Everything a task run needs.
#[derive(Clone)]
pub struct Context {
    pub pool: Pool,
    pub stores: Stores,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM/SIGINT: finish or roll back the current batch, start no other.
    pub cancel: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Unlock,
    Unknown,
    Expire,
    DeleteObjects,
    StaleUploads,
}

impl Task {
    /// In the order `worker --once` runs them.
    pub const ALL: [Task; 5] = [Task::Unlock, Task::Unknown, Task::Expire, Task::DeleteObjects, Task::StaleUploads];

    pub fn name(self) -> &'static str {
        match self {
            Task::Unlock => "unlock",
            Task::Unknown => "unknown",
            Task::Expire => "expire",
            Task::DeleteObjects => "delete-objects",
            Task::StaleUploads => "stale-uploads",
        }
    }

    pub fn config(self, c: &Config) -> &TaskConfig {
        match self {
            Task::Unlock => &c.tasks.unlock,
            Task::Unknown => &c.tasks.unknown,
            Task::Expire => &c.tasks.expire,
            Task::DeleteObjects => &c.tasks.delete_objects,
            Task::StaleUploads => &c.tasks.stale_uploads,
        }
    }

    /// The advisory lock (`pg_locks.objid` holds its low 32 bits) that keeps two runs of this task
    /// apart; None for delete-objects, which shares its work through row leases.
    pub fn lock_key(self) -> Option<i64> {
        let n = match self {
            Task::Unlock => 1,
            Task::Unknown => 2,
            Task::Expire => 3,
            Task::DeleteObjects => return None,
            Task::StaleUploads => 5,
        };
        Some(0x686b_7461_0000 + n)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing left to do, or the budget was spent with no failure.
    Success,
    /// Another process holds the task's lock.
    Skipped,
    /// Some items failed; they will be retried.
    Partial,
    /// Shutdown was requested mid-run; the work done is kept.
    Interrupted,
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub task: Task,
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub counts: BTreeMap<&'static str, i64>,
    pub seconds: f64,
    /// Why the run stopped: "done", "budget", "max_rows", "shutdown", "locked".
    pub stopped: &'static str,
}

impl Report {
    pub fn add(&mut self, key: &'static str, n: i64) {
        *self.counts.entry(key).or_insert(0) += n;
    }
    pub fn get(&self, key: &str) -> i64 {
        self.counts.get(key).copied().unwrap_or(0)
    }
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}{}: {} ({}) in {:.2}s{}",
            self.task,
            if self.dry_run { " (dry run)" } else { "" },
            match self.outcome {
                Outcome::Success => "done",
                Outcome::Skipped => "skipped, another run holds the lock",
                Outcome::Partial => "finished with failures",
                Outcome::Interrupted => "interrupted",
            },
            if counts.is_empty() { "nothing to do".to_string() } else { counts.join(" ") },
            self.seconds,
            if self.stopped == "budget" { ", time budget spent" } else { "" },
        )
    }
}

/// The state of one run, handed to the task function.
pub struct Run<'a> {
    pub ctx: &'a Context,
    pub task: Task,
    pub cfg: &'a TaskConfig,
    pub dry_run: bool,
    pub deadline: Instant,
    pub audit: Audit,
    pub report: Report,
    /// A progress bar to advance by items handled (expedite on a terminal).
    pub progress: Option<indicatif::ProgressBar>,
}

impl Run<'_> {
    /// Whether to start another batch; records why not.
    pub fn keep_going(&mut self) -> bool {
        if self.ctx.cancel.is_cancelled() {
            self.report.stopped = "shutdown";
            self.report.outcome = Outcome::Interrupted;
            return false;
        }
        if Instant::now() >= self.deadline {
            self.report.stopped = "budget";
            return false;
        }
        true
    }

    pub fn batch_size(&self) -> i64 {
        self.cfg.batch_size
    }
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Override of the task's time budget (expedite drains without one).
    pub time_budget: Option<Duration>,
    pub progress: Option<indicatif::ProgressBar>,
}

/// Run one task now.
pub async fn run(ctx: &Context, task: Task, opts: RunOptions) -> Result<Report> {
    let cfg = task.config(&ctx.config);
    let started = Instant::now();
    let budget = opts.time_budget.unwrap_or(cfg.time_budget.0);
    let mut report = Report {
        task,
        run_id: None,
        dry_run: opts.dry_run,
        outcome: Outcome::Success,
        counts: BTreeMap::new(),
        seconds: 0.0,
        stopped: "done",
    };

    // The lock lives on a connection of its own, held for the whole run.
    let lock_conn = ctx.pool.get().await?;
    if let Some(key) = task.lock_key() {
        let got: bool = lock_conn.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await?.get(0);
        if !got {
            report.outcome = Outcome::Skipped;
            report.stopped = "locked";
            ctx.metrics.task_runs.with_label_values(&[task.name(), "skipped"]).inc();
            tracing::info!(task = task.name(), "skipped: another run holds the lock");
            return Ok(report);
        }
    }
    let run_id: i64 = match lock_conn
        .query_one(
            "INSERT INTO housekeep_runs (task, dry_run, host) VALUES ($1, $2, $3) RETURNING id",
            &[&task.name(), &opts.dry_run, &hostname()],
        )
        .await
    {
        Ok(row) => row.get(0),
        Err(e) => {
            // The pool keeps the connection: a session lock left on it would skip this task
            // until the connection closes.
            if let Some(key) = task.lock_key() {
                let _ = lock_conn.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
            }
            return Err(e.into());
        }
    };
    report.run_id = Some(run_id);
    let mut r = Run {
        ctx,
        task,
        cfg,
        dry_run: opts.dry_run,
        deadline: started + budget,
        audit: Audit::new(run_id, task),
        report,
        progress: opts.progress.clone(),
    };
    tracing::info!(task = task.name(), run_id, dry_run = opts.dry_run, "run started");
    let result = match task {
        Task::Unlock => unlock::run(&mut r).await,
        Task::Unknown => unknown::run(&mut r).await,
        Task::Expire => expire::run(&mut r).await,
        Task::DeleteObjects => delete_objects::run(&mut r).await,
        Task::StaleUploads => stale_uploads::run(&mut r).await,
    };
    let mut report = r.report;
    report.seconds = started.elapsed().as_secs_f64();
    let outcome = match &result {
        Ok(()) => match report.outcome {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Interrupted => "interrupted",
            Outcome::Skipped => "skipped",
        },
        Err(_) => "failure",
    };
    let stats = serde_json::to_value(&report.counts).unwrap_or_default();
    let _ = lock_conn
        .execute(
            "UPDATE housekeep_runs SET finished_at = now(), outcome = $2, stats = $3 WHERE id = $1",
            &[&run_id, &outcome, &stats],
        )
        .await;
    if let Some(key) = task.lock_key() {
        let _ = lock_conn.execute("SELECT pg_advisory_unlock($1)", &[&key]).await;
    }
    drop(lock_conn);
    let m = &ctx.metrics;
    m.task_runs.with_label_values(&[task.name(), outcome]).inc();
    m.task_duration.with_label_values(&[task.name()]).observe(report.seconds);
    if !opts.dry_run && matches!(outcome, "success" | "partial") {
        m.task_last_success.with_label_values(&[task.name()]).set(chrono::Utc::now().timestamp() as f64);
    }
    if let Err(e) = refresh_backlog(ctx).await {
        tracing::warn!(error = %e, "could not refresh backlog gauges");
    }
    match result {
        Ok(()) => {
            tracing::info!(task = task.name(), run_id, outcome, counts = ?report.counts, seconds = report.seconds, "run finished");
            Ok(report)
        }
        Err(e) => {
            tracing::error!(task = task.name(), run_id, error = %e, "run failed");
            Err(e)
        }
    }
}

/// Backlog gauges: what is waiting for each task.
pub async fn refresh_backlog(ctx: &Context) -> Result<()> {
    let c = ctx.pool.get().await?;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM ci_job_artifacts WHERE expire_at < now() AND locked = 0 AND file_type <> 3),
                    (SELECT count(*) FROM ci_job_artifacts WHERE expire_at < now() AND locked = 2),
                    (SELECT count(*) FROM ci_deleted_objects),
                    (SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at < now()),
                    (SELECT count(*) FROM ci_unlock_pipeline_requests)",
            &[],
        )
        .await?;
    for (i, kind) in ["expired_rows", "unknown_rows", "queued_objects", "ready_objects", "unlock_requests"].iter().enumerate() {
        ctx.metrics.backlog.with_label_values(&[kind]).set(row.get::<_, i64>(i));
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Shared SQL: move the artifact rows chosen by a `batch` CTE (ids, rows locked FOR UPDATE) to
/// the deletion queue in one statement — delete the rows, queue their objects with `pick_up_at`
/// = expire_at clamped to [now − 1 day, now + 1 hour], and decrement the project totals — and
/// return what was moved.
macro_rules! move_to_queue_sql {
    ($batch:literal) => {
        concat!(
            "WITH batch AS (",
            $batch,
            "),
            del AS (
              DELETE FROM ci_job_artifacts a USING batch b WHERE a.id = b.id
              RETURNING a.id, a.project_id, a.job_id, a.file_type, COALESCE(a.size, 0) AS size, a.file_store, a.expire_at,
                        housekeep_artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, a.file_final_path) AS store_dir,
                        housekeep_artifact_file(a.file, a.file_final_path) AS file
            ),
            queued AS (
              INSERT INTO ci_deleted_objects (file_store, pick_up_at, store_dir, file, project_id, size)
              SELECT file_store,
                     LEAST(GREATEST(COALESCE(expire_at, now()), now() - interval '1 day'), now() + interval '1 hour'),
                     store_dir, file, project_id, size
              FROM del
              RETURNING 1
            ),
            stats AS (
              UPDATE project_statistics s SET build_artifacts_size = s.build_artifacts_size - d.total
              FROM (SELECT project_id, sum(size) AS total FROM del GROUP BY project_id) d
              WHERE s.project_id = d.project_id
              RETURNING 1
            )
            SELECT id, project_id, job_id, file_type, size, store_dir || '/' || file AS key FROM del"
        )
    };
}
pub(crate) use move_to_queue_sql;

/// Audit records of the artifact rows a move statement returned, one batch behind: a batch's
/// records are formatted and written on a blocking thread while the next batch runs in the
/// database. `finish` waits for the last batch; a run calls it before it reports.
pub(crate) struct MovedAudit {
    audit: Audit,
    action: &'static str,
    reason: &'static str,
    behind: Option<tokio::task::JoinHandle<()>>,
}

impl MovedAudit {
    pub(crate) fn new(run: &Run<'_>, action: &'static str, reason: &'static str) -> MovedAudit {
        MovedAudit { audit: run.audit.clone(), action, reason, behind: None }
    }

    /// Count a batch's rows and bytes now and audit them in the background; returns (rows, bytes).
    pub(crate) async fn push(&mut self, rows: Vec<tokio_postgres::Row>) -> (i64, i64) {
        let counts = (rows.len() as i64, rows.iter().map(|r| r.get::<_, i64>(4)).sum());
        self.finish().await;
        if !rows.is_empty() {
            let (audit, action, reason) = (self.audit.clone(), self.action, self.reason);
            self.behind = Some(tokio::task::spawn_blocking(move || {
                for r in &rows {
                    audit.artifact(action, r.get(0), r.get(1), r.get(2), r.get(3), r.get(5), r.get(4), reason);
                }
            }));
        }
        counts
    }

    pub(crate) async fn finish(&mut self) {
        if let Some(h) = self.behind.take()
            && let Err(e) = h.await
        {
            tracing::error!(error = %e, "writing audit records failed");
        }
    }
}
