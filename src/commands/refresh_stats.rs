//! `housekeep refresh-stats --filename FILE [--dry-run]`: recompute `build_artifacts_size` of the
//! projects listed in FILE (CSV, header `PROJECT_ID`), each swapped atomically. The whole file is
//! checked before anything changes. Refused on a live GitLab database, where pending increments
//! wait in Redis and GitLab's own rake task must do it.

use std::path::PathBuf;

use clap::Args;

use crate::actions::refresh_stats::{read_project_ids, RefreshStats, RefreshStatsPlan};
use crate::config::Config;
use crate::db::migrate::Mode;
use crate::error::{Error, Result};
use crate::registry::Action;
use crate::tasks::runner::{run_job, RunOptions};

#[derive(Debug, Args)]
pub struct RefreshStatsArgs {
    /// CSV of project ids, with the header PROJECT_ID
    #[arg(long, value_name = "FILE")]
    pub filename: PathBuf,
    /// Say how many values are wrong; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(a: RefreshStatsArgs, config: &Config) -> Result<()> {
    let ids = read_project_ids(&a.filename)?;
    let ctx = super::context(config).await?;
    if crate::db::migrate::mode(&**ctx.pool.get().await?).await? == Mode::Gitlab {
        return Err(Error::Input(
            "refresh-stats on a live GitLab database: GitLab keeps pending increments of build_artifacts_size in Redis, which \
             housekeep does not read; run GitLab's gitlab:refresh_project_statistics_build_artifacts_size rake task instead"
                .into(),
        ));
    }
    let opts = RunOptions { dry_run: a.dry_run, progress: super::progress_bar(ids.len() as u64, "{bar:40} {pos}/{len} projects"), ..Default::default() };
    let progress = opts.progress.clone();
    let report = run_job::<RefreshStats>(&ctx, Action::RefreshStats.into(), ids, opts).await?;
    super::finish_progress(progress);
    match report.stats_as::<RefreshStatsPlan>() {
        Some(p) => println!(
            "refresh-stats (dry run): {} projects, {} with a wrong build_artifacts_size, {} without statistics",
            p.projects, p.would_change, p.without_statistics
        ),
        None => println!("{}", report.summary()),
    }
    super::outcome_to_result(&report)
}
