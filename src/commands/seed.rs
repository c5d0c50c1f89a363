//! `housekeep seed`: fill the database (and, unless `--no-objects`, the store) with a realistic,
//! deterministic demo dataset, and say what was written.

use clap::Args;

use crate::config::Config;
use crate::error::Result;
use crate::seed::SeedOptions;

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

pub async fn run(a: SeedArgs, config: &Config) -> Result<()> {
    let stores = if a.no_objects {
        None
    } else {
        Some(super::open_stores(config)?)
    };
    let mut client = super::connect(config).await?;
    let opts = SeedOptions {
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
