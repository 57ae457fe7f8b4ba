//! Changing users after they were added: disable, enable, new password.

use rusqlite::params;
use secrecy::{ExposeSecret, SecretString};

use super::{UserStore, validate_password};
use crate::{AuthError, password};

impl UserStore {
    /// Disables or re-enables `username`. Disabling also revokes every refresh token
    /// of the user; a gateway rejects the user's access tokens once it has synced.
    pub fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), AuthError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction()
            .map_err(|e| AuthError::store(&self.path, e))?;
        let changed = tx
            .execute(
                "UPDATE users SET disabled = ?2 WHERE username = ?1",
                params![username, disabled],
            )
            .map_err(|e| AuthError::store(&self.path, e))?;
        if changed == 0 {
            return Err(AuthError::UnknownUser(username.to_owned()));
        }
        if disabled {
            revoke_user_sessions(&tx, username).map_err(|e| AuthError::store(&self.path, e))?;
        }
        tx.commit().map_err(|e| AuthError::store(&self.path, e))
    }

    /// Replaces `username`'s password and ends every session of the user.
    pub fn set_password(&self, username: &str, new: &SecretString) -> Result<(), AuthError> {
        validate_password(new)?;
        let hash = password::hash(new.expose_secret())?;
        let mut conn = self.lock()?;
        let tx = conn
            .transaction()
            .map_err(|e| AuthError::store(&self.path, e))?;
        let changed = tx
            .execute(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                params![username, hash],
            )
            .map_err(|e| AuthError::store(&self.path, e))?;
        if changed == 0 {
            return Err(AuthError::UnknownUser(username.to_owned()));
        }
        revoke_user_sessions(&tx, username).map_err(|e| AuthError::store(&self.path, e))?;
        tx.commit().map_err(|e| AuthError::store(&self.path, e))
    }
}

fn revoke_user_sessions(tx: &rusqlite::Transaction<'_>, username: &str) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE refresh_tokens SET revoked = 1 WHERE username = ?1",
        params![username],
    )
}
