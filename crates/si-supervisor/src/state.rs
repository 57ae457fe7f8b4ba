//! What the supervisor knows of its processes: what each runs, its state, and
//! the shared view that the control socket answers `status` from.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{pids, say};

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

/// One process's state, as the supervisor keeps it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) status: ProcessStatus,
    pub(crate) started: Option<Instant>,
    /// When its health endpoint first answered, in this run.
    pub(crate) ready_at: Option<Instant>,
    /// Since when its health check has failed, if it does now.
    pub(crate) unhealthy_at: Option<Instant>,
    /// Its start time in clock ticks, for `supervisor.pids`.
    pub(crate) start_ticks: Option<u64>,
}

/// The supervisor's view of its processes, shared with the control socket.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    slots: Arc<Mutex<Vec<Slot>>>,
    /// Where the running processes are recorded (`supervisor.pids`).
    pids_file: Option<Arc<PathBuf>>,
}

impl Shared {
    /// No processes yet; running ones are to be recorded in `pids_file`.
    pub(crate) fn recording_to(pids_file: PathBuf) -> Shared {
        Shared {
            slots: Arc::default(),
            pids_file: Some(Arc::new(pids_file)),
        }
    }

    pub(crate) fn add(&self, spec: &ProcessSpec, logs_dir: &Path) -> usize {
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
    pub(crate) fn save_pids(&self) {
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
    pub(crate) fn served_for(&self, index: usize) -> Option<Duration> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = slots.get(index)?;
        let ready = slot.ready_at?;
        let end = slot.unhealthy_at.unwrap_or_else(Instant::now);
        Some(end.saturating_duration_since(ready))
    }

    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut Slot)) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(index) {
            change(slot);
        }
    }

    pub(crate) fn state(&self, index: usize) -> Option<State> {
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
