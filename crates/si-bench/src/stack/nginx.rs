//! nginx in front of the mock, when installed: what the gateway is compared with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Process, free_port, wait_until_listening};

/// nginx proxying to `upstream`, when an `nginx` executable is on `PATH`.
pub struct Nginx {
    /// Its master process, stopped when this is dropped.
    pub process: Process,
    /// Where it listens.
    pub address: SocketAddr,
}

/// Starts nginx (2 workers, upstream keep-alive, no buffering, no access log) in
/// front of `upstream`, or `None` when it is not installed.
pub async fn start_nginx(upstream: SocketAddr, dir: &Path) -> Result<Option<Nginx>, String> {
    let Some(nginx) = find_on_path("nginx") else {
        return Ok(None);
    };
    let port = free_port()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).map_err(|e| e.to_string())?;
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    let temp = prefix.display();
    let config = format!(
        r#"{user}worker_processes 2;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    upstream mock {{
        server {upstream};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    );
    let config_path = prefix.join("nginx.conf");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let process = Process { child };
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_listening(address, Duration::from_secs(10)).await?;
    Ok(Some(Nginx { process, address }))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
