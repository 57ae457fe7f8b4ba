//! `GET /healthz`: liveness (always 200 while the process serves) plus readiness: each
//! backend's state from the health poll, and whether every agent can be served.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::Gateway;
use crate::body::Reply;
use crate::error::ApiError;
use crate::response::json;

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    /// Every agent has at least one routable backend.
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

pub(crate) fn handle(gateway: &Gateway) -> Response<Reply> {
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
    let draining = gateway.is_draining();
    let health = Health {
        status: if draining { "draining" } else { "ok" },
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
    };
    // A load balancer takes a draining gateway out of rotation.
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, &health)
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
