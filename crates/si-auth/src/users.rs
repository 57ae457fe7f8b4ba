//! Users: who they are, which fields are acceptable, and where they may log in.

use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use si_core::Role;
use unicode_normalization::UnicodeNormalization;

use crate::AuthError;

/// A user may log in at any location when bound to this one.
pub const ANY_LOCATION: &str = "*";

/// Shortest password accepted for a new user.
pub const MIN_PASSWORD_CHARS: usize = 12;

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

/// The form of a username that decides whether two names are one account: NFKC
/// (fullwidth `ｄｏｃｔｏｒ１` and ligatures become plain letters), lowercased, and
/// NFKC again (lowercasing can undo a normalisation). No two users share a key, and
/// a login finds its user by it, so `Doctor1` is `doctor1` and case variants of a
/// name share one budget of failed logins.
///
/// Lowercasing stands in for full case folding: new usernames are ASCII, where the
/// two agree, so folding only matters for what a login may type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UsernameKey(String);

impl UsernameKey {
    /// The key of `username`.
    pub fn of(username: &str) -> Self {
        let lowered = username.nfkc().collect::<String>().to_lowercase();
        UsernameKey(lowered.nfkc().collect())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UsernameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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

/// The location a login is for: the one asked for, which must be the user's own
/// unless the user may log in anywhere, and one of `known` when that list is given.
/// [`ANY_LOCATION`] is refused: it is a rule for where a user may log in, not a
/// place, and a token or audit record saying `*` would say nothing.
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
        Some(ANY_LOCATION) => Err(AuthError::LocationNotAPlace),
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

/// Whether `name` could be a username: 1-64 ASCII letters, digits, `.`, `_`, `-`
/// or `@`.
pub fn is_well_formed_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

pub(crate) fn validate_username(name: &str) -> Result<(), AuthError> {
    is_well_formed_username(name).then_some(()).ok_or_else(|| {
        AuthError::InvalidUser(
            "username must be 1-64 ASCII letters, digits, `.`, `_`, `-` or `@`".into(),
        )
    })
}

pub(crate) fn validate_location(location: &str) -> Result<(), AuthError> {
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

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
