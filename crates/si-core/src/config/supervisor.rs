//! `[supervisor]`: how `si-cli up` runs the llama-servers and the gateway: where
//! llama-server is, where logs go and how big they grow, restart back-off and
//! crash-loop detection, and how long to wait for readiness and for stopping.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::raw::up_to_an_hour;

/// Supervisor settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorConfig {
    /// The llama-server program: a path, or a name looked up on `PATH`.
    pub llama_server: PathBuf,
    /// Where per-process logs go, relative to the working directory unless absolute.
    pub logs_dir: PathBuf,
    /// A log file is rotated once it would grow past this many bytes.
    pub log_max_bytes: u64,
    /// Rotated files kept per log (`.1` newest).
    pub log_files: u32,
    /// The first restart's delay; each fast failure in a row doubles it.
    pub restart_delay: Duration,
    /// The longest restart delay.
    pub restart_max_delay: Duration,
    /// A process that exits sooner than this after starting failed fast.
    pub min_uptime: Duration,
    /// After this many fast failures in a row the supervisor gives up on a process.
    pub max_fast_failures: u32,
    /// How long a llama-server may take to load its model and answer `/health`.
    pub ready_timeout: Duration,
    /// How long a llama-server may take to exit after SIGTERM before SIGKILL.
    pub stop_timeout: Duration,
    /// A ready process whose health check fails this long is restarted (a hung
    /// process does not exit by itself); `None`: never.
    pub unhealthy_restart: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSupervisor {
    llama_server: PathBuf,
    logs_dir: PathBuf,
    log_max_mib: u64,
    log_files: u32,
    restart_delay_ms: u64,
    restart_max_delay_ms: u64,
    min_uptime_ms: u64,
    max_fast_failures: u32,
    ready_timeout_ms: u64,
    stop_timeout_ms: u64,
    unhealthy_restart_ms: u64,
}

impl Default for RawSupervisor {
    fn default() -> Self {
        RawSupervisor {
            llama_server: "llama-server".into(),
            logs_dir: "logs".into(),
            log_max_mib: 10,
            log_files: 5,
            restart_delay_ms: 1_000,
            restart_max_delay_ms: 30_000,
            min_uptime_ms: 10_000,
            max_fast_failures: 5,
            ready_timeout_ms: 300_000,
            stop_timeout_ms: 10_000,
            unhealthy_restart_ms: 60_000,
        }
    }
}

impl RawSupervisor {
    pub(super) fn validate(self, source: &str) -> Result<SupervisorConfig, ConfigError> {
        let err = |key: &str, problem: String| ConfigError::new(source, key, problem);
        let millis = |key: &str, value: u64, min: u64| up_to_an_hour(source, key, value, min);
        if self.llama_server.as_os_str().is_empty() {
            return Err(err(
                "supervisor.llama_server",
                "expected a path or a program name on PATH".into(),
            ));
        }
        if !(1..=1024).contains(&self.log_max_mib) {
            return Err(err(
                "supervisor.log_max_mib",
                format!("expected 1 to 1024 MiB, got {}", self.log_max_mib),
            ));
        }
        if self.log_files > 100 {
            return Err(err(
                "supervisor.log_files",
                format!("expected 0 to 100 files, got {}", self.log_files),
            ));
        }
        if !(1..=1000).contains(&self.max_fast_failures) {
            return Err(err(
                "supervisor.max_fast_failures",
                format!("expected 1 to 1000, got {}", self.max_fast_failures),
            ));
        }
        let restart_delay = millis("supervisor.restart_delay_ms", self.restart_delay_ms, 1)?;
        let restart_max_delay = millis(
            "supervisor.restart_max_delay_ms",
            self.restart_max_delay_ms,
            1,
        )?;
        if restart_max_delay < restart_delay {
            return Err(err(
                "supervisor.restart_max_delay_ms",
                "expected at least supervisor.restart_delay_ms".into(),
            ));
        }
        Ok(SupervisorConfig {
            llama_server: self.llama_server,
            logs_dir: self.logs_dir,
            log_max_bytes: self.log_max_mib * 1024 * 1024,
            log_files: self.log_files,
            restart_delay,
            restart_max_delay,
            min_uptime: millis("supervisor.min_uptime_ms", self.min_uptime_ms, 0)?,
            max_fast_failures: self.max_fast_failures,
            ready_timeout: millis("supervisor.ready_timeout_ms", self.ready_timeout_ms, 1)?,
            stop_timeout: millis("supervisor.stop_timeout_ms", self.stop_timeout_ms, 1)?,
            unhealthy_restart: match self.unhealthy_restart_ms {
                0 => None,
                ms => Some(millis("supervisor.unhealthy_restart_ms", ms, 1_000)?),
            },
        })
    }
}
