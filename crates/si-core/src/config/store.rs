//! `[store]`: where users, sessions and revocations live. Unset, the SQLite file in
//! the data directory (one gateway, no server needed); a PostgreSQL URL, given as a
//! secret reference, shares them between gateways.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ConfigError;
use crate::secret::SecretRef;

/// Store settings.
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    /// Where the database URL comes from (`env::NAME`, `path::FILE`), if set.
    pub database_url_ref: Option<SecretRef>,
    /// The URL once resolved by [`crate::Config::apply_env`] (or `SI_DATABASE_URL`).
    pub database_url: Option<SecretString>,
    /// Bring the database's schema up to date at start; otherwise only check it
    /// (for deployments that run `si-cli db migrate` as a separate step).
    pub migrate_at_start: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    database_url: Option<String>,
    migrate_at_start: bool,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            database_url: None,
            migrate_at_start: true,
        }
    }
}

impl RawStore {
    pub(super) fn validate(self, source: &str) -> Result<StoreConfig, ConfigError> {
        let database_url_ref = self
            .database_url
            .map(|text| {
                SecretRef::parse(&text).map_err(|e| {
                    ConfigError::new(
                        source,
                        "store.database_url",
                        format!(
                            "{e} (the URL holds a password: name where it is, never the URL itself)"
                        ),
                    )
                })
            })
            .transpose()?;
        Ok(StoreConfig {
            database_url_ref,
            database_url: None,
            migrate_at_start: self.migrate_at_start,
        })
    }
}

/// Checks a resolved database URL names PostgreSQL (never echoing it: it may hold a
/// password).
pub(super) fn checked_database_url(
    url: SecretString,
    key: &str,
) -> Result<SecretString, ConfigError> {
    let text = url.expose_secret();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(url)
    } else {
        Err(ConfigError::new(
            super::overrides::SOURCE,
            key,
            "expected a postgres:// URL, e.g. postgres://si@db.hospital.local/si",
        ))
    }
}
