//! `housekeep migrate`: apply pending schema migrations and say what was done. On an empty
//! database that is GitLab's tables and schema `housekeep` (standalone); on GitLab's own
//! database, schema `housekeep` only.

use crate::config::Config;
use crate::db::migrate::{self, Shape};
use crate::error::Result;

pub async fn run(config: &Config) -> Result<()> {
    let mut client = super::connect(config).await?;
    let report = migrate::run(&mut client).await?;
    match report.shape {
        Shape::Empty => println!("empty database: creating GitLab's tables and schema housekeep (standalone)"),
        Shape::Gitlab => println!("found GitLab's tables: creating only schema housekeep; GitLab's tables are left as they are"),
        Shape::Standalone => {}
    }
    if report.applied.is_empty() {
        println!("schema is up to date ({} migrations)", migrate::available().len());
    } else {
        for m in report.applied {
            println!("applied {}/V{}__{}", m.set, m.version, m.name);
        }
    }
    Ok(())
}
