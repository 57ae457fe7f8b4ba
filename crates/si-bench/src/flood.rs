//! `si-bench flood`: what a connection flood costs everyone else. One address opens
//! thousands of connections that each send half a request head and wait; meanwhile
//! another address (a load balancer's health check) asks `/healthz`. Then the
//! metrics port is flooded the same way while the gateway runs with few descriptors,
//! and `/healthz` and a login on the gateway's own port are timed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::stack::{self, Launch, Store};

/// What to flood with, and which gateway.
pub struct Settings {
    /// Connections from the flooding address to the gateway's port.
    pub connections: usize,
    /// Connections to the metrics port.
    pub metrics_connections: usize,
    /// The gateway's open-file limit while its metrics port is flooded.
    pub metrics_open_files: u64,
    /// An `si-server` binary to measure instead of this executable's gateway.
    pub gateway: Option<PathBuf>,
}

/// Health checks from another address: how many answered 200, and how fast.
struct Checks {
    answered: usize,
    asked: usize,
    times: Vec<Duration>,
}

impl Checks {
    fn line(&self) -> String {
        let mut times = self.times.clone();
        times.sort();
        let at = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .map_or("-".to_owned(), |t| {
                    format!("{:.2} ms", t.as_secs_f64() * 1000.0)
                })
        };
        format!(
            "{}/{} answered 200 within 15 s; p50 {}, p99 {}, max {}",
            self.answered,
            self.asked,
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }
}

/// Runs both floods and prints what another client saw.
pub async fn run(exe: &Path, settings: &Settings) -> Result<(), String> {
    if let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("flooding client: open-file limit {limit}");
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mock = stack::start_mock(exe, 0, 1, 1)?;
    // Default connection limits: no `gateway_settings`.
    let launch = |open_files| Launch {
        program: settings.gateway.clone().unwrap_or_else(|| exe.to_owned()),
        embedded: settings.gateway.is_none(),
        gateway_settings: "",
        open_files,
        store: Store::Own,
    };

    let gateway = stack::start_gateway(&launch(None), &mock, &dir.path().join("a")).await?;
    println!("gateway: {}", launch(None).program.display());
    println!(
        "before: /healthz from 127.0.0.2: {}",
        checks(gateway.address).await.line()
    );
    let flood = half_requests(gateway.address, settings.connections).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "one address holding {} half-sent requests: /healthz from 127.0.0.2: {}",
        flood.len(),
        checks(gateway.address).await.line()
    );
    drop(flood);
    drop(gateway);

    let limited = launch(Some(settings.metrics_open_files));
    let gateway = stack::start_gateway(&limited, &mock, &dir.path().join("b")).await?;
    let flood = half_requests(gateway.metrics, settings.metrics_connections).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let health = checks(gateway.address).await;
    let started = Instant::now();
    let login = tokio::time::timeout(Duration::from_secs(15), stack::login(gateway.address)).await;
    let login = match login {
        Ok(Ok(_)) => format!("{:.0} ms", started.elapsed().as_secs_f64() * 1000.0),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(_) => "no answer within 15 s".to_owned(),
    };
    println!(
        "{} half-sent requests on the metrics port, gateway limited to {} files: \
         /healthz: {}; a correct login: {login}",
        flood.len(),
        settings.metrics_open_files,
        health.line()
    );
    Ok(())
}

/// Opens up to `count` connections to `address`, each sending half a request head;
/// stops once 5 in a row are not accepted within 100 ms (its backlog is full).
async fn half_requests(address: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(count);
    let mut failed_in_a_row = 0;
    while open.len() < count && failed_in_a_row < 5 {
        let connect = tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(address));
        if let Ok(Ok(mut stream)) = connect.await {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
                .await;
            open.push(stream);
            failed_in_a_row = 0;
        } else {
            failed_in_a_row += 1;
        }
    }
    open
}

/// Up to 100 health checks, one after another, each on a new connection from
/// 127.0.0.2, each given 15 s; after 2 failures in a row the rest are not asked.
async fn checks(address: SocketAddr) -> Checks {
    let mut result = Checks {
        answered: 0,
        asked: 0,
        times: Vec::new(),
    };
    let mut failed_in_a_row = 0;
    while result.asked < 100 && failed_in_a_row < 2 {
        result.asked += 1;
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(15), health_check(address)).await;
        if let Ok(Ok(true)) = answer {
            result.answered += 1;
            result.times.push(started.elapsed());
            failed_in_a_row = 0;
        } else {
            failed_in_a_row += 1;
        }
    }
    result
}

async fn health_check(address: SocketAddr) -> std::io::Result<bool> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, 2], 0).into())?;
    let mut stream = socket.connect(address).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer.starts_with(b"HTTP/1.1 200"))
}
