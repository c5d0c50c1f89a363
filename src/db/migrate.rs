//! Versioned migrations from `sql/`, embedded in the binary and applied by `housekeep migrate`.
//!
//! refinery records each applied migration with a checksum in `housekeep_schema_migrations` and
//! refuses to go on when an applied file has changed. A session-level advisory lock serialises
//! concurrent runs: the second process waits, then finds nothing left to do.

use crate::error::{Error, Result};

mod embedded {
    refinery::embed_migrations!("sql");
}

pub const MIGRATION_TABLE: &str = "housekeep_schema_migrations";
/// Advisory lock key for migrations ("hk" "migr" in ASCII).
const MIGRATE_LOCK: i64 = 0x686b_6d69_6772;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: i64,
    pub name: String,
}

/// Apply every pending migration; returns the ones this call applied (empty when up to date).
pub async fn run(client: &mut tokio_postgres::Client) -> Result<Vec<Applied>> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]).await?;
    let mut runner = embedded::migrations::runner().set_abort_divergent(true).set_abort_missing(true);
    runner.set_migration_table_name(MIGRATION_TABLE);
    let result = runner.run_async(client).await;
    // Unlock even when the run failed; the connection closing would release it too.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await;
    let report = result.map_err(|e| Error::Database(format!("migration failed: {}", describe(&e))))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| Applied { version: m.version() as i64, name: m.name().to_string() })
        .collect())
}

/// Every migration the binary carries.
pub fn available() -> Vec<Applied> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| Applied { version: m.version() as i64, name: m.name().to_string() })
        .collect()
}

fn describe(e: &refinery::Error) -> String {
    use refinery::error::Kind;
    match e.kind() {
        Kind::DivergentVersion(applied, ours) => format!(
            "migration V{}__{} was changed after it was applied (checksum {} in the database, {} in this binary); \
             restore the original file or fix the database by hand",
            applied.version(),
            applied.name(),
            applied.checksum(),
            ours.checksum()
        ),
        Kind::MissingVersion(m) => format!(
            "the database has migration V{}__{} that this binary does not know; is this an older housekeep?",
            m.version(),
            m.name()
        ),
        other => other.to_string(),
    }
}
