//! What a run did: its outcome, why it stopped, and its typed stats.

use serde::Serialize;

use crate::registry::Task;

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
    /// The run stopped on an error (the report is replaced by the error; only metrics and
    /// `housekeep.runs` record this outcome).
    Failure,
}

impl Outcome {
    /// Every outcome, for the metrics' series that exist from the start.
    pub const ALL: [Outcome; 5] = [Outcome::Success, Outcome::Skipped, Outcome::Partial, Outcome::Interrupted, Outcome::Failure];

    /// The `outcome` label of the metrics and of `housekeep.runs`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Skipped => "skipped",
            Outcome::Partial => "partial",
            Outcome::Interrupted => "interrupted",
            Outcome::Failure => "failure",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Outcome::Success => "done",
            Outcome::Skipped => "skipped, another run holds the lock",
            Outcome::Partial => "finished with failures",
            Outcome::Interrupted => "interrupted",
            Outcome::Failure => "failed",
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

/// The stats of one task's runs (or of its dry runs): added up batch by batch, counted into the
/// metrics, shown as `key=value` pairs (the field names) and kept in `housekeep.runs.stats`.
pub trait TaskStats: Serialize + Default + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Add a batch's stats to the run's.
    fn add(&mut self, batch: &Self);
    /// Count a batch's stats into the metrics.
    fn record(&self, _metrics: &crate::metrics::Metrics) {}
    /// Items handled, for a progress bar.
    fn items(&self) -> u64 {
        0
    }
    /// Items that failed and will be retried: a run with any is `partial`.
    fn failed(&self) -> i64 {
        0
    }
}

/// Implements [`TaskStats::add`] by adding every field.
macro_rules! add_fields {
    ($($field:ident),+) => {
        fn add(&mut self, b: &Self) {
            $(self.$field += b.$field;)+
        }
    };
}
pub(crate) use add_fields;

/// Declares [`Stats`], one variant per stats type, and the conversions between them.
macro_rules! stats_kinds {
    ($($variant:ident($ty:path)),+ $(,)?) => {
        /// The stats of a run, whichever task it was.
        #[derive(Debug, Clone, Serialize)]
        #[serde(untagged)]
        pub enum Stats {
            /// The run did not start (another run holds the lock).
            None,
            $($variant($ty)),+
        }

        $(
            impl From<$ty> for Stats {
                fn from(s: $ty) -> Stats {
                    Stats::$variant(s)
                }
            }
            impl StatsOf for $ty {
                fn of(s: &Stats) -> Option<&Self> {
                    match s {
                        Stats::$variant(x) => Some(x),
                        _ => None,
                    }
                }
            }
        )+
    };
}

stats_kinds! {
    Unlock(super::unlock::UnlockStats),
    UnlockPlan(super::unlock::UnlockPlan),
    Unknown(super::unknown::UnknownStats),
    UnknownPlan(super::unknown::UnknownPlan),
    Expire(super::expire::ExpireStats),
    ExpirePlan(super::expire::ExpirePlan),
    DeleteObjects(super::delete_objects::DeleteObjectsStats),
    DeleteObjectsPlan(super::delete_objects::DeleteObjectsPlan),
    StaleUploads(super::stale_uploads::StaleUploadsStats),
    StaleUploadsPlan(super::stale_uploads::StaleUploadsPlan),
}

/// A stats type that a [`Stats`] may hold.
pub trait StatsOf: Sized {
    fn of(s: &Stats) -> Option<&Self>;
}

impl Stats {
    /// The counts as (name, value) pairs, by name.
    pub fn counts(&self) -> Vec<(String, i64)> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => {
                let mut counts: Vec<(String, i64)> = m.into_iter().map(|(k, v)| (k, v.as_i64().unwrap_or(0))).collect();
                counts.sort();
                counts
            }
            _ => Vec::new(),
        }
    }
}

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub task: Task,
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub stats: Stats,
    pub seconds: f64,
    /// Why the run stopped.
    pub stopped: Stopped,
}

impl Report {
    pub(crate) fn new(task: Task, dry_run: bool) -> Report {
        Report { task, run_id: None, dry_run, outcome: Outcome::Success, stats: Stats::None, seconds: 0.0, stopped: Stopped::Done }
    }

    /// The stats as the type the task keeps them in: `report.stats::<ExpireStats>().expired`.
    /// Panics when the run was of another task or kind (a dry run keeps its plan type).
    pub fn stats<S: StatsOf>(&self) -> &S {
        S::of(&self.stats).unwrap_or_else(|| panic!("the {} report holds {:?}, not {}", self.task, self.stats, std::any::type_name::<S>()))
    }

    /// One line: `expire: done (expired=3 expired_bytes=300) in 0.12s`.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self.stats.counts().iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{}{}: {} ({}) in {:.2}s{}",
            self.task,
            if self.dry_run { " (dry run)" } else { "" },
            self.outcome.describe(),
            if counts.is_empty() { "nothing to do".to_string() } else { counts.join(" ") },
            self.seconds,
            if self.stopped == Stopped::Budget { ", time budget spent" } else { "" },
        )
    }
}
