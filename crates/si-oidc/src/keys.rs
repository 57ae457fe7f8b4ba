//! The provider's published keys, and checking a token's signature and claims
//! against them.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::OidcError;

/// Largest token accepted: access tokens with many groups run to several KiB.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

/// The signing keys of a JWKS document.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

#[derive(Debug)]
struct Key {
    id: Option<String>,
    /// The algorithm the key names, if it does.
    algorithm: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

/// The family of an algorithm accepted from a provider; `None` for the others
/// (`none` cannot even be parsed; HMAC is refused here).
fn family_of(algorithm: Algorithm) -> Option<Family> {
    match algorithm {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(Family::Rsa),
        Algorithm::ES256 | Algorithm::ES384 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Ed),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => None,
    }
}

impl KeySet {
    /// The usable signing keys of `document` (`{"keys": [...]}`); keys for
    /// encryption, symmetric keys and keys this build cannot read are skipped, so
    /// one odd key does not hide the others.
    pub(crate) fn parse(document: &Value) -> KeySet {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value.clone()).ok())
            .filter_map(|jwk| Key::from_jwk(&jwk))
            .collect();
        KeySet { keys }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token signed with `algorithm` under `kid`: the one of that id
    /// (if it fits the algorithm), or, for a token without an id, the only key
    /// that fits. `None` when there is none.
    fn find(&self, algorithm: Algorithm, kid: Option<&str>) -> Option<&DecodingKey> {
        let family = family_of(algorithm)?;
        let fits = |key: &&Key| {
            key.family == family && key.algorithm.is_none_or(|named| named == algorithm)
        };
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(fits)
                .find(|key| key.id.as_deref() == Some(kid)),
            None => {
                let mut fitting = self.keys.iter().filter(fits);
                let only = fitting.next();
                fitting.next().is_none().then_some(only).flatten()
            }
        }
        .map(|key| &key.key)
    }
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Option<Key> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return None;
        }
        let family = match jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(_) => Family::Ec,
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(_) => return None,
        };
        let algorithm = match jwk.common.key_algorithm {
            None => None,
            Some(named) => {
                let algorithm = named.to_string().parse::<Algorithm>().ok()?;
                (family_of(algorithm) == Some(family)).then_some(algorithm)?;
                Some(algorithm)
            }
        };
        Some(Key {
            id: jwk.common.key_id.clone(),
            algorithm,
            family,
            key: DecodingKey::from_jwk(jwk).ok()?,
        })
    }
}

/// What a token's header asks for, after refusing headers that try to bring their
/// own key or an algorithm not accepted from a provider.
pub(crate) struct Asked {
    pub(crate) algorithm: Algorithm,
    pub(crate) kid: Option<String>,
}

/// Reads `token`'s header.
pub(crate) fn header(token: &str) -> Result<Asked, OidcError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(OidcError::InvalidToken("token too large"));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| OidcError::InvalidToken("malformed token"))?;
    if family_of(header.alg).is_none() {
        return Err(OidcError::InvalidToken("algorithm not allowed"));
    }
    let brings_key = header.jwk.is_some()
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some();
    if brings_key || header.crit.is_some() {
        return Err(OidcError::InvalidToken(
            "embedded or remote keys are not accepted",
        ));
    }
    Ok(Asked {
        algorithm: header.alg,
        kid: header.kid,
    })
}

/// Whether `keys` hold the key `asked` names.
pub(crate) fn has_key(keys: &KeySet, asked: &Asked) -> bool {
    keys.find(asked.algorithm, asked.kid.as_deref()).is_some()
}

/// Checks `token`'s signature with the key `asked` names, and its `iss`, `aud`,
/// `exp` and `nbf`; returns its claims.
pub(crate) fn verify(
    keys: &KeySet,
    asked: &Asked,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<Map<String, Value>, OidcError> {
    let key = keys
        .find(asked.algorithm, asked.kid.as_deref())
        .ok_or(OidcError::InvalidToken("unknown key id"))?;
    let mut validation = Validation::new(asked.algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => OidcError::ExpiredToken,
            ErrorKind::ImmatureSignature => OidcError::InvalidToken("token not yet valid"),
            ErrorKind::InvalidSignature => OidcError::InvalidToken("bad signature"),
            ErrorKind::InvalidAlgorithm => OidcError::InvalidToken("algorithm not allowed"),
            ErrorKind::InvalidIssuer => OidcError::InvalidToken("wrong issuer"),
            ErrorKind::InvalidAudience => OidcError::InvalidToken("wrong audience"),
            ErrorKind::MissingRequiredClaim(_) => {
                OidcError::InvalidToken("a required claim is missing")
            }
            _ => OidcError::InvalidToken("malformed token"),
        })?;
    let now = si_auth::users::unix_now();
    let iat = data.claims.get("iat").and_then(Value::as_i64);
    if iat.is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECS as i64)) {
        return Err(OidcError::InvalidToken("token issued in the future"));
    }
    Ok(data.claims)
}
