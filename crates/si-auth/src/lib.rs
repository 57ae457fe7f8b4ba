//! Who may use the platform: users, passwords, sessions and access tokens, and the
//! seams to where their state is kept.
//!
//! - [`accounts`]: [`Accounts`], users and sessions over the stores: argon2
//!   hashes, validation, single-use rotating refresh tokens (reuse revokes the
//!   family).
//! - [`api_keys`]: keys for applications, and the in-memory list requests are
//!   checked against.
//! - [`store`]: one trait per kind of state (users, sessions, revocations, API
//!   keys, rate-limit counters, failed logins); the engines implement them
//!   elsewhere.
//! - [`users`]: what a user is, and where a user may log in.
//! - [`token`]: issuing and verifying signed JWT access tokens.
//! - [`revocation`]: the in-memory view of what is revoked, checked on every request.
//! - [`secret`]: the generated JWT secret file and random key material.
//!
//! This crate never builds an HTTP response, never reads the process environment,
//! and knows no database engine; the server maps [`AuthError`] to statuses.

pub mod accounts;
pub mod api_keys;
mod error;
mod password;
pub mod revocation;
pub mod secret;
pub mod store;
pub mod token;
pub mod users;

pub use accounts::Accounts;
pub use error::AuthError;
pub use revocation::{RevocationList, RevokedSet};
pub use token::{Claims, IssuedToken, JwtSecrets, TokenIssuer};
pub use users::{NewUser, User};
