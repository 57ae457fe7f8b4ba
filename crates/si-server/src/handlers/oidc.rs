//! `GET /v1/auth/oidc/login` and `/v1/auth/oidc/callback`: browser sign-in with
//! the hospital's OpenID provider, ending in this gateway's own session (access
//! and refresh tokens), so revocation, rate limits and the audit trail treat a
//! signed-in user as they treat a local one.

use http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use si_auth::{AuthError, Claims};
use si_oidc::{Identity, OidcError, PENDING_COOKIE, Provider, SignIn};

use crate::Gateway;
use crate::body::Reply;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::handlers::login::token_response;

/// The provider, or 404 when single sign-on is not configured.
fn provider(gateway: &Gateway) -> Result<&Provider, ApiError> {
    gateway
        .inner
        .oidc
        .as_ref()
        .ok_or(ApiError::SsoNotConfigured)
}

/// The pending sign-in cookie: only for the callback, not readable by scripts,
/// sent on the provider's redirect back (a top-level navigation, hence `Lax`),
/// and `Secure` wherever the callback is https.
fn pending_cookie(provider: &Provider, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if provider.config().redirect_uri.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{PENDING_COOKIE}={value}; Path=/v1/auth/oidc; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&cookie).ok()
}

/// Sends the browser to the provider, remembering what the callback must check.
pub(crate) async fn login(
    gateway: &Gateway,
    _ctx: &RequestContext,
    _request: &Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    let provider = provider(gateway)?;
    let started = provider.begin_sign_in().await?;
    let location = HeaderValue::from_str(&started.redirect).map_err(|_| {
        ApiError::Internal("the provider's authorization URL is not a header".into())
    })?;
    let cookie = pending_cookie(provider, &started.cookie, started.cookie_max_age)
        .ok_or_else(|| ApiError::Internal("the sign-in cookie is not a header".into()))?;
    let mut response = Response::new(Reply::Whole(Default::default()));
    *response.status_mut() = StatusCode::FOUND;
    let headers = response.headers_mut();
    headers.insert(LOCATION, location);
    headers.insert(SET_COOKIE, cookie);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Takes the provider's answer and starts a session.
pub(crate) async fn callback(
    gateway: &Gateway,
    ctx: &RequestContext,
    request: &Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    let provider = provider(gateway)?;
    let query = request.uri().query().unwrap_or_default();
    let field = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    if let Some(error) = field("error") {
        let error = si_oidc::shown_error_code(&error);
        return Err(OidcError::SignInFailed(format!(
            "the identity provider did not sign you in ({error})"
        ))
        .into());
    }
    let (Some(code), Some(state)) = (field("code"), field("state")) else {
        return Err(ApiError::BadRequest(
            "the callback needs the `code` and `state` query parameters the identity provider \
             adds; start at /v1/auth/oidc/login"
                .into(),
        ));
    };
    let cookie = pending_cookie_value(request.headers());
    let identity = provider
        .finish_sign_in(SignIn {
            code: &code,
            state: &state,
            cookie: cookie.as_deref(),
        })
        .await?;
    known_location(gateway, &identity)?;
    let accounts = &gateway.inner.accounts;
    let user = accounts
        .sign_in_external(&identity.username, identity.role, &identity.location)
        .await?;
    let ttl = gateway.config().auth.refresh_expiry.as_secs();
    let refresh = accounts
        .start_session(&user.username, &user.location, ttl)
        .await?;
    ctx.notes
        .identify_login(&user.username, user.role.as_str(), &user.location);
    tracing::info!(user = %user.username, role = %user.role, location = %user.location, "single sign-on");
    let mut response = token_response(gateway, &user, &user.location, &refresh)?;
    if let Some(expired) = pending_cookie(provider, "", 0) {
        response.headers_mut().insert(SET_COOKIE, expired);
    }
    Ok(response)
}

/// The value of the pending sign-in cookie among the request's cookies.
fn pending_cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == PENDING_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Refuses a location the configuration does not list (when it lists any).
fn known_location(gateway: &Gateway, identity: &Identity) -> Result<(), ApiError> {
    let known = &gateway.config().auth.locations;
    if known.is_empty() || known.contains(&identity.location) {
        return Ok(());
    }
    Err(AuthError::WrongLocation {
        username: identity.username.clone(),
        location: identity.location.clone(),
    }
    .into())
}

/// The claims of a request made with the provider's own access token: its user,
/// role and location as the groups map them. The token's id stands for its
/// session too, so a logout with it ends that token alone.
pub(crate) async fn bearer_claims(
    gateway: &Gateway,
    provider: &Provider,
    token: &str,
) -> Result<Claims, ApiError> {
    let identity = provider.verify_access_token(token).await?;
    known_location(gateway, &identity)?;
    let jti = identity
        .token_id
        .clone()
        .unwrap_or_else(|| si_auth::accounts::token_hash(token));
    // Once per token, the user table: a name a local user has is refused, a user
    // disabled here is refused, and a user who only ever comes with provider
    // tokens gets a row an administrator can disable.
    if !gateway.inner.oidc_checked.contains(&jti) {
        gateway
            .inner
            .accounts
            .sign_in_external(&identity.username, identity.role, &identity.location)
            .await?;
        gateway
            .inner
            .oidc_checked
            .insert(jti.clone(), identity.expires_at);
    }
    let config = provider.config();
    Ok(Claims {
        sid: format!("oidc:{jti}"),
        jti,
        sub: identity.username,
        role: identity.role,
        loc: identity.location,
        iat: identity.issued_at,
        exp: identity.expires_at,
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
    })
}

/// Provider tokens already checked against the user table, by token id, with
/// their expiry: bounded, expired ones dropped first.
#[derive(Debug, Default)]
pub(crate) struct CheckedTokens(std::sync::Mutex<std::collections::HashMap<String, u64>>);

/// Most tokens remembered; past it, expired ones are dropped, then all.
const MAX_CHECKED: usize = 10_000;

impl CheckedTokens {
    fn contains(&self, jti: &str) -> bool {
        self.0.lock().is_ok_and(|seen| seen.contains_key(jti))
    }

    fn insert(&self, jti: String, expires_at: u64) {
        let Ok(mut seen) = self.0.lock() else { return };
        if seen.len() >= MAX_CHECKED {
            let now = u64::try_from(si_auth::users::unix_now()).unwrap_or(0);
            seen.retain(|_, exp| *exp > now);
            if seen.len() >= MAX_CHECKED {
                seen.clear();
            }
        }
        seen.insert(jti, expires_at);
    }
}
