//! `housekeep run TASK`: run one task now (or with `--dry-run`, report what it would do) and
//! print its summary line.

use clap::Args;

use crate::config::Config;
use crate::error::Result;
use crate::tasks::{RunOptions, Task};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task to run
    #[arg(value_enum)]
    pub task: Task,
    /// Report what the task would do; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(a: RunArgs, config: &Config) -> Result<()> {
    let ctx = super::context(config).await?;
    let report = crate::tasks::run(&ctx, a.task, RunOptions { dry_run: a.dry_run, ..Default::default() }).await?;
    println!("{}", report.summary());
    super::outcome_to_result(&report)
}
