//! `POST /v1/auth/login`: username and password for an access token.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use si_auth::users::login_location;

use crate::Gateway;
use crate::body::{GatewayBody, json_no_store, read_limited};
use crate::error::ApiError;

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

#[derive(Serialize)]
struct LoginResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
}

pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    let body = read_limited(request.into_body(), MAX_LOGIN_BODY).await?;
    let login = parse(&body)?;
    // argon2 takes tens of milliseconds of CPU and ~19 MiB per check: run a bounded
    // number at once, off the async workers, so a login flood cannot exhaust memory.
    let permit = tokio::time::timeout(
        LOGIN_QUEUE_WAIT,
        gateway.inner.login_slots.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ApiError::Busy("too many logins in progress"))?
    .map_err(|_| ApiError::Internal("login slots closed".into()))?;
    let users = gateway.inner.users.clone();
    let username = login.username;
    let password = login.password;
    let user = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        users.authenticate(&username, &password)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("login task failed: {e}")))??;
    let location = login_location(&user, login.location_id.as_deref())?;
    let issued = gateway
        .tokens()
        .issue(&user.username, user.role, &location)?;
    tracing::info!(user = %user.username, role = %user.role, %location, "login");
    Ok(json_no_store(
        StatusCode::OK,
        &LoginResponse {
            access_token: issued.token.expose_secret(),
            token_type: "bearer",
            expires_in: issued.expires_in,
        },
    ))
}

/// The login fields, or a message naming the field at fault. serde's own messages
/// quote the offending value, which here could be a password: they are not echoed.
fn parse(body: &[u8]) -> Result<LoginRequest, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| {
            let at = match e.path().to_string() {
                p if p == "." => String::new(),
                p => format!(" (problem at `{p}`)"),
            };
            ApiError::BadRequest(format!(
                "login body must be a JSON object with string fields \"username\" and \
                 \"password\", and optionally \"location_id\"{at}"
            ))
        })
        .and_then(|login| {
            deserializer
                .end()
                .map(|()| login)
                .map_err(|_| ApiError::BadRequest("login body has trailing characters".into()))
        })
}
