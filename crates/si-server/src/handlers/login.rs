//! `POST /v1/auth/login`: username and password for an access token.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use si_auth::users::login_location;

use crate::Gateway;
use crate::body::{GatewayBody, json_no_store, read_limited};
use crate::error::ApiError;

/// Logins are small; refuse anything bigger before parsing.
const MAX_LOGIN_BODY: usize = 8 * 1024;

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
    let login: LoginRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "login body must be {{\"username\", \"password\", \"location_id\"}}: {e}"
        ))
    })?;
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let users = gateway.inner.users.clone();
    let username = login.username;
    let password = login.password;
    let user = tokio::task::spawn_blocking(move || users.authenticate(&username, &password))
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
