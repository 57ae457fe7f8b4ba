//! Who may use the platform: users, passwords and access tokens.
//!
//! - [`audit`]: the tamper-evident, metadata-only audit trail.
//! - [`users`]: the SQLite user database (created on first use) with argon2 hashes.
//! - [`token`]: issuing and verifying signed JWT access tokens.
//! - [`sessions`]: refresh tokens (single use, rotating, reuse revokes the family)
//!   and revocation records.
//! - [`revocation`]: the in-memory view of what is revoked, checked on every request.
//! - [`throttle`]: slowing and locking out repeated failed logins.
//! - [`secret`]: the generated JWT secret file and random key material.
//!
//! This crate never builds an HTTP response and never reads the process environment;
//! the server maps [`AuthError`] to statuses.

pub mod audit;
mod error;
mod password;
pub mod revocation;
pub mod secret;
pub mod sessions;
pub mod throttle;
pub mod token;
pub mod users;

pub use error::AuthError;
pub use revocation::RevocationList;
pub use token::{Claims, IssuedToken, JwtSecrets, TokenIssuer};
pub use users::{NewUser, User, UserStore};
