//! `si-cli health`: the gateway's `/healthz` and, from its metrics listener (which
//! only the host itself reaches by default), each backend's state, as a table.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::CliError;
use crate::commands::table;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Health {
    status: String,
    /// Every agent has a routable backend.
    ready: bool,
}

#[derive(Deserialize)]
struct Backends {
    backends: Vec<BackendHealth>,
}

#[derive(Deserialize)]
struct BackendHealth {
    name: String,
    url: String,
    state: String,
    latency_ms: f64,
}

/// Fetches `<gateway>/healthz` and `<metrics>/backends`, writes a table to `out`,
/// and returns whether the gateway and every backend are ok (without the backends
/// view: whether the gateway is ok and ready).
pub async fn check(
    gateway: &str,
    metrics: Option<&str>,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let started = Instant::now();
    let health = fetch::<Health>(gateway, "/healthz").await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let backends = match metrics {
        Some(metrics) => fetch::<Backends>(metrics, "/backends").await,
        None => Err("gateway.metrics_listen is off: backends not shown (give --metrics)".into()),
    };
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    let row = |name: &str, url: &str, state: &str, latency: String| {
        [name.to_owned(), url.to_owned(), state.to_owned(), latency]
    };
    let ms = |value: f64| format!("{value:.1}ms");
    let mut problems = Vec::new();
    let mut rows = vec![match &health {
        Ok(health) => row("gateway", gateway, &health.status, ms(elapsed_ms)),
        Err(_) => row("gateway", gateway, "down", "-".into()),
    }];
    let mut healthy = health.as_ref().is_ok_and(|h| h.status == "ok");
    let health_ready = health.as_ref().is_ok_and(|h| h.ready);
    problems.extend(health.err());
    match backends {
        Ok(view) => {
            healthy &= view.backends.iter().all(|b| b.state == "ok");
            rows.extend(
                view.backends
                    .iter()
                    .map(|b| row(&b.name, &b.url, &b.state, ms(b.latency_ms))),
            );
        }
        // Without the backends view, the gateway's own word on whether every agent
        // can be served is what there is.
        Err(problem) => {
            healthy &= health_ready;
            problems.push(problem);
        }
    }
    let header = ["NAME", "URL", "STATE", "LATENCY"];
    table::write(out, &table::plain(&header, rows, &[3]), "").map_err(io)?;
    for problem in problems {
        writeln!(out, "\n{problem}").map_err(io)?;
    }
    Ok(healthy)
}

/// The JSON document at `<base><path>`, or why it could not be had.
async fn fetch<T: serde::de::DeserializeOwned>(base: &str, path: &str) -> Result<T, String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{base}`: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = async {
        let response = client
            .get(uri)
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|e| format!("cannot read {url}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        serde_json::from_slice::<T>(&body)
            .map_err(|e| format!("{url} is not a gateway health document: {e}"))
    };
    tokio::time::timeout(TIMEOUT, request)
        .await
        .map_err(|_| format!("{url} did not answer within {} s", TIMEOUT.as_secs()))?
}
