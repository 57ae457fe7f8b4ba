//! The user database: one SQLite file, created on first use, argon2 hashes only.
//!
//! Calls block (SQLite and argon2 are synchronous by nature): async callers run them
//! on a blocking thread. The connection is behind a mutex, but password hashing and
//! verification happen outside it so logins do not queue behind each other.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use secrecy::{ExposeSecret, SecretString};
use si_core::Role;

use crate::{AuthError, password};

/// A user may log in at any location when bound to this one.
pub const ANY_LOCATION: &str = "*";

/// Shortest password accepted for a new user.
pub const MIN_PASSWORD_CHARS: usize = 12;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    location      TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
-- Refresh tokens, stored as SHA-256 hashes only. Each login starts a family; every
-- refresh marks its token used and adds the next one to the same family.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL,
    username   TEXT NOT NULL,
    location   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
-- Access tokens revoked before they expire (logout).
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
);
PRAGMA user_version = 2;
";

/// A user as stored (never with the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Unique login name.
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// The location the user belongs to, or [`ANY_LOCATION`].
    pub location: String,
    /// A disabled user cannot log in.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// What is needed to create a user.
pub struct NewUser<'a> {
    /// Login name: 1-64 of letters, digits, `.`, `_`, `-`, `@`.
    pub username: &'a str,
    /// At least [`MIN_PASSWORD_CHARS`] characters.
    pub password: &'a SecretString,
    /// Role.
    pub role: Role,
    /// Location id, or [`ANY_LOCATION`].
    pub location: &'a str,
}

/// The SQLite-backed user database.
#[derive(Debug)]
pub struct UserStore {
    pub(crate) conn: Mutex<Connection>,
    pub(crate) path: PathBuf,
    /// Verified against for unknown users so both failures cost the same time.
    dummy_hash: String,
}

impl UserStore {
    /// Opens (creating if needed, mode 0600) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, AuthError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::secret::create_private_dir(parent).map_err(|e| AuthError::store(path, e))?;
        }
        let conn = Connection::open(path).map_err(|e| AuthError::store(path, e))?;
        restrict_permissions(path).map_err(|e| AuthError::store(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| AuthError::store(path, e))?;
        Ok(UserStore {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            dummy_hash: password::hash("dummy password for timing")?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Connection>, AuthError> {
        self.conn
            .lock()
            .map_err(|_| AuthError::store(&self.path, "connection lock poisoned"))
    }

    /// Creates a user; fails if the name is taken or a field is unusable.
    pub fn add(&self, user: &NewUser<'_>) -> Result<User, AuthError> {
        validate_username(user.username)?;
        validate_location(user.location)?;
        validate_password(user.password)?;
        let hash = password::hash(user.password.expose_secret())?;
        let created_at = unix_now();
        let inserted = self
            .lock()?
            .execute(
                "INSERT INTO users (username, password_hash, role, location, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(username) DO NOTHING",
                params![
                    user.username,
                    hash,
                    user.role.as_str(),
                    user.location,
                    created_at
                ],
            )
            .map_err(|e| AuthError::store(&self.path, e))?;
        if inserted == 0 {
            return Err(AuthError::UserExists(user.username.to_owned()));
        }
        Ok(User {
            username: user.username.to_owned(),
            role: user.role,
            location: user.location.to_owned(),
            disabled: false,
            created_at,
        })
    }

    /// Every user, by name.
    pub fn list(&self) -> Result<Vec<User>, AuthError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare(
                "SELECT username, role, location, disabled, created_at FROM users ORDER BY username",
            )
            .map_err(|e| AuthError::store(&self.path, e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| AuthError::store(&self.path, e))?;
        rows.map(|row| {
            let (username, role, location, disabled, created_at) =
                row.map_err(|e| AuthError::store(&self.path, e))?;
            let role = role.parse().map_err(|e| AuthError::store(&self.path, e))?;
            Ok(User {
                username,
                role,
                location,
                disabled,
                created_at,
            })
        })
        .collect()
    }

    /// Checks a login. Unknown user, wrong password and disabled user all give
    /// [`AuthError::InvalidCredentials`] after the same amount of hashing work.
    pub fn authenticate(&self, username: &str, password: &SecretString) -> Result<User, AuthError> {
        let found = self.find_with_hash(username)?;
        let hash = found
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |(_, h)| h.as_str());
        let matches = password::verify(password.expose_secret(), hash);
        match found {
            Some((user, _)) if matches && !user.disabled => Ok(user),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    pub(crate) fn find_with_hash(
        &self,
        username: &str,
    ) -> Result<Option<(User, String)>, AuthError> {
        let conn = self.lock()?;
        let row = conn
            .query_row(
                "SELECT username, role, location, disabled, created_at, password_hash
                 FROM users WHERE username = ?1",
                params![username],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, bool>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| AuthError::store(&self.path, e))?;
        let Some((username, role, location, disabled, created_at, hash)) = row else {
            return Ok(None);
        };
        let role = role.parse().map_err(|e| AuthError::store(&self.path, e))?;
        Ok(Some((
            User {
                username,
                role,
                location,
                disabled,
                created_at,
            },
            hash,
        )))
    }
}

/// The location a login is for: the one asked for, which must be the user's own
/// unless the user may log in anywhere, and one of `known` when that list is given.
pub fn login_location(
    user: &User,
    requested: Option<&str>,
    known: &[String],
) -> Result<String, AuthError> {
    let wrong = |location: &str| AuthError::WrongLocation {
        username: user.username.clone(),
        location: location.to_owned(),
    };
    match requested.map(str::trim).filter(|l| !l.is_empty()) {
        Some(location) if !known.is_empty() && !known.iter().any(|k| k == location) => {
            Err(wrong(location))
        }
        Some(location) if user.location == ANY_LOCATION || user.location == location => {
            validate_location(location)?;
            Ok(location.to_owned())
        }
        Some(location) => Err(wrong(location)),
        None if user.location == ANY_LOCATION => {
            Err(AuthError::LocationRequired(user.username.clone()))
        }
        None => Ok(user.location.clone()),
    }
}

pub(crate) fn validate_password(password: &SecretString) -> Result<(), AuthError> {
    if password.expose_secret().chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::InvalidUser(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

fn validate_username(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    ok.then_some(()).ok_or_else(|| {
        AuthError::InvalidUser("username must be 1-64 letters, digits, `.`, `_`, `-` or `@`".into())
    })
}

fn validate_location(location: &str) -> Result<(), AuthError> {
    let ok = location == ANY_LOCATION
        || ((1..=64).contains(&location.len())
            && location
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    ok.then_some(()).ok_or_else(|| {
        AuthError::InvalidUser(
            "location must be 1-64 letters, digits, `.`, `_` or `-`, or `*` for any".into(),
        )
    })
}

fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

mod manage;
#[cfg(test)]
mod tests;
