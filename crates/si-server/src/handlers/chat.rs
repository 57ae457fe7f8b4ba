//! `POST /v1/chat/completions`: pick the agent, check the caller may use it, and
//! pass the body as is to the router; its answer goes back as the backend gave it
//! (JSON, or server-sent events passed through as they come).

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use si_router::Answer;
use si_router::usage::UsageScanner;

use crate::Gateway;
use crate::body::Reply;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::handlers::{authorize, may_use_agent, read_limited};

/// Which agent answered.
pub const AGENT_HEADER: HeaderName = HeaderName::from_static("x-si-agent");
/// Which model answered (clients can tell a fallback happened).
pub const MODEL_HEADER: HeaderName = HeaderName::from_static("x-si-model");
/// Which backend answered.
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-si-backend");

/// The largest non-streamed answer held before it is sent on. llama-server's
/// answers are a few KiB; this bounds what a misbehaving backend can make the
/// gateway hold.
const MAX_WHOLE_ANSWER_BYTES: usize = 16 << 20;

pub(crate) async fn handle(
    gateway: &Gateway,
    ctx: &RequestContext,
    request: Request<Incoming>,
) -> Result<Response<Reply>, ApiError> {
    let limit = gateway.config().gateway.max_body_bytes;
    let body = read_limited(request.into_body(), limit).await?;
    let router = gateway.router();
    let agent = router.agent_for(&body)?;
    ctx.notes.agent(&agent.name);
    crate::metrics::tier(agent.tier.as_str());
    let caller = ctx.caller.as_ref();
    authorize(gateway, caller, &agent.name)?;
    let answer = router
        .answer(agent, body, may_use_agent(gateway, caller))
        .await
        .inspect_err(|e| {
            if let Some(backend) = e.backend() {
                ctx.notes.answered_by(&agent.model, backend);
            }
        })?;
    reply(ctx, answer, &agent.name).await
}

/// The backend's status, content type and body, plus who answered. A
/// non-streamed answer is read whole first, so the client gets it in one write,
/// or a clear JSON error if the backend broke off.
async fn reply(
    ctx: &RequestContext,
    mut answer: Answer,
    agent: &str,
) -> Result<Response<Reply>, ApiError> {
    ctx.notes
        .answered_by(&answer.backend.model, &answer.backend.name);
    let stream = answer.is_stream();
    let body = if stream {
        None
    } else {
        let whole = answer.read_whole(MAX_WHOLE_ANSWER_BYTES).await?;
        if let Some(usage) = usage_of(&whole) {
            ctx.notes
                .tokens(usage.prompt_tokens, usage.completion_tokens);
        }
        Some(whole)
    };
    let Answer {
        backend,
        status,
        content_type,
        body: upstream,
    } = answer;
    let mut response = Response::new(match body {
        Some(whole) => Reply::Whole(Full::new(whole)),
        None => Reply::Answer(upstream),
    });
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(content_type) = content_type {
        headers.insert(CONTENT_TYPE, content_type);
        if stream {
            crate::response::mark_stream(headers);
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
    Ok(response)
}

/// The token counts of a whole answer.
fn usage_of(whole: &Bytes) -> Option<si_router::usage::Usage> {
    let mut scanner = UsageScanner::new(false);
    scanner.feed(whole);
    scanner.finish()
}
