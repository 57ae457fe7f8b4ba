//! `si-cli health`: the gateway's `/healthz` as a table.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::CliError;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Health {
    status: String,
    backends: Vec<BackendHealth>,
}

#[derive(Deserialize)]
struct BackendHealth {
    name: String,
    url: String,
    state: String,
    latency_ms: f64,
}

/// Fetches `<gateway>/healthz`, writes a table to `out`, and returns whether the
/// gateway and every backend are ok.
pub async fn check(gateway: &str, out: &mut impl Write) -> Result<bool, CliError> {
    let started = Instant::now();
    let health = fetch(gateway).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    let row = |out: &mut dyn Write, name: &str, url: &str, state: &str, latency: &str| {
        writeln!(out, "{name:<24} {url:<26} {state:<8} {latency:>10}")
    };
    row(out, "NAME", "URL", "STATE", "LATENCY").map_err(io)?;
    let health = match health {
        Ok(health) => health,
        Err(message) => {
            row(out, "gateway", gateway, "down", "-").map_err(io)?;
            writeln!(out, "\n{message}").map_err(io)?;
            return Ok(false);
        }
    };
    let ms = |value: f64| format!("{value:.1}ms");
    row(out, "gateway", gateway, &health.status, &ms(elapsed_ms)).map_err(io)?;
    for b in &health.backends {
        row(out, &b.name, &b.url, &b.state, &ms(b.latency_ms)).map_err(io)?;
    }
    Ok(health.status == "ok" && health.backends.iter().all(|b| b.state == "ok"))
}

/// The gateway's health document, or why it could not be had.
async fn fetch(gateway: &str) -> Result<Health, String> {
    let url = format!("{}/healthz", gateway.trim_end_matches('/'));
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid gateway URL `{gateway}`: {e}"))?;
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
        serde_json::from_slice::<Health>(&body)
            .map_err(|e| format!("{url} is not a gateway health document: {e}"))
    };
    tokio::time::timeout(TIMEOUT, request)
        .await
        .map_err(|_| format!("{url} did not answer within {} s", TIMEOUT.as_secs()))?
}
