//! Changing users after they were added: disable, enable, new password.

use rusqlite::{ToSql, params};
use secrecy::{ExposeSecret, SecretString};

use super::{UserStore, validate_password};
use crate::{AuthError, password};

impl UserStore {
    /// Disables or re-enables `username`. Disabling also revokes every refresh token
    /// of the user; a gateway rejects the user's access tokens once it has synced.
    pub fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), AuthError> {
        let sql = "UPDATE users SET disabled = ?2 WHERE username = ?1";
        self.update_user(username, sql, &disabled, disabled)
    }

    /// Replaces `username`'s password and ends every session of the user.
    pub fn set_password(&self, username: &str, new: &SecretString) -> Result<(), AuthError> {
        validate_password(new)?;
        let hash = password::hash(new.expose_secret())?;
        let sql = "UPDATE users SET password_hash = ?2 WHERE username = ?1";
        self.update_user(username, sql, &hash, true)
    }

    /// Runs `sql` (with `?1` = username, `?2` = `value`) and, if asked, ends the
    /// user's sessions, in one transaction.
    fn update_user(
        &self,
        username: &str,
        sql: &str,
        value: &dyn ToSql,
        end_sessions: bool,
    ) -> Result<(), AuthError> {
        let store = |e: rusqlite::Error| AuthError::store(&self.path, e);
        let mut conn = self.lock()?;
        let tx = conn.transaction().map_err(store)?;
        if tx.execute(sql, params![username, value]).map_err(store)? == 0 {
            return Err(AuthError::UnknownUser(username.to_owned()));
        }
        if end_sessions {
            tx.execute(
                "UPDATE refresh_tokens SET revoked = 1 WHERE username = ?1",
                params![username],
            )
            .map_err(store)?;
        }
        tx.commit().map_err(store)
    }
}
