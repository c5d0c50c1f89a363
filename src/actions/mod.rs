//! One-off bulk actions (SPEC §6), the work administrators otherwise do in a Rails console: each
//! is a [`crate::tasks::BatchTask`] on the batch runner, so it gets the advisory lock, the run
//! record, shutdown, progress, audit, metrics and resumption (every batch commits; a second run
//! continues) from [`crate::tasks::runner::run_job`]. Files never go inline: they are queued in
//! `ci_deleted_objects`, as GitLab's own destroy does, for `delete-objects` to remove.
//! What each action is — name, lock, batch size — is in [`crate::registry::Action`].

pub mod delete_old;
pub mod delete_old_pipelines;
pub mod expire_project;
pub mod job;
pub mod refresh_stats;
