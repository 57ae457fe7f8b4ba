//! Where a gateway under test keeps its state: SQLite files of its own, as a
//! single gateway does by default, or a PostgreSQL database it shares with other
//! gateways, as several behind one address do.

use std::path::Path;
use std::sync::Arc;

use si_auth::{Accounts, AuthError, NewUser};
use si_store::postgres::PostgresAccounts;
use si_store::sqlite::SqliteUsers;

/// Where a gateway keeps users, sessions, revocations and its audit trail.
pub enum Store {
    /// SQLite files in its own data directory, and a signing secret of its own.
    Own,
    /// A database and a signing secret shared with other gateways.
    Shared(Shared),
}

/// What gateways sharing one store have in common, and this one's name.
#[derive(Clone)]
pub struct Shared {
    /// The PostgreSQL database (`SI_DATABASE_URL`).
    pub database_url: String,
    /// Redis for the rate-limit counters (`SI_REDIS_URL`), when given.
    pub redis_url: Option<String>,
    /// The signing secret all of them hold (`JWT_SECRET`).
    pub jwt_secret: String,
    /// This gateway's name in the audit chain (`SI_GATEWAY_NAME`).
    pub name: String,
}

impl Store {
    /// Adds the benchmark's user where the gateway will look for it: in its data
    /// directory `data`, or in the shared database (brought up to date first), where
    /// the first gateway's start adds it and the others' find it.
    pub(super) async fn add_user(&self, data: &Path, new: &NewUser<'_>) -> Result<(), String> {
        let accounts = match self {
            Store::Own => {
                let users =
                    SqliteUsers::open(&si_store::users_path(data)).map_err(|e| e.to_string())?;
                Accounts::new(Arc::new(users.clone()), Arc::new(users))
            }
            Store::Shared(shared) => {
                let users = PostgresAccounts::open(&shared.database_url, true, None)
                    .await
                    .map_err(|e| e.to_string())?;
                Accounts::new(Arc::new(users.clone()), Arc::new(users))
            }
        }
        .map_err(|e| e.to_string())?;
        match accounts.add(new).await {
            Ok(_) | Err(AuthError::UserExists(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The environment that points the gateway at this store.
    pub(super) fn environment(&self) -> Result<Vec<(&'static str, String)>, String> {
        match self {
            Store::Own => Ok(vec![("JWT_SECRET", random_secret()?)]),
            Store::Shared(shared) => {
                let mut environment = vec![
                    ("SI_DATABASE_URL", shared.database_url.clone()),
                    ("JWT_SECRET", shared.jwt_secret.clone()),
                    ("SI_GATEWAY_NAME", shared.name.clone()),
                ];
                // Only when asked for: without it each gateway keeps its counters
                // in its own memory, the default this run is compared with.
                if let Some(redis) = &shared.redis_url {
                    environment.push(("SI_REDIS_URL", redis.clone()));
                }
                Ok(environment)
            }
        }
    }
}

/// 32 random bytes in hex: a signing secret.
pub fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").map_err(|e| e.to_string())?;
    std::io::Read::read_exact(&mut urandom, &mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
