//! `housekeep explain --job ID`: why downloading a job's artifacts answers 404, and the fix,
//! as text or JSON. Read-only. The store is checked when one is configured.

use clap::{Args, ValueEnum};

use crate::config::Config;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The job's id
    #[arg(long, value_name = "ID", allow_hyphen_values = true, value_parser = job_id)]
    pub job: i64,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

fn job_id(s: &str) -> std::result::Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a job id (a positive whole number)")),
    }
}

pub async fn run(a: ExplainArgs, config: &Config) -> Result<()> {
    // A store that is configured but cannot be opened is a configuration error; none at all
    // only means the object is not checked.
    let stores = if config.store_url.is_some() || config.local_store_url.is_some() {
        Some(super::open_stores(config)?)
    } else {
        None
    };
    let client = super::connect(config).await?;
    let e = crate::explain::explain(&client, stores.as_ref(), a.job).await?;
    let out = match a.format {
        Format::Text => e.to_text(),
        Format::Json => serde_json::to_string_pretty(&e).map_err(Error::other)? + "\n",
    };
    super::report::print_all(&out)
}
