//! `si-cli up --detach`: the supervisor started again in the background, in its
//! own process group, with its output in `supervisor.log`.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use si_core::Config;

use crate::state::{Kind, ProcessStatus, State};
use crate::{SupervisorError, UpOptions, control, create_dir};

/// Starts `program up` (`program` being si-cli) in the background and returns
/// once the gateway has started (or failed to), or without a gateway once the
/// model servers have settled, with `status`'s verdict written to `out`.
pub fn detach(
    config: &Config,
    options: &UpOptions,
    program: &Path,
    out: &mut impl std::io::Write,
) -> Result<bool, SupervisorError> {
    let logs = &config.supervisor.logs_dir;
    create_dir(logs, 0o750)?;
    let log_path = logs.join("supervisor.log");
    let mut child = spawn(options, program, &log_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SupervisorError::io("cannot start the async runtime"))?;
    let socket = control::socket_path(&config.gateway.data_dir);
    let deadline = Instant::now()
        + config.supervisor.ready_timeout.saturating_mul(2)
        + Duration::from_secs(30);
    let settled = Instant::now() + config.supervisor.ready_timeout + Duration::from_secs(5);
    let started = Started {
        socket: &socket,
        deadline,
        // Without a gateway to wait for, the model servers are waited for as the
        // supervisor waits for them before it would start one.
        settled: options.without_gateway.then_some(settled),
    };
    wait_until_started(&mut child, &runtime, &started, &log_path)?;
    writeln!(
        out,
        "supervisor running in the background (pid {}), its log in {}",
        child.id(),
        log_path.display()
    )
    .map_err(SupervisorError::io("cannot write output"))?;
    runtime.block_on(crate::status(config, false, out))
}

/// What counts as a supervisor in the background having started.
struct Started<'a> {
    /// Its control socket.
    socket: &'a Path,
    /// Past this, it is still starting: an error.
    deadline: Instant,
    /// With no gateway: the model servers are given until then to be ready or
    /// given up on, after which it has started whatever their state.
    settled: Option<Instant>,
}

impl Started<'_> {
    fn seen_in(&self, processes: &[ProcessStatus]) -> bool {
        let Some(settled) = self.settled else {
            return processes
                .iter()
                .any(|p| p.kind == Kind::Gateway && p.state != State::Starting);
        };
        !processes.is_empty()
            && (Instant::now() > settled
                || processes
                    .iter()
                    .all(|p| matches!(p.state, State::Ready | State::CrashLoop)))
    }
}

/// Waits until the supervisor `child` says that it has started: its gateway has
/// started (or failed to), or without one its model servers have settled. Fails
/// if the supervisor exits first, or at the deadline.
fn wait_until_started(
    child: &mut Child,
    runtime: &tokio::runtime::Runtime,
    started: &Started<'_>,
    log: &Path,
) -> Result<(), SupervisorError> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = log.to_owned();
            return Err(SupervisorError::DetachedExited { status, log });
        }
        // Only its own answer counts: another supervisor on the same data
        // directory answers on the same socket until this one gives up.
        if let Ok(reply) = runtime.block_on(control::status(started.socket))
            && reply.pid == child.id()
            && started.seen_in(&reply.processes)
        {
            return Ok(());
        }
        if Instant::now() > started.deadline {
            let (pid, log) = (child.id(), log.to_owned());
            return Err(SupervisorError::DetachedStarting { pid, log });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `program [--config PATH] up [--apply-plan] [--host NAME] [--no-gateway]`, in
/// its own process group, its output appended to `log_path`.
fn spawn(options: &UpOptions, program: &Path, log_path: &Path) -> Result<Child, SupervisorError> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(log_path)
            .map_err(SupervisorError::io(format!(
                "cannot open {}",
                log_path.display()
            )))
    };
    let mut command = std::process::Command::new(program);
    if let Some(path) = &options.config_path {
        command.arg("--config").arg(path);
    }
    command.arg("up");
    if options.apply_plan {
        command.arg("--apply-plan");
    }
    if let Some(host) = &options.host {
        command.arg("--host").arg(host);
    }
    if options.without_gateway {
        command.arg("--no-gateway");
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0)
        .spawn()
        .map_err(SupervisorError::io("cannot start the supervisor"))
}
