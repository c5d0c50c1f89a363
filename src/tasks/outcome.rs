//! What a run's steps report: the outcome of a run, why it stopped, and the stats each task adds
//! up batch by batch. A leaf of the pipeline: every task and the runner use it.

use serde::Serialize;

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

    /// In words, for a summary line.
    pub fn describe(self) -> &'static str {
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

/// A task's stats or plan, whatever its type: what a [`crate::tasks::Report`] holds.
pub trait AnyStats: std::fmt::Debug + Send + Sync + 'static {
    /// The fields as JSON (an object of counts).
    fn to_json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: Serialize + std::fmt::Debug + Send + Sync + 'static> AnyStats for T {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
