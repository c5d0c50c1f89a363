//! What a task's steps report: the stats each task adds up batch by batch and counts into the
//! metrics.

use serde::Serialize;

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
