//! Refresh tokens and revocations, beside the users. A refresh token is stored
//! only as its SHA-256; each is single use, and presenting a spent one revokes
//! its whole family.

use std::collections::HashSet;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use si_auth::store::{NewRefresh, RevocationStore, SessionStore, SpentRefresh};
use si_auth::users::unix_now;
use si_auth::{AuthError, RevokedSet};

use super::SqliteUsers;

fn insert(conn: &Connection, refresh: &NewRefresh) -> rusqlite::Result<usize> {
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family, username, location, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            refresh.token_hash,
            refresh.family,
            refresh.username,
            refresh.location,
            refresh.expires_at
        ],
    )
}

const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1";

#[async_trait]
impl SessionStore for SqliteUsers {
    async fn insert(&self, refresh: &NewRefresh) -> Result<(), AuthError> {
        let refresh = refresh.clone();
        self.run(move |conn, path| {
            insert(conn, &refresh)
                .map(drop)
                .map_err(|e| AuthError::store(path, e))
        })
        .await
    }

    async fn spend(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: i64,
    ) -> Result<SpentRefresh, AuthError> {
        let (token_hash, next_hash) = (token_hash.to_owned(), next_hash.to_owned());
        self.run(move |conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            let tx = conn.transaction().map_err(store)?;
            let row = tx
                .query_row(
                    "SELECT family, username, location, expires_at, used, revoked
                     FROM refresh_tokens WHERE token_hash = ?1",
                    params![token_hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, bool>(4)?,
                            r.get::<_, bool>(5)?,
                        ))
                    },
                )
                .optional()
                .map_err(store)?;
            let Some((family, username, location, expires_at, used, revoked)) = row else {
                return Err(AuthError::InvalidToken("unknown refresh token"));
            };
            if used && !revoked {
                tx.execute(REVOKE_FAMILY, params![family]).map_err(store)?;
                tx.commit().map_err(store)?;
                return Err(AuthError::RefreshReused { username, family });
            }
            if revoked || used {
                return Err(AuthError::InvalidToken("refresh token revoked"));
            }
            if expires_at <= unix_now() {
                return Err(AuthError::ExpiredToken);
            }
            tx.execute(
                "UPDATE refresh_tokens SET used = 1 WHERE token_hash = ?1",
                params![token_hash],
            )
            .map_err(store)?;
            let next = NewRefresh {
                token_hash: next_hash,
                family: family.clone(),
                username: username.clone(),
                location: location.clone(),
                expires_at: next_expires_at,
            };
            insert(&tx, &next).map_err(store)?;
            tx.commit().map_err(store)?;
            Ok(SpentRefresh {
                family,
                username,
                location,
            })
        })
        .await
    }

    async fn end(&self, token_hash: &str) -> Result<String, AuthError> {
        let token_hash = token_hash.to_owned();
        self.run(move |conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            let family: Option<String> = conn
                .query_row(
                    "SELECT family FROM refresh_tokens WHERE token_hash = ?1",
                    params![token_hash],
                    |r| r.get(0),
                )
                .optional()
                .map_err(store)?;
            let family = family.ok_or(AuthError::InvalidToken("unknown refresh token"))?;
            conn.execute(REVOKE_FAMILY, params![family])
                .map_err(store)?;
            Ok(family)
        })
        .await
    }
}

#[async_trait]
impl RevocationStore for SqliteUsers {
    async fn revoke(
        &self,
        jti: &str,
        expires_at: u64,
        family: Option<&str>,
    ) -> Result<(), AuthError> {
        let (jti, family) = (jti.to_owned(), family.map(str::to_owned));
        self.run(move |conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            let tx = conn.transaction().map_err(store)?;
            let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)",
                params![jti, expires_at],
            )
            .map_err(store)?;
            if let Some(family) = family {
                tx.execute(REVOKE_FAMILY, params![family]).map_err(store)?;
            }
            tx.commit().map_err(store)
        })
        .await
    }

    async fn revoked(&self) -> Result<RevokedSet, AuthError> {
        self.run(|conn, path| {
            let store = |e: rusqlite::Error| AuthError::store(path, e);
            let now = unix_now();
            conn.execute(
                "DELETE FROM revoked_tokens WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(store)?;
            conn.execute(
                "DELETE FROM refresh_tokens WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(store)?;
            let strings = |sql: &str| -> Result<HashSet<String>, AuthError> {
                let mut stmt = conn.prepare(sql).map_err(store)?;
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(store)?;
                rows.collect::<Result<_, _>>().map_err(store)
            };
            Ok(RevokedSet {
                jtis: strings("SELECT jti FROM revoked_tokens")?,
                families: strings("SELECT DISTINCT family FROM refresh_tokens WHERE revoked = 1")?,
                disabled_users: strings("SELECT username FROM users WHERE disabled = 1")?,
            })
        })
        .await
    }

    /// SQLite's `data_version`: it changes whenever another connection (another
    /// process, such as `si-cli users disable`) commits.
    async fn version(&self) -> Result<i64, AuthError> {
        self.run(|conn, path| {
            conn.query_row("PRAGMA data_version", [], |r| r.get(0))
                .map_err(|e| AuthError::store(path, e))
        })
        .await
    }
}
