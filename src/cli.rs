//! The top of the command line: the global flags, loading the configuration (file, environment,
//! flags), starting logging and the runtime. The subcommands are in [`crate::commands`].

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

use crate::commands::{self, Command};
use crate::config::{self, FlagOverride};
use crate::error::{Error, Result};

#[derive(Debug, Parser)]
#[command(
    name = "housekeep",
    version,
    about = "Artifact housekeeping for CI job artifacts in PostgreSQL and object storage",
    long_about = "Artifact housekeeping for CI job artifacts in PostgreSQL and object storage.\n\n\
        Configuration comes from a TOML file (--config or HOUSEKEEP_CONFIG), overridden by \
        HOUSEKEEP_* environment variables, overridden by flags. `housekeep config` shows the result.\n\n\
        Exit codes: 0 success, 1 failure, 2 bad usage, configuration or input (nothing changed), \
        3 finished with some items failed, 130 interrupted (safe to run again)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML) [env: HOUSEKEEP_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgres://user:password@host/db [env: HOUSEKEEP_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Store of remote objects: file:///dir, s3://bucket[/prefix], gs://…, az://… [env: HOUSEKEEP_STORE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub store_url: Option<String>,
    /// Store of local objects (file_store = 1), a file:// URL [env: HOUSEKEEP_LOCAL_STORE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub local_store_url: Option<String>,
    /// Log format [env: HOUSEKEEP_LOG_FORMAT]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Text,
    Json,
}

fn flag_overrides(g: &GlobalArgs, command: &Command) -> Vec<FlagOverride> {
    let mut out = Vec::new();
    let mut add = |key: &'static str, flag: &'static str, v: Option<String>| {
        if let Some(value) = v {
            out.push(FlagOverride { key, value, flag });
        }
    };
    add("database_url", "--database-url", g.database_url.clone());
    if let Command::Worker(w) = command {
        add("listen", "--listen", w.listen.clone());
    }
    add("store_url", "--store-url", g.store_url.clone());
    add("local_store_url", "--local-store-url", g.local_store_url.clone());
    add(
        "log_format",
        "--log-format",
        g.log_format.map(|f| f.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()),
    );
    out
}

/// Load the configuration, start logging and run the command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Completions(a) => return commands::completions::completions(a, <Cli as clap::CommandFactory>::command()),
        Command::Man => return commands::completions::man(<Cli as clap::CommandFactory>::command()),
        _ => {}
    }
    let loaded = config::load(cli.global.config.as_deref(), &flag_overrides(&cli.global, &cli.command))?;
    let _log_guard = crate::logging::init(loaded.config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(commands::dispatch(cli.command, &loaded.config))
}
