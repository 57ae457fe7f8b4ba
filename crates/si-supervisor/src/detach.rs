//! `si-cli up --detach`: the supervisor started again in the background, in its
//! own process group, with its output in `supervisor.log`.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use si_core::Config;

use crate::state::{Kind, State};
use crate::{SupervisorError, UpOptions, control, create_dir};

/// Starts `program up` (`program` being si-cli) in the background and returns
/// once the gateway has started (or failed to), with `status`'s verdict written
/// to `out`.
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
    wait_for_gateway(&mut child, &runtime, &socket, deadline, &log_path)?;
    writeln!(
        out,
        "supervisor running in the background (pid {}), its log in {}",
        child.id(),
        log_path.display()
    )
    .map_err(SupervisorError::io("cannot write output"))?;
    runtime.block_on(crate::status(config, false, out))
}

/// Waits until the supervisor `child` says that its gateway has started (or
/// failed to); fails if the supervisor exits first, or at `deadline`.
fn wait_for_gateway(
    child: &mut Child,
    runtime: &tokio::runtime::Runtime,
    socket: &Path,
    deadline: Instant,
    log: &Path,
) -> Result<(), SupervisorError> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = log.to_owned();
            return Err(SupervisorError::DetachedExited { status, log });
        }
        // Only its own answer counts: another supervisor on the same data
        // directory answers on the same socket until this one gives up.
        if let Ok(reply) = runtime.block_on(control::status(socket))
            && reply.pid == child.id()
            && reply
                .processes
                .iter()
                .any(|p| p.kind == Kind::Gateway && p.state != State::Starting)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let (pid, log) = (child.id(), log.to_owned());
            return Err(SupervisorError::DetachedStarting { pid, log });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `program [--config PATH] up [--apply-plan]`, in its own process group, its
/// output appended to `log_path`.
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
    command
        .stdin(std::process::Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0)
        .spawn()
        .map_err(SupervisorError::io("cannot start the supervisor"))
}
