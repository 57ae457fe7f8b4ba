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

use crate::state::{Kind, State};
use crate::{SupervisorError, control, pids};

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
) -> Result<bool, SupervisorError> {
    let io = || SupervisorError::io("cannot write output");
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
            .map_err(io())?;
            return Ok(false);
        }
        Err(control::ClientError::Failed(e)) => return Err(SupervisorError::Control(e)),
    };
    let probes: Vec<_> = reply
        .processes
        .iter()
        .map(|p| tokio::spawn(health_of(p.kind, p.address)))
        .collect();
    for (process, probe) in reply.processes.iter_mut().zip(probes) {
        process.health = Some(probe.await.unwrap_or_else(|_| "unknown".into()));
    }
    let all_well = reply
        .processes
        .iter()
        .all(|p| p.state == State::Ready && p.health.as_deref() == Some("ok"));
    let text = if json {
        serde_json::to_string_pretty(&reply)?
    } else {
        table(&reply)
    };
    writeln!(out, "{text}").map_err(io())?;
    Ok(all_well)
}

/// The status as `si-cli status` shows it: a table, then why each process that
/// is not ready last exited.
fn table(reply: &control::StatusReply) -> String {
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header([
        "NAME", "PID", "STATE", "UPTIME", "RESTARTS", "HEALTH", "PORT", "GPU",
    ]);
    for (index, column) in table.column_iter_mut().enumerate() {
        // Two spaces between columns and none around them; numbers to the
        // right, as `ps` has them.
        column.set_padding((0, if index == 7 { 0 } else { 2 }));
        if [1, 3, 4, 6, 7].contains(&index) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    let dash = || "-".to_owned();
    for p in &reply.processes {
        table.add_row([
            p.name.clone(),
            p.pid.map_or_else(dash, |v| v.to_string()),
            p.state.as_str().to_owned(),
            p.uptime_s.map_or_else(dash, uptime),
            p.restarts.to_string(),
            p.health.clone().unwrap_or_else(dash),
            p.port.to_string(),
            p.gpu.map_or_else(dash, |v| v.to_string()),
        ]);
    }
    let mut lines = vec![format!("supervisor pid {}", reply.pid), table.to_string()];
    for p in reply.processes.iter().filter(|p| p.state != State::Ready) {
        if let Some(last) = &p.last_exit {
            let log = p.error_log.display();
            lines.push(format!("{}: last {last}; see {log}", p.name));
        }
    }
    lines.join("\n")
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
pub async fn stop(config: &Config, out: &mut impl std::io::Write) -> Result<bool, SupervisorError> {
    let io = || SupervisorError::io("cannot write output");
    let socket = control::socket_path(&config.gateway.data_dir);
    // The supervisor's own stop, with a margin.
    let timeout =
        config.gateway.stop_timeout() + config.supervisor.stop_timeout + Duration::from_secs(25);
    writeln!(
        out,
        "stopping: the gateway drains its requests first, then the model servers stop"
    )
    .map_err(io())?;
    match control::stop(&socket, timeout).await {
        Ok(()) => {
            writeln!(out, "stopped").map_err(io())?;
            Ok(true)
        }
        Err(control::ClientError::NotRunning) => {
            writeln!(
                out,
                "no supervisor is running here (nothing answers on {})",
                socket.display()
            )
            .map_err(io())?;
            let reaped = reap_orphans(config).await;
            if !reaped.is_empty() {
                writeln!(
                    out,
                    "stopped what a supervisor that died left running: {}",
                    reaped.join(", ")
                )
                .map_err(io())?;
            }
            Ok(false)
        }
        Err(control::ClientError::Failed(e)) => Err(SupervisorError::Control(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::StatusReply;
    use crate::state::ProcessStatus;

    #[test]
    fn the_table_names_every_column_and_says_why_a_process_is_down() {
        let process = |name: &str, state, pid, last_exit: Option<&str>| ProcessStatus {
            name: name.into(),
            kind: Kind::LlamaServer,
            pid,
            state,
            uptime_s: pid.map(|_| 75.0),
            restarts: 2,
            port: 8080,
            address: crate::loopback(8080),
            gpu: Some(1),
            last_exit: last_exit.map(Into::into),
            error_log: "logs/llama-8080-error.log".into(),
            health: Some("ok".into()),
        };
        let reply = StatusReply {
            pid: 42,
            processes: vec![
                process("tiny-a", State::Ready, Some(1234), None),
                process("tiny-b", State::Backoff, None, Some("exited with status 3")),
            ],
        };
        let text = table(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "supervisor pid 42");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME", "PID", "STATE", "UPTIME", "RESTARTS", "HEALTH", "PORT", "GPU"
            ]
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            ["tiny-a", "1234", "ready", "1m15s", "2", "ok", "8080", "1"]
        );
        assert_eq!(lines[3].split_whitespace().nth(1), Some("-"));
        assert_eq!(
            lines[4],
            "tiny-b: last exited with status 3; see logs/llama-8080-error.log"
        );
    }
}
