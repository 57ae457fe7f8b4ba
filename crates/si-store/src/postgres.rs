//! The PostgreSQL engine, for several gateways sharing one platform: users,
//! sessions, revocations and the audit chain in one database, reached through a small connection
//! pool (`deadpool-postgres` over `tokio-postgres`), with versioned migrations.

mod accounts;
mod api_keys;
mod audit;
mod migrate;
mod sessions;
mod watch;

use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use si_auth::AuthError;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

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

/// How to reach the database: its parsed settings and TLS connector, for the
/// pool and for connections of its own.
#[derive(Clone)]
pub(crate) struct Reach {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: MakeRustlsConnect,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("ssl_mode", &self.config.get_ssl_mode())
            .finish_non_exhaustive()
    }
}

/// A pool for the database at `url`, how to reach it, and the name errors give it
/// (the URL without its password). With an `sslmode` other than `disable`
/// (`prefer` included), TLS is required, and the server's certificate always
/// verified against the system's roots and `tls_ca_file`; without `sslmode`, no
/// TLS.
fn pool(url: &str, tls_ca_file: Option<&Path>) -> Result<(Pool, Reach, String), AuthError> {
    let unusable = |e: String| AuthError::store(Path::new("store.database_url"), e);
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| unusable(format!("not a PostgreSQL URL: {e}")))?;
    match sslmode(url).as_deref() {
        None => {
            config.ssl_mode(SslMode::Disable);
        }
        // With `prefer`, anyone on the path could answer "no TLS" for the server
        // and read everything: asking for TLS means requiring it.
        Some("prefer") => {
            config.ssl_mode(SslMode::Require);
        }
        Some(_) => {}
    }
    // A connection whose peer vanished without a word (a cut cable, a frozen
    // machine) is noticed in seconds, not after the kernel's two hours.
    config
        .connect_timeout(Duration::from_secs(5))
        .keepalives_idle(Duration::from_secs(15))
        .tcp_user_timeout(Duration::from_secs(15));
    let extra = match tls_ca_file {
        Some(path) => crate::tls::authorities(path).map_err(unusable)?.1,
        None => Vec::new(),
    };
    let tls = MakeRustlsConnect::new(crate::tls::client_config(&extra).map_err(unusable)?);
    let place = describe(&config);
    let manager = Manager::from_config(
        config.clone(),
        tls.clone(),
        ManagerConfig {
            // A pooled connection is checked before use, so a database restart
            // costs no request an error.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .build()
        .map_err(|e| AuthError::store(Path::new(&place), e))?;
    Ok((pool, Reach { config, tls }, place))
}

/// The `sslmode` a PostgreSQL URL names, if it names one.
fn sslmode(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "sslmode").then(|| value.to_ascii_lowercase())
    })
}

/// `error`'s message followed by those of its causes.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = inner.source();
    }
    message
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_is_taken_as_require_and_no_sslmode_as_none() {
        let mode = |url: &str| pool(url, None).map(|(_, reach, _)| reach.config.get_ssl_mode());
        let base = "postgres://si@db.hospital.local/si";
        assert_eq!(mode(base).unwrap(), SslMode::Disable);
        assert_eq!(
            mode(&format!("{base}?sslmode=prefer")).unwrap(),
            SslMode::Require
        );
        assert_eq!(
            mode(&format!("{base}?application_name=x&sslmode=require")).unwrap(),
            SslMode::Require
        );
        assert_eq!(
            mode(&format!("{base}?sslmode=disable")).unwrap(),
            SslMode::Disable
        );
        // Only the parameter counts, not the text elsewhere.
        assert_eq!(
            mode("postgres://sslmode=x@db/si").unwrap(),
            SslMode::Disable
        );
    }
}
