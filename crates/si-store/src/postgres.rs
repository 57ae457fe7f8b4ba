//! The PostgreSQL engine, for several gateways sharing one platform: users,
//! sessions, revocations and the audit chain in one database, reached through a small connection
//! pool (`deadpool-postgres` over `tokio-postgres`), with versioned migrations.

mod accounts;
mod audit;
mod migrate;
mod sessions;
mod watch;

use std::path::Path;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use si_auth::AuthError;
use tokio_postgres::NoTls;

pub use accounts::PostgresAccounts;
pub use audit::PostgresAudit;

/// Connections kept per gateway: requests touch the database only at login,
/// refresh, logout and revocation reloads.
const POOL_SIZE: usize = 8;

/// A connection pool's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Most connections it opens.
    pub max: usize,
    /// Connections open now.
    pub open: usize,
    /// Open connections not in use.
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

/// A pool for the database at `url`, its parsed settings (for connections of
/// its own) and the name errors give it (the URL without its password).
fn pool(url: &str) -> Result<(Pool, tokio_postgres::Config, String), AuthError> {
    let config: tokio_postgres::Config = url.parse().map_err(|e| {
        AuthError::store(
            Path::new("store.database_url"),
            format!("not a PostgreSQL URL: {e}"),
        )
    })?;
    let place = describe(&config);
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            // A pooled connection is checked before use, so a database restart
            // costs no request an error.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .build()
        .map_err(|e| AuthError::store(Path::new(&place), e))?;
    Ok((pool, config, place))
}

/// `postgres://user@host:port/db`, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map_or("localhost".to_owned(), |host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        });
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}
