//! Prometheus metrics (SPEC §8), prefix `housekeep_`, and the `process_*` metrics of the
//! process. One registry per process, shared by every task run; the worker serves it at /metrics.
//!
//! Every series whose labels are known up front (each task × outcome, each task, each backlog
//! kind, each age bucket) exists from the start at 0: an alert on a task that has not succeeded
//! since the restart can fire, and `increase()` sees the first run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::registry::Task;
use crate::schedule::Schedule;
use crate::tasks::outcome::Outcome;

pub struct Metrics {
    pub registry: Registry,
    pub task_runs: IntCounterVec,
    pub task_last_success: GaugeVec,
    pub task_duration: HistogramVec,
    /// When the running run of each task started; 0 while none runs.
    pub task_running_since: GaugeVec,
    /// The longest interval between two runs of each scheduled task; 0 when not scheduled.
    pub task_schedule_period: GaugeVec,
    /// The time budget of each scheduled task's runs; 0 when not scheduled.
    pub task_time_budget: GaugeVec,
    pub artifacts_expired: IntCounter,
    pub artifacts_expired_bytes: IntCounter,
    pub unknown_locked: IntCounter,
    pub unknown_removed: IntCounter,
    pub unknown_removed_bytes: IntCounter,
    pub pipelines_enqueued: IntCounter,
    pub pipelines_unlocked: IntCounter,
    pub artifacts_unlocked: IntCounter,
    pub objects_deleted: IntCounterVec,
    pub objects_deleted_bytes: IntCounterVec,
    pub delete_errors: IntCounter,
    pub stale_uploads_deleted: IntCounter,
    pub backlog: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub up: IntGauge,
    /// Job Artifacts API requests, by endpoint and status code.
    pub api_requests: IntCounterVec,
    /// Bytes of archives and files sent by the Job Artifacts API, by endpoint.
    pub api_sent_bytes: IntCounterVec,
}

/// The endpoints of the Job Artifacts API, as the `endpoint` label names them.
pub const API_ENDPOINTS: [&str; 7] =
    ["download", "download_by_ref", "file", "file_by_ref", "keep", "delete_job_artifacts", "delete_project_artifacts"];
/// The status codes the Job Artifacts API answers with.
pub const API_CODES: [&str; 8] = ["200", "202", "204", "400", "401", "403", "404", "500"];

/// Age buckets of deleted objects (time since they were queued), as GitLab's
/// `ci_deleted_objects_total{age_bucket}`.
pub const AGE_BUCKETS: [(i64, &str); 6] =
    [(3600, "0-1h"), (6 * 3600, "1-6h"), (12 * 3600, "6-12h"), (24 * 3600, "12-24h"), (168 * 3600, "24-168h"), (i64::MAX, "168h+")];

pub fn age_bucket(age_secs: i64) -> &'static str {
    AGE_BUCKETS.iter().find(|(limit, _)| age_secs < *limit).map(|(_, l)| *l).unwrap_or("168h+")
}

/// The kinds of `housekeep_backlog`.
pub const BACKLOG_KINDS: [&str; 5] = ["expired_rows", "unknown_rows", "queued_objects", "ready_objects", "unlock_requests"];

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone())).expect("metric names are unique");
                m
            }};
        }
        let counter = |name: &str, help: &str| IntCounter::new(format!("housekeep_{name}"), help).expect("valid metric");
        let m = Metrics {
            task_runs: reg!(counter_vec("housekeep_task_runs_total", "Task runs by task and outcome (success, failure, partial, interrupted, skipped)", &["task", "outcome"])),
            task_last_success: reg!(gauge_vec("housekeep_task_last_success_timestamp_seconds", "Unix time of the last successful run of each task", &["task"])),
            task_duration: reg!(HistogramVec::new(
                HistogramOpts::new("housekeep_task_duration_seconds", "Duration of task runs")
                    .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
                &["task"]
            )
            .unwrap()),
            task_running_since: reg!(gauge_vec("housekeep_task_running_since_timestamp_seconds", "Unix time at which the running run of each task started; 0 while none runs", &["task"])),
            task_schedule_period: reg!(gauge_vec("housekeep_task_schedule_period_seconds", "Longest interval between two scheduled runs of each task; 0 when the worker does not schedule it", &["task"])),
            task_time_budget: reg!(gauge_vec("housekeep_task_time_budget_seconds", "Time budget of each scheduled task's runs; 0 when the worker does not schedule it", &["task"])),
            artifacts_expired: reg!(counter("artifacts_expired_total", "Expired artifact rows moved to the deletion queue")),
            artifacts_expired_bytes: reg!(counter(
                "artifacts_expired_bytes_total",
                "Bytes of expired artifact rows moved to the deletion queue"
            )),
            unknown_locked: reg!(counter(
                "unknown_artifacts_locked_total",
                "Unknown-lock rows set to locked because their pipeline is locked"
            )),
            unknown_removed: reg!(counter(
                "unknown_artifacts_removed_total",
                "Unknown-lock rows destroyed because their pipeline is unlocked"
            )),
            unknown_removed_bytes: reg!(counter("unknown_artifacts_removed_bytes_total", "Bytes of unknown-lock rows destroyed")),
            pipelines_enqueued: reg!(counter("pipelines_enqueued_for_unlock_total", "Pipelines enqueued for unlocking")),
            pipelines_unlocked: reg!(counter("pipelines_unlocked_total", "Pipelines unlocked")),
            artifacts_unlocked: reg!(counter("artifacts_unlocked_total", "Artifact rows unlocked")),
            objects_deleted: reg!(counter_vec("housekeep_objects_deleted_total", "Objects deleted from the store, by time since queued", &["age_bucket"])),
            objects_deleted_bytes: reg!(counter_vec("housekeep_objects_deleted_bytes_total", "Bytes deleted from the store, by time since queued", &["age_bucket"])),
            delete_errors: reg!(counter("object_delete_errors_total", "Object deletions that failed and will be retried")),
            stale_uploads_deleted: reg!(counter("stale_uploads_deleted_total", "Stale direct uploads deleted")),
            backlog: reg!(int_gauge_vec("housekeep_backlog", "Work waiting, by kind: expired_rows, unknown_rows, queued_objects, ready_objects, unlock_requests", &["kind"])),
            build_info: reg!(int_gauge_vec("housekeep_build_info", "Build information", &["version"])),
            up: reg!(IntGauge::new("housekeep_up", "1 while the worker runs").unwrap()),
            api_requests: reg!(counter_vec("housekeep_api_requests_total", "Job Artifacts API requests, by endpoint and status code", &["endpoint", "code"])),
            api_sent_bytes: reg!(counter_vec("housekeep_api_sent_bytes_total", "Bytes of archives and files sent by the Job Artifacts API, by endpoint", &["endpoint"])),
            registry,
        };
        m.zero_series();
        m
    }

    /// Every series known up front exists from the start, at 0, so that alerts on a task that never
    /// ran fire and `increase()` sees the first run; `process_*` metrics come with them.
    fn zero_series(&self) {
        let m = self;
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for task in Task::ALL {
            let t = [task.name()];
            for outcome in Outcome::ALL {
                m.task_runs.with_label_values(&[task.name(), outcome.label()]);
            }
            m.task_last_success.with_label_values(&t);
            m.task_duration.with_label_values(&t);
            m.task_running_since.with_label_values(&t);
            m.task_schedule_period.with_label_values(&t);
            m.task_time_budget.with_label_values(&t);
        }
        for kind in BACKLOG_KINDS {
            m.backlog.with_label_values(&[kind]);
        }
        for endpoint in API_ENDPOINTS {
            m.api_sent_bytes.with_label_values(&[endpoint]);
            for code in API_CODES {
                m.api_requests.with_label_values(&[endpoint, code]);
            }
        }
        for (_, bucket) in AGE_BUCKETS {
            m.objects_deleted.with_label_values(&[bucket]);
            m.objects_deleted_bytes.with_label_values(&[bucket]);
        }
        let process = prometheus::process_collector::ProcessCollector::for_self();
        self.registry.register(Box::new(process)).expect("process metric names are unique");
    }

    /// The worker schedules `task`: export its schedule's period and its time budget, which the
    /// alert rules compare with the last success and the running run.
    pub fn scheduled(&self, task: Task, schedule: &Schedule, time_budget: Duration) {
        self.task_schedule_period.with_label_values(&[task.name()]).set(longest_interval(schedule).as_secs_f64());
        self.task_time_budget.with_label_values(&[task.name()]).set(time_budget.as_secs_f64());
    }

    /// A run of `task` starts: `housekeep_task_running_since_timestamp_seconds{task}` holds its
    /// start until the returned guard is dropped.
    pub fn running(&self, task: &str) -> Running {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let gauge = self.task_running_since.with_label_values(&[task]);
        gauge.set(now);
        Running(gauge)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Resets a task's running-since gauge to 0 when its run ends, however it ends.
pub struct Running(prometheus::Gauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(0.0);
    }
}

/// The longest interval between two consecutive times of `schedule` over the next eight days
/// (at least one interval, at most 10,000 times): a crontab line is not periodic (`*/7` runs 7
/// minutes apart, then 4 at the hour), and "two periods without success" must not fire between
/// two slots that are rightly far apart (a weekly or monthly schedule).
pub fn longest_interval(schedule: &Schedule) -> Duration {
    let start = Utc::now();
    let horizon = start + chrono::Duration::days(8);
    let Some(mut prev) = schedule.next_after(&start) else { return Duration::ZERO };
    let mut longest = chrono::Duration::zero();
    for _ in 0..10_000 {
        let Some(next) = schedule.next_after(&prev) else { break };
        longest = longest.max(next - prev);
        prev = next;
        if prev > horizon {
            break;
        }
    }
    longest.to_std().unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_series_exists_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for task in Task::ALL {
            let t = task.name();
            for outcome in Outcome::ALL {
                let o = outcome.label();
                assert!(text.contains(&format!("housekeep_task_runs_total{{outcome=\"{o}\",task=\"{t}\"}} 0\n")), "{t} {o}:\n{text}");
            }
            for name in [
                "housekeep_task_last_success_timestamp_seconds",
                "housekeep_task_running_since_timestamp_seconds",
                "housekeep_task_schedule_period_seconds",
                "housekeep_task_time_budget_seconds",
                "housekeep_task_duration_seconds_count",
            ] {
                assert!(text.contains(&format!("{name}{{task=\"{t}\"}} 0\n")), "{name} {t}:\n{text}");
            }
        }
        for kind in BACKLOG_KINDS {
            assert!(text.contains(&format!("housekeep_backlog{{kind=\"{kind}\"}} 0\n")), "{kind}:\n{text}");
        }
        for (_, b) in AGE_BUCKETS {
            assert!(text.contains(&format!("housekeep_objects_deleted_total{{age_bucket=\"{b}\"}} 0\n")), "{b}:\n{text}");
            assert!(text.contains(&format!("housekeep_objects_deleted_bytes_total{{age_bucket=\"{b}\"}} 0\n")), "{b}:\n{text}");
        }
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
    }

    #[test]
    fn the_running_gauge_holds_the_start_until_the_run_ends() {
        let m = Metrics::new();
        let gauge = || m.task_running_since.with_label_values(&["expire"]).get();
        {
            let _run = m.running(Task::Expire.name());
            assert!((gauge() - Utc::now().timestamp() as f64).abs() < 5.0, "{}", gauge());
        }
        assert_eq!(gauge(), 0.0);
    }

    #[test]
    fn the_schedule_period_is_the_longest_interval_between_two_runs() {
        let period = |s: &str| longest_interval(&s.parse::<Schedule>().unwrap()).as_secs();
        assert_eq!(period("* * * * * *"), 1);
        assert_eq!(period("* * * * *"), 60);
        assert_eq!(period("*/7 * * * *"), 7 * 60);
        assert_eq!(period("16 * * * *"), 3600);
        assert_eq!(period("0 3 * * 1-5"), 3 * 86_400);
        assert!((28 * 86_400..=31 * 86_400).contains(&period("0 0 1 * *")), "{}", period("0 0 1 * *"));
    }
}
