//! The subcommands, one file each: its clap arguments and a `run` that calls the engine and
//! prints what the engine returns. This module holds the [`Command`] enum, [`dispatch`], and what
//! the commands share: opening the database and the stores, the context of the pipeline
//! commands, the exit status of a task report, and the progress bar.

pub mod completions;
pub mod config;
pub mod delete_old;
pub mod delete_orphans;
pub mod expedite;
pub mod expire_project_artifacts;
pub mod job_artifacts;
pub mod explain;
pub mod list_orphans;
pub mod migrate;
pub mod orphan_files;
pub mod refresh_stats;
pub mod report;
pub mod run;
pub mod seed;
pub mod status;
pub mod token;
pub mod unlock_ref;
pub mod verify;
pub mod worker;

use std::sync::Arc;

use clap::Subcommand;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Stores;
use crate::tasks::{Context, Outcome, Report};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending schema migrations (idempotent; safe to run from several processes at once)
    Migrate,
    /// Print the effective configuration, secrets redacted
    Config,
    /// Fill the database (and the store) with a realistic, deterministic demo dataset
    Seed(seed::SeedArgs),
    /// Summarise artifacts by state, the deletion queue, uploads and, with --scan-store, orphans
    Status(status::StatusArgs),
    /// Run the housekeeping tasks on their schedules, with /metrics, /healthz and /readyz
    Worker(worker::WorkerArgs),
    /// Run one task now
    Run(run::RunArgs),
    /// Make every queued object ready now and drain the deletion queue
    Expedite(expedite::ExpediteArgs),
    /// List artifact rows whose object is missing, as CSV: artifact_id,project_id,job_id,object_path
    Verify,
    /// List orphan @final objects into a resumable CSV manifest (object_path,object_size)
    ListOrphans(list_orphans::ListOrphansArgs),
    /// Delete the objects of a list-orphans manifest, re-checking each one first
    DeleteOrphans(delete_orphans::DeleteOrphansArgs),
    /// Find (and with --dry-run false remove) artifact directories without a row on a local-disk store
    OrphanFiles(orphan_files::OrphanFilesArgs),
    /// Queue every locked pipeline of a deleted branch or tag for unlocking (the unlock task drains them)
    UnlockRef(unlock_ref::UnlockRefArgs),
    /// Delete the artifacts of jobs finished before a date, erase those jobs, or delete old pipelines (through the deletion queue)
    DeleteOld(delete_old::DeleteOldCliArgs),
    /// Keep a job's artifacts: they never expire
    Keep(job_artifacts::JobArgs),
    /// Delete a job's artifacts now (traces aside), whatever their lock and expiry
    DeleteArtifacts(job_artifacts::JobArgs),
    /// Expire a project's deletable artifacts now (traces and still-locked pipelines aside)
    ExpireProjectArtifacts(expire_project_artifacts::ExpireProjectArgs),
    /// Recompute build_artifacts_size of the projects in a CSV (header PROJECT_ID), each swapped atomically
    RefreshStats(refresh_stats::RefreshStatsArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions(completions::CompletionsArgs),
    /// Print the manual page (roff)
    Man,
    /// Read-only reports: never-expiring, expiring-after, top-projects, largest, artifacts, unknown
    Report(report::ReportArgs),
    /// Why downloading a job's artifacts answers 404, and what to do
    Explain(explain::ExplainArgs),
    /// Create or revoke the Job Artifacts API's tokens (standalone database)
    Token(token::TokenArgs),
}

/// Run one command with the effective configuration.
pub async fn dispatch(command: Command, config: &Config) -> Result<()> {
    match command {
        Command::Migrate => migrate::run(config).await,
        Command::Config => config::run(config),
        Command::Seed(a) => seed::run(a, config).await,
        Command::Status(a) => status::run(a, config).await,
        Command::Worker(a) => worker::run(a, config).await,
        Command::Run(a) => run::run(a, config).await,
        Command::Expedite(a) => expedite::run(a, config).await,
        Command::Verify => verify::run(config).await,
        Command::ListOrphans(a) => list_orphans::run(a, config).await,
        Command::DeleteOrphans(a) => delete_orphans::run(a, config).await,
        Command::OrphanFiles(a) => orphan_files::run(a, config).await,
        Command::UnlockRef(a) => unlock_ref::run(a, config).await,
        Command::DeleteOld(a) => delete_old::run(a, config).await,
        Command::Keep(a) => job_artifacts::keep(a, config).await,
        Command::DeleteArtifacts(a) => job_artifacts::delete_artifacts(a, config).await,
        Command::ExpireProjectArtifacts(a) => expire_project_artifacts::run(a, config).await,
        Command::RefreshStats(a) => refresh_stats::run(a, config).await,
        // Answered before the configuration is read (crate::cli::run).
        Command::Completions(_) | Command::Man => Err(Error::other("completions and man need no configuration")),
        Command::Report(a) => report::run(a, config).await,
        Command::Explain(a) => explain::run(a, config).await,
        Command::Token(a) => token::run(a, config).await,
    }
}

/// One connection to the database, for the commands that are not the pipeline.
pub async fn connect(config: &Config) -> Result<tokio_postgres::Client> {
    crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await
}

/// The stores of the configuration.
pub fn open_stores(config: &Config) -> Result<Stores> {
    Stores::open(
        config.store_url.as_deref(),
        config.local_store_url.as_deref(),
    )
}

/// The stores, then one connection: a bad store URL is reported without waiting on the database.
pub async fn open(config: &Config) -> Result<(Stores, tokio_postgres::Client)> {
    let stores = open_stores(config)?;
    Ok((stores, connect(config).await?))
}

/// The context of the pipeline commands: pool, stores, metrics, and a cancellation token that
/// SIGTERM and SIGINT cancel.
pub async fn context(config: &Config) -> Result<Context> {
    let stores = open_stores(config)?;
    let pool = crate::db::connect(
        config.database_url()?,
        config.db_connect_timeout.0,
        config.db_pool_size,
    )
    .await?;
    crate::db::require_schema(&**pool.get().await?).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the current batch"),
            _ = int.recv() => tracing::info!("SIGINT: finishing the current batch"),
        }
        c.cancel();
    });
    Ok(Context {
        pool,
        stores,
        config: Arc::new(config.clone()),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        cancel,
    })
}

/// The exit status of a task run: a partial run is exit code 3, an interrupted one 130.
pub fn outcome_to_result(report: &Report) -> Result<()> {
    match report.outcome {
        Outcome::Partial => Err(Error::Partial(format!("{}: some items failed and will be retried", report.task))),
        Outcome::Interrupted => Err(Error::Interrupted),
        Outcome::Success | Outcome::Skipped => Ok(()),
        Outcome::Failure => Err(Error::other(format!("{}: the run failed", report.task))),
    }
}

/// A progress bar of `len` steps drawn on stderr, only when stderr is a terminal (never in logs);
/// log lines are written above it until [`finish_progress`].
pub fn progress_bar(len: u64, template: &str) -> Option<indicatif::ProgressBar> {
    std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let p = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            p.set_style(style);
        }
        crate::logging::set_progress_bar(Some(p.clone()));
        p
    })
}

/// Clear the progress bar, if one is drawn, once the lines logged while it was shown are drawn
/// above it.
pub fn finish_progress(bar: Option<indicatif::ProgressBar>) {
    if let Some(p) = bar {
        crate::logging::drain();
        crate::logging::set_progress_bar(None);
        p.finish_and_clear();
    }
}
