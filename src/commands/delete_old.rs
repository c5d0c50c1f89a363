//! `housekeep delete-old artifacts | jobs | pipelines --older-than DUR [--project P] [--dry-run]
//! [--yes]`: delete the artifacts of jobs finished before DUR ago, erase those jobs, or delete the
//! pipelines finished before then, through the deletion queue. Across the whole instance it asks
//! for confirmation on a terminal, and needs `--yes` otherwise.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, ValueEnum};

use crate::actions::delete_old::{DeleteOld, DeleteOldArgs, DeleteOldPlan, Kind};
use crate::actions::delete_old_pipelines::{DeleteOldPipelines, DeleteOldPipelinesArgs, DeleteOldPipelinesPlan};
use crate::config::Config;
use crate::duration::HumanDuration;
use crate::error::{Error, Result};
use crate::registry::Action;
use crate::tasks::context::Context;
use crate::tasks::report::Report;
use crate::tasks::runner::{BatchTask, RunOptions, run_job};

/// What `delete-old` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// The artifacts of old jobs (not their logs).
    Artifacts,
    /// Old jobs: their artifacts and logs; the jobs are marked erased.
    Jobs,
    /// Old pipelines: their jobs, the jobs' artifacts and logs, and the pipelines' own artifacts.
    Pipelines,
}

#[derive(Debug, Args)]
pub struct DeleteOldCliArgs {
    /// What to delete: the artifacts of old jobs (logs aside), the jobs' artifacts and logs (the
    /// jobs are marked erased), or whole pipelines with their jobs and files
    #[arg(value_enum)]
    pub kind: What,
    /// Jobs (or pipelines) finished more than this long ago (30d, 6m, 1y)
    #[arg(long, value_name = "DUR")]
    pub older_than: HumanDuration,
    /// Only this project (its id or full path); without it, the whole instance
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// Report what would be deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed for the whole instance when not on a terminal)
    #[arg(long)]
    pub yes: bool,
}

/// What the command needs from a plan: what it says, and how many items the bar counts.
trait Described {
    fn describe(&self, kind: What) -> String;
    fn items(&self, kind: What) -> i64;
}

impl Described for DeleteOldPlan {
    fn describe(&self, kind: What) -> String {
        let jobs = if kind == What::Jobs { format!("erase {} jobs, ", self.jobs) } else { String::new() };
        format!("{jobs}{} artifacts ({} bytes) of jobs", self.would_delete, self.would_delete_bytes)
    }
    fn items(&self, kind: What) -> i64 {
        if kind == What::Jobs { self.jobs } else { self.would_delete }
    }
}

impl Described for DeleteOldPipelinesPlan {
    fn describe(&self, _: What) -> String {
        format!(
            "{} pipelines with {} jobs, {} job artifacts ({} bytes) and {} pipeline artifacts ({} bytes), of pipelines",
            self.pipelines, self.jobs, self.would_delete, self.would_delete_bytes, self.pipeline_artifacts, self.pipeline_artifacts_bytes
        )
    }
    fn items(&self, _: What) -> i64 {
        self.pipelines
    }
}

pub async fn run(a: DeleteOldCliArgs, config: &Config) -> Result<()> {
    if a.older_than.0.is_zero() {
        return Err(Error::Input("--older-than must be longer than 0s".into()));
    }
    let ctx = super::context(config).await?;
    let project_id = match &a.project {
        Some(p) => Some(crate::db::project::resolve(&**ctx.pool.get().await?, p).await?),
        None => None,
    };
    let older_than_secs = a.older_than.0.as_secs_f64();
    let report = match a.kind {
        What::Artifacts | What::Jobs => {
            let (kind, action) = match a.kind {
                What::Jobs => (Kind::Jobs, Action::DeleteOldJobs),
                _ => (Kind::Artifacts, Action::DeleteOldArtifacts),
            };
            let args = DeleteOldArgs { kind, older_than_secs, project_id };
            confirm_and_run::<DeleteOld>(&ctx, &a, action, args).await?
        }
        What::Pipelines => {
            let args = DeleteOldPipelinesArgs { older_than_secs, project_id };
            confirm_and_run::<DeleteOldPipelines>(&ctx, &a, Action::DeleteOldPipelines, args).await?
        }
    };
    match report {
        Some(report) => {
            println!("{}; the files go with the next delete-objects run", report.summary());
            super::outcome_to_result(&report)
        }
        None => Ok(()),
    }
}

/// Plan; print the plan of a dry run, or ask (for the whole instance) and run with a progress
/// bar. None when nothing ran.
async fn confirm_and_run<T>(ctx: &Context, a: &DeleteOldCliArgs, action: Action, args: T::Args) -> Result<Option<Report>>
where
    T: BatchTask,
    T::Plan: Described + Copy,
    T::Args: Copy,
{
    let dry = RunOptions { dry_run: true, ..Default::default() };
    let plan = *run_job::<T>(ctx, action.into(), args, dry).await?.stats::<T::Plan>();
    let scope = a.project.as_deref().map_or("every project".to_string(), |p| format!("project {p}"));
    let what = format!(
        "{} finished more than {} ago, in {scope}",
        plan.describe(a.kind),
        humantime::format_duration(a.older_than.0)
    );
    if a.dry_run {
        println!("delete-old (dry run): would delete {what}");
        return Ok(None);
    }
    if a.project.is_none() && !a.yes && !confirm(&what)? {
        println!("delete-old: nothing deleted");
        return Ok(None);
    }
    let progress = super::progress_bar(plan.items(a.kind).max(0) as u64, "{bar:40} {pos}/{len}  {per_sec}  eta {eta}");
    let options = RunOptions { progress: progress.clone(), ..Default::default() };
    let report = run_job::<T>(ctx, action.into(), args, options).await?;
    super::finish_progress(progress);
    Ok(Some(report))
}

/// Ask on the terminal; without one, refuse (exit 2) and say `--yes` is needed.
fn confirm(what: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Input(format!(
            "delete-old without --project acts on the whole instance ({what}); run it again with --yes to confirm"
        )));
    }
    eprint!("delete-old: {what}. Go on? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::other(format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}
