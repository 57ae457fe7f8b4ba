//! `si-cli deploy`: the files other tools need to run the platform, rendered from
//! the same configuration the gateway reads, so ports, models and GPUs cannot
//! disagree: a PM2 ecosystem file, systemd units, an nginx site and a Prometheus
//! scrape configuration.
//!
//! API keys never appear in a rendered file or on a command line (where `ps`
//! shows them): each llama-server reads its key from the key file into
//! `LLAMA_API_KEY` in its environment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use si_core::secret::SecretRef;
use si_core::{BackendConfig, Config};

use crate::CliError;

/// Where the rendered files expect things to be on the host.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory the platform runs in: configuration, `.api_keys.env`,
    /// `models/`, `logs/`.
    pub root: PathBuf,
    /// `si-server`.
    pub si_server: PathBuf,
    /// `si-cli`, for the unit that runs the whole platform under `si-cli up`.
    pub si_cli: PathBuf,
    /// `llama-server`.
    pub llama_server: PathBuf,
    /// The configuration file, as `si-server --config` takes it.
    pub config: PathBuf,
    /// The user the services run as.
    pub user: String,
    /// The site's host name, for nginx.
    pub server_name: String,
    /// TLS certificate and key, for nginx.
    pub tls_certificate: PathBuf,
    /// TLS key.
    pub tls_key: PathBuf,
}

/// One rendered file: its name and text.
pub type Rendered = (String, String);

/// Every file, for `config` on `layout`.
pub fn render(config: &Config, layout: &Layout) -> Vec<Rendered> {
    let mut files = vec![
        ("ecosystem.config.js".to_owned(), pm2(config, layout)),
        (
            "si-gateway.service".to_owned(),
            gateway_unit(config, layout),
        ),
        (
            "synthetic-intelligence.nginx.conf".to_owned(),
            nginx(config, layout),
        ),
        ("prometheus.yml".to_owned(), prometheus(config)),
        (
            "si-platform.service".to_owned(),
            platform_unit(config, layout),
        ),
    ];
    for backend in &config.backends {
        files.push((unit_name(backend), llama_unit(backend, layout)));
    }
    files
}

/// Writes `files` into `dir` (created if needed).
pub fn write(dir: &Path, files: &[Rendered]) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Message(format!("cannot create {}: {e}", dir.display())))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

fn unit_name(backend: &BackendConfig) -> String {
    format!("si-llama-{}.service", backend.name)
}

/// The variable holding the backend's key in `.api_keys.env`, if the key comes
/// from the environment.
fn key_variable(backend: &BackendConfig) -> Option<&str> {
    match &backend.api_key_ref {
        SecretRef::Env(name) => Some(name),
        SecretRef::Path(_) => None,
    }
}

/// A shell command that reads the key file, puts the backend's key (alone) into
/// `LLAMA_API_KEY`, and runs llama-server.
fn llama_shell(backend: &BackendConfig, layout: &Layout) -> String {
    let args: Vec<String> = si_supervisor::launch::llama_server(backend, &layout.root)
        .args
        .iter()
        .map(|a| shell_quote(a))
        .collect();
    let key = match (&backend.api_key_ref, key_variable(backend)) {
        (_, Some(var)) => format!("LLAMA_API_KEY=\"${var}\" "),
        (SecretRef::Path(path), None) => {
            format!(
                "LLAMA_API_KEY=\"$(head -n1 {})\" ",
                shell_quote(&path.display().to_string())
            )
        }
        (SecretRef::Env(_), None) => String::new(),
    };
    // Sourced, not exported: the server's environment gets its own key alone.
    let keys = layout.root.join(".api_keys.env").display().to_string();
    format!(
        ". {}; {key}exec {} {}",
        shell_quote(&keys),
        shell_quote(&layout.llama_server.display().to_string()),
        args.join(" ")
    )
}

fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// PM2's `ecosystem.config.js`: the gateway and every llama-server, with logs
/// under `logs/` and restarts with back-off.
fn pm2(config: &Config, layout: &Layout) -> String {
    let root = layout.root.display().to_string();
    let mut apps = Vec::new();
    for backend in &config.backends {
        let command = llama_shell(backend, layout);
        let env: Vec<String> = si_supervisor::launch::llama_server(backend, &layout.root)
            .env
            .iter()
            .map(|(k, v)| format!("{k}: {}", js_string(v)))
            .collect();
        let port = backend.url.port;
        apps.push(format!(
            "    {{
      name: {name},
      script: \"/bin/sh\",
      args: [\"-c\", {command}],
      cwd: {root},
      env: {{ {env} }},
      out_file: {out},
      error_file: {err},
      autorestart: true,
      exp_backoff_restart_delay: 1000,
      max_restarts: 10,
      min_uptime: \"30s\",
    }}",
            name = js_string(&format!("llama-{port}")),
            command = js_string(&command),
            root = js_string(&root),
            env = env.join(", "),
            out = js_string(&format!("{root}/logs/llama-{port}-out.log")),
            err = js_string(&format!("{root}/logs/llama-{port}-error.log")),
        ));
    }
    apps.push(format!(
        "    {{
      name: \"si-gateway\",
      script: {script},
      args: [\"--config\", {config}],
      cwd: {root},
      out_file: {out},
      error_file: {err},
      autorestart: true,
      exp_backoff_restart_delay: 1000,
      max_restarts: 10,
      min_uptime: \"30s\",
      kill_timeout: {kill},
    }}",
        script = js_string(&layout.si_server.display().to_string()),
        config = js_string(&layout.config.display().to_string()),
        root = js_string(&root),
        out = js_string(&format!("{root}/logs/gateway-out.log")),
        err = js_string(&format!("{root}/logs/gateway-error.log")),
        kill = config.gateway.stop_timeout().as_millis(),
    ));
    format!(
        "// Rendered by `si-cli deploy` from the platform's configuration; edit that and
// render again rather than this file. API keys are read from .api_keys.env when each
// server starts: never written here, never on a command line.
module.exports = {{
  apps: [
{}
  ],
}};
",
        apps.join(",\n")
    )
}

/// Hardening shared by every unit.
const HARDENING: &str = "NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictNamespaces=yes
SystemCallArchitectures=native
UMask=0077
";

fn gateway_unit(config: &Config, layout: &Layout) -> String {
    let root = layout.root.display();
    format!(
        "# Rendered by `si-cli deploy`. The gateway; its model servers are si-llama-*.
[Unit]
Description=Synthetic Intelligence gateway
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
User={user}
WorkingDirectory={root}
ExecStart={server} --config {config}
Restart=on-failure
RestartSec=5
# SIGTERM drains: /healthz reports it, then in-flight requests get their grace.
KillSignal=SIGTERM
TimeoutStopSec={stop}
ReadWritePaths={root}
PrivateDevices=yes
{HARDENING}
[Install]
WantedBy=multi-user.target
",
        user = layout.user,
        server = layout.si_server.display(),
        config = layout.config.display(),
        stop = config.gateway.stop_timeout().as_secs(),
    )
}

/// The whole platform as one unit: `si-cli up` starts and watches every
/// llama-server and the gateway. An alternative to the per-process units.
fn platform_unit(config: &Config, layout: &Layout) -> String {
    let root = layout.root.display();
    let conflicts: Vec<String> = std::iter::once("si-gateway.service".to_owned())
        .chain(config.backends.iter().map(unit_name))
        .collect();
    // The supervisor stops the gateway (which drains), then the model servers.
    let stop =
        config.gateway.stop_timeout() + config.supervisor.stop_timeout + Duration::from_secs(10);
    format!(
        "# Rendered by `si-cli deploy`. The whole platform under `si-cli up`: every
# llama-server, then the gateway, restarted with back-off. Use it instead of
# si-gateway.service and the si-llama-* units, never beside them.
[Unit]
Description=Synthetic Intelligence platform (si-cli up)
After=network-online.target
Wants=network-online.target
Conflicts={conflicts}
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=simple
User={user}
WorkingDirectory={root}
ExecStart={si_cli} --config {config_file} up
Restart=on-failure
RestartSec=5
# SIGTERM goes to si-cli alone, which stops the gateway first so that it drains,
# then the model servers; whatever still runs after TimeoutStopSec is killed.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={stop}
ReadWritePaths={root}
{HARDENING}
[Install]
WantedBy=multi-user.target
",
        conflicts = conflicts.join(" "),
        user = layout.user,
        si_cli = layout.si_cli.display(),
        config_file = layout.config.display(),
        stop = stop.as_secs(),
    )
}

fn llama_unit(backend: &BackendConfig, layout: &Layout) -> String {
    let root = layout.root.display();
    let env: String = si_supervisor::launch::llama_server(backend, &layout.root)
        .env
        .iter()
        .map(|(k, v)| format!("Environment={k}={v}\n"))
        .collect();
    format!(
        "# Rendered by `si-cli deploy`. llama-server `{name}`: its key comes from the
# key file into LLAMA_API_KEY, never onto the command line.
[Unit]
Description=llama-server {name} ({model})
After=network-online.target
Wants=network-online.target
Before=si-gateway.service
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
User={user}
WorkingDirectory={root}
{env}ExecStart=/bin/sh -c {command}
Restart=on-failure
RestartSec=5
ReadWritePaths={root}/logs
{HARDENING}
[Install]
WantedBy=multi-user.target
",
        name = backend.name,
        model = backend.model,
        user = layout.user,
        // `$$` is systemd's literal `$`: the shell, not systemd, reads the key
        // variable, so its value never reaches a command line.
        command = shell_quote(&llama_shell(backend, layout)).replace('$', "$$"),
    )
}

/// The nginx site in front of the gateway: TLS, streaming passed through as it
/// comes, long read timeouts for slow answers, `/metrics` for loopback only.
fn nginx(config: &Config, layout: &Layout) -> String {
    let gateway = config.gateway.listen;
    let read_timeout = config
        .backends
        .iter()
        .map(|b| b.limits.total_timeout.as_secs())
        .max()
        .unwrap_or(900)
        + 30;
    let metrics = config
        .gateway
        .metrics_listen
        .map_or_else(|| gateway.to_string(), |m| m.to_string());
    let body_mib = config.gateway.max_body_bytes.div_ceil(1 << 20);
    format!(
        "# Rendered by `si-cli deploy`. Put it in /etc/nginx/sites-enabled/ and list this
# host's address in rate_limits.trusted_proxies so clients are known by their own
# address.
server {{
    listen 80;
    server_name {name};
    return 301 https://$host$request_uri;
}}

server {{
    listen 443 ssl;
    server_name {name};
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    add_header Strict-Transport-Security \"max-age=31536000\" always;

    client_max_body_size {body_mib}m;

    location = /metrics {{
        allow 127.0.0.1;
        allow ::1;
        deny all;
        proxy_pass http://{metrics}/metrics;
    }}

    location / {{
        proxy_pass http://{gateway};
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;
        proxy_set_header X-Request-Id $request_id;
        # Answers stream token by token: pass every chunk on as it comes.
        proxy_buffering off;
        proxy_cache off;
        # The slow tier takes minutes when not streamed.
        proxy_read_timeout {read_timeout}s;
        proxy_send_timeout 60s;
    }}
}}
",
        name = layout.server_name,
        cert = layout.tls_certificate.display(),
        key = layout.tls_key.display(),
    )
}

/// Prometheus: the gateway's metrics, and each llama-server's own with its key
/// in a file readable by Prometheus only.
fn prometheus(config: &Config) -> String {
    let gateway = config
        .gateway
        .metrics_listen
        .unwrap_or(config.gateway.listen);
    let mut out = format!(
        "# Rendered by `si-cli deploy`. Each llama-server wants its own API key: write
# it alone to the credentials file named below, readable by Prometheus only.
global:
  scrape_interval: 10s
  evaluation_interval: 30s

rule_files:
  - alerts.yml

scrape_configs:
  - job_name: synthetic-intelligence
    static_configs:
      - targets: [\"{gateway}\"]
        labels:
          service: synthetic-intelligence
"
    );
    for backend in &config.backends {
        let port = backend.url.port;
        let _ = write!(
            out,
            "  - job_name: llama-server-{port}
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: /etc/prometheus/keys/llama-{port}
    static_configs:
      - targets: [\"{host}:{port}\"]
        labels: {{model: {model}, backend: {name}}}
",
            host = backend.url.host,
            model = backend.model,
            name = backend.name,
        );
    }
    out
}
