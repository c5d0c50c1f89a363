//! `housekeep list-orphans`: list the orphan `@final` objects of the remote store into a
//! resumable CSV manifest (the work is in [`crate::orphans::list`]), with a progress bar of
//! hash directories on a terminal.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::duration::HumanDuration;
use crate::error::Result;
use crate::orphans::list::{ListOptions, Shard};

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
    pub min_age: HumanDuration,
    /// List part I of N of the key space (by leading hash directory), for parallel listing
    #[arg(long, default_value = "0/1", value_name = "I/N")]
    pub shard: Shard,
}

pub async fn run(a: ListOrphansArgs, config: &Config) -> Result<()> {
    let (stores, client) = super::open(config).await?;
    let opts = ListOptions { filename: a.filename, force_restart: a.force_restart, min_age: a.min_age.0, shard: a.shard };
    let bar = super::progress_bar(opts.shard.dirs().len() as u64, "{bar:40} {pos}/{len} directories  {msg}");
    let s = crate::orphans::list::list_orphans(&client, &stores.remote, &opts, bar.clone()).await?;
    super::finish_progress(bar);
    println!(
        "list-orphans: {} @final objects scanned, {} orphans ({} bytes) in {}",
        s.scanned,
        s.orphans,
        s.bytes,
        opts.filename.display()
    );
    Ok(())
}
