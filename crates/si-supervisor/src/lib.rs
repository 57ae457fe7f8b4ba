//! The supervisor that runs the whole platform from the gateway's own
//! configuration, as PM2 did: every configured llama-server, then the gateway,
//! each restarted with back-off when it exits, given up on after a run of fast
//! failures, with its output in rotated files under `logs/`. It is what
//! `si-cli up`, `si-cli status` and `si-cli stop` run.
//!
//! It owns the processes' command lines, environments, logs, pid file and
//! control socket. It knows nothing of the process it runs in: the directory,
//! the program to run as the gateway, `PATH` and the inherited environment come
//! in a [`Host`], and what it reports goes to a writer it is given. It knows the
//! gateway only as a program with a `serve` subcommand and a `/healthz` endpoint,
//! never its internals, and it builds no HTTP response.
//!
//! - With a host named ([`UpOptions::host`]), only the backends that GPU host
//!   runs are started; the others are left to theirs.
//! - [`prepare`] checks, before anything starts, what would make a start fail:
//!   llama-server missing, a model file missing or unreadable, a backend without
//!   an API key, a port already taken, models that do not fit the GPUs.
//! - [`launch`]: each llama-server's arguments and environment from the
//!   backend's settings (or the GPU plan, with `--apply-plan`); its API key goes
//!   in `LLAMA_API_KEY` (never on the command line, where `ps` shows it), and of
//!   the supervisor's environment it gets only what it needs to run: no other
//!   backend's key and no secret of the gateway's.
//! - [`run()`]: a process is ready once its health endpoint answers; the gateway
//!   starts once every model server is ready, given up on, or out of time to get
//!   ready. Stopping (`si-cli stop`, SIGTERM or Ctrl-C) stops the gateway first,
//!   which drains its requests, then the model servers.
//! - [`pids`]: the running processes are recorded in `supervisor.pids`, so that
//!   what a killed supervisor left running is stopped by the next `up` or `stop`.
//! - [`control`]: the socket `status` and `stop` ([`status()`], [`stop()`]) ask a
//!   running supervisor through.

pub mod control;
pub mod detach;
mod hosts;
pub mod launch;
pub mod logs;
pub mod pids;
mod preflight;
mod process;
mod report;
mod run;
mod state;

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use preflight::prepare;
pub use report::{probe, reap_orphans, status, stop};
pub use run::{create_dir, run, start};
pub use state::{Kind, ProcessSpec, ProcessStatus, Shared, Snapshot, State};

/// What `si-cli up` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// The configuration file the gateway is started with (`None`: built-in).
    pub config_path: Option<PathBuf>,
    /// Start with the GPU plan's changes when the configured placement does not fit.
    pub apply_plan: bool,
    /// The GPU host this is, in a configuration shared by several: only the
    /// backends it runs are started (see [`si_core::BackendConfig::runs_on`]).
    /// `None`: every configured backend.
    pub host: Option<String>,
    /// Run the model servers alone, for a GPU host whose gateways run elsewhere.
    pub without_gateway: bool,
}

/// What the supervisor takes from the process it runs in.
#[derive(Clone, Debug, Default)]
pub struct Host {
    /// The directory the platform runs in, and the supervisor with it: the
    /// configuration's relative paths (model files, `logs/`, the data
    /// directory) are relative to it.
    pub root: PathBuf,
    /// `si-cli`: the gateway runs as `PROGRAM serve`, and `up --detach` starts
    /// `PROGRAM up` in the background.
    pub program: PathBuf,
    /// The `PATH` a llama-server given by name is looked up on.
    pub path: Option<OsString>,
    /// The supervisor's environment, of which the model servers get only part.
    pub env: Vec<(OsString, OsString)>,
}

/// Why the supervisor, or a request to it, failed; each message is phrased for
/// a person.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The checks before a start found problems; nothing was started.
    #[error("nothing was started:\n{}", bulleted(.0))]
    NotStarted(Vec<String>),
    /// Another supervisor answers on the control socket of this data directory.
    #[error(
        "a supervisor is already running here (it answers on {}); see `si-cli status`, \
         or `si-cli stop` it first",
        .0.display()
    )]
    AlreadyRunning(PathBuf),
    /// A file, directory, socket, signal handler or process could not be used.
    #[error("{action}: {source}")]
    Io {
        /// What was being done, e.g. `cannot create logs`.
        action: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The supervisor started in the background exited before it got going.
    #[error("the supervisor exited ({status}); see {}", log.display())]
    DetachedExited {
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its log.
        log: PathBuf,
    },
    /// The supervisor started in the background is still starting after its time.
    #[error(
        "the supervisor (pid {pid}) is still starting; see {} and `si-cli status`",
        log.display()
    )]
    DetachedStarting {
        /// Its process id.
        pid: u32,
        /// Its log.
        log: PathBuf,
    },
    /// A running supervisor could not be asked, or answered something unexpected.
    #[error("{0}")]
    Control(String),
    /// The status could not be encoded as JSON.
    #[error("cannot encode the status: {0}")]
    Encode(#[from] serde_json::Error),
}

impl SupervisorError {
    /// A [`SupervisorError::Io`] for `action`, given what the system said.
    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
        let action = action.into();
        move |source| SupervisorError::Io { action, source }
    }
}

fn bulleted(problems: &[String]) -> String {
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    list.join("\n")
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
