//! Users, sessions and revocations in one SQLite file (`users.db`), created on
//! first use, mode 0600.
//!
//! SQLite calls block: each trait method runs on a blocking thread. One
//! connection behind a mutex is enough: password hashing happens elsewhere, so
//! nothing slow holds it.

mod api_keys;
mod keys;
mod sessions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use si_auth::store::UserStore;
use si_auth::users::UsernameKey;
use si_auth::{AuthError, User};
use si_core::Role;

pub(crate) use keys::fill_username_keys;

use super::migrate;

/// The user database.
#[derive(Clone, Debug)]
pub struct SqliteUsers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteUsers {
    /// Opens (creating if needed, mode 0600) the database at `path`, and brings
    /// its schema up to date.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        let conn = super::open_private(path, std::time::Duration::from_secs(5), migrate::USERS)
            .map_err(|e| AuthError::store(path, e))?;
        keys::warn_of_look_alikes(&conn).map_err(|e| AuthError::store(path, e))?;
        Ok(SqliteUsers {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_owned(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on the connection, on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Path) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .conn
                .lock()
                .map_err(|_| AuthError::store(&inner.path, "connection lock poisoned"))?;
            work(&mut conn, &inner.path)
        })
        .await
        .map_err(|e| AuthError::store(&self.inner.path, format!("database task failed: {e}")))?
    }
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(User, String)> {
    let role: String = row.get(1)?;
    let role = role.parse().map_err(|e: si_core::role::UnknownRole| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok((
        User {
            username: row.get(0)?,
            role,
            location: row.get(2)?,
            disabled: row.get(3)?,
            created_at: row.get(4)?,
        },
        row.get(5)?,
    ))
}

const USER_COLUMNS: &str = "username, role, location, disabled, created_at, password_hash";

#[async_trait]
impl UserStore for SqliteUsers {
    async fn insert(
        &self,
        user: &User,
        key: &UsernameKey,
        password_hash: &str,
    ) -> Result<(), AuthError> {
        let (user, key, hash) = (user.clone(), key.clone(), password_hash.to_owned());
        self.run(move |conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            // Either the name or its key may be taken: both are unique.
            let inserted = conn
                .execute(
                    "INSERT INTO users
                         (username, username_key, password_hash, role, location, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![
                        user.username,
                        key.as_str(),
                        hash,
                        user.role.as_str(),
                        user.location,
                        user.created_at
                    ],
                )
                .map_err(store)?;
            if inserted == 1 {
                return Ok(());
            }
            let existing: Option<String> = conn
                .query_row(
                    "SELECT username FROM users WHERE username = ?1 OR username_key = ?2
                     ORDER BY username = ?1 DESC LIMIT 1",
                    params![user.username, key.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(store)?;
            Err(match existing {
                Some(existing) if existing != user.username => AuthError::UsernameTaken {
                    requested: user.username,
                    existing,
                },
                _ => AuthError::UserExists(user.username),
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<User>, AuthError> {
        self.run(|conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {USER_COLUMNS} FROM users ORDER BY username"
                ))
                .map_err(store)?;
            let rows = stmt.query_map([], user_from_row).map_err(store)?;
            rows.map(|row| row.map(|(user, _)| user).map_err(store))
                .collect()
        })
        .await
    }

    async fn find(&self, username: &str) -> Result<Option<(User, String)>, AuthError> {
        let username = username.to_owned();
        self.run(move |conn, path| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                params![username],
                user_from_row,
            )
            .optional()
            .map_err(|e| AuthError::store(path, e))
        })
        .await
    }

    async fn find_by_key(&self, key: &UsernameKey) -> Result<Option<(User, String)>, AuthError> {
        let key = key.clone();
        self.run(move |conn, path| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1"),
                params![key.as_str()],
                user_from_row,
            )
            .optional()
            .map_err(|e| AuthError::store(path, e))
        })
        .await
    }

    async fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), AuthError> {
        let sql = "UPDATE users SET disabled = ?2 WHERE username = ?1";
        self.update_user(username, sql, disabled.into(), disabled)
            .await
    }

    async fn set_password_hash(&self, username: &str, hash: &str) -> Result<(), AuthError> {
        let sql = "UPDATE users SET password_hash = ?2 WHERE username = ?1";
        self.update_user(username, sql, hash.to_owned().into(), true)
            .await
    }

    async fn set_profile(
        &self,
        username: &str,
        role: Role,
        location: &str,
    ) -> Result<(), AuthError> {
        let sql = "UPDATE users SET role = ?2 WHERE username = ?1";
        self.update_user(username, sql, role.as_str().to_owned().into(), false)
            .await?;
        let sql = "UPDATE users SET location = ?2 WHERE username = ?1";
        self.update_user(username, sql, location.to_owned().into(), false)
            .await
    }
}

impl SqliteUsers {
    /// Runs `sql` (with `?1` = username, `?2` = `value`) and, if asked, ends the
    /// user's sessions, in one transaction.
    async fn update_user(
        &self,
        username: &str,
        sql: &'static str,
        value: rusqlite::types::Value,
        end_sessions: bool,
    ) -> Result<(), AuthError> {
        let username = username.to_owned();
        self.run(move |conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            let tx = conn.transaction().map_err(store)?;
            if tx.execute(sql, params![username, value]).map_err(store)? == 0 {
                return Err(AuthError::UnknownUser(username));
            }
            if end_sessions {
                tx.execute(
                    "UPDATE refresh_tokens SET revoked = 1 WHERE username = ?1",
                    params![username],
                )
                .map_err(store)?;
            }
            tx.commit().map_err(store)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
