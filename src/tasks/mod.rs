//! The housekeeping pipeline (SPEC §4): unlock, unknown, expire, delete-objects, stale-uploads.
//!
//! Each task is a [`BatchTask`]: it opens a run, plans (a dry run) or takes one step at a time,
//! each step one batch in one transaction. The [`runner`] owns everything the tasks share: the
//! advisory lock (except delete-objects, which shares work through row leases), the run record
//! in `housekeep.runs`, the time budget, shutdown, progress, metrics, audit flushing and the
//! backlog gauges. `housekeep run`, `worker --once` and the scheduler all go through [`run`].
//! What each task is — name, lock, configuration and defaults — is in [`crate::registry`].
//!
//! Dependencies point one way: the tasks use `runner`, `outcome`, `context` and `moved`; the
//! runner knows no task; only [`run`], here, names each task's engine.

pub mod backlog;
pub mod context;
pub mod delete_objects;
pub mod expire;
pub(crate) mod moved;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod stale_uploads;
pub mod stats;
pub mod unknown;
pub mod unlock;

pub use crate::registry::Task;
pub use backlog::refresh as refresh_backlog;
pub use context::Context;
pub use outcome::{Outcome, Stopped};
pub use stats::TaskStats;
pub use report::Report;
pub use runner::{permitted, BatchTask, Next, Run, RunOptions, Step};

pub use delete_objects::{DeleteObjectsPlan, DeleteObjectsStats};
pub use expire::{ExpirePlan, ExpireStats};
pub use stale_uploads::{StaleUploadsPlan, StaleUploadsStats};
pub use unknown::{UnknownPlan, UnknownStats};
pub use unlock::{UnlockPlan, UnlockStats};

use crate::error::Result;

/// Run one task now, on the batch runner ([`runner::run_job`]).
pub async fn run(ctx: &Context, task: Task, opts: RunOptions) -> Result<Report> {
    match task {
        Task::Unlock => runner::run_job::<unlock::Unlock>(ctx, task.into(), (), opts).await,
        Task::Unknown => runner::run_job::<unknown::Unknown>(ctx, task.into(), (), opts).await,
        Task::Expire => runner::run_job::<expire::Expire>(ctx, task.into(), (), opts).await,
        Task::DeleteObjects => runner::run_job::<delete_objects::DeleteObjects>(ctx, task.into(), (), opts).await,
        Task::StaleUploads => runner::run_job::<stale_uploads::StaleUploads>(ctx, task.into(), (), opts).await,
    }
}
