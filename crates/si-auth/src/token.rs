//! Signed access tokens (JWT).
//!
//! Verification pins the configured algorithm, requires `exp`, `iat`, `iss`, `aud`,
//! `sub`, `jti` and `sid`, allows 30 s of clock skew, and refuses oversized tokens
//! before decoding anything. Keys are never taken from a token: `jwk`, `jku`, `x5u`,
//! `x5c` and `crit` headers are refused, and `kid` only selects between the current
//! and the previous secret (so rotating the secret logs nobody out).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// `kid` of the current secret, written into every token.
    kid: String,
    /// The current secret first, then the previous one.
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
    expiry: Duration,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    /// An issuer for `auth`'s algorithm, lifetime, issuer and audience. It signs with
    /// `secrets.current` and also accepts tokens signed with `secrets.previous`.
    pub fn new(auth: &AuthConfig, secrets: &JwtSecrets) -> Self {
        let algorithm = match auth.algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Hs384 => Algorithm::HS384,
            JwtAlgorithm::Hs512 => Algorithm::HS512,
        };
        let key = secrets.current.expose_secret().as_bytes();
        let keys = std::iter::once(&secrets.current)
            .chain(&secrets.previous)
            .map(|s| {
                (
                    key_id(s),
                    DecodingKey::from_secret(s.expose_secret().as_bytes()),
                )
            })
            .collect();
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&auth.issuer]);
        validation.set_audience(&[&auth.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        TokenIssuer {
            algorithm,
            encoding: EncodingKey::from_secret(key),
            kid: key_id(&secrets.current),
            keys,
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
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
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
        let key = self.key_for(token)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
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
                }
            })?;
        // `iat` far in the future means a forged or mis-clocked issuer.
        if data.claims.iat > unix_now() + LEEWAY_SECS {
            return Err(AuthError::InvalidToken("token issued in the future"));
        }
        Ok(data.claims)
    }
}

impl TokenIssuer {
    /// The key a token's header asks for, after refusing headers that try to bring
    /// their own key or a different algorithm.
    fn key_for(&self, token: &str) -> Result<&DecodingKey, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::InvalidToken("malformed token"))?;
        if header.alg != self.algorithm {
            return Err(AuthError::InvalidToken("algorithm not allowed"));
        }
        let brings_key = header.jwk.is_some()
            || header.jku.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some();
        if brings_key || header.crit.is_some() {
            return Err(AuthError::InvalidToken(
                "embedded or remote keys are not accepted",
            ));
        }
        match header.kid.as_deref() {
            // Tokens from before key ids were written: the current secret only.
            None => self.keys.first().map(|(_, key)| key),
            Some(kid) => self
                .keys
                .iter()
                .find(|(id, _)| id == kid)
                .map(|(_, key)| key),
        }
        .ok_or(AuthError::InvalidToken("unknown key id"))
    }
}

/// The signing secrets: the current one, and the one before it, still accepted
/// until the tokens it signed expire.
#[derive(Clone)]
pub struct JwtSecrets {
    /// Signs new tokens.
    pub current: SecretString,
    /// Verifies tokens signed before the last rotation.
    pub previous: Option<SecretString>,
}

impl fmt::Debug for JwtSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSecrets")
            .field("current", &"[REDACTED]")
            .field("previous", &self.previous.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// A secret's public name: the first 8 bytes of its SHA-256, in hex. It tells keys
/// apart without revealing anything usable about them.
pub fn key_id(secret: &SecretString) -> String {
    Sha256::digest(secret.expose_secret().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("algorithm", &self.algorithm)
            .field("expiry", &self.expiry)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kid", &self.kid)
            .field("secrets", &"[REDACTED]")
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
