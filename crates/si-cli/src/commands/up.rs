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
pub mod detach;
pub mod logs;
pub mod pids;
mod preflight;
mod process;
mod report;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use si_core::Config;
use tokio_util::sync::CancellationToken;

use crate::CliError;

pub use preflight::prepare;
pub use report::{probe, reap_orphans, status, stop};

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

impl Kind {
    /// Its health endpoint: llama-server's `/health`, the gateway's `/healthz`.
    pub fn health_path(self) -> &'static str {
        match self {
            Kind::LlamaServer => "/health",
            Kind::Gateway => "/healthz",
        }
    }
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

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// `si-cli up`: ends what a supervisor that died left running, checks everything,
/// then runs the platform in the foreground until stopped, or with `detach` in
/// the background. The processes run in the current directory.
pub fn start(mut config: Config, options: &UpOptions, detach: bool) -> Result<bool, CliError> {
    let message = CliError::Message;
    let root = std::env::current_dir()
        .map_err(|e| message(format!("cannot read the current directory: {e}")))?;
    let me = std::env::current_exe()
        .map_err(|e| message(format!("cannot find this program's path: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| message(format!("cannot start the async runtime: {e}")))?;
    let reaped = runtime.block_on(reap_orphans(&config));
    if !reaped.is_empty() {
        say(&format!(
            "stopped what a supervisor that died left running: {}",
            reaped.join(", ")
        ));
    }
    let specs = prepare(&mut config, options, &root, &me)?;
    if detach {
        drop(runtime);
        return detach::detach(&config, options, &me, &mut std::io::stdout().lock());
    }
    runtime.block_on(run(&config, specs))
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
        let task = tokio::spawn(process::supervise(
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
