//! The command line: one clap definition, then dispatch into the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, FlagOverride, Loaded};
use crate::error::{Error, Result};
use crate::store::Stores;
use crate::tasks::{Context, Outcome, RunOptions, Task};

#[derive(Debug, Parser)]
#[command(
    name = "housekeep",
    version,
    about = "Artifact housekeeping for CI job artifacts in PostgreSQL and object storage",
    long_about = "Artifact housekeeping for CI job artifacts in PostgreSQL and object storage.\n\n\
        Configuration comes from a TOML file (--config or HOUSEKEEP_CONFIG), overridden by \
        HOUSEKEEP_* environment variables, overridden by flags. `housekeep config` shows the result.\n\n\
        Exit codes: 0 success, 1 failure, 2 bad usage, configuration or input (nothing changed), \
        3 finished with some items failed, 130 interrupted (safe to run again)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML) [env: HOUSEKEEP_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://user:password@host/db [env: HOUSEKEEP_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Store of remote objects: file:///dir, s3://bucket[/prefix], gs://…, az://… [env: HOUSEKEEP_STORE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub store_url: Option<String>,
    /// Store of local objects (file_store = 1), a file:// URL [env: HOUSEKEEP_LOCAL_STORE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub local_store_url: Option<String>,
    /// Log format [env: HOUSEKEEP_LOG_FORMAT]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending schema migrations (idempotent; safe to run from several processes at once)
    Migrate,
    /// Print the effective configuration, secrets redacted
    Config,
    /// Fill the database (and the store) with a realistic, deterministic demo dataset
    Seed(SeedArgs),
    /// Summarise artifacts by state, the deletion queue, uploads and, with --scan-store, orphans
    Status(StatusArgs),
    /// Run the housekeeping tasks on their schedules, with /metrics, /healthz and /readyz
    Worker(WorkerArgs),
    /// Run one task now
    Run(RunArgs),
    /// Make every queued object ready now and drain the deletion queue
    Expedite(ExpediteArgs),
    /// List artifact rows whose object is missing, as CSV: artifact_id,project_id,job_id,object_path
    Verify,
    /// List orphan @final objects into a resumable CSV manifest (object_path,object_size)
    ListOrphans(ListOrphansArgs),
    /// Delete the objects of a list-orphans manifest, re-checking each one first
    DeleteOrphans(DeleteOrphansArgs),
    /// Find (and with --dry-run false remove) artifact directories without a row on a local-disk store
    OrphanFiles(OrphanFilesArgs),
    /// Queue every locked pipeline of a deleted branch or tag for unlocking (the unlock task drains them)
    UnlockRef(UnlockRefArgs),
}

#[derive(Debug, Args)]
pub struct UnlockRefArgs {
    /// The project: its id or its full path (group/project)
    #[arg(long, value_name = "P")]
    pub project: String,
    /// The full ref: refs/heads/NAME for a branch, refs/tags/NAME for a tag
    #[arg(long = "ref", value_name = "REF")]
    pub ref_path: String,
}

#[derive(Debug, Args)]
pub struct OrphanFilesArgs {
    /// Only report; pass --dry-run false to remove
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "true|false")]
    pub dry_run: bool,
    /// Remove at most N orphan directories
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    pub limit: Option<u64>,
    /// Leave directories modified more recently than this alone
    #[arg(long, default_value = "6h", value_name = "DUR")]
    pub min_age: crate::duration::HumanDuration,
}

#[derive(Debug, Args)]
pub struct ListOrphansArgs {
    /// Manifest to append to; progress is kept beside it (FILE.progress)
    #[arg(long, value_name = "FILE")]
    pub filename: PathBuf,
    /// Start over with an empty FILE
    #[arg(long)]
    pub force_restart: bool,
    /// Only objects older than this are orphans (uploads in flight are younger)
    #[arg(long, default_value = "6h", value_name = "DUR")]
    pub min_age: crate::duration::HumanDuration,
    /// List part I of N of the key space (by leading hash directory), for parallel listing
    #[arg(long, default_value = "0/1", value_name = "I/N")]
    pub shard: crate::orphans::list::Shard,
}

#[derive(Debug, Args)]
pub struct DeleteOrphansArgs {
    /// Manifest written by list-orphans
    #[arg(long, value_name = "FILE")]
    pub filename: PathBuf,
    /// Start over from the first line; the deleted_from-- file keeps its lines and is appended to
    #[arg(long)]
    pub force_restart: bool,
    /// Validate and re-check, print what would be deleted and the total bytes; delete nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Run unlock, unknown, expire, delete-objects and stale-uploads once each, in that order, and exit
    #[arg(long)]
    pub once: bool,
    /// HTTP listener address [env: HOUSEKEEP_LISTEN] [default: 127.0.0.1:9718]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task to run
    #[arg(value_enum)]
    pub task: Task,
    /// Report what the task would do; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ExpediteArgs {
    /// Report what would be deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Random seed: the same seed gives the same dataset
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of projects
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub projects: i64,
    /// Number of artifact rows
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    pub artifacts: i64,
    /// Number of orphan objects to plant in the store
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(i64).range(0..=100_000_000))]
    pub orphans: i64,
    /// Write rows only, no objects (for large benchmarks)
    #[arg(long)]
    pub no_objects: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also list the store: orphan @final objects and rows whose object is missing
    #[arg(long)]
    pub scan_store: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn flag_overrides(g: &GlobalArgs, command: &Command) -> Vec<FlagOverride> {
    let mut out = Vec::new();
    let mut add = |key: &'static str, flag: &'static str, v: Option<String>| {
        if let Some(value) = v {
            out.push(FlagOverride { key, value, flag });
        }
    };
    add("database_url", "--database-url", g.database_url.clone());
    if let Command::Worker(w) = command {
        add("listen", "--listen", w.listen.clone());
    }
    add("store_url", "--store-url", g.store_url.clone());
    add("local_store_url", "--local-store-url", g.local_store_url.clone());
    add(
        "log_format",
        "--log-format",
        g.log_format.map(|f| f.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()),
    );
    out
}

/// Load the configuration, start logging and run the command.
pub fn run(cli: Cli) -> Result<()> {
    let loaded = config::load(cli.global.config.as_deref(), &flag_overrides(&cli.global, &cli.command))?;
    let _log_guard = crate::logging::init(loaded.config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::other(format!("cannot start the runtime: {e}")))?;
    rt.block_on(dispatch(cli.command, loaded))
}

/// The context of the pipeline commands: pool, stores, metrics, and a cancellation token that
/// SIGTERM and SIGINT cancel.
async fn context(config: &crate::config::Config) -> Result<Context> {
    let stores = Stores::open(config)?;
    let pool = crate::db::connect(config).await?;
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
        config: std::sync::Arc::new(config.clone()),
        metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
        cancel,
    })
}

fn outcome_to_result(report: &crate::tasks::Report) -> Result<()> {
    match report.outcome {
        Outcome::Partial => Err(Error::Partial(format!("{}: some items failed and will be retried", report.task))),
        Outcome::Interrupted => Err(Error::Interrupted),
        Outcome::Success | Outcome::Skipped => Ok(()),
    }
}

async fn dispatch(command: Command, loaded: Loaded) -> Result<()> {
    let config = &loaded.config;
    match command {
        Command::Worker(w) => {
            let ctx = context(config).await?;
            if w.once {
                let run = crate::worker::run_once(&ctx).await;
                for step in &run.steps {
                    match step {
                        crate::worker::Step::Skipped(task) => {
                            println!("{task}: skipped on a live GitLab database (not in gitlab_tasks)")
                        }
                        crate::worker::Step::Ran(report) => println!("{}", report.summary()),
                    }
                }
                run.result
            } else {
                let listen = config.listen.parse().map_err(|_| Error::config("listen: not an address"))?;
                crate::worker::run_daemon(ctx, listen).await
            }
        }
        Command::Run(a) => {
            let ctx = context(config).await?;
            let report = crate::tasks::run(&ctx, a.task, RunOptions { dry_run: a.dry_run, ..Default::default() }).await?;
            println!("{}", report.summary());
            outcome_to_result(&report)
        }
        Command::Expedite(a) => {
            let ctx = context(config).await?;
            let mut client = ctx.pool.get().await?;
            let standalone = crate::db::migrate::mode(&client).await? == crate::db::migrate::Mode::Standalone;
            let q = crate::tasks::delete_objects::queue_now(&client).await?;
            let n = q.queued;
            if a.dry_run {
                println!(
                    "expedite (dry run): would delete {} queued objects ({} bytes); {} of them leased by a running delete-objects",
                    q.queued, q.bytes, q.leased
                );
                return Ok(());
            }
            let made_ready = crate::tasks::delete_objects::make_ready(&mut client, standalone).await?;
            drop(client);
            tracing::info!(made_ready, queued = n, leased_elsewhere = q.leased, "every queued object not leased by another run is ready now");
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
                let p = indicatif::ProgressBar::new(n as u64);
                p.set_style(
                    indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} objects  {per_sec}  eta {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                p
            });
            let opts = RunOptions {
                dry_run: false,
                time_budget: Some(std::time::Duration::from_secs(100 * 365 * 86_400)),
                progress: progress.clone(),
            };
            let report = crate::tasks::run(&ctx, Task::DeleteObjects, opts).await?;
            if let Some(p) = progress {
                p.finish_and_clear();
            }
            println!("expedite: {}", report.summary());
            outcome_to_result(&report)
        }
        Command::UnlockRef(a) => {
            let client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
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
        Command::Verify => {
            let stores = Stores::open(config)?;
            let client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout());
            let r = crate::orphans::verify::verify(&client, &stores, config.store_concurrency, &mut out).await?;
            eprintln!("verify: checked {} rows, {} objects missing", r.checked, r.missing);
            Ok(())
        }
        Command::ListOrphans(a) => {
            let stores = Stores::open(config)?;
            let client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let opts = crate::orphans::list::ListOptions {
                filename: a.filename,
                force_restart: a.force_restart,
                min_age: a.min_age.0,
                shard: a.shard,
            };
            let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
                let p = indicatif::ProgressBar::new(opts.shard.dirs().len() as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} directories  {msg}") {
                    p.set_style(style);
                }
                p
            });
            let s = crate::orphans::list::list_orphans(&client, &stores.remote, &opts, bar.clone()).await?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            println!(
                "list-orphans: {} @final objects scanned, {} orphans ({} bytes) in {}",
                s.scanned, s.orphans, s.bytes, opts.filename.display()
            );
            Ok(())
        }
        Command::DeleteOrphans(a) => {
            let stores = Stores::open(config)?;
            let client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let opts = crate::orphans::delete::DeleteOptions {
                filename: a.filename,
                force_restart: a.force_restart,
                dry_run: a.dry_run,
                concurrency: config.store_concurrency,
            };
            let s = if opts.dry_run {
                crate::orphans::delete::dry_run(&client, &stores.remote, &opts, |key, size| {
                    println!("would delete {key} ({size} bytes)")
                })
                .await?
            } else {
                crate::orphans::delete::delete_orphans(&client, &stores.remote, &opts).await?
            };
            println!(
                "delete-orphans{}: {} lines, {} {} ({} bytes), skipped {} now referenced, {} already gone, {} size changed, \
                 {} duplicate lines, {} failed",
                if opts.dry_run { " (dry run)" } else { "" },
                s.lines,
                if opts.dry_run { "would delete" } else { "deleted" },
                s.deleted,
                s.deleted_bytes,
                s.skipped_referenced,
                s.skipped_missing,
                s.skipped_size,
                s.duplicates,
                s.failed
            );
            if s.failed > 0 {
                return Err(Error::Partial(format!(
                    "{} objects could not be deleted; run the same command again to retry them",
                    s.failed
                )));
            }
            Ok(())
        }
        Command::OrphanFiles(a) => {
            let stores = Stores::open(config)?;
            let root = stores
                .local
                .local_root()
                .ok_or_else(|| Error::config("orphan-files works on a local-disk store: set local_store_url (or store_url) to a file:// URL"))?
                .to_path_buf();
            let client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let opts = crate::orphans::files::FilesOptions { dry_run: a.dry_run, limit: a.limit, min_age: a.min_age.0 };
            let s = crate::orphans::files::orphan_files(&client, &root, &opts, |path, size| {
                println!("would remove {} ({size} bytes)", path.display())
            })
            .await?;
            println!(
                "orphan-files{}: {} artifact directories, {} {} orphan ({} bytes), {} recent skipped, {} empty directories {}",
                if a.dry_run { " (dry run)" } else { "" },
                s.artifact_dirs,
                if a.dry_run { "found" } else { "removed" },
                s.orphans,
                s.orphan_bytes,
                s.skipped_recent,
                s.empty_dirs,
                if a.dry_run { "found" } else { "removed" },
            );
            Ok(())
        }
        Command::Config => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Migrate => {
            let mut client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let report = crate::db::migrate::run(&mut client).await?;
            match report.shape {
                crate::db::migrate::Shape::Empty => println!("empty database: creating GitLab's tables and schema housekeep (standalone)"),
                crate::db::migrate::Shape::Gitlab => {
                    println!("found GitLab's tables: creating only schema housekeep; GitLab's tables are left as they are")
                }
                crate::db::migrate::Shape::Standalone => {}
            }
            if report.applied.is_empty() {
                println!("schema is up to date ({} migrations)", crate::db::migrate::available().len());
            } else {
                for m in report.applied {
                    println!("applied {}/V{}__{}", m.set, m.version, m.name);
                }
            }
            Ok(())
        }
        Command::Seed(a) => {
            let stores = if a.no_objects { None } else { Some(Stores::open(config)?) };
            let mut client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let opts = crate::seed::SeedOptions {
                seed: a.seed,
                projects: a.projects,
                artifacts: a.artifacts,
                orphans: a.orphans,
                objects: !a.no_objects,
            };
            let started = std::time::Instant::now();
            let r = crate::seed::seed(&mut client, stores.as_ref(), &opts).await?;
            println!(
                "seeded {} projects, {} pipelines, {} jobs, {} artifacts ({} bytes), {} queued objects, {} pending uploads, \
                 {} orphans, {} rows without object; wrote {} objects ({} bytes) in {:.1}s",
                r.projects, r.pipelines, r.jobs, r.artifacts, r.artifact_bytes, r.queued_objects, r.pending_uploads,
                r.orphans, r.missing_objects, r.objects_written, r.object_bytes_written, started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Status(a) => {
            let stores = if a.scan_store { Some(Stores::open(config)?) } else { None };
            let client = crate::db::connect_one(config.database_url()?, config.db_connect_timeout.0).await?;
            let s = crate::status::status(&client, stores.as_ref()).await?;
            match a.format {
                Format::Table => print!("{}", s.to_table()),
                Format::Json => println!("{}", serde_json::to_string_pretty(&s).map_err(Error::other)?),
            }
            Ok(())
        }
    }
}
