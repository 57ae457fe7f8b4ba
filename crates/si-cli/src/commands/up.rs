//! `si-cli up`, `status` and `stop`: what this process knows (its directory, its
//! own executable, `PATH`, its environment, standard output) handed to
//! [`si_supervisor`], which runs the platform.

use si_core::Config;
use si_supervisor::Host;

pub use si_supervisor::UpOptions;

use crate::CliError;

/// `si-cli up`: runs the platform from the current directory in the foreground
/// until stopped, or with `detach` in the background. Returns `false` when it
/// stopped because the gateway could not be kept running.
pub fn start(config: Config, options: &UpOptions, detach: bool) -> Result<bool, CliError> {
    let message = CliError::Message;
    let root = std::env::current_dir()
        .map_err(|e| message(format!("cannot read the current directory: {e}")))?;
    // The gateway runs as `si-cli serve`, and `--detach` runs `si-cli up` again.
    let program = std::env::current_exe()
        .map_err(|e| message(format!("cannot find this program's path: {e}")))?;
    let host = Host {
        root,
        program,
        path: std::env::var_os("PATH"),
        env: std::env::vars_os().collect(),
    };
    let out = &mut std::io::stdout();
    Ok(si_supervisor::start(config, options, &host, detach, out)?)
}

/// This machine's host name, which `si-cli up` takes for `--host` when not given.
pub fn this_host_name() -> String {
    si_core::config::host_name()
}

/// `si-cli status`: each supervised process, as a table or JSON. Returns whether
/// every process is ready and healthy.
pub async fn status(
    config: &Config,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<bool, CliError> {
    Ok(si_supervisor::status(config, json, out).await?)
}

/// `si-cli stop`: the running supervisor stops everything, gateway first.
/// Returns `false` if none was running.
pub async fn stop(config: &Config, out: &mut impl std::io::Write) -> Result<bool, CliError> {
    Ok(si_supervisor::stop(config, out).await?)
}
