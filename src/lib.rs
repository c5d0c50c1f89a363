//! housekeep: artifact housekeeping for CI job artifacts in PostgreSQL and object storage.
//!
//! The library holds the engine, which prints nothing; [`commands`] holds one module per
//! subcommand, which calls the engine and prints what it returns. `main.rs` only parses, calls
//! [`cli::run`] and maps the error to an exit code (SPEC §9).

pub mod actions;
pub mod api;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod duration;
pub mod error;
pub mod explain;
pub mod logging;
pub mod metrics;
pub mod orphans;
pub mod registry;
pub mod reports;
pub mod schedule;
pub mod seed;
pub mod status;
pub mod store;
pub mod tasks;
pub mod worker;

pub use error::{Error, Result};
