//! Prometheus metrics (SPEC §8), prefix `housekeep_`. One registry per process, shared by every
//! task run; the worker serves it at /metrics.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub task_runs: IntCounterVec,
    pub task_last_success: GaugeVec,
    pub task_duration: HistogramVec,
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
}

/// Age buckets of deleted objects (time since they were queued), as GitLab's
/// `ci_deleted_objects_total{age_bucket}`.
pub const AGE_BUCKETS: [(i64, &str); 6] =
    [(3600, "0-1h"), (6 * 3600, "1-6h"), (12 * 3600, "6-12h"), (24 * 3600, "12-24h"), (168 * 3600, "24-168h"), (i64::MAX, "168h+")];

pub fn age_bucket(age_secs: i64) -> &'static str {
    AGE_BUCKETS.iter().find(|(limit, _)| age_secs < *limit).map(|(_, l)| *l).unwrap_or("168h+")
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
            task_runs: reg!(IntCounterVec::new(
                Opts::new("housekeep_task_runs_total", "Task runs by task and outcome (success, failure, partial, interrupted, skipped)"),
                &["task", "outcome"]
            )
            .unwrap()),
            task_last_success: reg!(GaugeVec::new(
                Opts::new("housekeep_task_last_success_timestamp_seconds", "Unix time of the last successful run of each task"),
                &["task"]
            )
            .unwrap()),
            task_duration: reg!(HistogramVec::new(
                HistogramOpts::new("housekeep_task_duration_seconds", "Duration of task runs")
                    .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
                &["task"]
            )
            .unwrap()),
            artifacts_expired: reg!(counter("artifacts_expired_total", "Expired artifact rows moved to the deletion queue")),
            artifacts_expired_bytes: reg!(counter("artifacts_expired_bytes_total", "Bytes of expired artifact rows moved to the deletion queue")),
            unknown_locked: reg!(counter("unknown_artifacts_locked_total", "Unknown-lock rows set to locked because their pipeline is locked")),
            unknown_removed: reg!(counter("unknown_artifacts_removed_total", "Unknown-lock rows destroyed because their pipeline is unlocked")),
            unknown_removed_bytes: reg!(counter("unknown_artifacts_removed_bytes_total", "Bytes of unknown-lock rows destroyed")),
            pipelines_enqueued: reg!(counter("pipelines_enqueued_for_unlock_total", "Pipelines enqueued for unlocking")),
            pipelines_unlocked: reg!(counter("pipelines_unlocked_total", "Pipelines unlocked")),
            artifacts_unlocked: reg!(counter("artifacts_unlocked_total", "Artifact rows unlocked")),
            objects_deleted: reg!(IntCounterVec::new(
                Opts::new("housekeep_objects_deleted_total", "Objects deleted from the store, by time since queued"),
                &["age_bucket"]
            )
            .unwrap()),
            objects_deleted_bytes: reg!(IntCounterVec::new(
                Opts::new("housekeep_objects_deleted_bytes_total", "Bytes deleted from the store, by time since queued"),
                &["age_bucket"]
            )
            .unwrap()),
            delete_errors: reg!(counter("object_delete_errors_total", "Object deletions that failed and will be retried")),
            stale_uploads_deleted: reg!(counter("stale_uploads_deleted_total", "Stale direct uploads deleted")),
            backlog: reg!(IntGaugeVec::new(
                Opts::new(
                    "housekeep_backlog",
                    "Work waiting, by kind: expired_rows, unknown_rows, queued_objects, ready_objects, unlock_requests"
                ),
                &["kind"]
            )
            .unwrap()),
            build_info: reg!(IntGaugeVec::new(Opts::new("housekeep_build_info", "Build information"), &["version"]).unwrap()),
            up: reg!(IntGauge::new("housekeep_up", "1 while the worker runs").unwrap()),
            registry,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
