//! `si-cli status` and `si-cli stop`, as clients of a running supervisor, and the
//! health probes they and the supervisor use.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use si_core::Config;

use super::{Kind, State, control, pids};
use crate::CliError;

/// What a health endpoint answered.
pub async fn probe(address: SocketAddr, path: &str) -> Result<u16, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{address}{path}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    match tokio::time::timeout(Duration::from_secs(1), client.get(uri)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(_)) => Err("down".into()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// `si-cli status`: each process's pid, state, uptime, restarts, health, port and
/// GPU. Returns whether every process is ready and healthy.
pub async fn status(
    config: &Config,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<bool, CliError> {
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    let socket = control::socket_path(&config.gateway.data_dir);
    let mut reply = match control::status(&socket).await {
        Ok(reply) => reply,
        Err(control::ClientError::NotRunning) => {
            writeln!(
                out,
                "no supervisor is running here (nothing answers on {}); start one with \
                 `si-cli up`",
                socket.display()
            )
            .map_err(io)?;
            return Ok(false);
        }
        Err(control::ClientError::Failed(e)) => return Err(CliError::Message(e)),
    };
    let probes: Vec<_> = reply
        .processes
        .iter()
        .map(|p| tokio::spawn(health_of(p.kind, p.address)))
        .collect();
    let mut healths = Vec::with_capacity(probes.len());
    for probe in probes {
        healths.push(probe.await.unwrap_or_else(|_| "unknown".into()));
    }
    for (process, health) in reply.processes.iter_mut().zip(healths) {
        process.health = Some(health);
    }
    let all_well = reply
        .processes
        .iter()
        .all(|p| p.state == State::Ready && p.health.as_deref() == Some("ok"));
    if json {
        let text = serde_json::to_string_pretty(&reply)
            .map_err(|e| CliError::Message(format!("cannot encode the status: {e}")))?;
        writeln!(out, "{text}").map_err(io)?;
        return Ok(all_well);
    }
    writeln!(out, "supervisor pid {}", reply.pid).map_err(io)?;
    writeln!(
        out,
        "{:<28} {:>8} {:<10} {:>9} {:>8} {:<10} {:>5} {:>3}",
        "NAME", "PID", "STATE", "UPTIME", "RESTARTS", "HEALTH", "PORT", "GPU"
    )
    .map_err(io)?;
    for p in &reply.processes {
        let dash = || "-".to_owned();
        writeln!(
            out,
            "{:<28} {:>8} {:<10} {:>9} {:>8} {:<10} {:>5} {:>3}",
            p.name,
            p.pid.map_or_else(dash, |v| v.to_string()),
            p.state.as_str(),
            p.uptime_s.map_or_else(dash, uptime),
            p.restarts,
            p.health.as_deref().unwrap_or("-"),
            p.port,
            p.gpu.map_or_else(dash, |v| v.to_string()),
        )
        .map_err(io)?;
    }
    for p in reply.processes.iter().filter(|p| p.state != State::Ready) {
        if let Some(last) = &p.last_exit {
            writeln!(
                out,
                "{}: last {last}; see {}",
                p.name,
                p.error_log.display()
            )
            .map_err(io)?;
        }
    }
    Ok(all_well)
}

fn uptime(seconds: f64) -> String {
    let whole = seconds as u64;
    match whole {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m{:02}s", whole / 60, whole % 60),
        3600..86_400 => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d{:02}h", whole / 86_400, whole % 86_400 / 3600),
    }
}

/// A process's health now, as `status` shows it: a model server's `/health`, or
/// for the gateway whether every agent has a backend to go to.
async fn health_of(kind: Kind, address: SocketAddr) -> String {
    if kind == Kind::Gateway {
        return match gateway_ready(address).await {
            Ok(true) => "ok".into(),
            Ok(false) => "not ready".into(),
            Err(e) => e,
        };
    }
    match probe(address, kind.health_path()).await {
        Ok(200) => "ok".to_owned(),
        Ok(503) => "loading".to_owned(),
        Ok(code) => format!("http {code}"),
        Err(e) => e,
    }
}

/// The gateway's `/healthz` `ready`: every agent has a routable backend.
async fn gateway_ready(address: SocketAddr) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct Health {
        ready: bool,
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{address}/healthz")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let fetch = async {
        let response = client.get(uri).await.map_err(|_| "down".to_owned())?;
        let body = http_body_util::Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map_err(|_| "broke off".to_owned())?
            .to_bytes();
        serde_json::from_slice::<Health>(&body)
            .map(|h| h.ready)
            .map_err(|_| "not a gateway".to_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .map_err(|_| "no answer within 1 s".to_owned())?
}

/// Ends the processes a supervisor that died left running (see [`pids`]), unless
/// a supervisor answers here; returns their names.
pub async fn reap_orphans(config: &Config) -> Vec<String> {
    let data_dir = &config.gateway.data_dir;
    match control::status(&control::socket_path(data_dir)).await {
        Err(control::ClientError::NotRunning) => {
            pids::reap(&pids::path(data_dir), config.supervisor.stop_timeout).await
        }
        _ => Vec::new(),
    }
}

/// `si-cli stop`: asks the supervisor to stop everything (gateway first) and waits
/// until it has. With none running, ends what a supervisor that died left running.
/// Returns `false` if none was running (the command still exits 0: nothing runs).
pub async fn stop(config: &Config, out: &mut impl std::io::Write) -> Result<bool, CliError> {
    let io = |e: std::io::Error| CliError::Message(format!("cannot write output: {e}"));
    let socket = control::socket_path(&config.gateway.data_dir);
    // The supervisor's own stop, with a margin.
    let timeout =
        config.gateway.stop_timeout() + config.supervisor.stop_timeout + Duration::from_secs(25);
    writeln!(
        out,
        "stopping: the gateway drains its requests first, then the model servers stop"
    )
    .map_err(io)?;
    match control::stop(&socket, timeout).await {
        Ok(()) => {
            writeln!(out, "stopped").map_err(io)?;
            Ok(true)
        }
        Err(control::ClientError::NotRunning) => {
            writeln!(
                out,
                "no supervisor is running here (nothing answers on {})",
                socket.display()
            )
            .map_err(io)?;
            let reaped = reap_orphans(config).await;
            if !reaped.is_empty() {
                writeln!(
                    out,
                    "stopped what a supervisor that died left running: {}",
                    reaped.join(", ")
                )
                .map_err(io)?;
            }
            Ok(false)
        }
        Err(control::ClientError::Failed(e)) => Err(CliError::Message(e)),
    }
}
