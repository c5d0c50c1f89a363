//! `housekeep keep --job ID` and `housekeep delete-artifacts --job ID`: one job's artifacts, as
//! GitLab's Job Artifacts API keeps or deletes them. A job that does not exist (or, for keep,
//! has no artifacts) is refused with exit 2 before anything changes.

use clap::Args;

use crate::actions::job::{DeleteArtifacts, Job, Keep};
use crate::config::Config;
use crate::error::Result;
use crate::registry::Action;
use crate::tasks::runner::{RunOptions, run_job};

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The job's id
    #[arg(long, value_name = "ID")]
    pub job: i64,
    /// Say what would change; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn keep(a: JobArgs, config: &Config) -> Result<()> {
    let ctx = super::context(config).await?;
    let opts = RunOptions {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let report = run_job::<Keep>(&ctx, Action::Keep.into(), a.job, opts).await?;
    if let Some(job) = report.stats_as::<Job>() {
        println!(
            "keep (dry run): would keep the {} artifacts of job {} (project {})",
            job.artifacts, job.id, job.project_id
        );
    } else {
        println!("{}", report.summary());
    }
    super::outcome_to_result(&report)
}

pub async fn delete_artifacts(a: JobArgs, config: &Config) -> Result<()> {
    let ctx = super::context(config).await?;
    let opts = RunOptions {
        dry_run: a.dry_run,
        ..Default::default()
    };
    let report = run_job::<DeleteArtifacts>(&ctx, Action::DeleteJobArtifacts.into(), a.job, opts).await?;
    if let Some(job) = report.stats_as::<Job>() {
        println!(
            "delete-artifacts (dry run): would delete the {} artifacts of job {} (project {})",
            job.artifacts, job.id, job.project_id
        );
    } else {
        println!("{}; the files go with the next delete-objects run", report.summary());
    }
    super::outcome_to_result(&report)
}
