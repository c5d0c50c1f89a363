//! The batch runner: what every task run shares. It takes the task's advisory lock, records the
//! run in `housekeep.runs`, opens the task, then either asks it for its plan (a dry run) or runs
//! its steps — one step, one batch, one transaction — until the task is done, the time budget is
//! spent or shutdown is requested; it adds up the stats, counts them into the metrics, advances
//! the progress bar, closes the task (audit records flushed, leases given back) and records how
//! the run ended, also when a step failed or panicked.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::backlog;
use super::context::Context;
use super::outcome::{Outcome, Stopped};
use super::stats::TaskStats;
use super::report::Report;
use crate::audit::Audit;
use crate::config::{Config, TaskConfig};
use crate::db::migrate::Mode;
use crate::error::{Error, Result};
use crate::registry::Job;

/// One task on the runner. A task keeps what lasts for the run (the run's start time, prepared
/// statements, work in flight) in its own value, opened once per run.
pub trait BatchTask: Sized + Send {
    /// What the run is given besides its context: `()` for a task, the arguments of an action
    /// (`--older-than`, `--project`, …).
    type Args: Send;
    /// What a run did, added up batch by batch.
    type Stats: TaskStats;
    /// What a dry run found.
    type Plan: serde::Serialize + std::fmt::Debug + Send + Sync + 'static;

    /// Start a run: a connection, the run's fixed start time, prepared statements.
    fn open(run: &Run<'_>, args: Self::Args) -> impl Future<Output = Result<Self>> + Send;

    /// What a run would do now, changing nothing (`--dry-run`).
    fn plan(&mut self, run: &Run<'_>) -> impl Future<Output = Result<Self::Plan>> + Send;

    /// One batch in one transaction (delete-objects: one batch of store calls, overlapping the
    /// database work of the batches around it). Returns the batch's stats and whether to go on.
    fn step(&mut self, run: &Run<'_>) -> impl Future<Output = Result<Step<Self::Stats>>> + Send;

    /// End the run after its last step, also after a failed one: write what is still in flight
    /// (audit records, outcomes), give back what is held. Its stats are added to the run's.
    fn close(&mut self, _run: &Run<'_>) -> impl Future<Output = Result<Self::Stats>> + Send {
        async { Ok(Self::Stats::default()) }
    }
}

/// What a step did and what comes next.
#[derive(Debug)]
pub struct Step<S> {
    pub stats: S,
    pub next: Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another batch may follow (the runner checks the budget and shutdown first).
    More,
    /// Nothing is left to do.
    Done,
    /// The step saw a reason to stop (it gave back work it had claimed).
    Stop(Stopped),
}

impl<S> Step<S> {
    pub fn more(stats: S) -> Self {
        Step { stats, next: Next::More }
    }
    pub fn done(stats: S) -> Self {
        Step { stats, next: Next::Done }
    }
}

/// The state of one run, handed to the task.
pub struct Run<'a> {
    pub ctx: &'a Context,
    /// The task or action running.
    pub job: Job,
    /// Its settings: a task's from the configuration, an action's from the registry.
    pub cfg: TaskConfig,
    pub dry_run: bool,
    pub deadline: Instant,
    pub audit: Audit,
}

impl Run<'_> {
    /// Why no further batch should start, if one should not: shutdown, or the budget spent.
    pub fn stop_reason(&self) -> Option<Stopped> {
        if self.ctx.cancel.is_cancelled() {
            Some(Stopped::Shutdown)
        } else if Instant::now() >= self.deadline {
            Some(Stopped::Budget)
        } else {
            None
        }
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
    /// A progress bar to advance by items handled (expedite on a terminal).
    pub progress: Option<indicatif::ProgressBar>,
}

/// Run `job`, whose engine is `T`, now. Every run that gets as far as asking for a connection is
/// counted in `housekeep_task_runs_total`, failures included (a database that is down, a panic).
pub async fn run_job<T: BatchTask>(ctx: &Context, job: Job, args: T::Args, opts: RunOptions) -> Result<Report> {
    let task = job.name();
    let started = Instant::now();
    let running = ctx.metrics.running(task);
    let result = run_locked::<T>(ctx, job, args, &opts, started).await;
    drop(running);
    let m = &ctx.metrics;
    let outcome = result.as_ref().map_or(Outcome::Failure, |r| r.outcome);
    m.task_runs.with_label_values(&[task, outcome.label()]).inc();
    if outcome == Outcome::Skipped {
        return result;
    }
    let seconds = started.elapsed().as_secs_f64();
    m.task_duration.with_label_values(&[task]).observe(seconds);
    if !opts.dry_run && matches!(outcome, Outcome::Success | Outcome::Partial) {
        m.task_last_success.with_label_values(&[task]).set(chrono::Utc::now().timestamp() as f64);
    }
    if let Err(e) = backlog::refresh(ctx).await {
        tracing::warn!(error = %e, "could not refresh backlog gauges");
    }
    match result {
        Ok(mut report) => {
            report.seconds = seconds;
            tracing::info!(task, run_id = report.run_id, outcome = outcome.label(), counts = %report.stats.as_ref().map(|s| s.to_json()).unwrap_or_default(), seconds, "run finished");
            Ok(report)
        }
        Err(e) => {
            tracing::error!(task, error = %e, "run failed");
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

/// Whether `task` may run on a database of this mode: on a live GitLab database, the tasks that
/// change GitLab's artifact rows (`unlock`, `unknown`, `expire`) run only when `gitlab_tasks`
/// names them. The others share GitLab's queue through its own lease protocol, and one-off
/// actions change rows only as GitLab's own API and services do (files through
/// `ci_deleted_objects`).
pub fn permitted(config: &Config, mode: Mode, job: impl Into<Job>) -> Result<()> {
    let Job::Task(task) = job.into() else { return Ok(()) };
    if mode == Mode::Gitlab && task.spec().changes_gitlab_rows && !config.gitlab_tasks.iter().any(|t| t == task.name()) {
        return Err(Error::config(format!(
            "{task} changes GitLab's artifact rows and this is a live GitLab database: turn off GitLab's {} \
             (Admin > Monitoring > Background jobs > Cron), then add \"{task}\" to gitlab_tasks (HOUSEKEEP_GITLAB_TASKS)",
            task.spec().gitlab_worker
        )));
    }
    Ok(())
}

/// Take the task's lock, record the run, run the task, record how it ended and give the lock
/// back, also when the task failed or panicked.
async fn run_locked<T: BatchTask>(ctx: &Context, job: Job, args: T::Args, opts: &RunOptions, started: Instant) -> Result<Report> {
    let mut report = Report::new(job, opts.dry_run);
    let task = job.name();
    // The lock lives on a connection of its own, held for the whole run.
    let lock_conn = ctx.pool.get().await?;
    permitted(&ctx.config, crate::db::migrate::mode(&lock_conn).await?, job)?;
    let lock = job.lock_key();
    if let Some(key) = lock {
        let got: bool = lock_conn.query_one("SELECT pg_try_advisory_lock($1) AS got", &[&key]).await?.get("got");
        if !got {
            report.outcome = Outcome::Skipped;
            report.stopped = Stopped::Locked;
            tracing::info!(task, "skipped: another run holds the lock");
            return Ok(report);
        }
    }
    let run_id = match start_run(&lock_conn, task, opts.dry_run, lock.is_some()).await {
        Ok(id) => id,
        Err(e) => {
            release(lock_conn, lock).await;
            return Err(e);
        }
    };
    report.run_id = Some(run_id);
    let cfg = match job {
        Job::Task(t) => ctx.config.tasks[t].clone(),
        Job::Action(a) => TaskConfig::one_off(a.spec().batch_size),
    };
    let budget = opts.time_budget.unwrap_or(cfg.time_budget.0);
    let run = Run {
        ctx,
        job,
        cfg,
        dry_run: opts.dry_run,
        deadline: started.checked_add(budget).unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400)),
        audit: Audit::new(run_id, task),
    };
    tracing::info!(task, run_id, dry_run = opts.dry_run, "run started");
    // A panic must not leave the lock on a pooled connection (the task would be skipped until
    // that connection closes, on every replica): it becomes this run's failure.
    let result = match AssertUnwindSafe(drive::<T>(&run, args, &mut report, opts.progress.as_ref())).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(Error::other(format!("the {task} run panicked ({}); it was stopped and its lock released", panic_message(&*panic)))),
    };
    report.seconds = started.elapsed().as_secs_f64();
    let outcome = if result.is_ok() { report.outcome } else { Outcome::Failure }.label();
    let stats = report.stats.as_ref().map(|s| s.to_json()).unwrap_or_default();
    if let Err(e) = lock_conn.execute(FINISH_RUN, &[&run_id, &outcome, &stats]).await {
        tracing::warn!(task, run_id, error = %e, "could not record the end of the run");
    }
    release(lock_conn, lock).await;
    result.map(|()| report)
}

/// Close the runs whose process is gone, then record this one; returns its id.
async fn start_run(conn: &tokio_postgres::Client, task: &str, dry_run: bool, locked: bool) -> Result<i64> {
    let closed = conn.execute(CLOSE_INTERRUPTED, &[&task, &locked]).await?;
    if closed > 0 {
        tracing::warn!(task, closed, "closed runs whose process is gone as interrupted");
    }
    Ok(conn.query_one(START_RUN, &[&task, &dry_run, &hostname()]).await?.get("id"))
}

/// Plan, or step until done; the stats so far stay in `report` when a step fails.
async fn drive<T: BatchTask>(run: &Run<'_>, args: T::Args, report: &mut Report, progress: Option<&indicatif::ProgressBar>) -> Result<()> {
    let mut task = T::open(run, args).await?;
    if run.dry_run {
        report.stats = Some(Arc::new(task.plan(run).await?));
        return Ok(());
    }
    let mut total = T::Stats::default();
    let mut stopped = Stopped::Done;
    let mut failure = None;
    loop {
        if let Some(reason) = run.stop_reason() {
            stopped = reason;
            break;
        }
        match task.step(run).await {
            Ok(step) => {
                count(run, &mut total, &step.stats, progress);
                match step.next {
                    Next::More => {}
                    Next::Done => break,
                    Next::Stop(reason) => {
                        stopped = reason;
                        break;
                    }
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let closed = task.close(run).await;
    if let Ok(s) = &closed {
        count(run, &mut total, s, progress);
    }
    report.outcome = if stopped == Stopped::Shutdown {
        Outcome::Interrupted
    } else if total.failed() > 0 {
        Outcome::Partial
    } else {
        Outcome::Success
    };
    report.stopped = stopped;
    report.stats = Some(Arc::new(total));
    match (failure, closed) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(e),
        (None, Ok(_)) => Ok(()),
    }
}

fn count<S: TaskStats>(run: &Run<'_>, total: &mut S, batch: &S, progress: Option<&indicatif::ProgressBar>) {
    total.add(batch);
    batch.record(&run.ctx.metrics);
    if let Some(p) = progress {
        p.inc(batch.items());
    }
}

/// Give a task's advisory lock back. When that cannot be confirmed, the connection is taken out
/// of the pool and closed, which releases the lock in the server.
async fn release(conn: deadpool_postgres::Object, lock: Option<i64>) {
    let Some(key) = lock else { return };
    let released = conn.query_one("SELECT pg_advisory_unlock($1) AS released", &[&key]).await.map(|r| r.get::<_, bool>("released"));
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
