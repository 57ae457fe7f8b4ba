use std::path::Path;

/// Everything that can go wrong proving who someone is.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password or disabled user: deliberately indistinguishable.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The user is bound to another location.
    #[error("user `{username}` is not registered at location `{location}`")]
    WrongLocation {
        /// Who tried.
        username: String,
        /// Where they said they were.
        location: String,
    },
    /// The user may log in anywhere, so the login must say where.
    #[error("`location_id` is required for user `{0}`")]
    LocationRequired(String),
    /// A login named `*`, which allows any location but is not one.
    #[error(
        "`location_id` must name one location; `*` (any location) is only for where a user may log in"
    )]
    LocationNotAPlace,
    /// No `Authorization: Bearer` header.
    #[error(
        "missing bearer token: send `Authorization: Bearer <access_token>` from /v1/auth/login"
    )]
    MissingToken,
    /// The token is malformed, badly signed, or its claims do not hold.
    #[error("invalid access token: {0}")]
    InvalidToken(&'static str),
    /// The token was valid once.
    #[error("access token expired: log in again")]
    ExpiredToken,
    /// A spent refresh token came back: its family is now revoked.
    #[error("refresh token already used; every session of this login was revoked, log in again")]
    RefreshReused {
        /// Whose token.
        username: String,
        /// The revoked family.
        family: String,
    },
    /// Too many failed logins for this username from this address, or from this
    /// address for any username.
    #[error("too many failed logins from this address; try again in {retry_after_secs} s")]
    LoginLocked {
        /// Seconds until the lockout ends.
        retry_after_secs: u64,
    },
    /// No such user (management commands only; logins never say this).
    #[error("no user named `{0}`")]
    UnknownUser(String),
    /// No API key has this name (management commands only).
    #[error("no API key named `{0}`; `si-cli apikeys list` shows them")]
    UnknownApiKey(String),
    /// A front end named its user with an unusable value.
    #[error("header `{0}` must be 1 to 256 printable characters naming the front end's user")]
    InvalidForwardedUser(&'static str),
    /// An API key already has this name.
    #[error("an API key named `{0}` exists; revoke it or choose another name")]
    ApiKeyExists(String),
    /// The token was revoked (logout, disabled user, reused refresh token).
    #[error("access token revoked: log in again")]
    RevokedToken,
    /// Usernames are unique.
    #[error("user `{0}` already exists")]
    UserExists(String),
    /// Single sign-on named a user who has a local password here: one account
    /// cannot be both.
    #[error(
        "a local account named `{0}` exists on this gateway, so single sign-on cannot use \
         the name; an administrator removes or renames one of the two"
    )]
    LocalAccountExists(String),
    /// A user signed in with single sign-on whom an administrator disabled here.
    #[error("user `{0}` is disabled on this gateway; ask an administrator")]
    UserDisabled(String),
    /// The name differs from an existing user's only in case or character form
    /// (fullwidth letters, ligatures), which would make two accounts one name.
    #[error(
        "username `{requested}` is taken: it matches the existing user `{existing}` ignoring case and character width"
    )]
    UsernameTaken {
        /// The name asked for.
        requested: String,
        /// The existing user's name, as stored.
        existing: String,
    },
    /// A field of a new user is unusable.
    #[error("{0}")]
    InvalidUser(String),
    /// The database could not be opened or queried.
    #[error("user database {path}: {message}")]
    Store {
        /// The database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The database server cannot be reached now (down, restarting, cut off):
    /// retrying later may work.
    #[error("user database {place} cannot be reached: {message}")]
    StoreUnreachable {
        /// The database, without its password.
        place: String,
        /// What failed.
        message: String,
    },
    /// The secret file could not be read or written.
    #[error("jwt secret {path}: {message}")]
    SecretFile {
        /// The secret file.
        path: String,
        /// What failed.
        message: String,
    },
    /// Hashing or signing failed: a bug or a broken environment, not bad input.
    #[error("internal authentication failure: {0}")]
    Internal(String),
}

impl AuthError {
    /// A store failure at `path`.
    pub fn store(path: &Path, error: impl std::fmt::Display) -> Self {
        AuthError::Store {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }

    /// The database server at `place` cannot be reached now.
    pub fn unreachable(place: &str, error: impl std::fmt::Display) -> Self {
        AuthError::StoreUnreachable {
            place: place.to_owned(),
            message: error.to_string(),
        }
    }

    /// True when the caller failed to authenticate (a 401).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            AuthError::InvalidCredentials
                | AuthError::MissingToken
                | AuthError::InvalidToken(_)
                | AuthError::ExpiredToken
                | AuthError::RevokedToken
                | AuthError::RefreshReused { .. }
        )
    }
}
