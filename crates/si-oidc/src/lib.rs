//! Single sign-on with the hospital's OpenID Connect provider (Entra ID, ADFS,
//! Keycloak, Okta...).
//!
//! - [`Provider::verify_access_token`]: a provider's own access token presented as a
//!   bearer token, checked against the provider's published keys.
//! - [`Provider::begin_sign_in`] and [`Provider::finish_sign_in`]: browser sign-in,
//!   the authorization code flow with PKCE, `state` and `nonce`.
//! - Either way the result is an [`Identity`]: a username, and the role and location
//!   the configuration maps the provider's groups and claims to.
//!
//! Keys are cached, and fetched again for an unknown key id at most once per
//! `jwks_refetch_interval`, so a flood of made-up key ids costs the provider one
//! request per interval. Only asymmetric signatures are accepted (RSA, ECDSA,
//! EdDSA): never `none`, never an HMAC, whose "secret" would be the public key.

mod flow;
mod http;
mod identity;
mod keys;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Deserialize;
use si_core::config::OidcConfig;
use url::Url;

pub use flow::{PENDING_COOKIE, SignIn, SignInStarted, shown_error_code};
pub use identity::Identity;

use keys::KeySet;

/// Why single sign-on did not give an identity.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached (or answered nonsense) and nothing cached
    /// can stand in.
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    /// A token that is not one of the provider's, or not for this gateway.
    #[error("invalid access token: {0}")]
    InvalidToken(&'static str),
    /// A token of the provider's whose time is up.
    #[error("access token expired: get a new one from the identity provider")]
    ExpiredToken,
    /// The user is in no group that maps to a role.
    #[error(
        "your account at the identity provider is in no group that grants a role here \
         (the `{claim}` claim names {count} group(s), none of them in [auth.oidc.roles]); \
         ask an administrator to add you to one"
    )]
    NoRole {
        /// The groups claim.
        claim: String,
        /// How many groups it named.
        count: usize,
    },
    /// Neither a claim, a group nor the configuration gives a location.
    #[error(
        "the identity provider names no location for you, and this gateway has no \
         default_location; ask an administrator"
    )]
    NoLocation,
    /// The provider's user name is missing or unusable here.
    #[error("{0}")]
    BadIdentity(String),
    /// A browser sign-in that cannot be completed (tampered or stale state, a code
    /// the provider refused, the provider's own error).
    #[error("{0}; start again at /v1/auth/oidc/login")]
    SignInFailed(String),
}

/// Whether `token` is signed the way providers sign (asymmetrically), rather than
/// with a gateway's shared secret: which of the two checks it goes to. An HMAC
/// token never reaches the provider's keys.
pub fn is_provider_token(token: &str) -> bool {
    keys::header(token).is_ok()
}

/// The provider's configuration, as it publishes it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// One OpenID provider: its configuration, its cached keys, and the settings that
/// map its users to ours. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Provider {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: OidcConfig,
    /// Signs the browser's pending sign-in (its state cookie).
    state_key: SecretString,
    http: reqwest::Client,
    /// The keys and when they were fetched; `None` until the first fetch.
    keys: Mutex<Option<(Arc<KeySet>, Instant)>>,
    /// When keys were last asked for (whatever came of it), held while a fetch
    /// runs so concurrent ones wait for it instead of fetching too.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Keys are fetched again after this long even without an unknown key id, so a
/// key the provider withdrew stops being accepted.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);

impl Provider {
    /// The provider `config` names. `state_key` signs browsers' pending sign-ins
    /// (any secret the gateways share; derive it, do not reuse a key as is).
    /// Nothing is fetched yet.
    pub fn new(config: &OidcConfig, state_key: SecretString) -> Result<Self, OidcError> {
        Ok(Provider {
            inner: Arc::new(Inner {
                http: http::client(config.ca_file.as_deref())?,
                config: config.clone(),
                state_key,
                keys: Mutex::new(None),
                last_fetch: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// Fetches the provider's configuration and keys now, so the first token does
    /// not wait for them; a failure is only logged (tokens will fetch again).
    pub async fn warm_up(&self) {
        match self.refresh_keys().await {
            Ok(count) => {
                tracing::info!(issuer = %self.inner.config.issuer, keys = count, "identity provider keys loaded")
            }
            Err(e) => {
                tracing::warn!(issuer = %self.inner.config.issuer, error = %e, "identity provider keys not loaded yet")
            }
        }
    }

    /// The provider's published configuration, fetched now.
    pub(crate) async fn metadata(&self) -> Result<Metadata, OidcError> {
        let issuer = &self.inner.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let metadata: Metadata = http::get_json(&self.inner.http, &url).await?;
        if metadata.issuer != *issuer {
            return Err(OidcError::Unreachable(format!(
                "its configuration names the issuer `{}`, not `{issuer}` as auth.oidc.issuer says",
                metadata.issuer
            )));
        }
        for endpoint in [
            &metadata.authorization_endpoint,
            &metadata.token_endpoint,
            &metadata.jwks_uri,
        ] {
            let secure = Url::parse(endpoint).is_ok_and(|url| si_core::config::is_secure_url(&url));
            if !secure {
                return Err(OidcError::Unreachable(format!(
                    "its configuration names an endpoint that is not https: `{endpoint}`"
                )));
            }
        }
        Ok(metadata)
    }

    /// Fetches the keys unless they were asked for within the refetch interval;
    /// returns how many are cached.
    async fn refresh_keys(&self) -> Result<usize, OidcError> {
        let mut last = self.inner.last_fetch.lock().await;
        let interval = self.inner.config.jwks_refetch_interval;
        if last.is_some_and(|at| at.elapsed() < interval) {
            return Ok(self.cached_keys().map_or(0, |(keys, _)| keys.len()));
        }
        let fetched = self.fetch_keys().await;
        // Counted from the end of the fetch, so that one that took long does not
        // let the next start at once.
        *last = Some(Instant::now());
        let keys = fetched?;
        let count = keys.len();
        tracing::debug!(keys = count, "identity provider keys fetched");
        if let Ok(mut cached) = self.inner.keys.lock() {
            *cached = Some((Arc::new(keys), Instant::now()));
        }
        Ok(count)
    }

    /// The provider's usable keys, fetched now.
    async fn fetch_keys(&self) -> Result<KeySet, OidcError> {
        let metadata = self.metadata().await?;
        let document: serde_json::Value =
            http::get_json(&self.inner.http, &metadata.jwks_uri).await?;
        let keys = KeySet::parse(&document);
        if keys.len() == 0 {
            // A provider that signs publishes a key: an empty set is a fault at
            // its end, and must not throw away keys that still work.
            return Err(OidcError::Unreachable(format!(
                "{} holds no signing key this gateway can use",
                metadata.jwks_uri
            )));
        }
        Ok(keys)
    }

    fn cached_keys(&self) -> Option<(Arc<KeySet>, Instant)> {
        self.inner
            .keys
            .lock()
            .ok()
            .and_then(|cached| cached.clone())
    }
}

impl Provider {
    /// Checks a provider's access token presented as a bearer token: signature by
    /// one of the provider's keys, issuer, audience (`auth.oidc.audience`),
    /// expiry; then maps its claims to an identity.
    pub async fn verify_access_token(&self, token: &str) -> Result<Identity, OidcError> {
        let asked = keys::header(token)?;
        let keys = self.keys_for(&asked).await?;
        let config = &self.inner.config;
        let claims = keys::verify(&keys, &asked, token, &config.issuer, &config.audience)?;
        // An ID token (it carries the sign-in's nonce) proves who signed in to
        // the gateway's client; it grants no access as a bearer token.
        if claims.contains_key("nonce") {
            return Err(OidcError::InvalidToken(
                "an ID token is not an access token",
            ));
        }
        identity::map(config, &claims)
    }

    /// The keys to check a token `asked` for against: the cached ones if they hold
    /// its key (fetched again once they are old), else freshly fetched ones,
    /// within the refetch interval. Cached keys outlive a provider that is down.
    async fn keys_for(&self, asked: &keys::Asked) -> Result<Arc<KeySet>, OidcError> {
        let cached = self.cached_keys();
        if let Some((keys, fetched)) = &cached
            && keys::has_key(keys, asked)
        {
            if fetched.elapsed() >= KEYS_MAX_AGE {
                // Old but holding the key: answer now, refresh behind, so a
                // provider that hangs delays no request.
                let provider = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = provider.refresh_keys().await {
                        tracing::warn!(error = %e, "identity provider keys not refreshed");
                    }
                });
            }
            return Ok(keys.clone());
        }
        if let Err(e) = self.refresh_keys().await {
            tracing::warn!(issuer = %self.inner.config.issuer, error = %e, "identity provider keys not fetched");
            if cached.is_none() {
                return Err(e);
            }
        }
        self.cached_keys().map(|(keys, _)| keys).ok_or_else(|| {
            OidcError::Unreachable("its keys have not been fetched yet; retry shortly".into())
        })
    }
}
