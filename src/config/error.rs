//! The configuration's errors: where a value came from ([`Source`]), what is wrong with the
//! configuration as a whole ([`ConfigError`]) and why one key's value is refused
//! ([`ValueError`]). A leaf module: [`crate::error`] wraps these without depending on the loader.

use std::path::{Path, PathBuf};

use crate::db::conninfo::UrlError;
use crate::schedule::ScheduleError;
use crate::store::url::StoreUrlError;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// What is wrong with the configuration as a whole: its file, or a variable that is not a key.
/// Errors about one key's value are [`Error::Config`], with a [`ValueError`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A TOML or type error in the file. The `toml` crate's error is not kept: its display quotes
    /// the offending line, which may be the one holding the password; `message` is its message
    /// with any quoted string value left out and control characters escaped.
    #[error("{}", file_error_message(.path, .position, .key.as_deref(), .message))]
    File {
        path: PathBuf,
        position: Option<(usize, usize)>,
        key: Option<String>,
        message: String,
    },
    #[error("unknown environment variable {name}; housekeep reads {}", .known.join(", "))]
    UnknownVariable { name: String, known: Vec<String> },
}

/// Why a key's value is refused (the key and its layer are in [`Error::Config`]).
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    DatabaseUrl(#[from] UrlError),
    #[error(transparent)]
    StoreUrl(#[from] StoreUrlError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// `local_store_url` must be a `file://` URL; `shown` is redacted.
    #[error("\"{shown}\" must be a file:// URL")]
    NotLocal { shown: String },
    #[error("{value:?} is not an address like 127.0.0.1:9718")]
    NotAnAddress { value: String },
    #[error("must be between {lo} and {hi}, got {got}")]
    OutOfRange { lo: i64, hi: i64, got: i64 },
    #[error("must be longer than 0s")]
    NotPositive,
    /// `tasks` are the ones that do.
    #[error("{task:?} is not a task that changes GitLab's rows; name any of {}", .tasks.join(", "))]
    NotAGitlabTask {
        task: String,
        tasks: Vec<&'static str>,
    },
    /// A task-specific limit set on a task that does not read it (`tasks` are the ones that do).
    #[error("applies only to {}", .tasks.join(" and "))]
    NotThisTask { tasks: Vec<String> },
    #[error("expected a whole number, got {raw:?}")]
    NotAnInteger { raw: String },
    #[error("expected true or false, got {raw:?}")]
    NotABoolean { raw: String },
    /// What serde found wrong (a bad duration, an unknown log format), with any quoted string
    /// value left out and control characters escaped.
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn file_error_message(
    path: &Path,
    position: &Option<(usize, usize)>,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut msg = format!("config file {}", path.display());
    if let Some((line, column)) = *position {
        msg.push_str(&format!(", line {line}, column {column}"));
    }
    if let Some(key) = key {
        msg.push_str(&format!(", key {key}"));
    }
    msg.push_str(&format!(": {message}"));
    msg
}

