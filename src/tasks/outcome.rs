//! How a run ended and why it stopped. A leaf: the metrics, the runner and every task use it.

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
