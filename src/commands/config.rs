//! `housekeep config`: print the effective configuration (file, environment and flags merged)
//! as TOML, secrets redacted.

use crate::config::Config;
use crate::error::Result;

pub fn run(config: &Config) -> Result<()> {
    print!("{}", config.to_redacted_toml());
    Ok(())
}
