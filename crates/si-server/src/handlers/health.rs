//! `GET /healthz`: liveness (200 while the process serves, 503 once draining) and
//! readiness (every agent can be served), and nothing more, since anyone may ask.
//! Each backend's address, state, key presence and load is the backends view, for
//! admins (`GET /v1/admin/backends`) and on the metrics listener (`GET /backends`).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use si_core::Role;

use crate::Gateway;
use crate::body::Reply;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::response::json;

#[derive(Serialize)]
struct Health {
    /// `ok`, or `draining` after SIGTERM.
    status: &'static str,
    /// Every agent has at least one routable backend.
    ready: bool,
    /// Where several gateways share a database: `ok`, or `unreachable` (requests
    /// that need it get 503 until it answers again).
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
    /// Where several gateways share rate limits in Redis: `ok`, or `unreachable`
    /// (each gateway counts alone, or refuses, as `store.redis_failure` says).
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<&'static str>,
}

#[derive(Serialize)]
struct BackendsView<'a> {
    status: &'static str,
    ready: bool,
    backends: Vec<BackendHealth<'a>>,
    agents: Vec<AgentHealth<'a>>,
}

#[derive(Serialize)]
struct BackendHealth<'a> {
    name: &'a str,
    url: &'a str,
    model: &'a str,
    state: &'static str,
    /// Duration of the last `/health` poll.
    latency_ms: f64,
    /// The gateway holds an API key for it.
    has_key: bool,
    /// Its slots, requests it is answering now, and requests waiting for a slot.
    slots: usize,
    in_flight: usize,
    waiting: usize,
}

#[derive(Serialize)]
struct AgentHealth<'a> {
    name: &'a str,
    model: &'a str,
    ready: bool,
}

/// A shared dependency's state as `/healthz` says it.
fn answers(up: bool) -> &'static str {
    if up { "ok" } else { "unreachable" }
}

/// `GET /healthz`.
pub(crate) fn handle(gateway: &Gateway) -> Response<Reply> {
    let view = view(gateway);
    let health = Health {
        status: view.status,
        ready: view.ready,
        store: gateway
            .inner
            .shared
            .as_ref()
            .map(|shared| answers(shared.is_up())),
        counters: gateway
            .inner
            .shared_counters
            .as_ref()
            .map(|redis| answers(redis.is_up())),
    };
    // A load balancer takes a draining gateway out of rotation.
    let status = if gateway.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &health)
}

/// `GET /v1/admin/backends`: the backends view, for the admin role only.
pub(crate) fn backends(
    gateway: &Gateway,
    ctx: &RequestContext,
) -> Result<Response<Reply>, ApiError> {
    match ctx.caller.as_ref().map(|caller| caller.role) {
        Some(Role::Admin) => Ok(backends_view(gateway)),
        role => Err(ApiError::AdminOnly { role }),
    }
}

/// Each backend and agent with its state (also served on the metrics listener).
pub(crate) fn backends_view<B: From<Full<Bytes>>>(gateway: &Gateway) -> Response<B> {
    json(StatusCode::OK, &view(gateway))
}

fn view(gateway: &Gateway) -> BackendsView<'_> {
    let router = gateway.router();
    let backends = router.pool().all();
    let routable = |model: &str| backends.iter().any(|b| b.model == model && b.is_routable());
    let agents: Vec<AgentHealth<'_>> = router
        .agents()
        .all()
        .iter()
        .map(|a| AgentHealth {
            name: &a.name,
            model: &a.model,
            ready: routable(&a.model),
        })
        .collect();
    BackendsView {
        status: if gateway.is_draining() {
            "draining"
        } else {
            "ok"
        },
        ready: agents.iter().all(|a| a.ready),
        backends: backends
            .iter()
            .map(|b| BackendHealth {
                name: &b.name,
                url: &b.url,
                model: &b.model,
                state: b.state_label(),
                latency_ms: b.last_probe_micros() as f64 / 1000.0,
                has_key: b.has_key(),
                slots: b.slots(),
                in_flight: b.in_flight(),
                waiting: b.waiting(),
            })
            .collect(),
        agents,
    }
}

/// `GET /metrics`: the Prometheus exposition text.
pub(crate) fn metrics(gateway: &Gateway) -> Result<Response<Full<Bytes>>, ApiError> {
    let text = crate::metrics::render(gateway.router().pool()).ok_or_else(|| {
        ApiError::Internal("another metrics recorder is installed in this process".into())
    })?;
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
