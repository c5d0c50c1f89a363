//! `housekeep verify`: list the artifact rows whose object is missing from the store, as CSV on
//! stdout (artifact_id,project_id,job_id,object_path), and the counts on stderr.

use crate::config::Config;
use crate::error::Result;

pub async fn run(config: &Config) -> Result<()> {
    let (stores, client) = super::open(config).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let r = crate::orphans::verify::verify(&client, &stores, config.store_concurrency, &mut out).await?;
    eprintln!("verify: checked {} rows, {} objects missing", r.checked, r.missing);
    Ok(())
}
