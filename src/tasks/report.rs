//! What a run did: its outcome, why it stopped, and its stats, typed by the task that made them.

use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::outcome::{Outcome, Stopped};
use super::stats::AnyStats;
use crate::registry::Job;

/// What a run did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The task or action that ran.
    pub task: Job,
    pub run_id: Option<i64>,
    pub dry_run: bool,
    pub outcome: Outcome,
    /// The task's stats (`ExpireStats`, …) or, for a dry run, its plan (`ExpirePlan`, …); None
    /// when the run did not start (another run holds the lock).
    #[serde(serialize_with = "stats_json")]
    pub stats: Option<Arc<dyn AnyStats>>,
    pub seconds: f64,
    /// Why the run stopped.
    pub stopped: Stopped,
}

fn stats_json<S: Serializer>(stats: &Option<Arc<dyn AnyStats>>, s: S) -> Result<S::Ok, S::Error> {
    stats.as_ref().map(|x| x.to_json()).serialize(s)
}

impl Report {
    pub(crate) fn new(task: Job, dry_run: bool) -> Report {
        Report { task, run_id: None, dry_run, outcome: Outcome::Success, stats: None, seconds: 0.0, stopped: Stopped::Done }
    }

    /// The stats as the type the task keeps them in, if they are of that type.
    pub fn stats_as<S: 'static>(&self) -> Option<&S> {
        self.stats.as_deref().and_then(|s| s.as_any().downcast_ref::<S>())
    }

    /// The stats as the type the task keeps them in: `report.stats::<ExpireStats>().expired`.
    /// Panics when the run was of another task or kind (a dry run holds its plan type).
    pub fn stats<S: 'static>(&self) -> &S {
        self.stats_as::<S>()
            .unwrap_or_else(|| panic!("the {} report holds {:?}, not {}", self.task, self.stats, std::any::type_name::<S>()))
    }

    /// The counts as (name, value) pairs, by name.
    pub fn counts(&self) -> Vec<(String, i64)> {
        let mut counts: Vec<(String, i64)> = match self.stats.as_ref().map(|s| s.to_json()) {
            Some(serde_json::Value::Object(m)) => m.into_iter().map(|(k, v)| (k, v.as_i64().unwrap_or(0))).collect(),
            _ => Vec::new(),
        };
        counts.sort();
        counts
    }

    /// One line: `expire: done (expired=3 expired_bytes=300) in 0.12s`.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self.counts().iter().map(|(k, v)| format!("{k}={v}")).collect();
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
