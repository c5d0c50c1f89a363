//! `housekeep status`: summarise artifacts by state, the deletion queue, uploads and, with
//! `--scan-store`, what the store and the database disagree on; as a table or as JSON.

use clap::{Args, ValueEnum};

use crate::config::Config;
use crate::registry::{Limit, Task};
use crate::error::Result;

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also list the store: orphan @final objects and rows whose object is missing
    #[arg(long)]
    pub scan_store: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn run(a: StatusArgs, config: &Config) -> Result<()> {
    let stores = if a.scan_store {
        Some(super::open_stores(config)?)
    } else {
        None
    };
    let client = super::connect(config).await?;
    let stale_after = config.tasks[Task::StaleUploads].duration_limit(Task::StaleUploads, Limit::MaxAge);
    let s = crate::status::status(&client, stores.as_ref(), stale_after).await?;
    match a.format {
        Format::Table => print!("{}", s.to_table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
    }
    Ok(())
}
