//! What is revoked, held in memory so every request is checked without touching the
//! database. The server refreshes it from [`crate::UserStore::revoked_set`] at start
//! and whenever the database changes; revocations made in-process apply at once.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::sessions::RevokedSet;
use crate::{AuthError, Claims};

/// Revoked token ids, revoked session families and disabled users.
#[derive(Debug, Default)]
pub struct RevocationList {
    set: RwLock<RevokedSet>,
}

impl RevocationList {
    // A poisoned lock still holds a consistent set: every write is a single insert
    // or a whole replacement.
    fn read(&self) -> RwLockReadGuard<'_, RevokedSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RevokedSet> {
        self.set.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces everything with a fresh snapshot from the database.
    pub fn replace(&self, set: RevokedSet) {
        *self.write() = set;
    }

    /// Revokes one access token and, if given, its session family.
    pub fn revoke(&self, jti: &str, family: Option<&str>) {
        let mut set = self.write();
        set.jtis.insert(jti.to_owned());
        if let Some(family) = family {
            set.families.insert(family.to_owned());
        }
    }

    /// Revokes a session family.
    pub fn revoke_family(&self, family: &str) {
        self.write().families.insert(family.to_owned());
    }

    /// Refuses a token that was revoked, whose session was revoked, or whose user
    /// is disabled.
    pub fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        let set = self.read();
        let revoked = set.jtis.contains(&claims.jti)
            || set.families.contains(&claims.sid)
            || set.disabled_users.contains(&claims.sub);
        if revoked {
            Err(AuthError::RevokedToken)
        } else {
            Ok(())
        }
    }
}
