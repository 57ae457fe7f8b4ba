//! Users in PostgreSQL, shared by every gateway.

use std::path::Path;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use si_auth::store::UserStore;
use si_auth::users::UsernameKey;
use si_auth::{AuthError, User};
use si_core::Role;
use tokio_postgres::Row;

use super::migrate;

/// Users, sessions and revocations in one PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresAccounts {
    pool: Pool,
    /// For connections of its own (listening for revocations).
    reach: super::Reach,
    /// The database, for messages (never the password).
    place: String,
}

const USER_COLUMNS: &str = "username, role, location, disabled, created_at, password_hash";

impl PostgresAccounts {
    /// Connects to the database at `url` and brings its schema up to date (with
    /// `migrate` false, only checks that it is: for deployments that migrate as a
    /// separate step). Where the URL asks for TLS (`sslmode=require`), the
    /// server's certificate must be signed by a root the system trusts or by one
    /// in `tls_ca_file`.
    pub async fn open(
        url: &str,
        migrate: bool,
        tls_ca_file: Option<&Path>,
    ) -> Result<Self, AuthError> {
        let (pool, reach, place) = super::pool(url, tls_ca_file)?;
        let store = PostgresAccounts { pool, reach, place };
        let mut client = store.client().await?;
        migrate::run(&mut client, migrate::SCHEMA, migrate)
            .await
            .map_err(|e| store.failed(e))?;
        Ok(store)
    }

    /// The database, as messages name it.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The audit chain in the same database, written through the same pool, its
    /// records naming `gateway` as their writer. Must be called within a tokio
    /// runtime.
    pub fn audit(&self, gateway: &str) -> super::PostgresAudit {
        super::PostgresAudit::start(self.pool.clone(), self.place.clone(), gateway)
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> Result<(), AuthError> {
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    /// The connection pool's state now, for metrics.
    pub fn pool_status(&self) -> super::PoolStatus {
        let status = self.pool.status();
        super::PoolStatus {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }

    /// How to reach the database, for a connection of its own.
    pub(super) fn reach(&self) -> &super::Reach {
        &self.reach
    }

    /// Whether this gateway's connections to the database are encrypted.
    pub async fn encrypted(&self) -> Result<bool, AuthError> {
        let client = self.client().await?;
        client
            .query_one(
                "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), FALSE)",
                &[],
            )
            .await
            .map(|row| row.get(0))
            .map_err(|e| self.failed(e))
    }

    pub(super) async fn client(&self) -> Result<Object, AuthError> {
        // With its causes: "error performing TLS handshake" alone does not say
        // that the certificate was refused, or why.
        self.pool
            .get()
            .await
            .map_err(|e| AuthError::unreachable(&self.place, super::with_causes(&e)))
    }

    pub(super) fn failed(&self, error: impl std::fmt::Display) -> AuthError {
        AuthError::store(Path::new(&self.place), error)
    }

    /// Runs `sql` (with `$1` = username and `$2` = value) and, if asked, ends the
    /// user's sessions, in one transaction that also tells the gateways to reload
    /// what is revoked.
    async fn update_user(
        &self,
        username: &str,
        sql: &str,
        value: &(dyn tokio_postgres::types::ToSql + Sync),
        end_sessions: bool,
    ) -> Result<(), AuthError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        if tx
            .execute(sql, &[&username, value])
            .await
            .map_err(|e| self.failed(e))?
            == 0
        {
            return Err(AuthError::UnknownUser(username.to_owned()));
        }
        if end_sessions {
            super::sessions::revoke_sessions_of(&tx, username)
                .await
                .map_err(|e| self.failed(e))?;
        }
        tx.execute(super::sessions::BUMP_VERSION, &[])
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))
    }
}

fn user_from_row(row: &Row) -> Result<(User, String), String> {
    let role: String = row.try_get(1).map_err(|e| e.to_string())?;
    let role = role
        .parse()
        .map_err(|e: si_core::role::UnknownRole| e.to_string())?;
    let get = |e: tokio_postgres::Error| e.to_string();
    Ok((
        User {
            username: row.try_get(0).map_err(get)?,
            role,
            location: row.try_get(2).map_err(get)?,
            disabled: row.try_get(3).map_err(get)?,
            created_at: row.try_get(4).map_err(get)?,
        },
        row.try_get(5).map_err(get)?,
    ))
}

#[async_trait]
impl UserStore for PostgresAccounts {
    async fn insert(
        &self,
        user: &User,
        key: &UsernameKey,
        password_hash: &str,
    ) -> Result<(), AuthError> {
        let client = self.client().await?;
        // Either the name or its key may be taken: both are unique.
        let inserted = client
            .execute(
                "INSERT INTO users
                     (username, username_key, password_hash, role, location, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &user.username,
                    &key.as_str(),
                    &password_hash,
                    &user.role.as_str(),
                    &user.location,
                    &user.created_at,
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        if inserted == 1 {
            return Ok(());
        }
        let existing: Option<String> = client
            .query_opt(
                "SELECT username FROM users WHERE username = $1 OR username_key = $2
                 ORDER BY username = $1 DESC LIMIT 1",
                &[&user.username, &key.as_str()],
            )
            .await
            .map_err(|e| self.failed(e))?
            .map(|row| row.get(0));
        Err(match existing {
            Some(existing) if existing != user.username => AuthError::UsernameTaken {
                requested: user.username.clone(),
                existing,
            },
            _ => AuthError::UserExists(user.username.clone()),
        })
    }

    async fn list(&self) -> Result<Vec<User>, AuthError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"),
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?;
        rows.iter()
            .map(|row| {
                user_from_row(row)
                    .map(|(user, _)| user)
                    .map_err(|e| self.failed(e))
            })
            .collect()
    }

    async fn find(&self, username: &str) -> Result<Option<(User, String)>, AuthError> {
        self.find_where("username", username).await
    }

    async fn find_by_key(&self, key: &UsernameKey) -> Result<Option<(User, String)>, AuthError> {
        self.find_where("username_key", key.as_str()).await
    }

    async fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), AuthError> {
        let sql = "UPDATE users SET disabled = $2 WHERE username = $1";
        self.update_user(username, sql, &disabled, disabled).await
    }

    async fn set_password_hash(&self, username: &str, hash: &str) -> Result<(), AuthError> {
        let sql = "UPDATE users SET password_hash = $2 WHERE username = $1";
        self.update_user(username, sql, &hash, true).await
    }

    async fn set_profile(
        &self,
        username: &str,
        role: Role,
        location: &str,
    ) -> Result<(), AuthError> {
        let sql = "UPDATE users SET role = $2 WHERE username = $1";
        self.update_user(username, sql, &role.as_str(), false)
            .await?;
        let sql = "UPDATE users SET location = $2 WHERE username = $1";
        self.update_user(username, sql, &location, false).await
    }
}

impl PostgresAccounts {
    async fn find_where(
        &self,
        column: &'static str,
        value: &str,
    ) -> Result<Option<(User, String)>, AuthError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1"),
                &[&value],
            )
            .await
            .map_err(|e| self.failed(e))?;
        row.map(|row| user_from_row(&row).map_err(|e| self.failed(e)))
            .transpose()
    }
}
