//! The `si-server` command: load configuration, open the gateway, serve until
//! SIGINT/SIGTERM. A library function so that the binary stays thin and the
//! benchmark runs exactly what production runs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::Gateway;
use clap::Parser;
use si_core::{Config, Environment};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Exit status for an unusable configuration (as linkerd2-proxy does).
const EXIT_CONFIG: u8 = 64;

/// The Synthetic Intelligence gateway.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; without it the built-in defaults run
    /// (see examples/si.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding `gateway.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

/// Runs `si-server` with `args` (the program name first, as in `std::env::args_os`).
/// Exits 64 on an unusable configuration.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("si-server: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(listen) = args.listen {
        config.gateway.listen = listen;
        if let Err(e) = config.check("--listen") {
            eprintln!("si-server: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    init_logging(config.gateway.json_logs);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("si-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("si-server: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines to standard output, filtered by `RUST_LOG` (default `info`).
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Backend API keys, read at start and again whenever the file changes.
const KEY_FILE: &str = ".api_keys.env";

/// The process environment (valid UTF-8 entries).
fn process_env() -> Environment {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    Environment::from_pairs(vars)
}

/// The configuration, with the process environment and `.api_keys.env` beneath it.
fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let env = process_env()
        .with_file_defaults(Path::new(KEY_FILE))
        .map_err(|e| e.to_string())?;
    Config::load(path, &env).map_err(|e| e.to_string())
}

async fn serve(mut config: Config) -> Result<(), String> {
    if let Some(limit) = crate::server::raise_descriptor_limit() {
        tracing::debug!(limit, "open-file limit");
        if let Some(warning) = crate::server::fit_to_descriptors(&mut config.gateway, limit) {
            tracing::warn!("{warning}");
        }
    }
    let listen = config.gateway.listen;
    for backend in config.backends_without_key() {
        tracing::warn!(
            backend = %backend.name,
            key = %backend.api_key_ref,
            "no API key set; requests go without one (run `si-cli keys generate`)"
        );
    }
    if config.gateway.allow_insecure_dev {
        tracing::warn!(
            "ALLOW_INSECURE_DEV is on: chat is served without login; never in production"
        );
    }
    let metrics_listen = config.gateway.metrics_listen;
    let gateway = Gateway::open(config).await.map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(%listen, "gateway listening");
    let stop_watching = CancellationToken::new();
    let watcher = crate::watch_key_file(
        gateway.clone(),
        KEY_FILE.into(),
        process_env(),
        Duration::from_secs(2),
        stop_watching.clone(),
    );
    if let Some(address) = metrics_listen {
        spawn_metrics(address, &gateway, stop_watching.clone()).await;
    }
    let served = crate::run(listener, gateway, shutdown_signal()).await;
    stop_watching.cancel();
    let _ = watcher.await;
    served.map_err(|e| e.to_string())
}

/// Serves `/metrics` on `address`; a failure there is a loud warning, not an outage.
async fn spawn_metrics(address: SocketAddr, gateway: &Gateway, stop: CancellationToken) {
    match TcpListener::bind(address).await {
        Ok(metrics) => {
            tracing::info!(%address, "metrics listening");
            tokio::spawn(crate::serve_metrics(metrics, gateway.clone(), async move {
                stop.cancelled().await;
            }));
        }
        Err(e) => {
            tracing::error!(%address, error = %e, "cannot serve metrics (gateway.metrics_listen)");
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
