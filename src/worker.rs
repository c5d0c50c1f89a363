//! `housekeep worker`: the daemon. Runs each enabled task on its crontab schedule (a task never
//! overlaps itself; different tasks run side by side), serves /metrics, /healthz and /readyz,
//! and speaks systemd's notify protocol: READY=1 once the database answered and the listener is
//! bound, WATCHDOG=1 from the scheduler loop, STATUS= with the last run's outcome and the next
//! run (`systemctl status`), STOPPING=1 on shutdown. On SIGTERM/SIGINT it starts
//! no new batch, lets the current ones finish or roll back, and exits within 30 s.
//!
//! The listener also serves GitLab's Job Artifacts API ([`crate::api`]).
//!
//! `worker --once` runs every enabled task once, in SPEC order, and exits (for CronJobs).
//!
//! The listener's timeouts and connection cap are in [`listener`].

pub mod listener;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::api::Api;
use crate::error::{Error, Result};
use crate::schedule::Schedule;
use crate::tasks::{self, Context, Outcome, Report, RunOptions, Task};

/// How long shutdown waits for running batches before giving up on them (rolled back by the
/// database when the connection closes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// How often the backlog gauges are refreshed between task runs.
const BACKLOG_EVERY: Duration = Duration::from_secs(60);
/// An error in STATUS= is cut to this many characters (the log has it whole).
const STATUS_ERROR_CHARS: usize = 200;

fn notify(state: sd_notify::NotifyState<'_>) {
    let _ = sd_notify::notify(&[state]);
}

/// STATUS=, on one line (the protocol separates assignments by newlines).
fn notify_status(status: &str) {
    let line: String = status
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    notify(sd_notify::NotifyState::Status(&line));
}

/// What a run did and when it ended, then the next scheduled run:
/// `expire: done (expired=3 expired_bytes=300) in 0.12s, ended 12:00:01 UTC; next: unlock at 12:01:00 UTC`.
fn run_status(
    task: Task,
    result: &Result<Report>,
    schedules: &[(Task, Schedule)],
    now: DateTime<Utc>,
) -> String {
    let done = match result {
        Ok(report) => report.summary(),
        Err(e) => {
            let e = e.to_string();
            match e.char_indices().nth(STATUS_ERROR_CHARS) {
                Some((cut, _)) => format!("{task}: failed ({}…)", &e[..cut]),
                None => format!("{task}: failed ({e})"),
            }
        }
    };
    format!(
        "{done}, ended {}; {}",
        now.format("%H:%M:%S UTC"),
        next_status(schedules, now)
    )
}

/// `next: unlock at 12:01:00 UTC`, the earliest scheduled run after `now`.
fn next_status(schedules: &[(Task, Schedule)], now: DateTime<Utc>) -> String {
    let next = schedules
        .iter()
        .filter_map(|(t, s)| s.next_after(&now).map(|at| (at, *t)))
        .min();
    match next {
        Some((at, task)) => format!("next: {task} at {}", at.format("%H:%M:%S UTC")),
        None => "no task scheduled".into(),
    }
}

/// One task of `worker --once`.
#[derive(Debug)]
pub enum Step {
    /// Not run: the database is a live GitLab one and the task is not in `gitlab_tasks` (the
    /// reason is logged).
    Skipped(Task),
    Ran(Report),
}

/// What `worker --once` did, in task order, and how it ended. The steps taken before an error
/// are kept, so that the caller can show them before the error.
#[derive(Debug)]
pub struct OnceRun {
    pub steps: Vec<Step>,
    /// Partial failures give [`Error::Partial`] (exit code 3), interruption [`Error::Interrupted`].
    pub result: Result<()>,
}

/// Run every enabled task once, in order; prints nothing.
pub async fn run_once(ctx: &Context) -> OnceRun {
    let mut steps = Vec::new();
    let result = run_each_once(ctx, &mut steps).await;
    OnceRun { steps, result }
}

async fn run_each_once(ctx: &Context, steps: &mut Vec<Step>) -> Result<()> {
    let mut partial = false;
    let mode = crate::db::migrate::mode(&**ctx.pool.get().await?).await?;
    for task in Task::ALL {
        if !ctx.config.tasks[task].enabled {
            continue;
        }
        if let Err(e) = tasks::permitted(&ctx.config, mode, task) {
            steps.push(Step::Skipped(task));
            tracing::warn!(task = task.name(), "{e}");
            continue;
        }
        if ctx.cancel.is_cancelled() {
            return Err(Error::Interrupted);
        }
        let report = tasks::run(ctx, task, RunOptions::default()).await?;
        partial |= report.outcome == Outcome::Partial;
        let interrupted = report.outcome == Outcome::Interrupted;
        steps.push(Step::Ran(report));
        if interrupted {
            return Err(Error::Interrupted);
        }
    }
    if partial {
        return Err(Error::Partial("some objects could not be deleted; they will be retried (see the log)".into()));
    }
    Ok(())
}

/// The HTTP listener: /metrics, /healthz (no database call), /readyz (database and stores), and
/// the Job Artifacts API under /api/v4.
pub fn router(ctx: Context, api: Api) -> Router {
    Router::new()
        .route("/metrics", get(|State(ctx): State<Context>| async move { ctx.metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ctx)
        .nest("/api/v4", crate::api::router(api))
}

async fn readyz(State(ctx): State<Context>) -> (StatusCode, String) {
    let db = async {
        let c = ctx.pool.get().await?;
        c.simple_query("SELECT 1").await?;
        Ok::<_, Error>(())
    };
    let check = async {
        db.await.map_err(|e| format!("database: {e}"))?;
        for store in [&ctx.stores.remote, &ctx.stores.local] {
            // A key that does not exist: any answer but an error means the store is reachable.
            store
                .head(&store.full_key("housekeep-readiness-probe"))
                .await
                .map_err(|e| format!("store {}: {e}", store.url()))?;
        }
        Ok::<_, String>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "timed out\n".into()),
    }
}

/// The daemon. Returns when `ctx.cancel` is cancelled and running tasks have stopped.
pub async fn run_daemon(ctx: Context, listen: SocketAddr) -> Result<()> {
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let bound = tcp.local_addr().unwrap_or(listen);
    let api = Api::new(ctx.clone()).await?;
    let cancel = ctx.cancel.clone();
    let server = tokio::spawn({
        let app = router(ctx.clone(), api);
        let cancel = cancel.clone();
        async move {
            listener::serve(tcp, app, listener::Limits::default(), listener::OpenConnections::default(), cancel).await;
        }
    });

    let schedules = schedules(&ctx).await?;
    schedules.iter().for_each(|(t, s)| ctx.metrics.scheduled(*t, s, ctx.config.tasks[*t].time_budget.0));
    ctx.metrics.up.set(1);
    notify(sd_notify::NotifyState::Ready);
    notify_status(&format!("ready; {}", next_status(&schedules, Utc::now())));
    tracing::info!(listen = %bound, tasks = %serde_json::json!(schedules.iter().map(|(t, s)| format!("{t} {}", s.as_str())).collect::<Vec<_>>()), "worker ready");

    let mut scheduler = Scheduler::new(ctx.clone(), schedules);
    let tick = Duration::from_secs(1);
    loop {
        notify(sd_notify::NotifyState::Watchdog);
        scheduler.refresh_backlog_when_due();
        scheduler.start_due_tasks();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }

    notify(sd_notify::NotifyState::Stopping);
    scheduler.wait_for_running().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    ctx.metrics.up.set(0);
    Ok(())
}

/// The schedules of the enabled tasks this database permits (the others are logged as not
/// scheduled).
async fn schedules(ctx: &Context) -> Result<Vec<(Task, Schedule)>> {
    let mode = crate::db::migrate::mode(&**ctx.pool.get().await?).await?;
    Task::ALL
        .into_iter()
        .filter(|t| ctx.config.tasks[*t].enabled)
        .filter(|t| match tasks::permitted(&ctx.config, mode, *t) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(task = t.name(), "not scheduled: {e}");
                false
            }
        })
        .map(|t| {
            let s = ctx.config.tasks[t].schedule.parse::<Schedule>().map_err(Error::config)?;
            Ok((t, s))
        })
        .collect()
}

/// The daemon's tasks: when each runs next, which are running, and when the backlog gauges
/// were last refreshed.
struct Scheduler {
    ctx: Context,
    schedules: Vec<(Task, Schedule)>,
    next: HashMap<Task, chrono::DateTime<Utc>>,
    running: HashMap<Task, JoinHandle<()>>,
    backlog_at: std::time::Instant,
}

impl Scheduler {
    fn new(ctx: Context, schedules: Vec<(Task, Schedule)>) -> Scheduler {
        let next = schedules
            .iter()
            .filter_map(|(t, s)| s.next_after(&Utc::now()).map(|n| (*t, n)))
            .collect();
        let backlog_at = std::time::Instant::now() - BACKLOG_EVERY;
        Scheduler {
            ctx,
            schedules,
            next,
            running: HashMap::new(),
            backlog_at,
        }
    }

    /// Every [`BACKLOG_EVERY`], refresh the backlog gauges in the background.
    fn refresh_backlog_when_due(&mut self) {
        if self.backlog_at.elapsed() < BACKLOG_EVERY {
            return;
        }
        self.backlog_at = std::time::Instant::now();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = tasks::refresh_backlog(&ctx).await {
                tracing::warn!(error = %e, "could not refresh backlog gauges");
            }
        });
    }

    /// Start the tasks that are due, except those still running from their previous schedule.
    fn start_due_tasks(&mut self) {
        self.running.retain(|_, h| !h.is_finished());
        let now = Utc::now();
        for (task, schedule) in &self.schedules {
            let due = self.next.get(task).is_some_and(|n| *n <= now);
            if !due {
                continue;
            }
            if let Some(n) = schedule.next_after(&now) {
                self.next.insert(*task, n);
            }
            if self.running.contains_key(task) {
                tracing::info!(task = task.name(), "still running from its previous schedule; this occurrence is skipped");
                continue;
            }
            let ctx = self.ctx.clone();
            let task = *task;
            let schedules = self.schedules.clone();
            self.running.insert(
                task,
                tokio::spawn(async move {
                    let result = tasks::run(&ctx, task, RunOptions::default()).await;
                    if let Err(e) = &result {
                        tracing::error!(task = task.name(), error = %e, "task failed");
                    }
                    notify_status(&run_status(task, &result, &schedules, Utc::now()));
                }),
            );
        }
    }

    /// Shutdown: wait up to [`SHUTDOWN_GRACE`] for the running tasks.
    async fn wait_for_running(self) {
        tracing::info!(
            running = self.running.len(),
            "shutting down: no new batches; waiting for the current ones"
        );
        let wait_all = futures::future::join_all(self.running.into_values());
        if tokio::time::timeout(SHUTDOWN_GRACE, wait_all)
            .await
            .is_err()
        {
            tracing::warn!(
                "batches still running after {}s; their transactions roll back",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn status_names_the_last_run_and_the_next_one_on_one_line() {
        let now = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 1).unwrap();
        let schedules: Vec<(Task, Schedule)> = [(Task::Expire, "*/7 * * * *"), (Task::Unlock, "* * * * *")]
            .into_iter()
            .map(|(t, s)| (t, s.parse().unwrap()))
            .collect();
        let ok = run_status(Task::Expire, &Ok(Report::new(Task::Expire.into(), false)), &schedules, now);
        assert!(ok.starts_with("expire: done ("), "{ok}");
        assert!(ok.ends_with(", ended 12:00:01 UTC; next: unlock at 12:01:00 UTC"), "{ok}");

        let long = Error::other(format!("cannot reach the database\nat {}", "x".repeat(500)));
        let failed = run_status(Task::Unlock, &Err(long), &schedules, now);
        assert!(failed.starts_with("unlock: failed (cannot reach the database\nat xxx"), "{failed}");
        assert!(failed.contains("x…), ended 12:00:01 UTC; next: unlock at"), "{failed}");
        assert!(failed.chars().count() < STATUS_ERROR_CHARS + 100, "{failed}");
    }
}
