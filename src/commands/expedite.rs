//! `housekeep expedite`: make every queued object ready now (except those another
//! delete-objects run holds leased) and drain the deletion queue without a time budget, with a
//! progress bar on a terminal. `--dry-run` only counts the queue.

use std::time::Duration;

use clap::Args;

use crate::config::Config;
use crate::db::migrate::Mode;
use crate::error::Result;
use crate::tasks::delete_objects;
use crate::tasks::{RunOptions, Task};

/// "No time budget": the drain stops when the queue is empty or on SIGTERM/SIGINT.
const UNLIMITED: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug, Args)]
pub struct ExpediteArgs {
    /// Report what would be deleted; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(a: ExpediteArgs, config: &Config) -> Result<()> {
    let ctx = super::context(config).await?;
    let mut client = ctx.pool.get().await?;
    let standalone = crate::db::migrate::mode(&client).await? == Mode::Standalone;
    let q = delete_objects::queue_now(&client).await?;
    if a.dry_run {
        println!(
            "expedite (dry run): would delete {} queued objects ({} bytes); {} of them leased by a running delete-objects",
            q.queued, q.bytes, q.leased
        );
        return Ok(());
    }
    let made_ready = delete_objects::make_ready(&mut client, standalone).await?;
    drop(client);
    tracing::info!(made_ready, queued = q.queued, leased_elsewhere = q.leased, "every queued object not leased by another run is ready now");
    let progress = super::progress_bar(q.queued as u64, "{bar:40} {pos}/{len} objects  {per_sec}  eta {eta}");
    let opts = RunOptions { dry_run: false, time_budget: Some(UNLIMITED), progress: progress.clone() };
    let report = crate::tasks::run(&ctx, Task::DeleteObjects, opts).await?;
    super::finish_progress(progress);
    println!("expedite: {}", report.summary());
    super::outcome_to_result(&report)
}
