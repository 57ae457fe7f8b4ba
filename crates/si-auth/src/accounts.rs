//! [`Accounts`]: users, passwords and sessions, over whatever stores keep them.
//! Hashing, validation and token generation happen here, so every engine behaves
//! alike; the stores only keep rows.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use si_core::Role;

use crate::secret::random_hex;
use crate::store::{NewRefresh, SessionStore, UserStore};
use crate::users::{
    UsernameKey, unix_now, validate_location, validate_password, validate_username,
};
use crate::{AuthError, NewUser, User, password};

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

/// Users and sessions.
#[derive(Clone, Debug)]
pub struct Accounts {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    /// Verified against for unknown users so both failures cost the same time.
    dummy_hash: Arc<str>,
}

/// The password hash of users who sign in with single sign-on: not a hash at
/// all, so no password verifies against it.
pub const EXTERNAL_PASSWORD_HASH: &str = "!single-sign-on";

/// SHA-256 of a refresh token, hex: all that is stored of it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs hashing work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| AuthError::Internal(format!("password hashing task failed: {e}")))?
}

impl Accounts {
    /// Accounts kept in `users` and `sessions`.
    pub fn new(
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Self, AuthError> {
        Ok(Accounts {
            users,
            sessions,
            dummy_hash: password::hash("dummy password for timing")?.into(),
        })
    }

    /// Creates a user; fails if a field is unusable or the name is taken, also
    /// when it differs from an existing name only in case or character form.
    pub async fn add(&self, new: &NewUser<'_>) -> Result<User, AuthError> {
        validate_username(new.username)?;
        validate_location(new.location)?;
        validate_password(new.password)?;
        let password = new.password.clone();
        let hash = blocking(move || password::hash(password.expose_secret())).await?;
        let user = User {
            username: new.username.to_owned(),
            role: new.role,
            location: new.location.to_owned(),
            disabled: false,
            created_at: unix_now(),
        };
        let key = UsernameKey::of(&user.username);
        self.users.insert(&user, &key, &hash).await?;
        Ok(user)
    }

    /// The user single sign-on named, as of this sign-in: created on the first
    /// one (with no password, so a local login can never match), given the role
    /// and location the provider's groups say at each. Refused if a local user
    /// has the name, or if an administrator disabled the user here.
    pub async fn sign_in_external(
        &self,
        username: &str,
        role: Role,
        location: &str,
    ) -> Result<User, AuthError> {
        validate_username(username)?;
        validate_location(location)?;
        // Twice at most: another gateway may create the user between our look and
        // our insert.
        for _ in 0..2 {
            match self.users.find(username).await? {
                Some((user, hash)) if hash != EXTERNAL_PASSWORD_HASH => {
                    return Err(AuthError::LocalAccountExists(user.username));
                }
                Some((user, _)) if user.disabled => {
                    return Err(AuthError::UserDisabled(user.username));
                }
                Some((mut user, _)) => {
                    if user.role != role || user.location != location {
                        self.users.set_profile(username, role, location).await?;
                        user.role = role;
                        user.location = location.to_owned();
                    }
                    return Ok(user);
                }
                None => {
                    let user = User {
                        username: username.to_owned(),
                        role,
                        location: location.to_owned(),
                        disabled: false,
                        created_at: unix_now(),
                    };
                    let key = UsernameKey::of(username);
                    match self.users.insert(&user, &key, EXTERNAL_PASSWORD_HASH).await {
                        Err(AuthError::UserExists(_)) => continue,
                        Err(AuthError::UsernameTaken { existing, .. }) => {
                            return Err(AuthError::LocalAccountExists(existing));
                        }
                        other => return other.map(|()| user),
                    }
                }
            }
        }
        Err(AuthError::UserExists(username.to_owned()))
    }

    /// Every user, by name.
    pub async fn list(&self) -> Result<Vec<User>, AuthError> {
        self.users.list().await
    }

    /// Checks a login. `username` may differ from the stored name in case or
    /// character form; the user returned carries the stored name. Unknown user,
    /// wrong password and disabled user all give [`AuthError::InvalidCredentials`]
    /// after the same amount of hashing work.
    pub async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<User, AuthError> {
        let found = self.find(username).await?;
        // Users of single sign-on have no hash: they cost the same work as the
        // unknown, so timing does not tell which names they are.
        let hash = found
            .as_ref()
            .map(|(_, h)| h.clone())
            .filter(|h| h != EXTERNAL_PASSWORD_HASH)
            .unwrap_or_else(|| self.dummy_hash.to_string());
        let password = password.clone();
        let matches =
            blocking(move || Ok(password::verify(password.expose_secret(), &hash))).await?;
        match found {
            Some((user, stored))
                if matches && !user.disabled && stored != EXTERNAL_PASSWORD_HASH =>
            {
                Ok(user)
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    /// The user `username` names, and its password hash: the one of exactly that
    /// name, else the one whose name has its [`UsernameKey`]. Exact names come
    /// first so that users whose names collided before keys existed can each
    /// still log in.
    async fn find(&self, username: &str) -> Result<Option<(User, String)>, AuthError> {
        match self.users.find(username).await? {
            Some(found) => Ok(Some(found)),
            None => self.users.find_by_key(&UsernameKey::of(username)).await,
        }
    }

    /// The stored name of the user `username` names, as a login would find it.
    async fn stored_name(&self, username: &str) -> Result<String, AuthError> {
        match self.find(username).await? {
            Some((user, _)) => Ok(user.username),
            None => Err(AuthError::UnknownUser(username.to_owned())),
        }
    }

    /// Disables or re-enables `username` (found as a login would find it).
    /// Disabling also ends every session of the user; a gateway rejects the
    /// user's access tokens once it has synced.
    pub async fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), AuthError> {
        let stored = self.stored_name(username).await?;
        self.users.set_disabled(&stored, disabled).await
    }

    /// Replaces `username`'s password (found as a login would find it) and ends
    /// every session of the user.
    pub async fn set_password(&self, username: &str, new: &SecretString) -> Result<(), AuthError> {
        validate_password(new)?;
        let stored = self.stored_name(username).await?;
        let password = new.clone();
        let hash = blocking(move || password::hash(password.expose_secret())).await?;
        self.users.set_password_hash(&stored, &hash).await
    }

    /// Starts a new session family for `username` at `location`.
    pub async fn start_session(
        &self,
        username: &str,
        location: &str,
        ttl_secs: u64,
    ) -> Result<IssuedRefresh, AuthError> {
        let (token, expires_at) = new_token(ttl_secs);
        let family = random_hex(16);
        self.sessions
            .insert(&NewRefresh {
                token_hash: token_hash(token.expose_secret()),
                family: family.clone(),
                username: username.to_owned(),
                location: location.to_owned(),
                expires_at,
            })
            .await?;
        Ok(IssuedRefresh {
            token,
            family,
            expires_in: ttl_secs,
        })
    }

    /// Spends `token` and issues the next one of its family. Reuse of a spent token
    /// revokes the family ([`AuthError::RefreshReused`]).
    pub async fn refresh(
        &self,
        token: &SecretString,
        ttl_secs: u64,
    ) -> Result<Refreshed, AuthError> {
        let (next, expires_at) = new_token(ttl_secs);
        let spent = self
            .sessions
            .spend(
                &token_hash(token.expose_secret()),
                &token_hash(next.expose_secret()),
                expires_at,
            )
            .await?;
        // The session's own user only, never another whose name has the same key.
        let user = match self.users.find(&spent.username).await? {
            Some((user, _)) if !user.disabled => user,
            _ => return Err(AuthError::InvalidCredentials),
        };
        Ok(Refreshed {
            user,
            location: spent.location,
            refresh: IssuedRefresh {
                token: next,
                family: spent.family,
                expires_in: ttl_secs,
            },
        })
    }

    /// Ends the session `token` belongs to (a logout whose access token has
    /// expired); returns the family.
    pub async fn end_session(&self, token: &SecretString) -> Result<String, AuthError> {
        self.sessions.end(&token_hash(token.expose_secret())).await
    }
}

/// A new refresh token (32 random bytes) and when it expires.
fn new_token(ttl_secs: u64) -> (SecretString, i64) {
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2);
    (random_hex(32).into(), unix_now().saturating_add(ttl))
}
