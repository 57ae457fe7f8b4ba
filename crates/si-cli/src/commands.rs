//! One module per command group.

pub mod apikeys;
pub mod audit;
pub mod deploy;
pub mod gpu;
pub mod health;
pub mod jwt;
pub mod keys;
pub mod ports;
pub mod probe;
pub(crate) mod table;
pub mod up;
pub mod users;

use si_core::Config;

use crate::CliError;

/// `config` with only the backends the GPU host `host` runs, by the names the
/// configuration gives (no address of this machine is looked up: the files or
/// the plan may be for another machine).
pub fn on_host(config: &Config, host: &str) -> Result<Config, CliError> {
    let placed = config
        .place_on_host(host, |_| false)
        .map_err(|e| CliError::Message(e.to_string()))?;
    let mut config = config.clone();
    config.backends = placed.here;
    Ok(config)
}
