//! The accept loop. [`run`] is what the binary runs and what tests run on
//! `127.0.0.1:0`, so both exercise the same code.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use http_body_util::Full;

use crate::body::GatewayBody;
use crate::{Gateway, routes};

mod admission;
mod descriptors;

pub(crate) use admission::Refused;
use admission::{Admission, Admitted};
pub use descriptors::{fit_to_descriptors, raise_descriptor_limit};

/// How long the accept loop pauses after a failed accept (usually out of
/// descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often the revocation list checks the database for changes by other processes.
const REVOCATION_SYNC: Duration = Duration::from_secs(1);

/// Serves `gateway` on `listener` until `shutdown` completes, then stops accepting,
/// reports draining, lets in-flight requests and streams finish (up to
/// `gateway.shutdown_grace_ms`) and stops the background tasks.
pub async fn run(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let stop_polling = CancellationToken::new();
    let settings = &gateway.config().gateway;
    let health = gateway.router().spawn_health_monitor(
        settings.health_interval,
        settings.health_timeout,
        stop_polling.clone(),
    );
    let revocation_sync =
        crate::gateway::spawn_revocation_sync(&gateway, REVOCATION_SYNC, stop_polling.clone());
    let store_monitor = crate::store_monitor::spawn(&gateway, stop_polling.clone());
    if let Some(provider) = gateway.inner.oidc.clone() {
        tokio::spawn(async move { provider.warm_up().await });
    }
    let key_use_writer = crate::key_use::spawn_use_writer(&gateway, stop_polling.clone());
    let gpu_sampler = crate::gateway::spawn_gpu_sampler(
        &gateway,
        gateway.config().gpu.sample_interval,
        stop_polling.clone(),
    );
    let graceful = GracefulShutdown::new();
    let admission = Admission::new(
        "gateway",
        settings.max_connections as usize,
        settings.max_connections_per_address as usize,
        &gateway.config().rate_limits.trusted_proxies,
    );
    let serve =
        |stream, peer, admitted| serve_connection(&gateway, &graceful, stream, peer, admitted);
    accept_until(&listener, &admission, shutdown, serve).await;
    // Draining: /healthz says so while the listener stays open a moment longer, so
    // load balancers see it and move traffic away before connections are refused.
    gateway.inner.draining.store(true, Ordering::Relaxed);
    let notice = tokio::time::sleep(settings.drain_notice);
    accept_until(&listener, &admission, notice, serve).await;
    drop(listener);
    let grace = settings.shutdown_grace;
    tracing::info!(
        seconds = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
    stop_polling.cancel();
    let _ = health.await;
    let _ = revocation_sync.await;
    let _ = gpu_sampler.await;
    let _ = key_use_writer.await;
    if let Some(monitor) = store_monitor {
        let _ = monitor.await;
    }
    // Records of requests that ended without waiting for theirs (a client that
    // went away) are still queued in a store that commits from a task.
    gateway.inner.audit.flush().await;
    Ok(())
}

/// Accepts connections until `stop`, handing each one `admission` admits to
/// `serve` and answering the others at once with a refusal.
async fn accept_until(
    listener: &TcpListener,
    admission: &Admission,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr, Admitted),
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match admission.admit(peer.ip()) {
                    Ok(admitted) => serve(stream, peer, admitted),
                    Err(refused) => admission.refuse(stream, refused),
                },
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or memory: back off instead of
                    // spinning; connections already open keep being served meanwhile.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut stop => return,
        }
    }
}

fn serve_connection(
    gateway: &Gateway,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let gateway = gateway.clone();
    let header_read_timeout = gateway.config().gateway.header_read_timeout;
    let service = service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        async move {
            Ok::<Response<GatewayBody>, Infallible>(routes::handle(&gateway, request, peer).await)
        }
    });
    let connection =
        http1_server(header_read_timeout).serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        let _admitted = admitted;
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// The HTTP/1 settings every listener shares: a client that has not sent its
/// request headers within `header_read_timeout` is disconnected.
fn http1_server(header_read_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}

/// Serves `GET /metrics` and `GET /backends` (the backends view) only, on its own
/// listener (loopback by default, so neither is public), until `shutdown`
/// completes. It has its own small cap of connections and the same header timeout,
/// so it cannot take the descriptors the gateway's own port needs.
pub async fn serve_metrics(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let settings = &gateway.config().gateway;
    let admission = Admission::new(
        "metrics",
        settings.metrics_max_connections as usize,
        settings.metrics_max_connections as usize,
        &[],
    );
    let header_read_timeout = settings.header_read_timeout;
    accept_until(&listener, &admission, shutdown, |stream, _, admitted| {
        let gateway = gateway.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let response = match (request.method(), request.uri().path()) {
                (&http::Method::GET, "/metrics") => crate::handlers::health::metrics(&gateway)
                    .unwrap_or_else(crate::error::ApiError::into_response),
                (&http::Method::GET, "/backends") => {
                    crate::handlers::health::backends_view(&gateway)
                }
                (method, path) => crate::error::ApiError::NotFound {
                    method: method.to_string(),
                    path: path.chars().take(200).collect(),
                }
                .into_response(),
            };
            async move { Ok::<Response<Full<Bytes>>, Infallible>(response) }
        });
        let connection =
            http1_server(header_read_timeout).serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _admitted = admitted;
            let _ = connection.await;
        });
    })
    .await;
    Ok(())
}
