//! Signed access tokens (JWT).
//!
//! Verification pins the configured algorithm, requires `exp`, `iat`, `iss`, `aud`,
//! `sub` and `jti`, allows 30 s of clock skew, and refuses oversized tokens before
//! decoding anything.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use si_core::Role;
use si_core::config::{AuthConfig, JwtAlgorithm};

use crate::AuthError;
use crate::secret::random_hex;

/// Longest token accepted for verification; real ones are ~400 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

/// The claims every access token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Username.
    pub sub: String,
    /// The user's role.
    pub role: Role,
    /// The location the user logged in at.
    pub loc: String,
    /// Unique token id (for revocation).
    pub jti: String,
    /// Session family: every token of one login and its refreshes (for revocation).
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// A freshly signed token and its lifetime.
pub struct IssuedToken {
    /// The compact JWT.
    pub token: SecretString,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Its claims.
    pub claims: Claims,
}

/// Signs and verifies access tokens with one shared secret.
pub struct TokenIssuer {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    expiry: Duration,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    /// An issuer for `auth`'s algorithm, lifetime, issuer and audience, keyed by `secret`.
    pub fn new(auth: &AuthConfig, secret: &SecretString) -> Self {
        let algorithm = match auth.algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Hs384 => Algorithm::HS384,
            JwtAlgorithm::Hs512 => Algorithm::HS512,
        };
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        TokenIssuer {
            algorithm,
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            expiry: auth.expiry,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
        }
    }

    /// Signs a token for `username` with `role`, at `location`, in session `sid`.
    pub fn issue(
        &self,
        username: &str,
        role: Role,
        location: &str,
        sid: &str,
    ) -> Result<IssuedToken, AuthError> {
        let iat = unix_now();
        let claims = Claims {
            sub: username.to_owned(),
            role,
            loc: location.to_owned(),
            jti: random_hex(16),
            sid: sid.to_owned(),
            iat,
            exp: iat + self.expiry.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| AuthError::Internal(format!("token signing failed: {e}")))?;
        Ok(IssuedToken {
            token: token.into(),
            expires_in: self.expiry.as_secs(),
            claims,
        })
    }

    /// Checks `token`'s size, signature, algorithm and claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken("token too large"));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::ExpiredToken,
                ErrorKind::ImmatureSignature => AuthError::InvalidToken("token not yet valid"),
                ErrorKind::InvalidSignature => AuthError::InvalidToken("bad signature"),
                ErrorKind::InvalidAlgorithm => AuthError::InvalidToken("algorithm not allowed"),
                ErrorKind::InvalidIssuer => AuthError::InvalidToken("wrong issuer"),
                ErrorKind::InvalidAudience => AuthError::InvalidToken("wrong audience"),
                ErrorKind::MissingRequiredClaim(_) => {
                    AuthError::InvalidToken("a required claim is missing")
                }
                _ => AuthError::InvalidToken("malformed token"),
            })?;
        // `iat` far in the future means a forged or mis-clocked issuer.
        if data.claims.iat > unix_now() + LEEWAY_SECS {
            return Err(AuthError::InvalidToken("token issued in the future"));
        }
        Ok(data.claims)
    }
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("algorithm", &self.algorithm)
            .field("expiry", &self.expiry)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
