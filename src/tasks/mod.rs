//! The housekeeping pipeline (SPEC §4): unlock, unknown, expire, delete-objects, stale-uploads.
//!
//! Each task is a plain async function over a [`Context`], run the same way by `housekeep run`,
//! `worker --once` and the scheduler. A run takes the task's advisory lock (except
//! delete-objects, which shares work through row leases), works in bounded batches of one
//! transaction each, stops when a batch comes back empty, when its time budget is spent or when
//! shutdown is requested, and records itself in `housekeep.runs` and the metrics.

pub mod delete_objects;
pub mod expire;
pub mod stale_uploads;
pub mod unknown;
pub mod unlock;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use futures::FutureExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::config::{Config, TaskConfig};
use crate::db::migrate::Mode;
use crate::error::{Error, Result};
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

impl Outcome {
    /// The `outcome` label of the metrics and of `housekeep.runs`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Skipped => "skipped",
            Outcome::Partial => "partial",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// Nothing was left to do.
    Done,
    /// The time budget was spent.
    Budget,
    /// The task's `max_rows` per run was reached (unknown).
    MaxRows,
    /// Shutdown was requested.
    Shutdown,
    /// Another process holds the task's lock.
    Locked,
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
    /// Why the run stopped.
    pub stopped: Stopped,
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
            if self.stopped == Stopped::Budget { ", time budget spent" } else { "" },
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
            self.report.stopped = Stopped::Shutdown;
            self.report.outcome = Outcome::Interrupted;
            return false;
        }
        if Instant::now() >= self.deadline {
            self.report.stopped = Stopped::Budget;
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

/// Run one task now. Every run that gets as far as asking for a connection is counted in
/// `housekeep_task_runs_total`, failures included (a database that is down, a panic).
pub async fn run(ctx: &Context, task: Task, opts: RunOptions) -> Result<Report> {
    let started = Instant::now();
    let result = run_locked(ctx, task, &opts, started).await;
    let m = &ctx.metrics;
    let outcome = match &result {
        Ok(report) => report.outcome.label(),
        Err(_) => "failure",
    };
    m.task_runs.with_label_values(&[task.name(), outcome]).inc();
    if outcome == "skipped" {
        return result;
    }
    let seconds = started.elapsed().as_secs_f64();
    m.task_duration.with_label_values(&[task.name()]).observe(seconds);
    if !opts.dry_run && matches!(outcome, "success" | "partial") {
        m.task_last_success.with_label_values(&[task.name()]).set(chrono::Utc::now().timestamp() as f64);
    }
    if let Err(e) = refresh_backlog(ctx).await {
        tracing::warn!(error = %e, "could not refresh backlog gauges");
    }
    match result {
        Ok(mut report) => {
            report.seconds = seconds;
            tracing::info!(task = task.name(), run_id = report.run_id, outcome, counts = ?report.counts, seconds, "run finished");
            Ok(report)
        }
        Err(e) => {
            tracing::error!(task = task.name(), error = %e, "run failed");
            Err(e)
        }
    }
}

/// Close the runs whose process is gone (SIGKILL, a lost connection) as `interrupted`: their
/// backend no longer exists (or its pid now belongs to a newer backend). Holding a task's lock
/// also proves that no other run of that task is alive, which covers rows without a backend pid.
const CLOSE_INTERRUPTED: &str = "
UPDATE housekeep.runs r SET finished_at = now(), outcome = 'interrupted'
WHERE r.finished_at IS NULL
  AND ((r.task = $1 AND $2)
       OR (r.backend_pid IS NOT NULL AND NOT EXISTS (
             SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid AND a.backend_start <= r.started_at)))";

const START_RUN: &str = "
INSERT INTO housekeep.runs (task, dry_run, host, backend_pid) VALUES ($1, $2, $3, pg_backend_pid()) RETURNING id";

const FINISH_RUN: &str = "UPDATE housekeep.runs SET finished_at = now(), outcome = $2, stats = $3 WHERE id = $1";

/// GitLab's own cron worker doing what a task does, to turn off before housekeep takes over.
fn gitlab_worker(task: Task) -> &'static str {
    match task {
        Task::Unlock => "Ci::ScheduleUnlockPipelinesInQueueCronWorker",
        Task::Unknown => "Ci::UpdateLockedUnknownArtifactsWorker",
        Task::Expire => "ExpireBuildArtifactsWorker",
        Task::DeleteObjects => "Ci::ScheduleDeleteObjectsCronWorker",
        Task::StaleUploads => "ObjectStorage::DeleteStaleDirectUploadsWorker",
    }
}

/// Whether `task` may run on a database of this mode: on a live GitLab database, the tasks that
/// change GitLab's artifact rows (`unlock`, `unknown`, `expire`) run only when `gitlab_tasks`
/// names them. The others share GitLab's queue through its own lease protocol.
pub fn permitted(config: &Config, mode: Mode, task: Task) -> Result<()> {
    let gated = crate::config::GITLAB_TASKS.contains(&task.name());
    if mode == Mode::Gitlab && gated && !config.gitlab_tasks.iter().any(|t| t == task.name()) {
        return Err(Error::config(format!(
            "{task} changes GitLab's artifact rows and this is a live GitLab database: turn off GitLab's {} \
             (Admin > Monitoring > Background jobs > Cron), then add \"{task}\" to gitlab_tasks (HOUSEKEEP_GITLAB_TASKS)",
            gitlab_worker(task)
        )));
    }
    Ok(())
}

/// Take the task's lock, record the run, run the task, record how it ended and give the lock
/// back, also when the task failed or panicked.
async fn run_locked(ctx: &Context, task: Task, opts: &RunOptions, started: Instant) -> Result<Report> {
    let cfg = task.config(&ctx.config);
    let budget = opts.time_budget.unwrap_or(cfg.time_budget.0);
    let mut report = Report {
        task,
        run_id: None,
        dry_run: opts.dry_run,
        outcome: Outcome::Success,
        counts: BTreeMap::new(),
        seconds: 0.0,
        stopped: Stopped::Done,
    };

    // The lock lives on a connection of its own, held for the whole run.
    let lock_conn = ctx.pool.get().await?;
    permitted(&ctx.config, crate::db::migrate::mode(&lock_conn).await?, task)?;
    let lock = task.lock_key();
    if let Some(key) = lock {
        let got: bool = lock_conn.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await?.get(0);
        if !got {
            report.outcome = Outcome::Skipped;
            report.stopped = Stopped::Locked;
            tracing::info!(task = task.name(), "skipped: another run holds the lock");
            return Ok(report);
        }
    }
    let recorded = async {
        let closed = lock_conn.execute(CLOSE_INTERRUPTED, &[&task.name(), &lock.is_some()]).await?;
        if closed > 0 {
            tracing::warn!(task = task.name(), closed, "closed runs whose process is gone as interrupted");
        }
        let row = lock_conn.query_one(START_RUN, &[&task.name(), &opts.dry_run, &hostname()]).await?;
        Ok::<i64, Error>(row.get(0))
    }
    .await;
    let run_id = match recorded {
        Ok(id) => id,
        Err(e) => {
            release(lock_conn, lock).await;
            return Err(e);
        }
    };
    report.run_id = Some(run_id);
    let mut r = Run {
        ctx,
        task,
        cfg,
        dry_run: opts.dry_run,
        deadline: started.checked_add(budget).unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400)),
        audit: Audit::new(run_id, task.name()),
        report,
        progress: opts.progress.clone(),
    };
    tracing::info!(task = task.name(), run_id, dry_run = opts.dry_run, "run started");
    let body = async {
        match task {
            Task::Unlock => unlock::run(&mut r).await,
            Task::Unknown => unknown::run(&mut r).await,
            Task::Expire => expire::run(&mut r).await,
            Task::DeleteObjects => delete_objects::run(&mut r).await,
            Task::StaleUploads => stale_uploads::run(&mut r).await,
        }
    };
    // A panic must not leave the lock on a pooled connection (the task would be skipped until
    // that connection closes, on every replica): it becomes this run's failure.
    let result = match AssertUnwindSafe(body).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(Error::other(format!("the {task} run panicked ({}); it was stopped and its lock released", panic_message(&*panic)))),
    };
    let mut report = r.report;
    report.seconds = started.elapsed().as_secs_f64();
    let outcome = match &result {
        Ok(()) => report.outcome.label(),
        Err(_) => "failure",
    };
    let stats = serde_json::to_value(&report.counts).unwrap_or_default();
    if let Err(e) = lock_conn.execute(FINISH_RUN, &[&run_id, &outcome, &stats]).await {
        tracing::warn!(task = task.name(), run_id, error = %e, "could not record the end of the run");
    }
    release(lock_conn, lock).await;
    result.map(|()| report)
}

/// Give a task's advisory lock back. When that cannot be confirmed, the connection is taken out
/// of the pool and closed, which releases the lock in the server.
async fn release(conn: deadpool_postgres::Object, lock: Option<i64>) {
    let Some(key) = lock else { return };
    let released = conn.query_one("SELECT pg_advisory_unlock($1)", &[&key]).await.map(|r| r.get::<_, bool>(0));
    if !matches!(released, Ok(true)) {
        drop(deadpool_postgres::Object::take(conn));
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Backlog gauges: what is waiting for each task.
pub async fn refresh_backlog(ctx: &Context) -> Result<()> {
    let c = ctx.pool.get().await?;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 0 AND file_type <> 3),
                    (SELECT count(*) FROM p_ci_job_artifacts WHERE expire_at < now() AND locked = 2),
                    (SELECT count(*) FROM ci_deleted_objects),
                    (SELECT count(*) FROM ci_deleted_objects WHERE pick_up_at < now()),
                    (SELECT count(*) FROM housekeep.unlock_requests)",
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

/// Shared SQL: move the artifact rows chosen by a `batch` CTE (`id, partition_id` of rows locked
/// FOR UPDATE) to the deletion queue in one statement, as GitLab's `DestroyBatchService` does —
/// delete the rows, queue their objects with `pick_up_at` = expire_at clamped to [now − 1 day,
/// now + 1 hour] (a row with no file at all queues nothing), keep each object's size in
/// housekeep's state, and decrement the project totals additively (`storage_size` too, as GitLab's
/// counter flush does) — and return what was moved: every row, for the audit records, or only
/// the count and bytes when audit records are off (the rows then never leave the server).
macro_rules! move_to_queue_sql {
    ($batch:literal) => {
        $crate::tasks::MoveSql {
            rows: move_to_queue_sql!(@ $batch, "SELECT id, project_id, job_id, file_type, size, store_dir || '/' || file AS key FROM del"),
            totals: move_to_queue_sql!(@ $batch, "SELECT count(*) AS moved, COALESCE(sum(size), 0)::bigint AS moved_bytes FROM del"),
        }
    };
    (@ $batch:literal, $select:literal) => {
        concat!(
            "WITH batch AS (",
            $batch,
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
        let enabled = tracing::enabled!(target: "housekeep::audit", tracing::Level::INFO);
        MovedAudit { audit: run.audit.clone(), enabled, action, reason, behind: None }
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
            self.behind = Some(tokio::task::spawn_blocking(move || {
                for r in &rows {
                    let key: Option<String> = r.get("key");
                    audit.artifact(
                        action,
                        r.get("id"),
                        r.get("project_id"),
                        r.get("job_id"),
                        r.get("file_type"),
                        key.as_deref().unwrap_or(""),
                        r.get("size"),
                        reason,
                    );
                }
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
