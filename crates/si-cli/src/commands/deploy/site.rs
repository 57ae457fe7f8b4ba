//! The files that see the installation from outside: the nginx site in front of
//! the gateways, and Prometheus scraping them and every model server, wherever
//! each runs.

use minijinja::{Value, context};
use si_core::Config;

use super::Layout;

/// The gateways nginx sends requests to, as `HOST:PORT`: `[deploy] gateways`, or
/// the one at `gateway.listen`.
fn gateways(config: &Config) -> Vec<String> {
    if config.deploy.gateways.is_empty() {
        vec![config.gateway.listen.to_string()]
    } else {
        config
            .deploy
            .gateways
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}

/// The nginx site in front of the gateways: TLS, an upstream of every gateway
/// with passive health checks, streaming passed through as it comes, long read
/// timeouts for slow answers, `/metrics` for loopback only.
pub(super) fn nginx(config: &Config, layout: &Layout) -> Value {
    let listen = config.gateway.listen;
    let read_timeout = config
        .backends
        .iter()
        .map(|b| b.limits.total_timeout.as_secs())
        .max()
        .unwrap_or(900)
        + 30;
    // The metrics of a gateway on this host, for a local look; gateways on other
    // hosts are scraped by Prometheus where they listen, not through the site.
    let metrics = config.deploy.gateways.is_empty().then(|| {
        config
            .gateway
            .metrics_listen
            .map_or_else(|| listen.to_string(), |m| m.to_string())
    });
    context! {
        server_name => layout.server_name,
        tls_certificate => layout.tls_certificate.display().to_string(),
        tls_key => layout.tls_key.display().to_string(),
        body_mib => config.gateway.max_body_bytes.div_ceil(1 << 20),
        metrics => metrics,
        gateways => gateways(config),
        read_timeout_s => read_timeout,
    }
}

/// Prometheus: each gateway's metrics, and each llama-server's own with its key
/// in a file readable by Prometheus only.
pub(super) fn prometheus(config: &Config) -> Value {
    let metrics = config.gateway.metrics_listen;
    let gateways: Vec<String> = match metrics {
        _ if config.deploy.gateways.is_empty() => {
            vec![metrics.unwrap_or(config.gateway.listen).to_string()]
        }
        // Every gateway serves its metrics on the same port of its own address.
        Some(metrics) => config
            .deploy
            .gateways
            .iter()
            .map(|g| {
                let mut address = g.clone();
                address.port = metrics.port();
                address.to_string()
            })
            .collect(),
        // Or, without a metrics listener, on its own port.
        None => config
            .deploy
            .gateways
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    let servers: Vec<Value> = config
        .backends
        .iter()
        .map(|backend| {
            // A job per server, named by its port unless servers on several hosts
            // share that port.
            let port = backend.url.port;
            let shared = config
                .backends
                .iter()
                .filter(|b| b.url.port == port)
                .count()
                > 1;
            context! {
                job => if shared { backend.name.clone() } else { port.to_string() },
                port => port,
                host => backend.url.host,
                model => backend.model,
                name => backend.name,
            }
        })
        .collect();
    context! {
        gateways => gateways,
        llama_servers => servers,
    }
}
