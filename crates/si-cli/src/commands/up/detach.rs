//! `si-cli up --detach`: the supervisor started again in the background, in its
//! own process group, with its output in `supervisor.log`.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use si_core::Config;

use super::{Kind, State, UpOptions, control, create_dir};
use crate::CliError;

/// Starts `me up` in the background and returns once the gateway has started (or
/// failed to), with `status`'s verdict written to `out`.
pub fn detach(
    config: &Config,
    options: &UpOptions,
    me: &Path,
    out: &mut impl std::io::Write,
) -> Result<bool, CliError> {
    let message = CliError::Message;
    let logs = &config.supervisor.logs_dir;
    create_dir(logs, 0o750).map_err(message)?;
    let log_path = logs.join("supervisor.log");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log_path)
            .map_err(|e| message(format!("cannot open {}: {e}", log_path.display())))
    };
    let mut command = std::process::Command::new(me);
    if let Some(path) = &options.config_path {
        command.arg("--config").arg(path);
    }
    command.arg("up");
    if options.apply_plan {
        command.arg("--apply-plan");
    }
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0)
        .spawn()
        .map_err(|e| message(format!("cannot start the supervisor: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| message(format!("cannot start the async runtime: {e}")))?;
    let socket = control::socket_path(&config.gateway.data_dir);
    let deadline = Instant::now()
        + config.supervisor.ready_timeout.saturating_mul(2)
        + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(message(format!(
                "the supervisor exited ({status}); see {}",
                log_path.display()
            )));
        }
        // Only its own answer counts: another supervisor on the same data
        // directory answers on the same socket until this one gives up.
        if let Ok(reply) = runtime.block_on(control::status(&socket))
            && reply.pid == child.id()
            && reply
                .processes
                .iter()
                .any(|p| p.kind == Kind::Gateway && p.state != State::Starting)
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(message(format!(
                "the supervisor (pid {}) is still starting; see {} and `si-cli status`",
                child.id(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    writeln!(
        out,
        "supervisor running in the background (pid {}), its log in {}",
        child.id(),
        log_path.display()
    )
    .map_err(|e| message(format!("cannot write output: {e}")))?;
    runtime.block_on(super::status(config, false, out))
}
