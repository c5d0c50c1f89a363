//! Logs through `tracing`: human text on a terminal, JSON lines otherwise (journald, Kubernetes).
//! `HOUSEKEEP_LOG` takes a filter (`info`, `housekeep=debug`); the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Start logging. Records are formatted on the caller's thread and written by a background
/// thread through a buffer (an audit record per row must not cost a system call per row); none is
/// dropped. Keep the guard until the end of the program: dropping it flushes what is left.
pub fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_env("HOUSEKEEP_LOG").unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(64 * 1024)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.compact().try_init() };
    guard
}
