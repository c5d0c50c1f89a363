//! `housekeep delete-orphans`: delete the objects of a `list-orphans` manifest, re-checking each
//! one first (the work is in [`crate::orphans::delete`]). With `--dry-run`, print each object
//! that would be deleted as its batch is re-checked, then the totals.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::orphans::delete::{self, DeleteOptions, DeleteSummary};

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

pub async fn run(a: DeleteOrphansArgs, config: &Config) -> Result<()> {
    let (stores, client) = super::open(config).await?;
    let opts = DeleteOptions {
        filename: a.filename,
        force_restart: a.force_restart,
        dry_run: a.dry_run,
        concurrency: config.store_concurrency,
    };
    let s = if opts.dry_run {
        delete::dry_run(&client, &stores.remote, &opts, |key, size| println!("would delete {key} ({size} bytes)")).await?
    } else {
        delete::delete_orphans(&client, &stores.remote, &opts).await?
    };
    print_summary(&s, opts.dry_run);
    if s.failed > 0 {
        return Err(Error::Partial(format!(
            "{} objects could not be deleted; run the same command again to retry them",
            s.failed
        )));
    }
    Ok(())
}

fn print_summary(s: &DeleteSummary, dry_run: bool) {
    println!(
        "delete-orphans{}: {} lines, {} {} ({} bytes), skipped {} now referenced, {} already gone, {} size changed, \
         {} duplicate lines, {} failed",
        if dry_run { " (dry run)" } else { "" },
        s.lines,
        if dry_run { "would delete" } else { "deleted" },
        s.deleted,
        s.deleted_bytes,
        s.skipped_referenced,
        s.skipped_missing,
        s.skipped_size,
        s.duplicates,
        s.failed
    );
}
