//! The one place where errors, and everything else a client sees when something
//! goes wrong, become HTTP: statuses, error bodies, the error event that ends a
//! broken stream, and the statuses recorded for requests a client abandoned.
//!
//! Every error body has the OpenAI shape `{"error":{"message","type","code"}}`. The
//! matches below are exhaustive with no catch-all arm: a new error variant anywhere
//! must be given a status here before the code compiles.

use bytes::Bytes;
use http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use si_auth::AuthError;
use si_auth::store::Limited;
use si_oidc::OidcError;
use si_router::{CutShort, Interrupted, RouterError};

mod classify;

use classify::{classify_auth, classify_oidc, classify_router};

use crate::response::json;
use crate::server::Refused;

/// The status recorded for a request whose client went away before its answer
/// was complete (nginx's "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// The status recorded for a request or workflow step that was dropped before it
/// finished: timed out if it ran `past_limit`, else abandoned by its client.
pub(crate) fn abandoned_status(past_limit: bool) -> u16 {
    if past_limit {
        StatusCode::GATEWAY_TIMEOUT.as_u16()
    } else {
        CLIENT_CLOSED
    }
}

/// The status of an answer cut short after its headers.
pub(crate) fn cut_short_status(reason: CutShort) -> u16 {
    match reason {
        CutShort::Timeout => StatusCode::GATEWAY_TIMEOUT.as_u16(),
        CutShort::BrokeOff => StatusCode::BAD_GATEWAY.as_u16(),
    }
}

/// The event that ends a stream cut short, in llama-server's own mid-stream error
/// shape; no `[DONE]` follows. After half an event (`at_boundary` false) it starts
/// on a fresh event.
pub(crate) fn stream_error_event(cut: &Interrupted, at_boundary: bool) -> Bytes {
    let kind = match cut.reason {
        CutShort::Timeout => "timeout_error",
        CutShort::BrokeOff => "server_error",
    };
    let event = serde_json::json!({"error": {
        "code": cut_short_status(cut.reason), "message": cut.message, "type": kind,
    }});
    let separator = if at_boundary { "" } else { "\n\n" };
    Bytes::from(format!("{separator}data: {event}\n\n"))
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no route for {method} {path}; see GET /v1/models and POST /v1/chat/completions")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("role `{role}` may not use agent `{agent}`; it may use: {allowed}")]
    Forbidden {
        role: si_core::Role,
        agent: String,
        allowed: String,
    },
    #[error(
        "rate limit exceeded for this {} ({} requests per minute); retry in {} s",
        .0.scope, .0.per_minute, .0.retry_after
    )]
    RateLimited(Limited),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body not received within {seconds} s")]
    BodyTimeout { seconds: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}; retry shortly")]
    Busy(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the audit trail cannot be written, so the request was not completed; retry shortly")]
    AuditUnavailable,
    #[error(
        "the shared rate-limit store cannot be reached and this gateway is set to refuse \
         requests it cannot count; retry shortly"
    )]
    CountersUnavailable,
    /// A step's agent answered without a message.
    #[error("backend `{backend}` answered {status} without a message")]
    NoMessage { backend: String, status: u16 },
    #[error("no workflow is named `{name}`; GET /v1/workflows lists them: {known}")]
    UnknownWorkflow { name: String, known: String },
    #[error("{}", refused_message(*.0))]
    ConnectionRefused(Refused),
    #[error("{}", admin_only_message(*.role))]
    AdminOnly { role: Option<si_core::Role> },
    #[error(
        "single sign-on is not configured on this gateway ([auth.oidc]); log in with POST /v1/auth/login"
    )]
    SsoNotConfigured,
    #[error("this gateway signs users in with single sign-on only: GET /v1/auth/oidc/login")]
    LocalLoginDisabled,
    #[error(transparent)]
    Oidc(#[from] si_oidc::OidcError),
}

fn admin_only_message(role: Option<si_core::Role>) -> String {
    match role {
        Some(role) => format!("this view is for the admin role; yours is `{role}`"),
        None => "this view is for the admin role; sign in as an admin".to_owned(),
    }
}

fn refused_message(refused: Refused) -> String {
    match refused {
        Refused::Full { cap } => {
            format!("the gateway has {cap} connections open, its limit; retry shortly")
        }
        Refused::AddressFull { per_address } => format!(
            "too many connections from your address (limit {per_address}); \
             reuse or close idle connections, or retry shortly"
        ),
    }
}

impl From<si_auth::store::Refusal> for ApiError {
    fn from(refusal: si_auth::store::Refusal) -> Self {
        match refusal {
            si_auth::store::Refusal::Limited(limited) => ApiError::RateLimited(limited),
            si_auth::store::Refusal::Unavailable => ApiError::CountersUnavailable,
        }
    }
}

/// The whole HTTP/1.1 response that refuses a connection, written straight to the
/// socket before its request is read (so a refusal costs no parsing and no task).
pub(crate) fn refused_connection(refused: Refused) -> Bytes {
    let error = ApiError::ConnectionRefused(refused);
    let (status, kind, code) = error.classify();
    let body = serde_json::to_string(&error.body(status, kind, code)).unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("");
    Bytes::from(format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        body.len()
    ))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
}

const INVALID: &str = "invalid_request_error";
const AUTHN: &str = "authentication_error";
const PERMISSION: &str = "permission_error";
const UPSTREAM: &str = "upstream_error";
const UNAVAILABLE: &str = "unavailable_error";
const SERVER: &str = "server_error";

impl ApiError {
    /// Status, OpenAI error type, and a stable machine code.
    /// The status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.classify().0
    }

    fn classify(&self) -> (StatusCode, &str, &str) {
        match self {
            ApiError::Router(e) => classify_router(e),
            ApiError::Auth(e) => classify_auth(e),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found_error", "not_found"),
            ApiError::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                INVALID,
                "method_not_allowed",
            ),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, PERMISSION, "agent_forbidden"),
            ApiError::AdminOnly { .. } => (StatusCode::FORBIDDEN, PERMISSION, "admin_only"),
            ApiError::SsoNotConfigured => (
                StatusCode::NOT_FOUND,
                "not_found_error",
                "sso_not_configured",
            ),
            ApiError::LocalLoginDisabled => {
                (StatusCode::FORBIDDEN, PERMISSION, "local_login_disabled")
            }
            ApiError::Oidc(e) => classify_oidc(e),
            ApiError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limited",
            ),
            ApiError::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, INVALID, "body_too_large")
            }
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, INVALID, "body_timeout"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, INVALID, "invalid_request"),
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE, "busy"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, SERVER, "internal"),
            ApiError::NoMessage { .. } => (StatusCode::BAD_GATEWAY, UPSTREAM, "backend_failed"),
            ApiError::UnknownWorkflow { .. } => {
                (StatusCode::NOT_FOUND, "not_found_error", "unknown_workflow")
            }
            ApiError::AuditUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "audit_unavailable",
            ),
            ApiError::CountersUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "counters_unavailable",
            ),
            ApiError::ConnectionRefused(Refused::Full { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "too_many_connections",
            ),
            ApiError::ConnectionRefused(Refused::AddressFull { .. }) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_connections_from_address",
            ),
        }
    }

    /// Logs a server-side failure. A backend's own message can quote the prompt or the
    /// answer, so only our own errors are logged with their text.
    fn log(&self, status: StatusCode, code: &str) {
        let status = status.as_u16();
        match self {
            ApiError::Router(e) => {
                let backend = e.backend().unwrap_or("-");
                tracing::warn!(status, code, backend, "request failed");
            }
            ApiError::Auth(e) => tracing::warn!(status, code, error = %e, "request failed"),
            ApiError::Internal(message) => {
                tracing::warn!(status, code, error = %message, "request failed");
            }
            ApiError::Busy(_) | ApiError::AuditUnavailable | ApiError::CountersUnavailable => {
                tracing::warn!(status, code, "request failed");
            }
            ApiError::NoMessage { backend, .. } => {
                tracing::warn!(status, code, backend = %backend, "request failed");
            }
            ApiError::NotFound { .. }
            | ApiError::Forbidden { .. }
            | ApiError::RateLimited(_)
            | ApiError::MethodNotAllowed { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::BodyTimeout { .. }
            | ApiError::BadRequest(_)
            | ApiError::UnknownWorkflow { .. }
            | ApiError::ConnectionRefused(_)
            | ApiError::AdminOnly { .. }
            | ApiError::SsoNotConfigured
            | ApiError::LocalLoginDisabled => {}
            ApiError::Oidc(e) => tracing::warn!(status, code, error = %e, "request failed"),
        }
    }

    fn body<'a>(&self, status: StatusCode, kind: &'a str, code: &'a str) -> ErrorBody<'a> {
        // Internal details (paths, database errors) stay in the log.
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal error; the gateway's log has the details".to_owned()
        } else if let ApiError::Auth(AuthError::StoreUnreachable { .. }) = self {
            "the user database cannot be reached; retry shortly (the gateway's log has the details)"
                .to_owned()
        } else if let ApiError::Oidc(OidcError::Unreachable(_)) = self {
            "the identity provider cannot be reached, so this sign-in cannot be checked; retry \
             shortly (the gateway's log has the details)"
                .to_owned()
        } else {
            self.to_string()
        };
        ErrorBody {
            error: ErrorDetail {
                message,
                kind,
                code,
            },
        }
    }

    /// The response: JSON body plus the headers the status calls for.
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let (status, kind, code) = self.classify();
        match &self {
            ApiError::RateLimited(limited) => crate::metrics::rate_limited(limited.scope),
            ApiError::Auth(AuthError::LoginLocked { .. }) => crate::metrics::rate_limited("login"),
            _ => {}
        }
        if status.is_server_error() {
            self.log(status, code);
        }
        let mut response = json(status, &self.body(status, kind, code));
        let headers = response.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                headers.insert(ALLOW, HeaderValue::from_static(allowed));
            }
            ApiError::RateLimited(limited) => {
                let number = |n: u64| HeaderValue::from(n);
                headers.insert(RETRY_AFTER, number(limited.retry_after));
                headers.insert("x-ratelimit-limit", number(u64::from(limited.per_minute)));
                headers.insert("x-ratelimit-remaining", number(0));
                headers.insert("x-ratelimit-reset", number(limited.retry_after));
            }
            ApiError::Auth(AuthError::LoginLocked { retry_after_secs }) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Auth(e) if e.is_unauthenticated() => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Oidc(OidcError::InvalidToken(_) | OidcError::ExpiredToken) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}
