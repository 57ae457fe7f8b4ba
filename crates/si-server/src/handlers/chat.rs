//! `POST /v1/chat/completions`: authenticate, pick the agent, forward the body as is,
//! and pass the backend's answer (JSON or server-sent events) straight back.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use si_router::{ChatRequestHead, Upstream};

use crate::Gateway;
use crate::body::{GatewayBody, read_limited};
use crate::error::ApiError;
use crate::handlers::{authenticate, authorize};

/// Which agent answered.
pub const AGENT_HEADER: HeaderName = HeaderName::from_static("x-si-agent");
/// Which model answered (clients can tell a fallback happened).
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-si-model");
/// Which backend answered.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-si-backend");

pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, ApiError> {
    let caller = authenticate(gateway, &request)?;
    let limit = gateway.config().gateway.max_body_bytes;
    let body = read_limited(request.into_body(), limit).await?;
    let head = ChatRequestHead::parse(&body)?;
    let agent = gateway.router().resolve(&head)?;
    drop(head);
    authorize(gateway, caller.as_ref(), &agent.name)?;
    let upstream = gateway.router().chat(agent, body).await?;
    Ok(pass_through(upstream, &agent.name))
}

/// The backend's status, content type and body, plus where the answer came from.
fn pass_through(upstream: Upstream, agent: &str) -> Response<GatewayBody> {
    let Upstream { backend, response } = upstream;
    let (parts, body) = response.into_parts();
    let mut response = Response::new(Either::Right(body));
    *response.status_mut() = parts.status;
    let headers = response.headers_mut();
    if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
        let is_stream = content_type
            .to_str()
            .is_ok_and(|v| v.starts_with("text/event-stream"));
        headers.insert(CONTENT_TYPE, content_type.clone());
        if is_stream {
            // Tell nginx and friends not to buffer the stream either.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        }
    }
    for (name, value) in [
        (AGENT_HEADER, agent),
        (MODEL_HEADER, backend.model.as_str()),
        (BACKEND_HEADER, backend.name.as_str()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}
