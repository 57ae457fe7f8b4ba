//! Browser sign-in: the authorization code flow with PKCE (S256), `state` and
//! `nonce`.
//!
//! What the callback must check (state, nonce, PKCE verifier) travels in a
//! short-lived cookie signed with the gateways' shared key, so the callback may
//! land on any gateway behind the load balancer and nothing is stored meanwhile.
//! The cookie is readable by the browser that started the sign-in, which is the
//! party PKCE and `state` protect; it is signed so that nothing else can be put
//! in its place.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::identity::{Identity, map};
use crate::{OidcError, Provider, http, keys};

/// The cookie that carries a browser's sign-in in progress.
pub const PENDING_COOKIE: &str = "si_oidc";
/// How long a browser has to complete a sign-in at the provider.
const PENDING_SECS: u64 = 600;
/// The pending sign-in's audience, so that nothing else signed with the key can
/// pass for one.
const PENDING_AUDIENCE: &str = "si-oidc-sign-in";

/// A sign-in sent to the provider.
pub struct SignInStarted {
    /// Where to send the browser: the provider's authorization endpoint.
    pub redirect: String,
    /// The value of the [`PENDING_COOKIE`] to set.
    pub cookie: String,
    /// Its lifetime, seconds.
    pub cookie_max_age: u64,
}

/// The provider's answer, as the callback received it.
pub struct SignIn<'a> {
    /// The `code` query parameter.
    pub code: &'a str,
    /// The `state` query parameter.
    pub state: &'a str,
    /// The [`PENDING_COOKIE`] the browser sent, if any.
    pub cookie: Option<&'a str>,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    exp: u64,
    aud: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A provider's error code (`access_denied`, `invalid_grant`), fit to show in a
/// message: printable ASCII only, at most 64 characters.
pub fn shown_error_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn now() -> u64 {
    u64::try_from(si_auth::users::unix_now()).unwrap_or(0)
}

impl Provider {
    /// Starts a browser sign-in: the provider's authorization URL, with a fresh
    /// state, nonce and PKCE challenge, and the cookie that remembers them. The
    /// provider's configuration is fetched now, so a provider that is down gives
    /// [`OidcError::Unreachable`] here rather than a browser error there.
    pub async fn begin_sign_in(&self) -> Result<SignInStarted, OidcError> {
        let metadata = self.metadata().await?;
        let config = &self.inner.config;
        let pending = Pending {
            state: random(16),
            nonce: random(16),
            verifier: random(32),
            exp: now() + PENDING_SECS,
            aud: PENDING_AUDIENCE.into(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        let mut url = Url::parse(&metadata.authorization_endpoint).map_err(|e| {
            OidcError::Unreachable(format!("its authorization endpoint is not a URL: {e}"))
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &config.client_id)
            .append_pair("redirect_uri", config.redirect_uri.as_str())
            .append_pair("scope", &config.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let key = EncodingKey::from_secret(self.inner.state_key.expose_secret().as_bytes());
        let cookie = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &pending, &key)
            .map_err(|e| OidcError::SignInFailed(format!("cannot sign the sign-in state: {e}")))?;
        Ok(SignInStarted {
            redirect: url.into(),
            cookie,
            cookie_max_age: PENDING_SECS,
        })
    }

    /// Completes a browser sign-in: checks the state against the browser's
    /// cookie, redeems the code with the PKCE verifier, verifies the ID token
    /// (signature, issuer, audience = the client id, expiry, nonce) and maps its
    /// claims.
    pub async fn finish_sign_in(&self, sign_in: SignIn<'_>) -> Result<Identity, OidcError> {
        let pending = self.pending(sign_in.cookie)?;
        if pending.state != sign_in.state {
            return Err(OidcError::SignInFailed(
                "the `state` does not match the sign-in this browser started".into(),
            ));
        }
        let metadata = self.metadata().await?;
        let config = &self.inner.config;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", sign_in.code),
            ("redirect_uri", config.redirect_uri.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let mut request = self.inner.http.post(&metadata.token_endpoint);
        match &config.client_secret {
            // client_secret_basic: both parts form-encoded first (RFC 6749 2.3.1).
            Some(secret) => {
                let encode = |text: &str| {
                    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(
                    encode(&config.client_id),
                    Some(encode(secret.expose_secret())),
                );
            }
            None => form.push(("client_id", config.client_id.as_str())),
        }
        let response = request
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(format!("its token endpoint: {e}")))?;
        let (_, answer): (_, TokenAnswer) =
            http::json_answer(&metadata.token_endpoint, response).await?;
        if let Some(error) = answer.error {
            let error = shown_error_code(&error);
            return Err(OidcError::SignInFailed(format!(
                "the identity provider refused the sign-in code ({error})"
            )));
        }
        let id_token = answer.id_token.ok_or_else(|| {
            OidcError::SignInFailed("the identity provider's answer holds no ID token".into())
        })?;
        let unusable = |e: OidcError| match e {
            OidcError::InvalidToken(why) => {
                OidcError::SignInFailed(format!("the provider's ID token is unusable: {why}"))
            }
            OidcError::ExpiredToken => {
                OidcError::SignInFailed("the provider's ID token has expired".into())
            }
            other => other,
        };
        let asked = keys::header(&id_token).map_err(unusable)?;
        let keys = self.keys_for(&asked).await?;
        let claims = keys::verify(&keys, &asked, &id_token, &config.issuer, &config.client_id)
            .map_err(unusable)?;
        if claims.get("nonce").and_then(Value::as_str) != Some(pending.nonce.as_str()) {
            return Err(OidcError::SignInFailed(
                "the ID token's nonce is not this sign-in's".into(),
            ));
        }
        // With several audiences, the one it was issued to must be us.
        let several = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|aud| aud.len() > 1);
        let azp = claims.get("azp").and_then(Value::as_str);
        if (several || azp.is_some()) && azp != Some(config.client_id.as_str()) {
            return Err(OidcError::SignInFailed(
                "the provider's ID token was issued to another client".into(),
            ));
        }
        map(config, &claims)
    }

    fn pending(&self, cookie: Option<&str>) -> Result<Pending, OidcError> {
        let cookie = cookie.ok_or_else(|| {
            OidcError::SignInFailed(
                "this browser has no sign-in in progress (its cookie is missing: cookies \
                 blocked, another browser, or more than 10 minutes passed)"
                    .into(),
            )
        })?;
        let key = DecodingKey::from_secret(self.inner.state_key.expose_secret().as_bytes());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[PENDING_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        jsonwebtoken::decode::<Pending>(cookie, &key, &validation)
            .map(|data| data.claims)
            .map_err(|_| {
                OidcError::SignInFailed(
                    "this browser's sign-in has expired (10 minutes) or its cookie was altered"
                        .into(),
                )
            })
    }
}
