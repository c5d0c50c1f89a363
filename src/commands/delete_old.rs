//! `housekeep delete-old artifacts | jobs --older-than DUR [--project P] [--dry-run] [--yes]`:
//! delete the artifacts of jobs finished before DUR ago, or erase those jobs, through the
//! deletion queue. Across the whole instance it asks for confirmation on a terminal, and needs
//! `--yes` otherwise.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use crate::actions::delete_old::{DeleteOld, DeleteOldArgs, DeleteOldPlan, Kind};
use crate::config::Config;
use crate::duration::HumanDuration;
use crate::error::{Error, Result};
use crate::registry::Action;
use crate::tasks::runner::{RunOptions, run_job};

#[derive(Debug, Args)]
pub struct DeleteOldCliArgs {
    /// What to delete: the artifacts of old jobs (logs aside), or the jobs' artifacts and logs
    /// (the jobs are marked erased)
    #[arg(value_enum)]
    pub kind: Kind,
    /// Jobs finished more than this long ago (30d, 6m, 1y)
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

pub async fn run(a: DeleteOldCliArgs, config: &Config) -> Result<()> {
    if a.older_than.0.is_zero() {
        return Err(Error::Input("--older-than must be longer than 0s".into()));
    }
    let ctx = super::context(config).await?;
    let project_id = match &a.project {
        Some(p) => Some(crate::db::project::resolve(&**ctx.pool.get().await?, p).await?),
        None => None,
    };
    let action = match a.kind {
        Kind::Artifacts => Action::DeleteOldArtifacts,
        Kind::Jobs => Action::DeleteOldJobs,
    };
    let args = DeleteOldArgs {
        kind: a.kind,
        older_than_secs: a.older_than.0.as_secs_f64(),
        project_id,
    };
    let plan = run_job::<DeleteOld>(
        &ctx,
        action.into(),
        args,
        RunOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await?;
    let plan = *plan.stats::<DeleteOldPlan>();
    let what = describe(a.kind, &plan, a.project.as_deref(), &a.older_than);
    if a.dry_run {
        println!("delete-old (dry run): would delete {what}");
        return Ok(());
    }
    if project_id.is_none() && !a.yes && !confirm(&what)? {
        println!("delete-old: nothing deleted");
        return Ok(());
    }
    let len = if a.kind == Kind::Jobs { plan.jobs } else { plan.would_delete };
    let progress = super::progress_bar(len.max(0) as u64, "{bar:40} {pos}/{len}  {per_sec}  eta {eta}");
    let report = run_job::<DeleteOld>(
        &ctx,
        action.into(),
        args,
        RunOptions {
            progress: progress.clone(),
            ..Default::default()
        },
    )
    .await?;
    super::finish_progress(progress);
    println!("{}; the files go with the next delete-objects run", report.summary());
    super::outcome_to_result(&report)
}

fn describe(kind: Kind, plan: &DeleteOldPlan, project: Option<&str>, older_than: &HumanDuration) -> String {
    let scope = project.map_or("every project".to_string(), |p| format!("project {p}"));
    let jobs = if kind == Kind::Jobs {
        format!("erase {} jobs, ", plan.jobs)
    } else {
        String::new()
    };
    format!(
        "{jobs}{} artifacts ({} bytes) of jobs finished more than {} ago, in {scope}",
        plan.would_delete,
        plan.would_delete_bytes,
        humantime::format_duration(older_than.0)
    )
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
