//! The seams to where account state is kept: one trait per concern, each with an
//! implementation per engine (SQLite and in-process today; the implementations
//! live in their own crate). Nothing here knows an engine.

use std::fmt::Debug;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;

use crate::api_keys::ApiKey;
use crate::revocation::RevokedSet;
use crate::users::UsernameKey;
use si_core::Role;

use crate::{AuthError, User};

/// Users and their password hashes.
#[async_trait]
pub trait UserStore: Send + Sync + Debug {
    /// Adds `user`, whose name has `key`, with `password_hash`:
    /// [`AuthError::UserExists`] if the name is taken, [`AuthError::UsernameTaken`]
    /// (naming the existing user) if another user has the key.
    async fn insert(
        &self,
        user: &User,
        key: &UsernameKey,
        password_hash: &str,
    ) -> Result<(), AuthError>;

    /// Every user, by name.
    async fn list(&self) -> Result<Vec<User>, AuthError>;

    /// The user named exactly `username` and its password hash.
    async fn find(&self, username: &str) -> Result<Option<(User, String)>, AuthError>;

    /// The user whose name has `key`, and its password hash.
    async fn find_by_key(&self, key: &UsernameKey) -> Result<Option<(User, String)>, AuthError>;

    /// Disables (ending every session of the user) or re-enables `username`.
    async fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), AuthError>;

    /// Replaces `username`'s password hash and ends every session of the user.
    async fn set_password_hash(&self, username: &str, hash: &str) -> Result<(), AuthError>;

    /// Sets `username`'s role and location (what single sign-on says at each
    /// sign-in); sessions go on, and take the new role at their next refresh.
    async fn set_profile(
        &self,
        username: &str,
        role: Role,
        location: &str,
    ) -> Result<(), AuthError>;
}

/// A refresh token to store (only its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRefresh {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Its session family.
    pub family: String,
    /// Whose.
    pub username: String,
    /// The login's location.
    pub location: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The session a spent refresh token belonged to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpentRefresh {
    /// Its family.
    pub family: String,
    /// Whose.
    pub username: String,
    /// The login's location.
    pub location: String,
}

/// Sessions: single-use refresh tokens in families.
#[async_trait]
pub trait SessionStore: Send + Sync + Debug {
    /// Stores a new refresh token.
    async fn insert(&self, refresh: &NewRefresh) -> Result<(), AuthError>;

    /// Spends the token with `token_hash` and, in the same transaction, stores the
    /// next one of its family (`next_hash`, until `next_expires_at`). A spent token
    /// presented again revokes its family ([`AuthError::RefreshReused`]); an
    /// unknown, revoked or expired one is refused.
    async fn spend(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: i64,
    ) -> Result<SpentRefresh, AuthError>;

    /// Revokes the family of the token with `token_hash`; returns the family.
    async fn end(&self, token_hash: &str) -> Result<String, AuthError>;
}

/// What is revoked before it expires.
#[async_trait]
pub trait RevocationStore: Send + Sync + Debug {
    /// Revokes an access token (until `expires_at`, Unix seconds) and, if given,
    /// its session family.
    async fn revoke(
        &self,
        jti: &str,
        expires_at: u64,
        family: Option<&str>,
    ) -> Result<(), AuthError>;

    /// Everything revoked now (expired entries are purged on the way).
    async fn revoked(&self) -> Result<RevokedSet, AuthError>;

    /// A value that changes whenever another process changes what is revoked: the
    /// cheap check before [`RevocationStore::revoked`].
    async fn version(&self) -> Result<i64, AuthError>;

    /// Where the store can push: from now on, sends on `changed` whenever any
    /// process commits a change to what is revoked, with when it did (ms since the
    /// epoch, by the store's clock), until `changed` is closed; returns true.
    /// Stores that cannot push return false, and the caller's polling is all
    /// there is.
    fn watch(&self, changed: tokio::sync::mpsc::UnboundedSender<i64>) -> bool {
        let _ = changed;
        false
    }
}

/// API keys, as their hashes.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + Debug {
    /// Stores `key` with `hash` (the SHA-256 of the key itself):
    /// [`AuthError::ApiKeyExists`] if the name is taken.
    async fn insert_key(&self, key: &ApiKey, hash: &str) -> Result<(), AuthError>;

    /// Every key, revoked and expired ones too, with its hash, by name.
    async fn keys(&self) -> Result<Vec<(ApiKey, String)>, AuthError>;

    /// Revokes the key named `name` for good, telling every gateway to reload:
    /// [`AuthError::UnknownApiKey`] if there is none.
    async fn revoke_key(&self, name: &str) -> Result<(), AuthError>;

    /// Records when keys were last used, `(name, Unix seconds)`, in one write.
    /// A key's last use never moves back (another gateway may have seen a later
    /// one); names of no key are ignored. It does not make gateways reload
    /// their keys.
    async fn record_uses(&self, uses: &[(String, i64)]) -> Result<(), AuthError>;
}

/// A request over a rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Which limit: `client address`, `user`, `location` or `API key`.
    pub scope: &'static str,
    /// Its quota, requests per minute.
    pub per_minute: u32,
    /// Seconds until a request would be admitted.
    pub retry_after: u64,
}

/// Why a request was not counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It is over a limit.
    Limited(Limited),
    /// The shared counters cannot be reached and the configuration says to refuse
    /// rather than count locally (`store.redis_failure = "fail_closed"`).
    Unavailable,
}

impl From<Limited> for Refusal {
    fn from(limited: Limited) -> Self {
        Refusal::Limited(limited)
    }
}

/// Rate-limit counters per client address, user, location and API key.
#[async_trait]
pub trait RequestCounters: Send + Sync + Debug {
    /// Counts a request from `client`.
    async fn check_client(&self, client: IpAddr) -> Result<(), Refusal>;

    /// Counts a request by `user` at `location`.
    async fn check_identity(&self, user: &str, location: &str) -> Result<(), Refusal>;

    /// Counts a request made with the API key `name` against the key's own
    /// quota of `per_minute` (which the key carries, not the configuration).
    async fn check_api_key(&self, name: &str, per_minute: u32) -> Result<(), Refusal>;
}

/// A login attempt let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// How long to wait before checking the password: the username's slow-down
    /// after recent failures from any address.
    pub delay: Duration,
}

/// Why a login attempt was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// The username at this address, or the address, is locked out for this long.
    Locked(Duration),
    /// The shared bookkeeping cannot be reached and the configuration says to
    /// refuse rather than count locally.
    Unavailable,
}

/// What a failed login showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailedLogin {
    /// This failure was the first, within the window, to make the username's
    /// failures come from several addresses: someone may be guessing from many
    /// places. Reported once per username and window.
    pub distributed: bool,
}

/// Failed-login bookkeeping. Guessing is made slow without letting anyone lock a
/// user out from elsewhere: a username is locked out only at an address that
/// failed it repeatedly, an address is locked out after many failures for any
/// usernames, and a username failing from everywhere is only slowed down.
///
/// `user` is the [`UsernameKey`] of what the login typed, whether or not such a
/// user exists, so neither the delay nor the lockout tells which accounts are
/// real, and case variants of a name share one budget. `address` is the client
/// address as counted for rate limits.
#[async_trait]
pub trait LoginAttempts: Send + Sync + Debug {
    /// Books an attempt before its password is checked, so attempts sent at once
    /// count as much as attempts sent one after another. Refused while the
    /// username at this address, or the address, is locked out.
    async fn begin(&self, user: &str, address: &str) -> Result<Admitted, LoginRefusal>;

    /// The attempt's password was wrong (or the user unknown or disabled).
    async fn failed(&self, user: &str, address: &str) -> FailedLogin;

    /// The attempt succeeded: it does not count against the username at this
    /// address or the address, and the username's failures at this address are
    /// forgotten.
    async fn succeeded(&self, user: &str, address: &str);

    /// The attempt ended before its password was judged (the gateway was busy, the
    /// client left) or failed for another reason (a wrong location): its booking
    /// is given back, and nothing else changes. Without this, requests that never
    /// reach the password check would lock a user out at an address.
    async fn void(&self, user: &str, address: &str);
}
