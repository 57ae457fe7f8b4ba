//! API keys for applications (a chat front end, the EHR, a batch job): long-lived
//! credentials with a role and a location, presented as `Authorization: Bearer
//! si-…`. A key is 256 random bits after a recognisable prefix, shown once when
//! made; stores keep only its SHA-256. The gateway holds every key's hash in
//! memory ([`ApiKeyList`]), reloaded with the revocations, so a request with a
//! key costs no database read and a revoked key stops working within a second.
//! When a key was last used is written behind the requests, at most once a minute
//! per key ([`last_used`]).

pub mod last_used;

use std::collections::HashMap;
use std::sync::RwLock;

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use si_core::Role;

use crate::{AuthError, Claims};

/// What every key starts with, so that it is recognised (by people, secret
/// scanners, and the gateway telling it from an access token).
pub const PREFIX: &str = "si-";

/// Random bytes in a key: 256 bits.
const KEY_BYTES: usize = 32;

/// A key as stored: everything but the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Its name, unique: what the audit trail and `si-cli apikeys` call it.
    pub name: String,
    /// The role it acts with.
    pub role: Role,
    /// The location it acts at.
    pub location: String,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it stops working (Unix seconds), if ever.
    pub expires_at: Option<i64>,
    /// Revoked: it never works again.
    pub revoked: bool,
    /// It may name the person it acts for (a chat front end forwarding its
    /// user): see [`forwarded_user`].
    pub forward_user: bool,
    /// Its own quota, requests per minute, on top of every other limit; `None`:
    /// no limit of its own.
    pub rate_limit: Option<u32>,
    /// When it was last used (Unix seconds), as the store last heard: up to a
    /// minute behind (see [`last_used`]). `None`: never.
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    /// The identity a request with this key acts as: `key:NAME` at its location.
    pub fn claims(&self) -> Claims {
        let subject = format!("key:{}", self.name);
        Claims {
            sub: subject.clone(),
            role: self.role,
            loc: self.location.clone(),
            jti: subject.clone(),
            sid: subject,
            iat: u64::try_from(self.created_at).unwrap_or(0),
            exp: self
                .expires_at
                .map_or(u64::MAX, |at| u64::try_from(at).unwrap_or(0)),
            iss: String::new(),
            aud: String::new(),
        }
    }
}

/// A new key and the hash to store for it.
pub fn generate() -> (SecretString, String) {
    let key = format!("{PREFIX}{}", crate::secret::random_hex(KEY_BYTES));
    let hash = hash(&key);
    (SecretString::from(key), hash)
}

/// What is stored for `key`: its SHA-256, hex.
pub fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a bearer token is an API key rather than an access token (a JWT
/// never starts so).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Checks a key's name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::InvalidUser(format!(
            "`{name}` is not a key name: use 1 to 64 letters, digits, `.`, `_` or `-`, \
             e.g. open-webui"
        )))
    }
}

/// Checks a key's location: one place (a key acts at one, so `*` is refused).
pub fn check_location(location: &str) -> Result<(), AuthError> {
    if location == crate::users::ANY_LOCATION {
        return Err(AuthError::InvalidUser(
            "an API key acts at one location: name it (`*` is for where users may log in)".into(),
        ));
    }
    crate::users::validate_location(location)
}

/// Every key's hash, in memory, for checks without the database.
#[derive(Default)]
pub struct ApiKeyList {
    by_hash: RwLock<HashMap<String, ApiKey>>,
}

impl std::fmt::Debug for ApiKeyList {
    /// How many keys, never their hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.by_hash.read().map_or(0, |keys| keys.len());
        f.debug_struct("ApiKeyList").field("keys", &keys).finish()
    }
}

impl ApiKeyList {
    /// Takes the store's keys (as `(key, hash)`), replacing what was held.
    pub fn replace(&self, keys: Vec<(ApiKey, String)>) {
        let by_hash = keys.into_iter().map(|(key, hash)| (hash, key)).collect();
        *self.by_hash.write().unwrap_or_else(|e| e.into_inner()) = by_hash;
    }

    /// The key `token` is, at `now` (Unix seconds): refused if unknown, revoked or
    /// expired.
    pub fn identify(&self, token: &str, now: i64) -> Result<ApiKey, AuthError> {
        let keys = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        let key = keys
            .get(&hash(token))
            .ok_or(AuthError::InvalidToken("unknown API key"))?;
        if key.revoked {
            return Err(AuthError::InvalidToken("this API key was revoked"));
        }
        if key.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::InvalidToken("this API key has expired"));
        }
        Ok(key.clone())
    }
}

/// The headers a chat front end (Open WebUI with user forwarding on) names its
/// user with, most specific first.
pub const FORWARDED_USER_HEADERS: [&str; 3] = [
    "x-openwebui-user-email",
    "x-openwebui-user-id",
    "x-openwebui-user-name",
];

/// The person a front end's request is for, from the first of
/// [`FORWARDED_USER_HEADERS`] that `header` (a lookup by name) finds: `None`
/// without one. A value that is not 1 to 256 printable ASCII characters is
/// refused, naming its header (no look-alike letters or direction marks in the
/// audit trail). Only a key made with `forward_user` may use this; from
/// anyone else the headers are ignored.
pub fn forwarded_user(
    header: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Option<String>, AuthError> {
    for name in FORWARDED_USER_HEADERS {
        let Some(value) = header(name) else {
            continue;
        };
        let value = String::from_utf8(value)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| {
                (1..=256).contains(&v.len()) && v.chars().all(|c| c == ' ' || c.is_ascii_graphic())
            });
        return match value {
            Some(user) => Ok(Some(user)),
            None => Err(AuthError::InvalidForwardedUser(name)),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, expires_at: Option<i64>, revoked: bool) -> ApiKey {
        ApiKey {
            name: name.into(),
            role: Role::Clinician,
            location: "hospital-01".into(),
            created_at: 1_000,
            expires_at,
            revoked,
            forward_user: false,
            rate_limit: None,
            last_used_at: None,
        }
    }

    #[test]
    fn a_key_is_recognised_only_while_valid() {
        use secrecy::ExposeSecret;
        let (webui, webui_hash) = generate();
        let (old, old_hash) = generate();
        let (gone, gone_hash) = generate();
        assert!(is_api_key(webui.expose_secret()));
        assert_eq!(webui.expose_secret().len(), PREFIX.len() + 2 * KEY_BYTES);
        assert_ne!(webui.expose_secret(), old.expose_secret());
        let list = ApiKeyList::default();
        list.replace(vec![
            (key("open-webui", None, false), webui_hash),
            (key("old", Some(2_000), false), old_hash),
            (key("gone", None, true), gone_hash),
        ]);
        let claims = list
            .identify(webui.expose_secret(), 5_000)
            .unwrap()
            .claims();
        assert_eq!(
            (claims.sub.as_str(), claims.loc.as_str()),
            ("key:open-webui", "hospital-01")
        );
        assert!(list.identify(old.expose_secret(), 1_999).is_ok());
        assert!(list.identify(old.expose_secret(), 2_000).is_err());
        assert!(list.identify(gone.expose_secret(), 0).is_err());
        assert!(list.identify("si-0000", 0).is_err());
        // Neither the key nor its hash is shown.
        let shown = format!("{list:?}");
        assert!(
            !shown.contains(webui.expose_secret()) && !shown.contains(&hash(webui.expose_secret()))
        );
    }

    #[test]
    fn a_forwarded_user_is_the_most_specific_header_and_must_be_printable() {
        let headers = |pairs: &'static [(&'static str, &'static [u8])]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_vec())
            }
        };
        assert_eq!(forwarded_user(headers(&[])).unwrap(), None);
        let both: &[(&str, &[u8])] = &[
            ("x-openwebui-user-name", b"Jane Doe"),
            ("x-openwebui-user-email", b"jane@hospital.example"),
        ];
        assert_eq!(
            forwarded_user(headers(both)).unwrap().as_deref(),
            Some("jane@hospital.example")
        );
        let bad: &[(&str, &[u8])] = &[("x-openwebui-user-id", b"a\x07b")];
        let refused = forwarded_user(headers(bad)).unwrap_err();
        assert!(
            refused.to_string().contains("x-openwebui-user-id"),
            "{refused}"
        );
        let empty: &[(&str, &[u8])] = &[("x-openwebui-user-email", b"  ")];
        assert!(forwarded_user(headers(empty)).is_err());
        let look_alike: &[(&str, &[u8])] = &[("x-openwebui-user-name", b"admin\xe2\x80\x8b")];
        assert!(forwarded_user(headers(look_alike)).is_err());
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("open-webui.prod_1").is_ok());
        for bad in ["", "a b", "naïve", &"x".repeat(65), "key:x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
