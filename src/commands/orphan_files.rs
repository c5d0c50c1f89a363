//! `housekeep orphan-files`: find (and with `--dry-run false`, remove) artifact directories
//! without a row on a local-disk store (the work is in [`crate::orphans::files`]). A dry run, the
//! default, prints each directory that would be removed, then the totals.

use clap::Args;

use crate::config::Config;
use crate::duration::HumanDuration;
use crate::error::Result;
use crate::orphans::files::{FilesOptions, FilesSummary};

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
    pub min_age: HumanDuration,
}

pub async fn run(a: OrphanFilesArgs, config: &Config) -> Result<()> {
    // Not `super::open`: a store that is not on local disk is refused before the database is tried.
    let stores = super::open_stores(config)?;
    let root = stores.local_disk("orphan-files")?.to_path_buf();
    let client = super::connect(config).await?;
    let opts = FilesOptions { dry_run: a.dry_run, limit: a.limit, min_age: a.min_age.0 };
    let s = crate::orphans::files::orphan_files(&client, &root, &opts, |path, size| {
        println!("would remove {} ({size} bytes)", path.display())
    })
    .await?;
    print_summary(&s, a.dry_run);
    Ok(())
}

fn print_summary(s: &FilesSummary, dry_run: bool) {
    let verb = if dry_run { "found" } else { "removed" };
    println!(
        "orphan-files{}: {} artifact directories, {} {} orphan ({} bytes), {} recent skipped, {} empty directories {}",
        if dry_run { " (dry run)" } else { "" },
        s.artifact_dirs,
        verb,
        s.orphans,
        s.orphan_bytes,
        s.skipped_recent,
        s.empty_dirs,
        verb,
    );
}
