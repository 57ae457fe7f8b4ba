//! Which path does what, and the request log line.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use si_auth::audit::{AuditRecord, now_rfc3339};
use tracing::Instrument;

use crate::Gateway;
use crate::audit::{AuditDraft, AuditedByBody};
use crate::body::GatewayBody;
use crate::client_ip::{ClientAddr, client_ip};
use crate::error::ApiError;
use crate::handlers;

/// Answers one request. Never fails: every error becomes a JSON response.
pub(crate) async fn handle(
    gateway: &Gateway,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<GatewayBody> {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let trusted = &gateway.config().rate_limits.trusted_proxies;
    let client = client_ip(peer.ip(), request.headers(), trusted);
    request.extensions_mut().insert(ClientAddr(client));
    // A request id from the trusted proxy in front is kept, if it is a sane one.
    let from_proxy = trusted
        .iter()
        .any(|t| t.to_canonical() == peer.ip().to_canonical());
    let request_id = request
        .headers()
        .get("x-request-id")
        .filter(|_| from_proxy)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        .map_or_else(new_request_id, str::to_owned);
    // Health checks and metrics scrapes come every few seconds from monitoring:
    // not audited.
    let scrape = path == "/metrics" && gateway.config().gateway.metrics_on_main;
    let draft = (path != "/healthz" && !scrape).then(|| {
        AuditDraft::new(
            AuditRecord {
                at: now_rfc3339(),
                request_id: request_id.clone(),
                client_ip: client.to_string(),
                method: method.to_string(),
                path: path.chars().take(200).collect(),
                ..AuditRecord::default()
            },
            gateway.inner.audit.clone(),
        )
    });
    if let Some(draft) = &draft {
        request.extensions_mut().insert(draft.clone());
    }
    // Every log line of this request carries its id.
    let span = tracing::info_span!("request", request_id = %request_id);
    let result = match admit(gateway, &path, client, scrape) {
        Ok(()) => {
            dispatch(gateway, request, &method, &path)
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(e),
    };
    let mut response = result.unwrap_or_else(|e| span.in_scope(|| e.into_response()));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    // A backend's answer is audited by its body, once its last byte is out.
    let audited_by_body = response.extensions().get::<AuditedByBody>().is_some();
    if let (Some(draft), false) = (draft, audited_by_body) {
        let record = draft.finish(response.status().as_u16(), None);
        if gateway
            .inner
            .audit
            .append(record)
            .instrument(span.clone())
            .await
            .is_err()
        {
            // No record, no answer: the client learns its request was not completed.
            response = span.in_scope(|| ApiError::AuditUnavailable.into_response());
        }
    }
    // Metadata only: never bodies, tokens or keys.
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    span.in_scope(|| {
        tracing::debug!(%client, method = %method, path = %path, status, micros, "request");
    });
    response
}

/// The per-address limit applies to everything but the health check and metrics
/// (which load balancers and monitoring poll).
fn admit(gateway: &Gateway, path: &str, client: IpAddr, scrape: bool) -> Result<(), ApiError> {
    if path == "/healthz" || scrape {
        return Ok(());
    }
    gateway
        .inner
        .limits
        .check_client(client)
        .map_err(ApiError::RateLimited)
}

async fn dispatch(
    gateway: &Gateway,
    request: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Result<Response<GatewayBody>, ApiError> {
    if method == Method::POST
        && let Some(name) = handlers::workflows::name_in_path(path)
    {
        return handlers::workflows::run(gateway, request, name).await;
    }
    match (path, method) {
        ("/v1/chat/completions", &Method::POST) => handlers::chat::handle(gateway, request).await,
        ("/v1/auth/login", &Method::POST) => handlers::login::handle(gateway, request).await,
        ("/v1/auth/refresh", &Method::POST) => handlers::login::refresh(gateway, request).await,
        ("/v1/auth/logout", &Method::POST) => handlers::login::logout(gateway, request).await,
        ("/v1/models", &Method::GET) => handlers::models::handle(gateway, &request),
        ("/v1/workflows", &Method::GET) => handlers::workflows::list(gateway, &request),
        ("/healthz", &Method::GET) => Ok(handlers::health::handle(gateway)),
        ("/metrics", &Method::GET) if gateway.config().gateway.metrics_on_main => {
            handlers::health::metrics(gateway)
        }
        (p, m) => Err(unrouted(p, m)),
    }
}

fn unrouted(path: &str, method: &Method) -> ApiError {
    let allowed = match path {
        "/v1/chat/completions" | "/v1/auth/login" | "/v1/auth/refresh" | "/v1/auth/logout" => {
            Some("POST")
        }
        "/v1/models" | "/healthz" | "/v1/workflows" => Some("GET"),
        p if handlers::workflows::name_in_path(p).is_some() => Some("POST"),
        _ => None,
    };
    // Paths are echoed in messages: keep them short.
    let shown: String = path.chars().take(200).collect();
    match allowed {
        Some(allowed) => ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: shown,
            allowed,
        },
        None => ApiError::NotFound {
            method: method.to_string(),
            path: shown,
        },
    }
}

/// A new request id: 16 hex digits from the thread's CSPRNG (seeded from the
/// operating system, without a system call per request).
fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
