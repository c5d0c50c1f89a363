//! Logs through `tracing`: human text on a terminal, JSON lines otherwise (journald, Kubernetes).
//! `HOUSEKEEP_LOG` takes a filter (`info`, `housekeep=debug`); the default is `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HOUSEKEEP_LOG").unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.compact().try_init() };
}
