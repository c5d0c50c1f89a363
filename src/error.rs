//! Errors and the exit codes of SPEC §9.
//!
//! Rules: every error says what is wrong and where (the config key, the file and line, the object
//! key); none carries a secret (database URLs are redacted before they reach a message); and each
//! maps to exactly one exit code, so scripts can tell "fix your input" (2) from "try again" (1, 130).

use std::fmt;

/// Exit codes, as published in SPEC §9.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration, usage or input: nothing was changed. Retrying does not help.
    #[error("{0}")]
    Config(String),
    /// Bad input data (a manifest, a CSV): nothing was changed.
    #[error("{0}")]
    Input(String),
    /// The database could not be reached or answered with an error. Retrying may help.
    #[error("{0}")]
    Database(String),
    /// The object store failed. Retrying may help.
    #[error("{0}")]
    Store(String),
    /// The run finished, but some items failed; details were reported as they happened.
    #[error("{0}")]
    Partial(String),
    /// A signal stopped the run before it finished; running it again continues.
    #[error("interrupted; the work done so far is kept and running the command again continues")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Input(_) => exit::USAGE,
            Error::Partial(_) => exit::PARTIAL,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Database(_) | Error::Store(_) | Error::Other(_) => exit::FAILURE,
        }
    }

    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Config(msg.to_string())
    }

    pub fn other(msg: impl fmt::Display) -> Self {
        Error::Other(msg.to_string())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if connection_lost(&e) {
            return Error::Database(format!(
                "the connection to the database{} was lost mid-run ({}); the work committed so far is kept \
                 and running the command again continues",
                target_suffix(),
                describe_pg_error(&e)
            ));
        }
        Error::Database(describe_pg_error(&e))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            // The pool opens a new connection here: the database went away (or never answered).
            deadpool_postgres::PoolError::Backend(e) if e.as_db_error().is_some() => e.into(),
            deadpool_postgres::PoolError::Backend(e) => Error::Database(format!(
                "cannot reach the database{}: {}; the work committed so far is kept and running the command again continues",
                target_suffix(),
                describe_pg_error(&e)
            )),
            other => Error::Database(format!("database pool: {other}")),
        }
    }
}

fn target_suffix() -> String {
    crate::db::last_target().map(|t| format!(" at {t}")).unwrap_or_default()
}

/// Whether the connection itself failed (closed, reset, the server shut down or terminated the
/// session) rather than the statement.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_DOES_NOT_EXIST,
        ]
        .contains(db.code());
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        Error::Store(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(e.to_string())
    }
}

/// One line for a PostgreSQL error: the server's message and detail when there is one, the
/// client-side cause (connection refused, timeout) otherwise. tokio-postgres never includes the
/// password in either.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("database error: {}", db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
