//! Why a database cannot be migrated or used as it is. A leaf module: [`crate::error`] wraps these
//! without depending on the migration runner.

/// Why a database cannot be migrated or used as it is (exit 2: nothing was created).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "this database holds the schema of an earlier housekeep (public.housekeep_schema_migrations), \
         which did not have GitLab's partitioned tables; migrate a new, empty database instead"
    )]
    EarlierHousekeep,
    #[error(
        "this GitLab database has ci_job_artifacts but not its partitioned parent p_ci_job_artifacts: \
         housekeep needs GitLab 17.10 or later (upgrade GitLab first)"
    )]
    GitlabTooOld,
    /// `missing` names each absent table, or `table.column` where the table is there.
    #[error(
        "this database is neither empty nor a GitLab database housekeep knows: it lacks {}; \
         point housekeep at an empty database (standalone) or at GitLab's (17.10 or later)",
        .missing.join(", ")
    )]
    Unknown { missing: Vec<String> },
    #[error("the database has no housekeep schema yet; run `housekeep migrate` first")]
    NotMigrated,
}

/// A migration set failed to apply (or an applied one was changed): exit 1.
#[derive(Debug, thiserror::Error)]
#[error("migration failed: {}", describe(.set, .source))]
pub struct MigrationError {
    /// `gitlab` or `housekeep`.
    pub set: &'static str,
    #[source]
    pub source: refinery::Error,
}

impl MigrationError {
    /// Whether the message already says all there is: a changed or unknown migration is described
    /// in full, the other kinds carry the database's error as a cause.
    pub fn tells_everything(&self) -> bool {
        use refinery::error::Kind;
        matches!(
            self.source.kind(),
            Kind::DivergentVersion(..) | Kind::MissingVersion(..)
        )
    }
}

fn describe(set: &str, e: &refinery::Error) -> String {
    use refinery::error::Kind;
    match e.kind() {
        Kind::DivergentVersion(applied, ours) => format!(
            "migration {set}/V{}__{} was changed after it was applied (checksum {} in the database, {} in this binary); \
             restore the original file or fix the database by hand",
            applied.version(),
            applied.name(),
            applied.checksum(),
            ours.checksum()
        ),
        Kind::MissingVersion(m) => format!(
            "the database has migration {set}/V{}__{} that this binary does not know; is this an older housekeep?",
            m.version(),
            m.name()
        ),
        other => other.to_string(),
    }
}

