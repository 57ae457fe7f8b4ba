//! `[store]`: where users, sessions and revocations live, and where the rate limits
//! and the failed-login throttle are counted. Unset, the SQLite file in the data
//! directory and this process's memory (one gateway, no server needed); a
//! PostgreSQL URL shares accounts between gateways, a Redis URL shares the
//! counters. Both URLs are given as secret references: they may hold passwords.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;
use crate::secret::SecretRef;

/// Store settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Where the database URL comes from (`env::NAME`, `path::FILE`), if set.
    pub database_url_ref: Option<SecretRef>,
    /// The URL once resolved by [`crate::Config::apply_env`] (or `SI_DATABASE_URL`).
    pub database_url: Option<SecretString>,
    /// Bring the database's schema up to date at start; otherwise only check it
    /// (for deployments that run `si-cli db migrate` as a separate step).
    pub migrate_at_start: bool,
    /// Where the Redis URL comes from (`env::NAME`, `path::FILE`), if set.
    pub redis_url_ref: Option<SecretRef>,
    /// The Redis URL once resolved by [`crate::Config::apply_env`] (or
    /// `SI_REDIS_URL`): rate limits and the failed-login throttle are then shared
    /// by every gateway that names the same Redis and prefix.
    pub redis_url: Option<SecretString>,
    /// What the shared counters do while Redis does not answer.
    pub redis_failure: RedisFailure,
    /// The prefix of every Redis key, so several platforms (or test runs) can
    /// share one Redis.
    pub redis_prefix: String,
    /// A PEM file of the certificate authorities that signed the database's and
    /// Redis's certificates, when a URL asks for TLS (`sslmode=require`,
    /// `rediss://`): PostgreSQL's is trusted if either the system's roots or
    /// these vouch for it, Redis's only if these do.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            database_url_ref: None,
            database_url: None,
            migrate_at_start: true,
            redis_url_ref: None,
            redis_url: None,
            redis_failure: RedisFailure::FailOpen,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            tls_ca_file: None,
        }
    }
}

/// What the shared counters do while Redis does not answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisFailure {
    /// Count in this gateway alone (each gateway then admits up to the whole
    /// limit), warn and set `si_redis_up` to 0: clinicians keep working.
    #[default]
    FailOpen,
    /// Refuse requests and logins (503 `counters_unavailable`) until Redis
    /// answers again.
    FailClosed,
}

impl RedisFailure {
    /// `fail_open` or `fail_closed`, as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisFailure::FailOpen => "fail_open",
            RedisFailure::FailClosed => "fail_closed",
        }
    }
}

const DEFAULT_REDIS_PREFIX: &str = "si";
/// Longest accepted key prefix: it is repeated in every key.
const MAX_REDIS_PREFIX: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    database_url: Option<String>,
    migrate_at_start: bool,
    redis_url: Option<String>,
    redis_failure: String,
    redis_prefix: String,
    tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            database_url: None,
            migrate_at_start: true,
            redis_url: None,
            redis_failure: RedisFailure::FailOpen.as_str().to_owned(),
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            tls_ca_file: None,
        }
    }
}

impl RawStore {
    pub(super) fn validate(self, source: &str) -> Result<StoreConfig, ConfigError> {
        let redis_failure = match self.redis_failure.as_str() {
            "fail_open" => RedisFailure::FailOpen,
            "fail_closed" => RedisFailure::FailClosed,
            _ => {
                return Err(ConfigError::new(
                    source,
                    "store.redis_failure",
                    "expected \"fail_open\" or \"fail_closed\"",
                ));
            }
        };
        let prefix_ok = !self.redis_prefix.is_empty()
            && self.redis_prefix.len() <= MAX_REDIS_PREFIX
            && self
                .redis_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !prefix_ok {
            return Err(ConfigError::new(
                source,
                "store.redis_prefix",
                format!(
                    "expected 1 to {MAX_REDIS_PREFIX} letters, digits, `_`, `-` or `.`, e.g. \"si\""
                ),
            ));
        }
        Ok(StoreConfig {
            database_url_ref: secret_ref(self.database_url, source, "store.database_url")?,
            database_url: None,
            migrate_at_start: self.migrate_at_start,
            redis_url_ref: secret_ref(self.redis_url, source, "store.redis_url")?,
            redis_url: None,
            redis_failure,
            redis_prefix: self.redis_prefix,
            tls_ca_file: self.tls_ca_file.filter(|path| !path.as_os_str().is_empty()),
        })
    }
}

fn secret_ref(
    text: Option<String>,
    source: &str,
    key: &str,
) -> Result<Option<SecretRef>, ConfigError> {
    text.map(|text| {
        SecretRef::parse(&text).map_err(|e| {
            ConfigError::new(
                source,
                key,
                format!(
                    "{e} (the URL may hold a password: name where it is, never the URL itself)"
                ),
            )
        })
    })
    .transpose()
}

/// Checks a resolved database URL names PostgreSQL (never echoing it: it may hold a
/// password).
pub(super) fn checked_database_url(
    url: SecretString,
    key: &str,
) -> Result<SecretString, ConfigError> {
    checked_url(
        url,
        key,
        &["postgres://", "postgresql://"],
        "expected a postgres:// URL, e.g. postgres://si@db.hospital.local/si",
    )
}

/// Checks a resolved Redis URL names Redis, plain or over TLS (never echoing it).
pub(super) fn checked_redis_url(url: SecretString, key: &str) -> Result<SecretString, ConfigError> {
    checked_url(
        url,
        key,
        &["redis://", "rediss://"],
        "expected a redis:// or rediss:// URL, e.g. redis://redis.hospital.local:6379/0",
    )
}

fn checked_url(
    url: SecretString,
    key: &str,
    schemes: &[&str],
    wanted: &str,
) -> Result<SecretString, ConfigError> {
    let text = url.expose_secret();
    if schemes.iter().any(|scheme| text.starts_with(scheme)) {
        Ok(url)
    } else {
        Err(ConfigError::new(super::overrides::SOURCE, key, wanted))
    }
}
