//! Where the platform keeps its state: an implementation of each store trait of
//! [`si_auth::store`] and [`si_audit::AuditStore`] per engine, and [`Stores`],
//! which opens the ones the configuration names.
//!
//! - [`sqlite`]: users, sessions, revocations and the audit trail in SQLite files
//!   in the data directory (the embedded default, no server needed), with their
//!   versioned migrations.
//! - [`postgres`]: users, sessions, revocations and the audit chain in a
//!   PostgreSQL database that several gateways share, with its versioned
//!   migrations.
//! - [`redis`]: rate-limit counters and failed-login bookkeeping in a Redis that
//!   several gateways share.
//! - [`memory`]: rate-limit counters and failed-login bookkeeping in this
//!   process (the default, and the fallback while Redis does not answer).
//!
//! SQL lives here, with its migrations, and nowhere else. This crate knows nothing
//! of HTTP or of what the records mean.

pub mod memory;
pub mod postgres;
pub mod redis;
pub mod sqlite;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::ExposeSecret;
use si_audit::{AuditError, AuditStore};
use si_auth::store::{
    ApiKeyStore, LoginAttempts, RequestCounters, RevocationStore, SessionStore, UserStore,
};
use si_auth::{Accounts, AuthError};
use si_core::Config;

/// The audit log's file name inside the data directory.
pub const AUDIT_FILE: &str = "audit.db";
/// The user database's file name inside the data directory.
pub const USERS_FILE: &str = "users.db";

/// A store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The user database.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The audit trail.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The Redis of `store.redis_url` cannot be used (the URL is never echoed).
    #[error("store.redis_url cannot be used: {0}")]
    Redis(String),
}

/// Users, sessions and revocations.
#[derive(Clone, Debug)]
pub struct AccountStores {
    /// Users and their password hashes.
    pub users: Arc<dyn UserStore>,
    /// Refresh tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// Revoked tokens and sessions.
    pub revocations: Arc<dyn RevocationStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// The PostgreSQL database behind them, when several gateways share one.
    pub shared: Option<Arc<postgres::PostgresAccounts>>,
}

impl AccountStores {
    /// The stores of `config`: the PostgreSQL database `store.database_url` names
    /// (migrated at start unless `store.migrate_at_start` is off), else the SQLite
    /// user database in its data directory.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        if let Some(url) = &config.store.database_url {
            let shared = Arc::new(
                postgres::PostgresAccounts::open(
                    url.expose_secret(),
                    config.store.migrate_at_start,
                    config.store.tls_ca_file.as_deref(),
                )
                .await?,
            );
            if let Ok(false) = shared.encrypted().await {
                tracing::warn!(
                    place = shared.place(),
                    "connections to the shared database are not encrypted; add \
                     sslmode=require to its URL unless the network is private to the gateways"
                );
            }
            return Ok(AccountStores {
                users: shared.clone(),
                sessions: shared.clone(),
                revocations: shared.clone(),
                api_keys: shared.clone(),
                shared: Some(shared),
            });
        }
        let users = Arc::new(sqlite::SqliteUsers::open(&users_path(
            &config.gateway.data_dir,
        ))?);
        Ok(AccountStores {
            users: users.clone(),
            sessions: users.clone(),
            revocations: users.clone(),
            api_keys: users,
            shared: None,
        })
    }

    /// Brings the schema of `config`'s account database up to date, whatever
    /// `store.migrate_at_start` says (`si-cli db migrate`); names the database.
    pub async fn migrate(config: &Config) -> Result<String, StoreError> {
        match &config.store.database_url {
            Some(url) => Ok(postgres::PostgresAccounts::open(
                url.expose_secret(),
                true,
                config.store.tls_ca_file.as_deref(),
            )
            .await?
            .place()
            .to_owned()),
            None => {
                let path = users_path(&config.gateway.data_dir);
                sqlite::SqliteUsers::open(&path)?;
                Ok(path.display().to_string())
            }
        }
    }

    /// [`Accounts`] over these stores.
    pub fn accounts(&self) -> Result<Accounts, AuthError> {
        Accounts::new(self.users.clone(), self.sessions.clone())
    }
}

/// Every store a gateway uses.
#[derive(Clone, Debug)]
pub struct Stores {
    /// Users, sessions and revocations.
    pub accounts: AccountStores,
    /// The audit trail.
    pub audit: Arc<dyn AuditStore>,
    /// Rate-limit counters.
    pub counters: Arc<dyn RequestCounters>,
    /// Failed logins.
    pub login_attempts: Arc<dyn LoginAttempts>,
    /// Whether the Redis that shares the counters answers, when
    /// `store.redis_url` is set (for the health endpoint).
    pub shared_counters: Option<redis::RedisHealth>,
}

impl Stores {
    /// The stores `config` names: accounts as [`AccountStores::open`] says, the
    /// audit trail in the same PostgreSQL database or else in a SQLite file in the
    /// data directory, and counters in the Redis `store.redis_url` names, else in
    /// this process. A Redis that does not answer yet is no error: see
    /// [`redis::RedisConnection::open`]. Must be called within a tokio runtime.
    pub async fn open(config: &Config) -> Result<Self, StoreError> {
        let (counters, login_attempts, shared_counters) = counters(config).await?;
        let accounts = AccountStores::open(config).await?;
        let audit: Arc<dyn AuditStore> = match &accounts.shared {
            Some(shared) => Arc::new(shared.audit(&config.gateway.instance_name())),
            None => Arc::new(sqlite::SqliteAudit::open(&audit_path(
                &config.gateway.data_dir,
            ))?),
        };
        Ok(Stores {
            accounts,
            audit,
            counters,
            login_attempts,
            shared_counters,
        })
    }
}

type Counters = (
    Arc<dyn RequestCounters>,
    Arc<dyn LoginAttempts>,
    Option<redis::RedisHealth>,
);

/// The rate-limit counters and failed-login bookkeeping of `config`.
async fn counters(config: &Config) -> Result<Counters, StoreError> {
    let policy = memory::ThrottlePolicy::default();
    let Some(url) = &config.store.redis_url else {
        return Ok((
            Arc::new(memory::RateLimits::new(&config.rate_limits)),
            Arc::new(memory::LoginThrottle::new(policy)),
            None,
        ));
    };
    let connection = redis::RedisConnection::open(
        url.expose_secret(),
        &config.store.redis_prefix,
        config.store.redis_failure,
        config.store.tls_ca_file.as_deref(),
    )
    .await?;
    Ok((
        Arc::new(redis::RedisCounters::new(&connection, &config.rate_limits)),
        Arc::new(redis::RedisLoginThrottle::new(&connection, policy)),
        Some(connection.health()),
    ))
}

/// The audit trail of `config`, to read: in its PostgreSQL database (whose schema
/// must be up to date), else in the data directory (a missing file is an error,
/// not an empty chain). Must be called within a tokio runtime.
pub async fn audit_reader(config: &Config) -> Result<Arc<dyn AuditStore>, StoreError> {
    if let Some(url) = &config.store.database_url {
        let shared = postgres::PostgresAccounts::open(
            url.expose_secret(),
            false,
            config.store.tls_ca_file.as_deref(),
        )
        .await?;
        return Ok(Arc::new(shared.audit(&config.gateway.instance_name())));
    }
    let path = audit_path(&config.gateway.data_dir);
    Ok(Arc::new(sqlite::SqliteAudit::open_read_only(&path)?))
}

/// Where the audit log lives inside `data_dir`.
pub fn audit_path(data_dir: &Path) -> PathBuf {
    data_dir.join(AUDIT_FILE)
}

/// Where the user database lives inside `data_dir`.
pub fn users_path(data_dir: &Path) -> PathBuf {
    data_dir.join(USERS_FILE)
}
