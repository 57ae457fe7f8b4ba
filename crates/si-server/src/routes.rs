//! Answering one request: its context, the route, the checks every request
//! passes, the handler, and the audit record, in that order and in one place.

use std::net::SocketAddr;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::Gateway;
use crate::audit::{AuditedBody, PendingRecord};
use crate::body::{GatewayBody, Reply};
use crate::context::RequestContext;
use crate::endpoints::{Endpoint, Route};
use crate::error::ApiError;
use crate::handlers::{self, authenticate};

/// Answers one request. Never fails: every error becomes a JSON response.
pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<GatewayBody> {
    let config = gateway.config();
    let trusted = &config.rate_limits.trusted_proxies;
    let mut ctx = RequestContext::new(peer, request.headers(), trusted);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = Route::of(&method, &path, config.gateway.metrics_on_main);
    let monitoring = route.endpoint().is_some_and(Endpoint::is_monitoring);
    let log = &gateway.inner.audit;
    let pending =
        (!monitoring).then(|| PendingRecord::request(&ctx, method.as_str(), &path, log.clone()));
    // Every log line of this request carries its id.
    let span = tracing::info_span!("request", request_id = %ctx.id);
    let reply = answer(gateway, &mut ctx, request, route, monitoring)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|e| span.in_scope(|| e.into_response().map(Reply::Whole)));
    let mut response = record(gateway, reply, pending)
        .instrument(span.clone())
        .await;
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        response.headers_mut().insert("x-request-id", value);
    }
    // Metadata only: never bodies, tokens or keys.
    let status = response.status().as_u16();
    let micros = ctx.started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        tracing::debug!(client = %ctx.client, method = %method, path = %path, status, micros, "request");
    });
    response
}

/// The checks, then the handler. The per-address limit applies to everything but
/// health checks and metrics scrapes; endpoints that need a token check it first.
async fn answer(
    gateway: &Gateway,
    ctx: &mut RequestContext,
    request: Request<Incoming>,
    route: Route<'_>,
    monitoring: bool,
) -> Result<Response<Reply>, ApiError> {
    if !monitoring {
        gateway.inner.limits.check_client(ctx.client).await?;
    }
    let (endpoint, name) = match route {
        Route::Found(endpoint, name) => (endpoint, name),
        Route::WrongMethod(_, allowed) => return Err(not_allowed(&request, allowed)),
        Route::NotFound => return Err(not_found(&request)),
    };
    if endpoint.needs_bearer() {
        ctx.caller = authenticate(gateway, request.headers(), &ctx.notes).await?;
    }
    let ctx = &*ctx;
    match endpoint {
        Endpoint::Chat => handlers::chat::handle(gateway, ctx, request).await,
        Endpoint::Login => handlers::login::handle(gateway, ctx, request).await,
        Endpoint::Refresh => handlers::login::refresh(gateway, ctx, request).await,
        Endpoint::Logout => handlers::login::logout(gateway, ctx, request).await,
        Endpoint::OidcLogin => handlers::oidc::login(gateway, ctx, &request).await,
        Endpoint::OidcCallback => handlers::oidc::callback(gateway, ctx, &request).await,
        Endpoint::Models => Ok(handlers::models::handle(gateway, ctx)),
        Endpoint::Workflows => handlers::workflows::list(gateway, ctx),
        Endpoint::WorkflowRun => {
            let name = name.unwrap_or_default();
            handlers::workflows::run(gateway, ctx, request, name).await
        }
        Endpoint::Health => Ok(handlers::health::handle(gateway)),
        Endpoint::Backends => handlers::health::backends(gateway, ctx),
        Endpoint::Metrics => handlers::health::metrics(gateway).map(|r| r.map(Reply::Whole)),
        Endpoint::OpenApi => Ok(handlers::openapi::handle()),
    }
}

/// Paths are echoed in messages: keep them short.
fn shown_path<B>(request: &Request<B>) -> String {
    request.uri().path().chars().take(200).collect()
}

fn not_found<B>(request: &Request<B>) -> ApiError {
    ApiError::NotFound {
        method: request.method().to_string(),
        path: shown_path(request),
    }
}

fn not_allowed<B>(request: &Request<B>, allowed: &'static str) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: shown_path(request),
        allowed,
    }
}

/// Attaches the request's record to its response: a backend's streamed answer
/// writes it when its last byte has gone out; any other response once it is
/// written, now (no record, no answer: a 503 instead).
async fn record(
    gateway: &Gateway,
    reply: Response<Reply>,
    pending: Option<PendingRecord>,
) -> Response<GatewayBody> {
    let (parts, body) = reply.into_parts();
    let body = match body {
        Reply::Answer(answer) => {
            let body = AuditedBody::new(answer, parts.status.as_u16(), pending);
            return Response::from_parts(parts, GatewayBody::Answer(Box::new(body)));
        }
        Reply::Whole(body) => GatewayBody::Whole(body),
        Reply::Events(body) => GatewayBody::Events(body),
    };
    if let Some(pending) = pending {
        let record = pending.finish(parts.status.as_u16(), None);
        if gateway.inner.audit.append(record).await.is_err() {
            return ApiError::AuditUnavailable
                .into_response()
                .map(GatewayBody::Whole);
        }
    }
    Response::from_parts(parts, body)
}
