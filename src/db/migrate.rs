//! `housekeep migrate`: versioned migrations, embedded in the binary, in two sets.
//!
//! - `sql/gitlab/` creates GitLab's own tables (the columns housekeep uses, with GitLab's names,
//!   types, partitions and indexes). It runs only on a standalone database: on a database that
//!   already has GitLab's tables, housekeep never alters or adds to them. History:
//!   `housekeep.gitlab_schema_migrations`.
//! - `sql/housekeep/` creates housekeep's own schema `housekeep` (runs, the unlock queue and
//!   pending uploads GitLab keeps in Redis, per-object retry state, key functions). It runs on
//!   every database. History: `housekeep.schema_migrations`.
//!
//! Before anything is created, the database is classified ([`Shape`]): empty (standalone: both
//! sets), housekeep's standalone (both sets, pending ones only), GitLab's (housekeep's set only),
//! or neither — then nothing is created and the error names what is missing (exit 2). refinery
//! checksums every applied file and refuses to go on when one changed; each set is applied in
//! one transaction; a session-level advisory lock serialises concurrent runs.

use crate::error::Result;

pub mod error;
pub use error::{MigrationError, SchemaError};

mod gitlab_set {
    refinery::embed_migrations!("sql/gitlab");
}
mod housekeep_set {
    refinery::embed_migrations!("sql/housekeep");
}

/// History of `sql/housekeep/`.
pub const MIGRATION_TABLE: &str = "housekeep.schema_migrations";
/// History of `sql/gitlab/` (present only where housekeep created GitLab's tables).
pub const GITLAB_MIGRATION_TABLE: &str = "housekeep.gitlab_schema_migrations";
/// Advisory lock key for migrations ("hk" "migr" in ASCII).
const MIGRATE_LOCK: i64 = 0x686b_6d69_6772;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `gitlab` or `housekeep`: which set the migration belongs to.
    pub set: &'static str,
    pub version: i64,
    pub name: String,
}

/// What kind of database housekeep runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// housekeep created GitLab's tables itself: every task may run.
    Standalone,
    /// A live GitLab database: housekeep shares it with GitLab's own workers (README, "Live GitLab").
    Gitlab,
}

/// A database as `migrate` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// None of GitLab's tables: housekeep creates them (standalone).
    Empty,
    /// housekeep's standalone database, migrated before.
    Standalone,
    /// GitLab's tables, as a GitLab version housekeep knows has them.
    Gitlab,
}

/// What `migrate` did.
#[derive(Debug, Clone)]
pub struct Report {
    pub shape: Shape,
    pub applied: Vec<Applied>,
}

/// The tables and columns housekeep reads and writes in GitLab's schema. A GitLab database that
/// lacks one of them is a version housekeep does not know.
pub const GITLAB_COLUMNS: &[(&str, &[&str])] = &[
    (
        "p_ci_job_artifacts",
        &[
            "id", "partition_id", "project_id", "job_id", "file_type", "file_format", "file_location", "size", "file_store",
            "file", "file_final_path", "file_sha256", "expire_at", "locked", "created_at", "accessibility",
        ],
    ),
    ("p_ci_builds", &["id", "partition_id", "project_id", "commit_id", "name", "ref", "status", "finished_at", "erased_at", "artifacts_expire_at", "type", "tag", "token_encrypted"]),
    ("p_ci_pipelines", &["id", "partition_id", "project_id", "ref", "tag", "status", "source", "locked", "ci_ref_id", "finished_at"]),
    ("ci_deleted_objects", &["id", "file_store", "pick_up_at", "store_dir", "file", "project_id", "created_at"]),
    ("project_statistics", &["project_id", "build_artifacts_size", "storage_size"]),
    ("projects", &["id", "namespace_id", "visibility_level"]),
    ("routes", &["source_id", "source_type", "path"]),
    ("project_ci_cd_settings", &["project_id", "keep_latest_artifact"]),
    ("ci_refs", &["id", "project_id", "ref_path"]),
    ("ci_sources_pipelines", &["pipeline_id", "partition_id", "source_pipeline_id", "source_partition_id", "project_id", "source_project_id"]),
];

/// What the Job Artifacts API reads of GitLab's tables beyond [`GITLAB_COLUMNS`] (never in a
/// standalone database, where the API's users and tokens are housekeep's).
pub const GITLAB_API_COLUMNS: &[(&str, &[&str])] = &[
    ("projects", &["public_builds", "pending_delete", "hidden"]),
    ("project_features", &["project_id", "builds_access_level", "repository_access_level"]),
    ("p_ci_builds", &["user_id"]),
    ("users", &["id", "admin", "state"]),
    ("personal_access_tokens", &["user_id", "token_digest", "revoked", "expires_at", "scopes"]),
    ("project_authorizations", &["user_id", "project_id", "access_level"]),
];

const MISSING_COLUMNS: &str = "
SELECT t.tbl, t.col, EXISTS (SELECT 1 FROM information_schema.tables i WHERE i.table_schema = 'public' AND i.table_name = t.tbl) AS has_table
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(tbl, col, n)
WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns c
                  WHERE c.table_schema = 'public' AND c.table_name = t.tbl AND c.column_name = t.col)
ORDER BY t.n";

/// Classify the database; refuses (exit 2, nothing created) one that has neither shape.
pub async fn detect(client: &tokio_postgres::Client) -> Result<Shape> {
    let r = client
        .query_one(
            "SELECT to_regclass('public.housekeep_schema_migrations') IS NOT NULL AS old_standalone,
                    to_regclass('housekeep.gitlab_schema_migrations') IS NOT NULL AS standalone,
                    to_regclass('public.ci_job_artifacts') IS NOT NULL AS unpartitioned_artifacts",
            &[],
        )
        .await?;
    let (old_standalone, standalone, unpartitioned_artifacts): (bool, bool, bool) =
        (r.get("old_standalone"), r.get("standalone"), r.get("unpartitioned_artifacts"));
    if old_standalone && !standalone {
        return Err(SchemaError::EarlierHousekeep.into());
    }
    if standalone {
        return Ok(Shape::Standalone);
    }
    let (tables, columns) = pairs(GITLAB_COLUMNS);
    let missing = client.query(MISSING_COLUMNS, &[&tables, &columns]).await?;
    if missing.is_empty() {
        return Ok(Shape::Gitlab);
    }
    let table_missing: Vec<String> = missing.iter().filter(|r| !r.get::<_, bool>("has_table")).map(|r| r.get("tbl")).collect();
    let all_tables: std::collections::BTreeSet<&str> = tables.iter().copied().collect();
    let absent: std::collections::BTreeSet<&str> = table_missing.iter().map(String::as_str).collect();
    if absent == all_tables && !unpartitioned_artifacts {
        return Ok(Shape::Empty);
    }
    if unpartitioned_artifacts && absent.contains("p_ci_job_artifacts") {
        return Err(SchemaError::GitlabTooOld.into());
    }
    Err(SchemaError::Unknown { missing: named(&missing) }.into())
}

fn pairs(list: &[(&'static str, &[&'static str])]) -> (Vec<&'static str>, Vec<&'static str>) {
    list.iter().flat_map(|(t, cols)| cols.iter().map(move |c| (*t, *c))).unzip()
}

/// The missing tables, and the missing columns of the tables there are (`table.column`).
fn named(missing: &[tokio_postgres::Row]) -> Vec<String> {
    missing
        .iter()
        .map(|r| {
            let (t, c, has_table): (String, String, bool) = (r.get("tbl"), r.get("col"), r.get("has_table"));
            if has_table { format!("{t}.{c}") } else { t }
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Which of `list`'s tables and columns the database lacks (`table` or `table.column`).
pub async fn missing_columns(client: &tokio_postgres::Client, list: &[(&'static str, &[&'static str])]) -> Result<Vec<String>> {
    let (tables, columns) = pairs(list);
    Ok(named(&client.query(MISSING_COLUMNS, &[&tables, &columns]).await?))
}

/// Apply every pending migration; returns the database's shape and what this call applied.
pub async fn run(client: &mut tokio_postgres::Client) -> Result<Report> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]).await?;
    let result = apply(client).await;
    // Unlock even when the run failed; the connection closing would release it too.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await;
    result
}

async fn apply(client: &mut tokio_postgres::Client) -> Result<Report> {
    let shape = detect(client).await?;
    client.batch_execute("CREATE SCHEMA IF NOT EXISTS housekeep").await?;
    let mut applied = Vec::new();
    if shape != Shape::Gitlab {
        applied.extend(run_set(client, gitlab_set::migrations::runner(), GITLAB_MIGRATION_TABLE, "gitlab").await?);
    }
    applied.extend(run_set(client, housekeep_set::migrations::runner(), MIGRATION_TABLE, "housekeep").await?);
    Ok(Report { shape, applied })
}

/// Apply one migration set (checksummed, grouped in one transaction) with its own history table.
async fn run_set(client: &mut tokio_postgres::Client, runner: refinery::Runner, table: &str, set: &'static str) -> Result<Vec<Applied>> {
    let mut runner = runner.set_abort_divergent(true).set_abort_missing(true).set_grouped(true);
    runner.set_migration_table_name(table);
    let report = runner.run_async(client).await.map_err(|source| MigrationError { set, source })?;
    Ok(report.applied_migrations().iter().map(|m| Applied { set, version: m.version() as i64, name: m.name().to_string() }).collect())
}

/// Every migration the binary carries, GitLab's tables first.
pub fn available() -> Vec<Applied> {
    let gitlab = gitlab_set::migrations::runner().get_migrations().iter().map(|m| Applied { set: "gitlab", version: m.version() as i64, name: m.name().to_string() }).collect::<Vec<_>>();
    let own = housekeep_set::migrations::runner().get_migrations().iter().map(|m| Applied { set: "housekeep", version: m.version() as i64, name: m.name().to_string() }).collect::<Vec<_>>();
    gitlab.into_iter().chain(own).collect()
}

/// The mode of a migrated database; an unmigrated one is refused with a clear message.
pub async fn mode(client: &tokio_postgres::Client) -> Result<Mode> {
    let r = client
        .query_one(
            "SELECT to_regclass('housekeep.schema_migrations') IS NOT NULL AS migrated,
                    to_regclass('housekeep.gitlab_schema_migrations') IS NOT NULL AS standalone",
            &[],
        )
        .await?;
    match (r.get::<_, bool>("migrated"), r.get::<_, bool>("standalone")) {
        (false, _) => Err(SchemaError::NotMigrated.into()),
        (true, true) => Ok(Mode::Standalone),
        (true, false) => Ok(Mode::Gitlab),
    }
}
