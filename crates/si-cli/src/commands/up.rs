//! `si-cli up`, `status` and `stop`: the supervisor that runs the whole platform
//! from the gateway's own configuration, as PM2 did: every configured
//! llama-server, then the gateway, each restarted with back-off when it exits,
//! given up on after a run of fast failures, with its output in rotated files
//! under `logs/`.
//!
//! - Before anything starts, [`prepare`] checks what would make a start fail:
//!   llama-server missing, a model file missing or unreadable, a backend without
//!   an API key, a port already taken, models that do not fit the GPUs.
//! - Each llama-server gets its arguments from the backend's settings (or the
//!   GPU plan, with `--apply-plan`), its API key in `LLAMA_API_KEY` (never on the
//!   command line, where `ps` shows it), `CUDA_VISIBLE_DEVICES` for its GPU, and
//!   of the supervisor's environment only what it needs to run: no other
//!   backend's key and no secret of the gateway's.
//! - A process is ready once its health endpoint answers: the gateway starts once
//!   every model server is ready, given up on, or out of time to get ready; it
//!   then routes to a model server until that server's `/health` fails.
//! - The running processes are recorded in `supervisor.pids`, so that what a
//!   killed supervisor left running is stopped by the next `up` or `stop`.
//! - Stopping (`si-cli stop`, SIGTERM or Ctrl-C) stops the gateway first, which
//!   drains its requests, then the model servers.

pub mod control;
pub mod logs;
pub mod pids;

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use si_core::{BackendConfig, Config, SupervisorConfig};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::CliError;
use logs::RotatingLog;

/// What `si-cli up` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// The configuration file the gateway is started with (`None`: built-in).
    pub config_path: Option<PathBuf>,
    /// Start with the GPU plan's changes when the configured placement does not fit.
    pub apply_plan: bool,
}

/// Which program a supervised process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A model server.
    LlamaServer,
    /// The gateway.
    Gateway,
}

/// One process to supervise.
#[derive(Debug)]
pub struct ProcessSpec {
    /// The backend's name, or `gateway`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments (never a key).
    pub args: Vec<OsString>,
    /// Variables set for it.
    pub env: Vec<(String, String)>,
    /// The only inherited variables it gets (`None`: all of them).
    pub env_pass: Option<Vec<(OsString, OsString)>>,
    /// Its API key, given as `LLAMA_API_KEY`.
    pub key: Option<SecretString>,
    /// Where its health endpoint answers.
    pub health: SocketAddr,
    /// The health path: `/health` for llama-server, `/healthz` for the gateway.
    pub health_path: &'static str,
    /// The GPU it runs on.
    pub gpu: Option<u32>,
    /// `logs/<stem>-out.log` and `logs/<stem>-error.log`.
    pub log_stem: String,
    /// How long it may take to exit after SIGTERM.
    pub stop_timeout: Duration,
}

/// A process's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Started; its health endpoint has not answered yet.
    Starting,
    /// Its health endpoint answered.
    Ready,
    /// It was ready, and its health check fails now.
    Unhealthy,
    /// It exited and is waiting to be restarted.
    Backoff,
    /// It failed fast too many times in a row; the supervisor gave up on it.
    CrashLoop,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
}

impl State {
    /// The name `status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Unhealthy => "unhealthy",
            State::Backoff => "backoff",
            State::CrashLoop => "crash-loop",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }
}

/// A process as `si-cli status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// The backend's name, or `gateway`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The running process's id.
    pub pid: Option<u32>,
    /// Its state.
    pub state: State,
    /// Seconds since it was started, while it runs.
    pub uptime_s: Option<f64>,
    /// How often it was started again.
    pub restarts: u32,
    /// The port it listens on.
    pub port: u16,
    /// Where its health endpoint answers.
    pub address: SocketAddr,
    /// The GPU it runs on.
    pub gpu: Option<u32>,
    /// How it last exited.
    pub last_exit: Option<String>,
    /// Its standard error log.
    pub error_log: PathBuf,
    /// Its health now (filled in by `si-cli status`, not the supervisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// Every process's status, in start order.
pub type Snapshot = Vec<ProcessStatus>;

#[derive(Debug)]
struct Slot {
    status: ProcessStatus,
    started: Option<Instant>,
    /// When its health endpoint first answered, in this run.
    ready_at: Option<Instant>,
    /// Since when its health check has failed, if it does now.
    unhealthy_at: Option<Instant>,
    /// Its start time in clock ticks, for `supervisor.pids`.
    start_ticks: Option<u64>,
}

/// The supervisor's view of its processes, shared with the control socket.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    slots: Arc<Mutex<Vec<Slot>>>,
    /// Where the running processes are recorded (`supervisor.pids`).
    pids_file: Option<Arc<PathBuf>>,
}

impl Shared {
    fn add(&self, spec: &ProcessSpec, logs_dir: &Path) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.push(Slot {
            status: ProcessStatus {
                name: spec.name.clone(),
                kind: spec.kind,
                pid: None,
                state: State::Starting,
                uptime_s: None,
                restarts: 0,
                port: spec.health.port(),
                address: spec.health,
                gpu: spec.gpu,
                last_exit: None,
                error_log: logs_dir.join(format!("{}-error.log", spec.log_stem)),
                health: None,
            },
            started: None,
            ready_at: None,
            unhealthy_at: None,
            start_ticks: None,
        });
        slots.len() - 1
    }

    /// Records every running process in `supervisor.pids`.
    fn save_pids(&self) {
        let Some(file) = &self.pids_file else {
            return;
        };
        // Written under the lock, so that the last write holds the latest state.
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let entries: Vec<pids::Entry> = slots
            .iter()
            .filter_map(|slot| {
                Some(pids::Entry {
                    name: slot.status.name.clone(),
                    pid: slot.status.pid?,
                    start: slot.start_ticks?,
                })
            })
            .collect();
        if let Err(e) = pids::save(file, &entries) {
            say(&format!("cannot write {}: {e}", file.display()));
        }
    }

    /// How long the process served in its current run: from becoming ready to
    /// now, or to when its health check started failing; `None` if it never got
    /// ready.
    fn served_for(&self, index: usize) -> Option<Duration> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.get(index)?;
        let ready = slot.ready_at?;
        let end = slot.unhealthy_at.unwrap_or_else(Instant::now);
        Some(end.saturating_duration_since(ready))
    }

    fn update(&self, index: usize, change: impl FnOnce(&mut Slot)) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(index) {
            change(slot);
        }
    }

    fn state(&self, index: usize) -> Option<State> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(index).map(|s| s.status.state)
    }

    /// Every process's status now.
    pub fn snapshot(&self) -> Snapshot {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots
            .iter()
            .map(|slot| {
                let mut status = slot.status.clone();
                status.uptime_s = slot
                    .started
                    .filter(|_| status.pid.is_some())
                    .map(|t| (t.elapsed().as_secs_f64() * 10.0).round() / 10.0);
                status
            })
            .collect()
    }
}

/// Writes one line of the supervisor's own log (standard error) with a UTC
/// timestamp. Never a key and never a request's text: only names, ports, pids
/// and exit statuses.
fn say(message: &str) {
    use std::io::Write;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // A closed terminal or a full disk must not take the supervisor down.
    let _ = writeln!(
        std::io::stderr().lock(),
        "{} si-cli up: {message}",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(now.as_secs()))
    );
}

/// Checks everything a start needs and describes each process, or lists every
/// problem found (nothing has been started then). `config` may be changed by the
/// GPU plan (`--apply-plan`).
pub fn prepare(
    config: &mut Config,
    options: &UpOptions,
    root: &Path,
    gateway_program: &Path,
) -> Result<Vec<ProcessSpec>, CliError> {
    let mut problems = Vec::new();
    let supervisor = &config.supervisor;
    let llama_server = find_program(&supervisor.llama_server, root).map_err(|problem| {
        problems.push(problem);
    });
    for backend in &config.backends {
        check_model(backend, root, &mut problems);
        if backend.api_key.is_none() {
            problems.push(format!(
                "backend `{}` has no API key ({}): a llama-server without one answers anyone \
                 on the host; run `si-cli keys generate`",
                backend.name, backend.api_key_ref
            ));
        }
    }
    let mut ports = HashSet::new();
    for backend in &config.backends {
        if !ports.insert(backend.url.port) {
            problems.push(format!(
                "port {} is configured for two backends; give `{}` its own",
                backend.url.port, backend.name
            ));
            continue;
        }
        let address = format!("{}:{}", backend.url.host, backend.url.port);
        check_port(
            &address,
            &format!("backend `{}`", backend.name),
            &mut problems,
        );
    }
    let listen = config.gateway.listen;
    if ports.contains(&listen.port()) {
        problems.push(format!(
            "gateway.listen {listen} uses a backend's port; give the gateway its own"
        ));
    } else {
        check_port(
            &listen.to_string(),
            "the gateway (gateway.listen)",
            &mut problems,
        );
    }
    if problems.is_empty() {
        check_gpus(config, options.apply_plan, root, &mut problems);
    }
    let llama_server = match llama_server {
        Ok(path) if problems.is_empty() => path,
        _ => {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(CliError::Message(format!(
                "nothing was started:\n{}",
                list.join("\n")
            )));
        }
    };
    Ok(specs(config, options, root, &llama_server, gateway_program))
}

/// `name` as a path, or found on `PATH`.
fn find_program(name: &Path, root: &Path) -> Result<PathBuf, String> {
    let how = "build it from llama.cpp (see the README, \"Running it for real\") and put it \
               on PATH, or set supervisor.llama_server to its path";
    if name.components().count() > 1 || name.is_absolute() {
        let path = root.join(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "llama-server not found: supervisor.llama_server is {}, which is not an \
                 executable file; {how}",
                path.display()
            ))
        };
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| is_executable(path))
    });
    found.ok_or_else(|| {
        format!(
            "llama-server not found: no `{}` on PATH; {how}",
            name.display()
        )
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn check_model(backend: &BackendConfig, root: &Path, problems: &mut Vec<String>) {
    let Some(file) = &backend.launch.model_file else {
        problems.push(format!(
            "backend `{}` has no model_file: set it to the GGUF file llama-server loads",
            backend.name
        ));
        return;
    };
    let path = root.join(file);
    if !path.exists() {
        problems.push(format!(
            "backend `{}`: model file {} does not exist; download the model's GGUF there \
             (see the README, \"Running it for real\"), or for a trial write a tiny one with \
             `si-cli tiny-model {}`",
            backend.name,
            path.display(),
            file.display()
        ));
        return;
    }
    if let Err(e) = si_gpu::gguf::Gguf::open(&path) {
        problems.push(format!(
            "backend `{}`: model file {} is not a usable GGUF file ({e}); download it again",
            backend.name,
            path.display()
        ));
    }
}

fn check_port(address: &str, what: &str, problems: &mut Vec<String>) {
    if let Err(e) = TcpListener::bind(address) {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "something already listens there: a server left from an earlier run? \
             (`si-cli status`, `ss -ltnp`)"
        } else {
            "the supervisor starts only servers on this host"
        };
        problems.push(format!("{what}: cannot listen on {address} ({e}); {hint}"));
    }
}

/// Checks the configured placement against the GPUs the driver reports, and with
/// `apply` takes the plan's changes. Skipped without live readings: without the
/// NVIDIA driver, llama-server cannot use a GPU either.
fn check_gpus(config: &mut Config, apply: bool, root: &Path, problems: &mut Vec<String>) {
    if config
        .backends
        .iter()
        .all(|b| b.launch.gpu_layers == Some(0))
    {
        return;
    }
    let Ok((inventory, _)) = si_gpu::inventory::open(&config.gpu) else {
        return;
    };
    let readings = match inventory.read() {
        Ok(readings) if inventory.source() == "nvml" && !readings.is_empty() => readings,
        _ => return,
    };
    let servers = match si_gpu::deployment::servers(config, root) {
        Ok(servers) => servers,
        Err(e) => return problems.push(e.to_string()),
    };
    let gpus = si_gpu::deployment::gpu_specs(&readings);
    let overhead = config.gpu.process_overhead_bytes;
    let plan = si_gpu::plan::plan(&servers, &gpus, config.gpu.margin_bytes, overhead);
    match plan.verdict {
        si_gpu::plan::Verdict::Fits => {}
        si_gpu::plan::Verdict::FitsWithChanges if apply => {
            for remedy in &plan.remedies {
                say(&format!("GPU plan: {}: {}", remedy.server(), remedy.cost()));
            }
            for placement in &plan.placements {
                let Some(backend) = config
                    .backends
                    .iter_mut()
                    .find(|b| b.name == placement.server)
                else {
                    continue;
                };
                backend.gpu = placement.gpu;
                let launch = &mut backend.launch;
                launch.context = Some(placement.context);
                launch.cache_type_k = Some(placement.cache_type_k.as_str().to_owned());
                launch.cache_type_v = Some(placement.cache_type_v.as_str().to_owned());
                launch.gpu_layers = placement.gpu_layers;
            }
        }
        si_gpu::plan::Verdict::FitsWithChanges => problems.push(format!(
            "as configured, the model servers do not fit the GPUs; {} change(s) make them fit: \
             see `si-cli gpu plan`, and start with them with `si-cli up --apply-plan`",
            plan.remedies.len()
        )),
        si_gpu::plan::Verdict::DoesNotFit => problems.push(format!(
            "the model servers do not fit the GPUs even after every change the planner knows \
             ({} fit nowhere); see `si-cli gpu plan`",
            plan.unplaced.join(", ")
        )),
    }
}

fn specs(
    config: &Config,
    options: &UpOptions,
    root: &Path,
    llama_server: &Path,
    gateway_program: &Path,
) -> Vec<ProcessSpec> {
    // A model server inherits only what it needs to run and find its GPU: no
    // secret of the gateway's (JWT_SECRET, SI_*), no other backend's key, and no
    // LLAMA_* variable that would change its flags behind the configuration's back.
    let env_pass: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| passed_to_model_servers(&name.to_string_lossy()))
        .collect();
    let mut specs: Vec<ProcessSpec> = config
        .backends
        .iter()
        .map(|backend| {
            let health = format!("{}:{}", backend.url.host, backend.url.port)
                .parse()
                .unwrap_or_else(|_| loopback(backend.url.port));
            ProcessSpec {
                name: backend.name.clone(),
                kind: Kind::LlamaServer,
                program: llama_server.to_owned(),
                args: crate::commands::deploy::llama_args(backend, root)
                    .into_iter()
                    .map(OsString::from)
                    .collect(),
                env: crate::commands::deploy::gpu_env(backend)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                env_pass: Some(env_pass.clone()),
                key: backend.api_key.clone(),
                health,
                health_path: "/health",
                gpu: backend.gpu,
                log_stem: format!("llama-{}", backend.url.port),
                stop_timeout: config.supervisor.stop_timeout,
            }
        })
        .collect();
    let listen = config.gateway.listen;
    let health = if listen.ip().is_unspecified() {
        loopback(listen.port())
    } else {
        listen
    };
    let mut args = vec![OsString::from("serve")];
    if let Some(path) = &options.config_path {
        args.extend([OsString::from("--config"), root.join(path).into_os_string()]);
    }
    let gateway = &config.gateway;
    specs.push(ProcessSpec {
        name: "gateway".into(),
        kind: Kind::Gateway,
        program: gateway_program.to_owned(),
        args,
        env: Vec::new(),
        env_pass: None,
        key: None,
        health,
        health_path: "/healthz",
        gpu: None,
        log_stem: "gateway".into(),
        stop_timeout: gateway.drain_notice + gateway.shutdown_grace + Duration::from_secs(5),
    });
    specs
}

/// Whether a variable of the supervisor's environment reaches the model servers.
fn passed_to_model_servers(name: &str) -> bool {
    const NAMES: [&str; 8] = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
    ];
    const PREFIXES: [&str; 9] = [
        "LC_", "CUDA_", "NVIDIA_", "GGML_", "HIP_", "ROCR_", "HSA_", "OMP_", "VK_",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

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

/// Runs the platform until stopped. Returns `false` when it stopped because the
/// gateway could not be kept running.
pub async fn run(config: &Config, specs: Vec<ProcessSpec>) -> Result<bool, CliError> {
    let settings = config.supervisor.clone();
    let message = CliError::Message;
    let stop = CancellationToken::new();
    let hurry = CancellationToken::new();
    // Before anything starts: a SIGTERM from here on stops what was started.
    let signals = Signals::new().map_err(message)?;
    tokio::spawn(signals.watch(stop.clone(), hurry.clone()));
    create_dir(&settings.logs_dir, 0o750).map_err(message)?;
    create_dir(&config.gateway.data_dir, 0o700).map_err(message)?;
    let socket = control::socket_path(&config.gateway.data_dir);
    let listener = control::bind(&socket).await.map_err(message)?;
    let shared = Shared {
        slots: Arc::default(),
        pids_file: Some(Arc::new(pids::path(&config.gateway.data_dir))),
    };
    let finished = CancellationToken::new();
    let control = tokio::spawn(control::serve(
        listener,
        shared.clone(),
        stop.clone(),
        finished.clone(),
    ));
    let (gateway_specs, llama_specs): (Vec<_>, Vec<_>) =
        specs.into_iter().partition(|s| s.kind == Kind::Gateway);
    say(&format!(
        "supervisor {} starting {} model server(s), then the gateway; control socket {}",
        std::process::id(),
        llama_specs.len(),
        socket.display()
    ));
    let start = |spec: ProcessSpec| {
        let index = shared.add(&spec, &settings.logs_dir);
        let token = CancellationToken::new();
        let task = tokio::spawn(supervise(
            spec,
            index,
            shared.clone(),
            settings.clone(),
            token.clone(),
            hurry.clone(),
        ));
        (index, token, task)
    };
    let llama: Vec<_> = llama_specs.into_iter().map(start).collect();
    let indexes: Vec<usize> = llama.iter().map(|(i, _, _)| *i).collect();
    settle(&shared, &indexes, settings.ready_timeout, &stop).await;
    // A stop asked for while the model servers were starting starts no gateway.
    let gateway: Vec<_> = if stop.is_cancelled() {
        Vec::new()
    } else {
        gateway_specs.into_iter().map(start).collect()
    };
    let indexes: Vec<usize> = gateway.iter().map(|(i, _, _)| *i).collect();
    settle(&shared, &indexes, settings.ready_timeout, &stop).await;
    if !stop.is_cancelled() {
        let snapshot = shared.snapshot();
        let ready = snapshot.iter().filter(|p| p.state == State::Ready).count();
        say(&format!(
            "up: {ready} of {} processes ready; `si-cli status` shows them, `si-cli stop` \
             stops them",
            snapshot.len()
        ));
    }
    let kept = tokio::select! {
        () = stop.cancelled() => true,
        () = given_up(&shared, &indexes) => {
            say("the gateway failed too often in a row; stopping everything");
            false
        }
    };

    say("stopping: the gateway first, so that it drains its requests");
    for (_, token, task) in gateway {
        token.cancel();
        let _ = task.await;
    }
    say("stopping the model servers");
    for (_, token, _) in &llama {
        token.cancel();
    }
    for (_, _, task) in llama {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(pids::path(&config.gateway.data_dir));
    say("stopped");
    finished.cancel();
    let _ = control.await;
    Ok(kept)
}

/// Creates `path` and its parents with `mode` (as masked by the umask), unless it
/// is there.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Waits until every process of `indexes` is ready or given up on, `timeout`
/// passes, or a stop is asked for.
async fn settle(shared: &Shared, indexes: &[usize], timeout: Duration, stop: &CancellationToken) {
    let deadline = Instant::now() + timeout;
    while !stop.is_cancelled() && Instant::now() < deadline {
        let settled = indexes.iter().all(|&i| {
            matches!(
                shared.state(i),
                Some(State::Ready | State::CrashLoop | State::Stopped) | None
            )
        });
        if settled {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Returns once some process of `indexes` has been given up on.
async fn given_up(shared: &Shared, indexes: &[usize]) {
    loop {
        if indexes
            .iter()
            .any(|&i| shared.state(i) == Some(State::CrashLoop))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM and SIGINT, caught from before the first process starts; SIGHUP is
/// ignored, so that a closed terminal does not end a detached supervisor.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let catch = |kind| signal(kind).map_err(|e| format!("cannot catch signals: {e}"));
        Ok(Signals {
            term: catch(SignalKind::terminate())?,
            int: catch(SignalKind::interrupt())?,
            hup: catch(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "interrupted",
                _ = self.hup.recv() => say("SIGHUP ignored: stop with `si-cli stop` or SIGTERM"),
            }
        }
    }

    /// The first signal stops everything in order; a second one kills what is
    /// still running without waiting.
    async fn watch(mut self, stop: CancellationToken, hurry: CancellationToken) {
        let first = self.next().await;
        say(&format!("{first}: stopping (again to kill at once)"));
        stop.cancel();
        let second = self.next().await;
        say(&format!("{second} again: killing what still runs"));
        hurry.cancel();
    }
}

/// How one run of a process ended.
enum Ended {
    /// It exited (or could not be started), as described.
    Exited(String),
    /// It never became ready and was stopped: a failure however long it took.
    NotReady(String),
    /// The supervisor stopped it.
    Stopped,
}

/// Keeps one process running until `stop`: start, wait for readiness, restart
/// with back-off on exit, give up after too many fast failures.
async fn supervise(
    spec: ProcessSpec,
    index: usize,
    shared: Shared,
    settings: SupervisorConfig,
    stop: CancellationToken,
    hurry: CancellationToken,
) {
    let mut starts: u32 = 0;
    let mut fast_failures: u32 = 0;
    loop {
        let started = Instant::now();
        let ended = run_once(&spec, index, &shared, &settings, &stop, &hurry, starts).await;
        starts = starts.saturating_add(1);
        let (how, fast) = match ended {
            Ended::Exited(how) => (how, false),
            Ended::NotReady(how) => (how, true),
            Ended::Stopped => break,
        };
        let ran = started.elapsed();
        // Load time does not count: a server that dies soon after becoming ready,
        // or never became ready, failed fast however long its model took to load.
        let served = shared.served_for(index);
        if fast || served.is_none_or(|served| served < settings.min_uptime) {
            fast_failures = fast_failures.saturating_add(1);
        } else {
            fast_failures = 0;
        }
        shared.update(index, |slot| {
            slot.status.pid = None;
            slot.status.last_exit = Some(how.clone());
            slot.start_ticks = None;
        });
        shared.save_pids();
        if fast_failures >= settings.max_fast_failures {
            say(&format!(
                "{}: {how} after {:.1} s; {fast_failures} fast failures in a row, giving up \
                 (see {}); fix it, then restart the platform",
                spec.name,
                ran.as_secs_f64(),
                settings
                    .logs_dir
                    .join(format!("{}-error.log", spec.log_stem))
                    .display()
            ));
            shared.update(index, |slot| slot.status.state = State::CrashLoop);
            stop.cancelled().await;
            break;
        }
        let doublings = fast_failures.saturating_sub(1).min(20);
        let delay = settings
            .restart_delay
            .saturating_mul(1 << doublings)
            .min(settings.restart_max_delay);
        say(&format!(
            "{}: {how} after {:.1} s; restarting in {:.1} s",
            spec.name,
            ran.as_secs_f64(),
            delay.as_secs_f64()
        ));
        shared.update(index, |slot| slot.status.state = State::Backoff);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
    shared.update(index, |slot| {
        slot.status.state = State::Stopped;
        slot.status.pid = None;
    });
}

/// One run of the process: start it, wait until it exits, fails to become ready,
/// or is stopped.
async fn run_once(
    spec: &ProcessSpec,
    index: usize,
    shared: &Shared,
    settings: &SupervisorConfig,
    stop: &CancellationToken,
    hurry: &CancellationToken,
    starts: u32,
) -> Ended {
    if stop.is_cancelled() {
        return Ended::Stopped;
    }
    shared.update(index, |slot| {
        slot.ready_at = None;
        slot.unhealthy_at = None;
    });
    let (mut child, pumps) = match spawn(spec, settings) {
        Ok(started) => started,
        Err(e) => return Ended::Exited(e),
    };
    let pid = child.id();
    say(&format!(
        "{}: started, pid {}, port {}",
        spec.name,
        pid.map_or_else(|| "?".into(), |p| p.to_string()),
        spec.health.port()
    ));
    shared.update(index, |slot| {
        slot.status.pid = pid;
        slot.status.state = State::Starting;
        slot.status.restarts = starts;
        slot.started = Some(Instant::now());
        slot.start_ticks = pid.and_then(pids::start_time);
    });
    shared.save_pids();
    let watch = watch_health(spec, index, shared, settings);
    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(match status {
            Ok(status) => describe(status),
            Err(e) => format!("cannot be waited for: {e}"),
        }),
        ended = watch => {
            terminate(&mut child, spec, hurry).await;
            ended
        }
        () = stop.cancelled() => {
            shared.update(index, |slot| slot.status.state = State::Stopping);
            say(&format!("{}: stopping (SIGTERM)", spec.name));
            terminate(&mut child, spec, hurry).await;
            say(&format!("{}: stopped", spec.name));
            Ended::Stopped
        }
    };
    // Its last lines reach its logs before it counts as gone.
    for pump in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
    }
    ended
}

/// Whether the process's health endpoint says it serves.
async fn healthy(spec: &ProcessSpec) -> bool {
    match probe(spec.health, spec.health_path).await {
        Ok(200) => true,
        // Any answer from the gateway means it serves (it answers 503 while it
        // drains).
        Ok(_) => spec.kind == Kind::Gateway,
        Err(_) => false,
    }
}

/// Watches the process's health: polls until it is ready (marking it so), then
/// keeps checking. Returns only to have the process stopped: it was not ready
/// within `ready_timeout`, or its health check has failed for
/// `unhealthy_restart` since (a hung process does not exit by itself).
async fn watch_health(
    spec: &ProcessSpec,
    index: usize,
    shared: &Shared,
    settings: &SupervisorConfig,
) -> Ended {
    let started = Instant::now();
    loop {
        if started.elapsed() >= settings.ready_timeout {
            return Ended::NotReady(format!(
                "not ready within {} s (supervisor.ready_timeout_ms)",
                settings.ready_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if healthy(spec).await {
            break;
        }
    }
    shared.update(index, |slot| {
        slot.status.state = State::Ready;
        slot.ready_at = Some(Instant::now());
    });
    say(&format!(
        "{}: ready in {:.1} s",
        spec.name,
        started.elapsed().as_secs_f64()
    ));
    let Some(window) = settings.unhealthy_restart else {
        return std::future::pending().await;
    };
    let interval = (window / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut failing_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(interval).await;
        if healthy(spec).await {
            if failing_since.take().is_some() {
                say(&format!("{}: healthy again", spec.name));
                shared.update(index, |slot| {
                    slot.status.state = State::Ready;
                    slot.unhealthy_at = None;
                });
            }
            continue;
        }
        let since = *failing_since.get_or_insert_with(|| {
            say(&format!("{}: its health check fails", spec.name));
            let now = Instant::now();
            shared.update(index, |slot| {
                slot.status.state = State::Unhealthy;
                slot.unhealthy_at = Some(now);
            });
            now
        });
        if since.elapsed() >= window {
            return Ended::Exited(format!(
                "was unhealthy for {} s (supervisor.unhealthy_restart_ms), stopped",
                window.as_secs()
            ));
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(9)) => "was killed (SIGKILL)".into(),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "exited".into(),
    }
}

type Pumps = Vec<tokio::task::JoinHandle<()>>;

fn spawn(spec: &ProcessSpec, settings: &SupervisorConfig) -> Result<(Child, Pumps), String> {
    let log = |suffix: &str| {
        let path = settings
            .logs_dir
            .join(format!("{}-{suffix}.log", spec.log_stem));
        RotatingLog::open(&path, settings.log_max_bytes, settings.log_files)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let (out, err) = (log("out")?, log("error")?);
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C meant for the supervisor reaches it only
        // through the supervisor, in the right order.
        .process_group(0);
    if let Some(pass) = &spec.env_pass {
        command.env_clear().envs(pass.iter().map(|(k, v)| (k, v)));
    }
    for (name, value) in &spec.env {
        command.env(name, value);
    }
    if let Some(key) = &spec.key {
        command.env("LLAMA_API_KEY", key.expose_secret());
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
    let mut pumps = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(stdout, out)));
    }
    if let Some(stderr) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, err)));
    }
    Ok((child, pumps))
}

/// Copies a process's output into its log until the process closes it. A log that
/// cannot be written is reported once and the output still drained, so the
/// process never blocks on a full pipe.
async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, mut log: RotatingLog) {
    let mut buffer = vec![0_u8; 16 * 1024];
    let mut failed = false;
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = buffer.get(..n).unwrap_or_default();
        if let Err(e) = log.write(chunk)
            && !failed
        {
            failed = true;
            say(&format!("cannot write {}: {e}", log.path().display()));
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within its stop timeout (at once
/// once `hurry` is cancelled).
async fn terminate(child: &mut Child, spec: &ProcessSpec, hurry: &CancellationToken) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let exited = tokio::select! {
        waited = tokio::time::timeout(spec.stop_timeout, child.wait()) => waited.is_ok(),
        () = hurry.cancelled() => false,
    };
    if !exited {
        say(&format!(
            "{}: still running after SIGTERM; killing it",
            spec.name
        ));
        let _ = child.kill().await;
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
    match probe(address, "/health").await {
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
    let gateway = &config.gateway;
    let timeout = gateway.drain_notice
        + gateway.shutdown_grace
        + config.supervisor.stop_timeout
        + Duration::from_secs(30);
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
