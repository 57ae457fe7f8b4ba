//! `POST /v1/auth/login`, `/v1/auth/refresh` and `/v1/auth/logout`: sessions.
//!
//! A login starts a session family: an access token (JWT, `sid` = the family) and a
//! single-use refresh token. A refresh spends its token and returns the next pair;
//! a spent token presented again revokes the family. Logout revokes the access
//! token and its family.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use si_auth::accounts::IssuedRefresh;
use si_auth::store::LoginRefusal;
use si_auth::users::{UsernameKey, is_well_formed_username, login_location};
use si_auth::{AuthError, User};

use crate::Gateway;
use crate::body::Reply;
use crate::client_ip::address_bucket;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::handlers::{authenticate, read_limited};
use crate::response::json_no_store;

/// Logins are small; refuse anything bigger before parsing.
pub(crate) const MAX_LOGIN_BODY: usize = 8 * 1024;
/// Longest a login waits for a free hashing slot before a 503.
const LOGIN_QUEUE_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: SecretString,
    #[serde(default)]
    location_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutRequest {
    #[serde(default)]
    refresh_token: Option<SecretString>,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: &'a str,
    refresh_expires_in: u64,
}

pub(crate) async fn handle(
    gateway: &Gateway,
    ctx: &RequestContext,
    request: Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    if let Some(oidc) = &gateway.config().auth.oidc
        && !oidc.local_login
    {
        return Err(ApiError::LocalLoginDisabled);
    }
    let address = address_bucket(ctx.client);
    let body = read_limited(request.into_body(), MAX_LOGIN_BODY).await?;
    let login: LoginRequest = parse(&body, LOGIN_SHAPE)?;
    // Counted by key, so `Doctor1` and `ｄｏｃｔｏｒ１` spend `doctor1`'s attempts.
    let key = UsernameKey::of(&login.username);
    let (mut booking, delay) = admit(gateway, &key, &address).await?;
    // Before the check, not after a failure: a guesser cannot hang up early on a
    // slow answer to learn that it is a failure.
    tokio::time::sleep(delay).await;
    // argon2 takes tens of milliseconds of CPU and ~19 MiB per check: run a bounded
    // number at once, off the async workers, so a login flood cannot exhaust memory.
    let permit = tokio::time::timeout(
        LOGIN_QUEUE_WAIT,
        gateway.inner.login_slots.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ApiError::Busy("too many logins in progress"))?
    .map_err(|_| ApiError::Internal("login slots closed".into()))?;
    let outcome = sign_in(gateway, &login, permit).await;
    let throttle = &gateway.inner.throttle;
    booking.settle();
    let (user, location, refresh) = match outcome {
        Err(AuthError::InvalidCredentials) => {
            password_failed(gateway, &key, &address).await;
            return Err(AuthError::InvalidCredentials.into());
        }
        Err(e) => {
            // Not a password failure (wrong location, storage): the attempt is void.
            throttle.void(key.as_str(), &address).await;
            return Err(e.into());
        }
        Ok(outcome) => outcome,
    };
    throttle.succeeded(key.as_str(), &address).await;
    ctx.notes
        .identify_login(&user.username, user.role.as_str(), &location);
    tracing::info!(user = %user.username, role = %user.role, %location, "login");
    token_response(gateway, &user, &location, &refresh)
}

/// A booked login attempt whose password has not been judged yet. Dropped unsettled
/// (the gateway was busy, or the client left while it waited), it gives its booking
/// back, so requests that never reach the password check cannot lock a user out.
struct Booking {
    /// `None` once settled.
    gateway: Option<Gateway>,
    key: String,
    address: String,
}

impl Booking {
    /// The password is about to be judged: the outcome books the attempt.
    fn settle(&mut self) {
        self.gateway = None;
    }
}

impl Drop for Booking {
    fn drop(&mut self) {
        let (Some(gateway), Ok(runtime)) =
            (self.gateway.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (key, address) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.address),
        );
        runtime.spawn(async move { gateway.inner.throttle.void(&key, &address).await });
    }
}

/// Books the attempt with the throttle; refused while this address is locked out
/// of the username or of logging in. The booking, and the username's slow-down to
/// wait out before the password is checked, come back.
async fn admit(
    gateway: &Gateway,
    key: &UsernameKey,
    address: &str,
) -> Result<(Booking, Duration), ApiError> {
    match gateway.inner.throttle.begin(key.as_str(), address).await {
        Ok(admitted) => {
            let booking = Booking {
                gateway: Some(gateway.clone()),
                key: key.as_str().to_owned(),
                address: address.to_owned(),
            };
            Ok((booking, admitted.delay))
        }
        Err(LoginRefusal::Locked(wait)) => {
            let retry_after_secs = wait.as_secs().max(1);
            Err(AuthError::LoginLocked { retry_after_secs }.into())
        }
        Err(LoginRefusal::Unavailable) => Err(ApiError::CountersUnavailable),
    }
}

/// Books a wrong password, counts it, and reports guessing from many places.
async fn password_failed(gateway: &Gateway, key: &UsernameKey, address: &str) {
    let failed = gateway.inner.throttle.failed(key.as_str(), address).await;
    crate::metrics::login_failed(failed.distributed);
    if failed.distributed {
        warn_of_distributed_guessing(key);
    }
}

/// Logs that one username failed from several addresses. The name is logged only
/// if it could be a username: people type passwords into the username field.
fn warn_of_distributed_guessing(key: &UsernameKey) {
    let user = if is_well_formed_username(key.as_str()) {
        key.as_str()
    } else {
        "(not a username)"
    };
    tracing::warn!(
        %user,
        "failed logins for one username from several addresses: password guessing? \
         each address that fails it repeatedly is locked out of it, and its logins are slowed"
    );
}

/// Checks the password (holding a hashing slot), the location, and starts the
/// session.
async fn sign_in(
    gateway: &Gateway,
    login: &LoginRequest,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(User, String, IssuedRefresh), AuthError> {
    let accounts = &gateway.inner.accounts;
    let user = accounts
        .authenticate(&login.username, &login.password)
        .await?;
    drop(permit);
    let known = &gateway.config().auth.locations;
    let location = login_location(&user, login.location_id.as_deref(), known)?;
    let ttl = gateway.config().auth.refresh_expiry.as_secs();
    let refresh = accounts
        .start_session(&user.username, &location, ttl)
        .await?;
    Ok((user, location, refresh))
}

pub(crate) async fn refresh(
    gateway: &Gateway,
    ctx: &RequestContext,
    request: Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    let body = read_limited(request.into_body(), MAX_LOGIN_BODY).await?;
    let asked: RefreshRequest = parse(&body, REFRESH_SHAPE)?;
    let ttl = gateway.config().auth.refresh_expiry.as_secs();
    let accounts = &gateway.inner.accounts;
    let refreshed = match accounts.refresh(&asked.refresh_token, ttl).await {
        Err(AuthError::RefreshReused { username, family }) => {
            gateway.inner.revocations.revoke_family(&family);
            ctx.notes.identify_login(&username, "-", "-");
            tracing::warn!(user = %username, "spent refresh token presented again; session revoked");
            return Err(AuthError::RefreshReused { username, family }.into());
        }
        other => other?,
    };
    let user = &refreshed.user;
    ctx.notes
        .identify_login(&user.username, user.role.as_str(), &refreshed.location);
    token_response(
        gateway,
        &refreshed.user,
        &refreshed.location,
        &refreshed.refresh,
    )
}

/// Revokes the bearer token and its session, or, when the access token has already
/// expired, the session of the refresh token in the body.
pub(crate) async fn logout(
    gateway: &Gateway,
    ctx: &RequestContext,
    request: Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    let bearer = authenticate(gateway, request.headers(), &ctx.notes).await;
    let body = read_limited(request.into_body(), MAX_LOGIN_BODY).await?;
    let refresh = match body.iter().all(u8::is_ascii_whitespace) {
        true => None,
        false => parse::<LogoutRequest>(&body, LOGOUT_SHAPE)?.refresh_token,
    };
    match (bearer, refresh) {
        (Ok(Some(_)), _) if ctx.notes.api_key().is_some() => {
            return Err(ApiError::BadRequest(
                "an API key has no session to log out of; revoke the key with \
                 `si-cli apikeys revoke NAME`"
                    .into(),
            ));
        }
        (Ok(Some(claims)), _) => {
            let store = &gateway.inner.revocation_store;
            store
                .revoke(&claims.jti, claims.exp, Some(&claims.sid))
                .await?;
            gateway
                .inner
                .revocations
                .revoke(&claims.jti, Some(&claims.sid));
            tracing::info!(user = %claims.sub, "logout");
        }
        (_, Some(token)) => {
            let family = gateway.inner.accounts.end_session(&token).await?;
            gateway.inner.revocations.revoke_family(&family);
            tracing::info!("logout by refresh token");
        }
        (Err(e), None) => return Err(e),
        (Ok(None), None) => return Err(AuthError::MissingToken.into()),
    }
    Ok(json_no_store(
        StatusCode::OK,
        &serde_json::json!({"revoked": true}),
    ))
}

pub(crate) fn token_response(
    gateway: &Gateway,
    user: &User,
    location: &str,
    refresh: &IssuedRefresh,
) -> Result<Response<Reply>, ApiError> {
    let access = gateway
        .tokens()
        .issue(&user.username, user.role, location, &refresh.family)?;
    Ok(json_no_store(
        StatusCode::OK,
        &TokenResponse {
            access_token: access.token.expose_secret(),
            token_type: "bearer",
            expires_in: access.expires_in,
            refresh_token: refresh.token.expose_secret(),
            refresh_expires_in: refresh.expires_in,
        },
    ))
}

const LOGIN_SHAPE: &str = "a JSON object with string fields \"username\" and \"password\", and optionally \"location_id\"";
const REFRESH_SHAPE: &str = "a JSON object with the string field \"refresh_token\"";
const LOGOUT_SHAPE: &str = "empty, or a JSON object with the string field \"refresh_token\"";

/// The fields, or a message naming the field at fault. serde's own messages quote
/// the offending value, which here could be a password: they are not echoed.
fn parse<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let at = match e.path().to_string() {
            p if p == "." => String::new(),
            p => format!(" (problem at `{p}`)"),
        };
        ApiError::BadRequest(format!("body must be {shape}{at}"))
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::BadRequest("body has trailing characters".into()))?;
    Ok(value)
}
