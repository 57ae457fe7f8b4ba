//! `GET /v1/auth/oidc/login` and `/v1/auth/oidc/callback`: browser sign-in with
//! the hospital's OpenID provider.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::Gateway;
use crate::body::Reply;
use crate::context::RequestContext;
use crate::error::ApiError;

/// Sends the browser to the provider.
pub(crate) async fn login(
    _gateway: &Gateway,
    _ctx: &RequestContext,
    _request: &Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    Err(ApiError::SsoNotConfigured)
}

/// Takes the provider's answer and starts a session.
pub(crate) async fn callback(
    _gateway: &Gateway,
    _ctx: &RequestContext,
    _request: &Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    Err(ApiError::SsoNotConfigured)
}
