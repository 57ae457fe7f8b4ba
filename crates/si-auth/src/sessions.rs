//! Refresh tokens and revocation, stored beside the users.
//!
//! A refresh token is 32 random bytes, handed out once and stored only as its
//! SHA-256. Each is single use: refreshing marks it used and issues the next one in
//! the same family. Presenting a used one means it was stolen or replayed, so the
//! whole family is revoked, and with it every access token carrying that family id.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::secret::random_hex;
use crate::users::unix_now;
use crate::{AuthError, User, UserStore};

/// A new refresh token.
pub struct IssuedRefresh {
    /// The token, shown to the client once.
    pub token: SecretString,
    /// Its family (the `sid` claim of access tokens issued with it).
    pub family: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// What a successful refresh yields.
pub struct Refreshed {
    /// The user, as stored now (role changes apply).
    pub user: User,
    /// The location of the original login.
    pub location: String,
    /// The next refresh token of the family.
    pub refresh: IssuedRefresh,
}

/// Everything revoked and not yet expired, for checks from memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedSet {
    /// Revoked access token ids.
    pub jtis: HashSet<String>,
    /// Revoked session families.
    pub families: HashSet<String>,
    /// Disabled users.
    pub disabled_users: HashSet<String>,
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl UserStore {
    /// Starts a new session family for `username` at `location`.
    pub fn start_session(
        &self,
        username: &str,
        location: &str,
        ttl_secs: u64,
    ) -> Result<IssuedRefresh, AuthError> {
        let family = random_hex(16);
        let conn = self.lock()?;
        insert_refresh(&conn, &family, username, location, ttl_secs)
            .map_err(|e| AuthError::store(&self.path, e))
    }

    /// Spends `token` and issues the next one of its family. Reuse of a spent token
    /// revokes the family ([`AuthError::RefreshReused`]).
    pub fn refresh(&self, token: &SecretString, ttl_secs: u64) -> Result<Refreshed, AuthError> {
        let store = |e: rusqlite::Error| AuthError::store(&self.path, e);
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(store)?;
        let row = tx
            .query_row(
                "SELECT family, username, location, expires_at, used, revoked
                 FROM refresh_tokens WHERE token_hash = ?1",
                params![hash(token.expose_secret())],
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
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                params![family],
            )
            .map_err(store)?;
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
            params![hash(token.expose_secret())],
        )
        .map_err(store)?;
        let refresh =
            insert_refresh(&tx, &family, &username, &location, ttl_secs).map_err(store)?;
        tx.commit().map_err(store)?;
        drop(conn);
        let user = match self.find_with_hash(&username)? {
            Some((user, _)) if !user.disabled => user,
            _ => return Err(AuthError::InvalidCredentials),
        };
        Ok(Refreshed {
            user,
            location,
            refresh,
        })
    }

    /// Revokes an access token (until `expires_at`) and, if given, its family.
    pub fn revoke(
        &self,
        jti: &str,
        expires_at: u64,
        family: Option<&str>,
    ) -> Result<(), AuthError> {
        let store = |e: rusqlite::Error| AuthError::store(&self.path, e);
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(store)?;
        let expires_at = i64::try_from(expires_at).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)",
            params![jti, expires_at],
        )
        .map_err(store)?;
        if let Some(family) = family {
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                params![family],
            )
            .map_err(store)?;
        }
        tx.commit().map_err(store)
    }

    /// Revokes the session `token` belongs to (a logout whose access token has
    /// expired); returns the family.
    pub fn revoke_session(&self, token: &SecretString) -> Result<String, AuthError> {
        let store = |e: rusqlite::Error| AuthError::store(&self.path, e);
        let conn = self.lock()?;
        let family: Option<String> = conn
            .query_row(
                "SELECT family FROM refresh_tokens WHERE token_hash = ?1",
                params![hash(token.expose_secret())],
                |r| r.get(0),
            )
            .optional()
            .map_err(store)?;
        let family = family.ok_or(AuthError::InvalidToken("unknown refresh token"))?;
        conn.execute(
            "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
            params![family],
        )
        .map_err(store)?;
        Ok(family)
    }

    /// Everything currently revoked; expired entries are purged on the way.
    pub fn revoked_set(&self) -> Result<RevokedSet, AuthError> {
        let store = |e: rusqlite::Error| AuthError::store(&self.path, e);
        let conn = self.lock()?;
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
    }

    /// Changes whenever another connection (another process) commits: the cheap way
    /// to notice `si-cli users disable` without re-reading everything.
    pub fn data_version(&self) -> Result<i64, AuthError> {
        self.lock()?
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| AuthError::store(&self.path, e))
    }
}

fn insert_refresh(
    conn: &rusqlite::Connection,
    family: &str,
    username: &str,
    location: &str,
    ttl_secs: u64,
) -> rusqlite::Result<IssuedRefresh> {
    let token = random_hex(32);
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2);
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family, username, location, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            hash(&token),
            family,
            username,
            location,
            unix_now().saturating_add(ttl)
        ],
    )?;
    Ok(IssuedRefresh {
        token: token.into(),
        family: family.to_owned(),
        expires_in: ttl_secs,
    })
}

#[cfg(test)]
mod tests;
