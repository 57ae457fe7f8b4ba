//! Who may use the platform: users, passwords and access tokens.
//!
//! - [`users`]: the SQLite user database (created on first use) with argon2 hashes.
//! - [`token`]: issuing and verifying signed JWT access tokens.
//! - [`secret`]: the generated JWT secret file and random key material.
//!
//! This crate never builds an HTTP response and never reads the process environment;
//! the server maps [`AuthError`] to statuses.

mod error;
mod password;
pub mod secret;
pub mod token;
pub mod users;

pub use error::AuthError;
pub use token::{Claims, IssuedToken, TokenIssuer};
pub use users::{NewUser, User, UserStore};
