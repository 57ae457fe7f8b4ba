//! What is revoked, held in memory so every request is checked without touching the
//! database. The server refreshes it from [`crate::store::RevocationStore`] at start
//! and whenever the database changes; revocations made in-process apply at once.

use std::collections::HashSet;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::{AuthError, Claims};

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

/// How long an in-process revocation is kept beside the snapshots: long enough for
/// its database write to show up in one, whatever the order of events.
const LOCAL_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Revoked {
    /// The database's view, as last read.
    snapshot: RevokedSet,
    /// Revoked here since (a snapshot read concurrently must not undo them).
    local: Vec<(Instant, RevokedSet)>,
}

impl Revoked {
    fn contains(&self, claims: &Claims) -> bool {
        std::iter::once(&self.snapshot)
            .chain(self.local.iter().map(|(_, set)| set))
            .any(|set| {
                set.jtis.contains(&claims.jti)
                    || set.families.contains(&claims.sid)
                    || set.disabled_users.contains(&claims.sub)
            })
    }
}

/// Revoked token ids, revoked session families and disabled users.
#[derive(Debug, Default)]
pub struct RevocationList {
    revoked: RwLock<Revoked>,
}

impl RevocationList {
    // A poisoned lock still holds a consistent set: every write is a single push
    // or a whole replacement.
    fn read(&self) -> RwLockReadGuard<'_, Revoked> {
        self.revoked.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Revoked> {
        self.revoked.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a fresh snapshot from the database. Revocations made here that it
    /// does not show yet are kept (its read may have started before their write).
    pub fn replace(&self, snapshot: RevokedSet) {
        let mut revoked = self.write();
        revoked.local.retain(|(at, set)| {
            let confirmed =
                set.jtis.is_subset(&snapshot.jtis) && set.families.is_subset(&snapshot.families);
            !confirmed && at.elapsed() < LOCAL_GRACE
        });
        revoked.snapshot = snapshot;
    }

    /// Revokes one access token and, if given, its session family.
    pub fn revoke(&self, jti: &str, family: Option<&str>) {
        let mut set = RevokedSet::default();
        set.jtis.insert(jti.to_owned());
        set.families.extend(family.map(str::to_owned));
        self.write().local.push((Instant::now(), set));
    }

    /// Revokes a session family.
    pub fn revoke_family(&self, family: &str) {
        let mut set = RevokedSet::default();
        set.families.insert(family.to_owned());
        self.write().local.push((Instant::now(), set));
    }

    /// Refuses a token that was revoked, whose session was revoked, or whose user
    /// is disabled.
    pub fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.read().contains(claims) {
            Err(AuthError::RevokedToken)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use si_core::Role;

    use super::*;

    fn claims(jti: &str, sid: &str, sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            role: Role::Clinician,
            loc: "h".into(),
            jti: jti.into(),
            sid: sid.into(),
            iat: 0,
            exp: 0,
            iss: String::new(),
            aud: String::new(),
        }
    }

    #[test]
    fn a_stale_snapshot_does_not_undo_a_revocation() {
        let list = RevocationList::default();
        list.revoke("j1", Some("s1"));
        // A snapshot read before the revocation reached the database.
        list.replace(RevokedSet::default());
        assert!(list.check(&claims("j1", "other", "u")).is_err());
        assert!(list.check(&claims("other", "s1", "u")).is_err());
        // Once a snapshot shows it, the local copy is dropped and it still holds.
        let mut confirmed = RevokedSet::default();
        confirmed.jtis.insert("j1".into());
        confirmed.families.insert("s1".into());
        list.replace(confirmed);
        assert!(list.read().local.is_empty());
        assert!(list.check(&claims("j1", "x", "u")).is_err());
        assert!(list.check(&claims("j2", "s2", "u")).is_ok());
    }

    #[test]
    fn disabled_users_come_from_snapshots() {
        let list = RevocationList::default();
        let mut set = RevokedSet::default();
        set.disabled_users.insert("ann".into());
        list.replace(set);
        assert!(list.check(&claims("j", "s", "ann")).is_err());
        list.replace(RevokedSet::default());
        assert!(list.check(&claims("j", "s", "ann")).is_ok(), "re-enabled");
    }
}
