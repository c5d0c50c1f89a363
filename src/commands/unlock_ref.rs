//! `housekeep unlock-ref`: queue every locked pipeline of a deleted branch or tag for unlocking;
//! the unlock task drains the queue. Refused where the unlock task is not permitted (a live
//! GitLab database without `unlock` in `gitlab_tasks`).

use clap::Args;

use crate::config::Config;
use crate::error::Result;
use crate::tasks::Task;

#[derive(Debug, Args)]
pub struct UnlockRefArgs {
    /// The project: its id or its full path (group/project)
    #[arg(long, value_name = "P")]
    pub project: String,
    /// The full ref: refs/heads/NAME for a branch, refs/tags/NAME for a tag
    #[arg(long = "ref", value_name = "REF")]
    pub ref_path: String,
}

pub async fn run(a: UnlockRefArgs, config: &Config) -> Result<()> {
    let client = super::connect(config).await?;
    let mode = crate::db::require_schema(&client).await?;
    crate::tasks::permitted(config, mode, Task::Unlock)?;
    let project = crate::db::project::resolve(&client, &a.project).await?;
    let s = crate::tasks::unlock::enqueue_ref(&client, project, &a.ref_path).await?;
    println!(
        "unlock-ref: {} pipelines of {} queued for unlocking ({} already queued); the unlock task drains them",
        s.enqueued, a.ref_path, s.already_queued
    );
    Ok(())
}
