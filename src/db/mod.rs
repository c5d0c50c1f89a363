//! Database access: connecting with one clear error, the connection pool, and migrations.
//!
//! Every statement binds its parameters; none is assembled from values.

pub mod conninfo;
pub mod migrate;
pub mod project;
pub mod tls;
pub mod url;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{connection_lost, DbContext, Error, Result};
pub use conninfo::UrlError;
pub use tls::TlsError;
pub use url::parse_url;

/// `host:port/dbname` for messages: enough to find the server, never the password. The URL
/// was checked by [`parse_url`], so the host is not a piece of a password; a host with an `@` or
/// a control character is still not shown, whatever produced it.
pub fn describe_target(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let host = if host.contains('@') || host.chars().any(char::is_control) { conninfo::REDACTED.to_string() } else { host };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().unwrap_or("postgres");
    let db: String = db.chars().map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect();
    format!("{host}:{port}/{db}")
}

/// The database this process last connected to, for errors that arrive without it (a
/// connection lost mid-run).
static TARGET: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

pub(crate) fn last_target() -> Option<String> {
    TARGET.lock().ok().and_then(|t| t.clone())
}

fn pg_config(url: &str, connect_timeout: Duration) -> Result<(tokio_postgres::Config, MakeRustlsConnect)> {
    let (mut cfg, tls) = parse_url(url).map_err(Error::DatabaseUrl)?;
    if let Ok(mut t) = TARGET.lock() {
        *t = Some(describe_target(&cfg));
    }
    let connector = MakeRustlsConnect::new(tls::client_config(&tls).map_err(Error::Tls)?);
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(connect_timeout);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("housekeep");
    }
    Ok((cfg, connector))
}

/// The first connection failed: "cannot reach the database at host:port/db" and why.
fn unreachable(cfg: &tokio_postgres::Config, source: tokio_postgres::Error) -> Error {
    Error::Database {
        context: DbContext::Connect {
            target: describe_target(cfg),
        },
        source,
    }
}

/// One connection outside the pool (migrations, COPY), checked once.
pub async fn connect_one(url: &str, connect_timeout: Duration) -> Result<tokio_postgres::Client> {
    let (cfg, tls) = pg_config(url, connect_timeout)?;
    let (client, conn) = cfg.connect(tls).await.map_err(|e| unreachable(&cfg, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %crate::error::describe_pg_error(&e), "database connection closed");
        }
    });
    Ok(client)
}

/// A pool of up to `pool_size` connections, after checking once that the database answers.
pub async fn connect(url: &str, connect_timeout: Duration, pool_size: usize) -> Result<Pool> {
    let (cfg, tls) = pg_config(url, connect_timeout)?;
    let mgr = Manager::from_config(cfg.clone(), tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(mgr)
        .max_size(pool_size)
        .wait_timeout(Some(connect_timeout * 3))
        .create_timeout(Some(connect_timeout))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::other(format!("database pool: {e}")))?;
    let client = pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => unreachable(&cfg, e),
        other => Error::Pool {
            target: Some(describe_target(&cfg)),
            source: other,
        },
    })?;
    client.simple_query("SELECT 1").await?;
    Ok(pool)
}

/// Fail with a clear message when the schema is not there yet; otherwise the database's mode.
pub async fn require_schema(client: &tokio_postgres::Client) -> Result<migrate::Mode> {
    migrate::mode(client).await
}

/// A statement that failed, or a connection that was lost mid-run (naming the server it was to).
impl From<tokio_postgres::Error> for Error {
    fn from(source: tokio_postgres::Error) -> Self {
        let context = if connection_lost(&source) {
            DbContext::Lost {
                target: last_target(),
            }
        } else {
            DbContext::Statement
        };
        Error::Database { context, source }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            // The pool opens a new connection here: the database went away (or never answered).
            deadpool_postgres::PoolError::Backend(e) if e.as_db_error().is_some() => e.into(),
            deadpool_postgres::PoolError::Backend(source) => Error::Database {
                context: DbContext::Reconnect {
                    target: last_target(),
                },
                source,
            },
            other => Error::Pool {
                target: None,
                source: other,
            },
        }
    }
}
