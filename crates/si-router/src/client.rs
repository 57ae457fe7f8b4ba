//! The HTTP client for llama-server.
//!
//! One pooled hyper client for all backends (keep-alive, no Nagle). A chat request is
//! sent with the backend's own API key; a 2xx answer is handed back with its body
//! unread so streams flow through, anything else becomes a [`RouterError`] that says
//! whose fault it is.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::RouterError;
use crate::error::Reach;
use crate::pool::{Backend, HealthState};

/// Most of an error body read from a backend; its messages are short.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest wait for a backend's error body once its status has arrived.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled HTTP/1.1 client for llama-server backends.
#[derive(Clone, Debug)]
pub struct LlamaClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl LlamaClient {
    /// A client whose TCP connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http = Client::builder(TokioExecutor::new())
            // llama-server (cpp-httplib) closes idle keep-alive connections after 5 s:
            // drop ours first so a request never races the server's close.
            .pool_idle_timeout(Duration::from_secs(4))
            .build(connector);
        LlamaClient { http }
    }

    /// POSTs `body` to the backend's `/v1/chat/completions` with its key, giving up
    /// when no response headers arrive within the backend's `headers_timeout`.
    pub async fn chat(
        &self,
        backend: &Backend,
        body: Bytes,
    ) -> Result<Response<Incoming>, RouterError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(backend.chat_uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            )
            .body(Full::new(body))
            .map_err(|e| RouterError::Failed {
                backend: backend.name.clone(),
                message: format!("cannot build request: {e}"),
            })?;
        if let Some(authorization) = backend.authorization() {
            request.headers_mut().insert(AUTHORIZATION, authorization);
        }
        let limit = backend.limits.headers_timeout;
        let response = tokio::time::timeout(limit, self.http.request(request))
            .await
            .map_err(|_| RouterError::Timeout {
                backend: backend.name.clone(),
                seconds: limit.as_secs_f64(),
            })?
            .map_err(|e| transport_error(backend, &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = tokio::time::timeout(
            ERROR_BODY_TIMEOUT,
            Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
        Err(classify(backend, status, &body))
    }

    /// GETs `/health` (no key needed) within `timeout`; returns the state and how long
    /// the poll took.
    pub async fn health(&self, backend: &Backend, timeout: Duration) -> (HealthState, Duration) {
        let started = Instant::now();
        let request = Request::get(backend.health_uri.clone()).body(Full::new(Bytes::new()));
        let Ok(request) = request else {
            return (HealthState::Down, started.elapsed());
        };
        let state = match tokio::time::timeout(timeout, self.http.request(request)).await {
            Ok(Ok(response)) => match response.status() {
                StatusCode::OK => HealthState::Ok,
                StatusCode::SERVICE_UNAVAILABLE => HealthState::Loading,
                _ => HealthState::Down,
            },
            Ok(Err(_)) | Err(_) => HealthState::Down,
        };
        (state, started.elapsed())
    }
}

#[derive(Deserialize)]
struct Props {
    total_slots: u32,
}

impl LlamaClient {
    /// The server's slot count from `GET /props`, if it says.
    pub async fn total_slots(&self, backend: &Backend, timeout: Duration) -> Option<u32> {
        let mut request = Request::get(backend.props_uri.clone())
            .body(Full::new(Bytes::new()))
            .ok()?;
        if let Some(authorization) = backend.authorization() {
            request.headers_mut().insert(AUTHORIZATION, authorization);
        }
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .ok()?
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = tokio::time::timeout(
            timeout,
            Limited::new(response.into_body(), MAX_ERROR_BODY).collect(),
        )
        .await
        .ok()?
        .ok()?
        .to_bytes();
        serde_json::from_slice::<Props>(&body)
            .ok()
            .map(|p| p.total_slots)
            .filter(|n| *n > 0)
    }
}

fn transport_error(backend: &Backend, error: &hyper_util::client::legacy::Error) -> RouterError {
    // The innermost cause ("Connection refused (os error 111)") is the useful part.
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let refused = std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    let (reach, reason) = match (error.is_connect(), refused) {
        (true, true) => (
            Reach::Refused,
            format!("cannot connect to {}: {cause}", backend.url),
        ),
        (true, false) => (
            Reach::NotConnected,
            format!("cannot connect to {}: {cause}", backend.url),
        ),
        (false, _) => (
            Reach::Dropped,
            format!("connection to {} failed: {cause}", backend.url),
        ),
    };
    RouterError::Unreachable {
        backend: backend.name.clone(),
        reason,
        reach,
    }
}

#[derive(Deserialize)]
struct LlamaErrorBody {
    error: LlamaError,
}

#[derive(Deserialize)]
struct LlamaError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// Turns a backend's non-2xx answer into whose-fault-it-is terms.
pub(crate) fn classify(backend: &Backend, status: StatusCode, body: &[u8]) -> RouterError {
    let parsed = serde_json::from_slice::<LlamaErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let message = parsed
        .as_ref()
        .map(|e| e.message.trim().to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("answered {status} without an error message"));
    let name = backend.name.clone();
    match status {
        StatusCode::UNAUTHORIZED => RouterError::KeyRejected {
            backend: name,
            key_source: backend.key_source.clone(),
            had_key: backend.has_key(),
        },
        StatusCode::SERVICE_UNAVAILABLE => RouterError::Unavailable {
            backend: name,
            message,
        },
        // The request itself was refused (invalid, too long for the context): the
        // caller's to fix. Any other 4xx (404, 403, 405...) means the gateway is talking
        // to the wrong thing, which is ours.
        s @ (StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNPROCESSABLE_ENTITY) => RouterError::Rejected {
            backend: name,
            status: s.as_u16(),
            kind: parsed
                .map(|e| e.kind)
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "invalid_request_error".into()),
            message,
        },
        // llama-server answers some requests it cannot take with a 500 (an image for a
        // model without a projector, a template it cannot apply). Another replica would
        // fail the same way, and the server is healthy: pass it back as the caller's.
        s if s.is_server_error() && blames_the_request(&message) => RouterError::Rejected {
            backend: name,
            status: StatusCode::BAD_REQUEST.as_u16(),
            kind: "invalid_request_error".into(),
            message,
        },
        s => RouterError::Failed {
            backend: name,
            message: format!("status {}: {message}", s.as_u16()),
        },
    }
}

/// How llama-server's 500 messages about something in the request it cannot take
/// begin (its request parser throws these as plain runtime errors). Matched at the
/// start only: other 500s can quote the conversation, whose words must not turn a
/// sick server into the caller's fault.
const REQUEST_FAULTS: [&str; 10] = [
    "image input is not supported",
    "audio input is not supported",
    "unsupported content part type",
    "expected 'messages'",
    "expected 'content'",
    "failed to parse",
    "tools param requires",
    "cannot use custom grammar",
    "either \"json_schema\" or \"grammar\"",
    "only one of",
];

/// Whether a backend's 5xx `message` says the request was at fault.
fn blames_the_request(message: &str) -> bool {
    let message = message.trim_start().to_ascii_lowercase();
    REQUEST_FAULTS
        .iter()
        .any(|start| message.starts_with(start))
}

#[cfg(test)]
mod tests {
    use si_core::Config;

    use super::*;
    use crate::BackendPool;

    fn backend() -> std::sync::Arc<Backend> {
        let pool = BackendPool::new(&Config::builtin().unwrap().backends).unwrap();
        pool.all()[5].clone()
    }

    #[test]
    fn classifies_llama_server_errors() {
        let b = backend();
        let body = |code: u16, msg: &str, kind: &str| {
            format!(r#"{{"error":{{"code":{code},"message":"{msg}","type":"{kind}"}}}}"#)
        };
        let e = classify(
            &b,
            StatusCode::UNAUTHORIZED,
            body(401, "Invalid API Key", "authentication_error").as_bytes(),
        );
        assert!(
            matches!(&e, RouterError::KeyRejected { key_source, .. } if key_source == "env::API_KEY_BIOMISTRAL_8085")
        );
        let e = classify(
            &b,
            StatusCode::SERVICE_UNAVAILABLE,
            body(503, "Loading model", "unavailable_error").as_bytes(),
        );
        assert!(e.to_string().contains("Loading model"));
        let e = classify(&b, StatusCode::BAD_REQUEST, body(400, "request (417 tokens) exceeds the available context size (256 tokens), try increasing it", "exceed_context_size_error").as_bytes());
        assert!(
            matches!(&e, RouterError::Rejected { status: 400, kind, .. } if kind == "exceed_context_size_error")
        );
        let e = classify(
            &b,
            StatusCode::NOT_FOUND,
            body(404, "File Not Found", "not_found_error").as_bytes(),
        );
        assert!(
            matches!(&e, RouterError::Failed { message, .. } if message.contains("404")),
            "{e}"
        );
        let e = classify(&b, StatusCode::INTERNAL_SERVER_ERROR, b"<html>oops</html>");
        assert!(matches!(&e, RouterError::Failed { message, .. } if message.contains("500")));
        for message in [
            "slot crashed",
            "decode failed at: the patient requires insulin; dose invalid, must be rechecked",
        ] {
            let e = classify(
                &b,
                StatusCode::INTERNAL_SERVER_ERROR,
                body(500, message, "server_error").as_bytes(),
            );
            assert!(matches!(&e, RouterError::Failed { .. }), "{e:?}");
        }
    }

    #[test]
    fn a_500_that_names_the_request_is_the_callers() {
        let b = backend();
        for message in [
            "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            "audio input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
            "Unsupported content part type: \\\"video\\\"",
            "Expected 'messages' to be an array",
            "tools param requires --jinja flag",
        ] {
            let body = format!(
                r#"{{"error":{{"code":500,"message":"{message}","type":"server_error"}}}}"#
            );
            let e = classify(&b, StatusCode::INTERNAL_SERVER_ERROR, body.as_bytes());
            assert!(
                matches!(&e, RouterError::Rejected { status: 400, .. }),
                "{message}: {e:?}"
            );
            assert!(!e.is_retryable());
        }
    }
}
