//! Errors and the exit codes of SPEC §9.
//!
//! Rules: every error says what is wrong and where (the config key and the layer that set it, the
//! file and line, the object key); none carries a secret (database URLs are redacted before they
//! reach a message, and a cause that would echo one — a TOML or connection-string parse error — is
//! not kept); and each maps to exactly one exit code, decided in one `match`
//! ([`Error::exit_code`]), so scripts can tell "fix your input" (2) from "try again" (1, 130).
//!
//! Each layer has its own error type carrying what it is about ([`DurationError`],
//! [`ScheduleError`], [`UrlError`], [`StoreUrlError`], …); the database, store and file errors
//! keep their cause as [`std::error::Error::source`]. A message reads whole on its own, as it did
//! before causes were kept: [`Error::report`] adds, below it, only the causes it does not already
//! tell.

use std::fmt;
use std::path::PathBuf;

// Only the leaf modules that define each layer's errors: none of them depends on this one.
use crate::config::error::{ConfigError, Source, ValueError};
use crate::db::conninfo::UrlError;
use crate::db::migrate::error::{MigrationError, SchemaError};
use crate::db::tls::TlsError;
use crate::store::error::OpenError;
use crate::store::url::StoreUrlError;

#[cfg(doc)]
use crate::{duration::DurationError, schedule::ScheduleError};

/// Exit codes, as published in SPEC §9.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    /// Anything else went wrong; retrying may help.
    pub const FAILURE: i32 = 1;
    /// Bad usage, configuration or input: nothing was changed; retrying does not help.
    pub const USAGE: i32 = 2;
    /// The run finished, but some items failed; running it again retries them.
    pub const PARTIAL: i32 = 3;
    /// A signal stopped the run; running it again continues.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Bad configuration, usage or input (exit 2): nothing was changed. Retrying does not help.
    /// A configuration key has a value housekeep refuses.
    #[error("{key} (from {origin}): {source}")]
    Config {
        /// The dotted key (`tasks.expire.time_budget`).
        key: String,
        /// The layer that set it: default, file, environment variable or flag.
        origin: Source,
        /// Boxed: the other variants are small, and every `Result` carries the largest.
        #[source]
        source: Box<ValueError>,
    },
    /// The configuration file cannot be read or parsed, or a `HOUSEKEEP_*` variable is unknown.
    #[error(transparent)]
    ConfigLoad(#[from] ConfigError),
    /// `database_url`, when it reaches the database layer without passing configuration checks.
    #[error("database_url: {0}")]
    DatabaseUrl(#[source] UrlError),
    /// The TLS settings of `database_url` cannot be put in place (a root certificate file).
    #[error("database_url: {0}")]
    Tls(#[source] TlsError),
    /// The database is not one housekeep can work on as it is.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    StoreUrl(#[from] StoreUrlError),
    /// A store whose URL is valid cannot be opened.
    #[error("store {url}: {source}")]
    StoreOpen {
        /// The URL, redacted.
        url: String,
        #[source]
        source: OpenError,
    },
    /// The worker's listener cannot bind its address.
    #[error("listen: cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A key object_store cannot represent.
    #[error("key \"{key}\": {source}")]
    Key {
        key: String,
        #[source]
        source: object_store::path::Error,
    },
    /// An input file (a manifest) cannot be read.
    #[error("{path:?}: {source}")]
    InputFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Other bad configuration or usage, in words.
    #[error("{0}")]
    Usage(String),
    /// Bad input data (a manifest, a CSV, a flag's value), in words.
    #[error("{0}")]
    Input(String),

    // Failures (exit 1): retrying may help.
    /// The database could not be reached or answered with an error. The message tells the
    /// whole chain of the PostgreSQL error ([`describe_pg_error`]).
    #[error("{}", database_message(.context, .source))]
    Database {
        context: DbContext,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool gave no connection: a timeout, or the pool is closed. With `target`, while
    /// connecting to it ("cannot reach the database at …").
    #[error("{}", pool_message(.target.as_deref(), .source))]
    Pool {
        target: Option<String>,
        #[source]
        source: deadpool_postgres::PoolError,
    },
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The object store failed on `key` (or on a listing, without one).
    #[error("{source}")]
    Store {
        key: Option<String>,
        #[source]
        source: object_store::Error,
    },
    /// A local-disk store failed; `context` says on what ("cannot delete \"key\" in /root").
    #[error("{context}: {source}")]
    Disk {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The store answered something housekeep cannot go on with, in words.
    #[error("{0}")]
    StoreFailed(String),
    /// A file housekeep writes or reads for itself (a manifest's progress, lock or output);
    /// without a path, standard output.
    #[error("{}", io_message(.path.as_deref(), .source))]
    Io {
        path: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// Writing CSV (to standard output).
    #[error("{source}")]
    Csv {
        #[from]
        source: csv::Error,
    },
    /// Writing or reading JSON.
    #[error("{source}")]
    Json {
        #[from]
        source: serde_json::Error,
    },
    /// A background task of this process died; `what` says which.
    #[error("{what}: {source}")]
    Join {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The run finished, but some items failed; details were reported as they happened.
    #[error("{0}")]
    Partial(String),
    /// A signal stopped the run before it finished; running it again continues.
    #[error("interrupted; the work done so far is kept and running the command again continues")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

/// What housekeep was doing when the database failed: decides the words around the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbContext {
    /// A statement failed: the server's error, or the client's.
    Statement,
    /// The connection broke mid-run; `target` is the database this process last connected to.
    Lost { target: Option<String> },
    /// The first connection could not be made.
    Connect { target: String },
    /// A new pooled connection could not be made mid-run.
    Reconnect { target: Option<String> },
}

impl Error {
    /// The exit code of SPEC §9; every variant is named, so a new one must be given its code.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::ConfigLoad(_)
            | Error::DatabaseUrl(_)
            | Error::Tls(_)
            | Error::Schema(_)
            | Error::StoreUrl(_)
            | Error::StoreOpen { .. }
            | Error::Bind { .. }
            | Error::Key { .. }
            | Error::InputFile { .. }
            | Error::Usage(_)
            | Error::Input(_) => exit::USAGE,
            Error::Partial(_) => exit::PARTIAL,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Database { .. }
            | Error::Pool { .. }
            | Error::Migration(_)
            | Error::Store { .. }
            | Error::Disk { .. }
            | Error::StoreFailed(_)
            | Error::Io { .. }
            | Error::Csv { .. }
            | Error::Json { .. }
            | Error::Join { .. }
            | Error::Runtime(_)
            | Error::Other(_) => exit::FAILURE,
        }
    }

    /// Bad configuration or usage, in words (exit 2).
    pub fn config(msg: impl fmt::Display) -> Self {
        Error::Usage(msg.to_string())
    }

    pub fn other(msg: impl fmt::Display) -> Self {
        Error::Other(msg.to_string())
    }

    /// The store failed on `key`.
    pub fn store(key: impl Into<String>, source: object_store::Error) -> Self {
        Error::Store {
            key: Some(key.into()),
            source,
        }
    }

    /// A local-disk store failed on what `context` names.
    pub fn disk(context: impl fmt::Display, source: impl Into<std::io::Error>) -> Self {
        Error::Disk {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// A file of housekeep's own failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: Some(path.into()),
            source,
        }
    }

    /// A background task died.
    pub fn join(what: impl fmt::Display, source: tokio::task::JoinError) -> Self {
        Error::Join {
            what: what.to_string(),
            source,
        }
    }

    /// The message, then each cause it does not already tell, one per line (`caused by: …`).
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    /// Whether the message already tells every cause, so that [`Report`] adds none.
    fn tells_its_causes(&self) -> bool {
        match self {
            // describe_pg_error walked the chain, and left out on purpose the server's severity
            // and the pool's wording of a timeout.
            Error::Database { .. } | Error::Pool { .. } => true,
            Error::Migration(m) => m.tells_everything(),
            _ => false,
        }
    }
}

/// An error as `main` prints it: [`Error`]'s message, then the causes it does not already tell
/// (a store's HTTP or connection error below object_store's words, the database error that
/// stopped a migration). A cause whose text the lines above already contain adds nothing and is
/// left out, so most errors stay one line.
pub struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut told = self.0.to_string();
        f.write_str(&told)?;
        let mut cause = if self.0.tells_its_causes() {
            None
        } else {
            std::error::Error::source(self.0)
        };
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.trim().is_empty() && !told.contains(&text) {
                // Causes come from other crates: control characters are escaped, and a cause of
                // several lines is indented under its first.
                let shown: String = text
                    .chars()
                    .map(|ch| match ch {
                        '\n' => "\n    ".to_string(),
                        ch if ch.is_control() => ch.escape_debug().to_string(),
                        ch => ch.to_string(),
                    })
                    .collect();
                write!(f, "\n  caused by: {shown}")?;
                told.push('\n');
                told.push_str(&text);
            }
            cause = c.source();
        }
        Ok(())
    }
}

fn database_message(context: &DbContext, e: &tokio_postgres::Error) -> String {
    let cause = describe_pg_error(e);
    let at = |target: &Option<String>| {
        target
            .as_ref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default()
    };
    match context {
        DbContext::Statement => cause,
        DbContext::Lost { target } => format!(
            "the connection to the database{} was lost mid-run ({cause}); the work committed so far is kept \
             and running the command again continues",
            at(target)
        ),
        DbContext::Connect { target } => format!("cannot reach the database at {target}: {cause}"),
        DbContext::Reconnect { target } => format!(
            "cannot reach the database{}: {cause}; the work committed so far is kept and running the command again continues",
            at(target)
        ),
    }
}

fn pool_message(target: Option<&str>, e: &deadpool_postgres::PoolError) -> String {
    match (target, e) {
        (Some(t), deadpool_postgres::PoolError::Timeout(_)) => {
            format!("cannot reach the database at {t}: timed out")
        }
        (Some(t), other) => format!("cannot reach the database at {t}: {other}"),
        (None, other) => format!("database pool: {other}"),
    }
}

fn io_message(path: Option<&std::path::Path>, e: &std::io::Error) -> String {
    match path {
        Some(p) => format!("{p:?}: {e}"),
        None => e.to_string(),
    }
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
    fn from(source: object_store::Error) -> Self {
        Error::Store { key: None, source }
    }
}

/// An I/O error without a path: standard output, or a file the caller did not name.
impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io { path: None, source }
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::str::FromStr;

    use super::*;

    fn pg_error() -> tokio_postgres::Error {
        tokio_postgres::Config::from_str("host=h port=notaport").expect_err("a bad port")
    }

    fn store_error() -> object_store::Error {
        let cause = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        );
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(cause),
        }
    }

    #[test]
    fn database_store_and_io_errors_keep_their_cause() {
        let db = Error::from(pg_error());
        assert!(
            db.source().is_some_and(|s| s.is::<tokio_postgres::Error>()),
            "{db:?}"
        );
        let store = Error::store("a/b", store_error());
        assert!(
            store
                .source()
                .is_some_and(|s| s.is::<object_store::Error>()),
            "{store:?}"
        );
        assert!(matches!(&store, Error::Store { key: Some(k), .. } if k == "a/b"));
        let io = Error::io(
            "/var/tmp/m.csv",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        );
        assert!(
            io.source().is_some_and(|s| s.is::<std::io::Error>()),
            "{io:?}"
        );
        assert_eq!(io.to_string(), "\"/var/tmp/m.csv\": denied");
        let disk = Error::disk("cannot delete \"k\" in /srv", std::io::Error::other("busy"));
        assert!(disk.source().is_some(), "{disk:?}");
        assert_eq!(disk.to_string(), "cannot delete \"k\" in /srv: busy");
        let schedule = "61 * * * *"
            .parse::<crate::schedule::Schedule>()
            .unwrap_err();
        let config = Error::Config {
            key: "tasks.expire.schedule".into(),
            origin: Source::Default,
            source: Box::new(schedule.into()),
        };
        assert!(config.source().is_some(), "{config:?}");
    }

    #[test]
    fn exit_codes_are_those_of_spec_section_9() {
        let io = || std::io::Error::other("x");
        let bad_config =
            crate::config::load_from(None, &[("HOUSEKEEP_LISTEN".into(), "nowhere".into())], &[])
                .unwrap_err();
        for (e, code) in [
            (bad_config, exit::USAGE),
            (Error::config("no store configured"), exit::USAGE),
            (Error::Input("bad line".into()), exit::USAGE),
            (
                Error::InputFile {
                    path: "m.csv".into(),
                    source: io(),
                },
                exit::USAGE,
            ),
            (Error::Schema(SchemaError::NotMigrated), exit::USAGE),
            (
                Error::StoreUrl(crate::store::StoreUrl::parse("ftp://x").unwrap_err()),
                exit::USAGE,
            ),
            (
                Error::DatabaseUrl(crate::db::parse_url("mysql://h/db").unwrap_err()),
                exit::USAGE,
            ),
            (
                Error::Bind {
                    addr: "127.0.0.1:1".parse().unwrap(),
                    source: io(),
                },
                exit::USAGE,
            ),
            (Error::Partial("some objects failed".into()), exit::PARTIAL),
            (Error::Interrupted, exit::INTERRUPTED),
            (Error::from(pg_error()), exit::FAILURE),
            (Error::store("k", store_error()), exit::FAILURE),
            (Error::from(store_error()), exit::FAILURE),
            (Error::disk("listing /srv", io()), exit::FAILURE),
            (Error::io("p", io()), exit::FAILURE),
            (Error::from(io()), exit::FAILURE),
            (Error::StoreFailed("stopped".into()), exit::FAILURE),
            (Error::other("anything else"), exit::FAILURE),
        ] {
            assert_eq!(e.exit_code(), code, "{e}");
        }
        assert_eq!(
            (
                exit::SUCCESS,
                exit::FAILURE,
                exit::USAGE,
                exit::PARTIAL,
                exit::INTERRUPTED
            ),
            (0, 1, 2, 3, 130)
        );
    }

    #[test]
    fn the_report_adds_only_causes_the_message_does_not_tell() {
        // object_store's words include its source here: nothing to add.
        let e = Error::store("k", store_error());
        assert_eq!(e.report().to_string(), e.to_string());
        // A cause below the one the message shows is added on its own line.
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let http = std::io::Error::other(WithSource("error sending request", inner));
        let e = Error::store(
            "k",
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(WithSource("request failed", http)),
            },
        );
        let report = e.report().to_string();
        assert_eq!(report.lines().count(), 3, "{report}");
        assert!(report.starts_with(&e.to_string()), "{report}");
        assert!(
            report
                .ends_with("\n  caused by: error sending request\n  caused by: connection refused"),
            "{report}"
        );
        // A database error's message already tells its chain.
        let e = Error::from(pg_error());
        assert_eq!(e.report().to_string(), e.to_string());
        // Configuration errors stay one line.
        let e = crate::config::load_from(
            None,
            &[(
                "HOUSEKEEP_TASKS_UNLOCK_SCHEDULE".into(),
                "61 * * * *".into(),
            )],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.report().to_string(), e.to_string());
        assert_eq!(
            e.to_string(),
            "tasks.unlock.schedule (from environment variable HOUSEKEEP_TASKS_UNLOCK_SCHEDULE): \
             minute 61 is out of range 0-59 in \"61 * * * *\""
        );
    }

    #[test]
    fn no_cause_of_a_database_url_error_repeats_the_url() {
        for url in [
            "postgres://u:S3cret@h:54x/db",
            "postgres://u@h/db?password=S3cret&port=x",
            "host=h password=S3cret port=x",
        ] {
            let e = Error::DatabaseUrl(crate::db::parse_url(url).unwrap_err());
            let mut text = e.report().to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                text.push_str(&c.to_string());
                cause = c.source();
            }
            assert!(!text.contains("S3cret"), "{url}: {text}");
        }
    }

    #[derive(Debug)]
    struct WithSource(&'static str, std::io::Error);

    impl fmt::Display for WithSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for WithSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }
}
