//! `housekeep expire-project-artifacts --project P [--dry-run]`: expire a project's deletable
//! artifacts now (everything except traces and the artifacts of still-locked pipelines), as
//! GitLab's `DELETE /projects/:id/artifacts` does; the next expire run queues their files.

use clap::Args;

use crate::actions::expire_project::ExpireProject;
use crate::config::Config;
use crate::error::Result;
use crate::registry::Action;
use crate::tasks::runner::{RunOptions, run_job};

#[derive(Debug, Args)]
pub struct ExpireProjectArgs {
    /// The project: its id or its full path (group/project)
    #[arg(long, value_name = "P")]
    pub project: String,
    /// Report what would expire; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(a: ExpireProjectArgs, config: &Config) -> Result<()> {
    let ctx = super::context(config).await?;
    let project_id = crate::db::project::resolve(&**ctx.pool.get().await?, &a.project).await?;
    let opts = RunOptions {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let report = run_job::<ExpireProject>(&ctx, Action::ExpireProjectArtifacts.into(), project_id, opts).await?;
    println!(
        "{}{}",
        report.summary(),
        if a.dry_run {
            ""
        } else {
            "; the next expire run queues their files"
        }
    );
    super::outcome_to_result(&report)
}
