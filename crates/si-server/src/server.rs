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
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use http_body_util::Full;

use crate::body::GatewayBody;
use crate::{Gateway, routes};

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
    let gpu_sampler = crate::gateway::spawn_gpu_sampler(
        &gateway,
        gateway.config().gpu.sample_interval,
        stop_polling.clone(),
    );
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(settings.max_connections as usize));
    accept_until(&listener, &gateway, &graceful, &connections, shutdown).await;
    // Draining: /healthz says so while the listener stays open a moment longer, so
    // load balancers see it and move traffic away before connections are refused.
    gateway.inner.draining.store(true, Ordering::Relaxed);
    let notice = tokio::time::sleep(settings.drain_notice);
    accept_until(&listener, &gateway, &graceful, &connections, notice).await;
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
    Ok(())
}

/// Accepts connections (at most `connections` open at once) until `stop`.
async fn accept_until(
    listener: &TcpListener,
    gateway: &Gateway,
    graceful: &GracefulShutdown,
    connections: &Arc<Semaphore>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        // At the connection cap, wait for one to close before accepting more.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.ok(),
            () = &mut stop => return,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve_connection(gateway, graceful, stream, peer, permit),
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut stop => return,
        }
    }
}

fn serve_connection(
    gateway: &Gateway,
    graceful: &GracefulShutdown,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let _ = stream.set_nodelay(true);
    let header_read_timeout = gateway.config().gateway.header_read_timeout;
    let gateway = gateway.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let gateway = gateway.clone();
        async move {
            Ok::<Response<GatewayBody>, Infallible>(routes::handle(&gateway, request, peer).await)
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    });
}

/// Serves `GET /metrics` only, on its own listener (loopback by default, so the
/// metrics are not public), until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let gateway = gateway.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let response = match (request.method(), request.uri().path()) {
                (&http::Method::GET, "/metrics") => crate::handlers::health::metrics(&gateway)
                    .unwrap_or_else(crate::error::ApiError::into_response),
                (method, path) => crate::error::ApiError::NotFound {
                    method: method.to_string(),
                    path: path.chars().take(200).collect(),
                }
                .into_response(),
            };
            async move { Ok::<Response<Full<Bytes>>, Infallible>(response) }
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let _ = connection.await;
        });
    }
}
