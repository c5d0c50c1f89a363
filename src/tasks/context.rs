//! What every run gets: the pool, the stores, the configuration, the metrics and the shutdown
//! signal.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Stores;

/// Everything a task run needs.
#[derive(Clone)]
pub struct Context {
    pub pool: Pool,
    pub stores: Stores,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Cancelled on SIGTERM/SIGINT: finish or roll back the current batch, start no other.
    pub cancel: CancellationToken,
}
