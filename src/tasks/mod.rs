//! The housekeeping pipeline (SPEC §4): unlock, unknown, expire, delete-objects, stale-uploads.
//!
//! Each task is a [`BatchTask`]: it opens a run, plans (a dry run) or takes one step at a time,
//! each step one batch in one transaction. The [`runner`] owns everything the tasks share: the
//! advisory lock (except delete-objects, which shares work through row leases), the run record
//! in `housekeep.runs`, the time budget, shutdown, progress, metrics, audit flushing and the
//! backlog gauges. `housekeep run`, `worker --once` and the scheduler all go through
//! [`runner::run`]. What each task is — name, lock, configuration and defaults — is in
//! [`crate::registry`].

pub mod backlog;
pub mod delete_objects;
pub mod expire;
pub(crate) mod moved;
pub mod report;
pub mod runner;
pub mod stale_uploads;
pub mod unknown;
pub mod unlock;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Stores;

pub use crate::registry::Task;
pub use backlog::refresh as refresh_backlog;
pub(crate) use moved::MoveSql;
pub use report::{Outcome, Report, Stats, StatsOf, Stopped, TaskStats};
pub use runner::{permitted, run, BatchTask, Next, Run, RunOptions, Step};

pub use delete_objects::{DeleteObjectsPlan, DeleteObjectsStats};
pub use expire::{ExpirePlan, ExpireStats};
pub use stale_uploads::{StaleUploadsPlan, StaleUploadsStats};
pub use unknown::{UnknownPlan, UnknownStats};
pub use unlock::{UnlockPlan, UnlockStats};

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
