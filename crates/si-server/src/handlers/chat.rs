//! `POST /v1/chat/completions`: authenticate, pick the agent, forward the body as is,
//! and pass the backend's answer (JSON or server-sent events) straight back.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use si_router::{ChatRequestHead, RouterError, Upstream, UpstreamBody};

use crate::Gateway;
use crate::audit::{AuditDraft, AuditedBody, AuditedByBody};
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
    let draft = request.extensions().get::<AuditDraft>().cloned();
    let limit = gateway.config().gateway.max_body_bytes;
    let body = read_limited(request.into_body(), limit).await?;
    let head = ChatRequestHead::parse(&body)?;
    let agent = gateway.router().resolve(&head)?;
    drop(head);
    if let Some(draft) = &draft {
        draft.agent(&agent.name);
    }
    crate::metrics::tier(agent.tier.as_str());
    authorize(gateway, caller.as_ref(), &agent.name)?;
    let answered = gateway.router().chat(agent, body.clone()).await;
    let upstream = match (answered, &agent.fallback) {
        (Ok(upstream), _) => upstream,
        // Every backend of the model failed before answering, and the agent's
        // configuration names another agent for that case.
        (Err(e), Some(fallback))
            if e.is_retryable() || matches!(e, RouterError::NoHealthyBackend { .. }) =>
        {
            let fallback = gateway.router().agents().by_name(fallback).ok_or(e)?;
            authorize(gateway, caller.as_ref(), &fallback.name)?;
            tracing::warn!(agent = %agent.name, fallback = %fallback.name, "answered by the fallback agent");
            gateway.router().chat(fallback, body).await?
        }
        (Err(e), _) => {
            if let (Some(draft), Some(backend)) = (&draft, e.backend()) {
                draft.answered_by(&agent.model, backend);
            }
            return Err(e.into());
        }
    };
    Ok(pass_through(gateway, upstream, &agent.name, draft).await)
}

/// The largest non-streamed answer held before it is sent on. llama-server's
/// answers are a few KiB; this bounds what a misbehaving backend can make the
/// gateway hold.
const MAX_WHOLE_ANSWER_BYTES: usize = 16 << 20;

/// A non-streamed answer, read whole and audited before anything is sent, so the
/// client gets it in one write, or a clear JSON error if the backend broke off.
async fn read_whole(
    mut body: AuditedBody,
    backend: &str,
) -> Result<http_body_util::Full<bytes::Bytes>, ApiError> {
    use http_body_util::BodyExt;
    let mut pieces: Vec<bytes::Bytes> = Vec::with_capacity(1);
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            // The body has recorded its end already.
            Err(e) if e.is::<si_auth::audit::AuditUnavailable>() => {
                return Err(ApiError::AuditUnavailable);
            }
            Err(e) => {
                let status = body.failure().unwrap_or(502);
                return Err(ApiError::AnswerCutShort {
                    status,
                    message: e.to_string(),
                });
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > MAX_WHOLE_ANSWER_BYTES {
            body.abandon(502);
            return Err(ApiError::AnswerTooLarge {
                backend: backend.to_owned(),
                limit: MAX_WHOLE_ANSWER_BYTES,
            });
        }
        pieces.push(data);
    }
    // Most answers arrive in one piece: send it without copying.
    let whole = match pieces.len() {
        1 => pieces.swap_remove(0),
        _ => pieces.concat().into(),
    };
    Ok(http_body_util::Full::new(whole))
}

/// The backend's status, content type and body, plus where the answer came from.
async fn pass_through(
    gateway: &Gateway,
    upstream: Upstream,
    agent: &str,
    draft: Option<AuditDraft>,
) -> Response<GatewayBody> {
    let Upstream {
        backend,
        response,
        slot,
        ..
    } = upstream;
    let (parts, body) = response.into_parts();
    let is_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = UpstreamBody::new(body, is_stream, &backend.limits, &backend.name, slot);
    let body = match draft {
        Some(draft) => {
            draft.answered_by(&backend.model, &backend.name);
            let log = gateway.inner.audit.clone();
            AuditedBody::new(body, is_stream, parts.status.as_u16(), Some((draft, log)))
        }
        None => AuditedBody::new(body, is_stream, parts.status.as_u16(), None),
    };
    let mut response = if is_stream {
        Response::new(crate::body::audited(body))
    } else {
        match read_whole(body, &backend.name).await {
            Ok(whole) => Response::new(Either::Left(whole)),
            Err(e) => {
                let mut response = e.into_response();
                response.extensions_mut().insert(AuditedByBody);
                return response;
            }
        }
    };
    *response.status_mut() = parts.status;
    response.extensions_mut().insert(AuditedByBody);
    let headers = response.headers_mut();
    if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
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
