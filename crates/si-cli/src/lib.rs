//! What the `si-cli` commands do, as functions that take their inputs as arguments
//! (paths, an [`si_core::Environment`], readers and writers) so they can be tested
//! without a terminal or process environment.
//!
//! - [`args`]: the command line; [`main`]: one dispatch, one exit status.
//! - [`commands::keys`]: `keys generate` and `keys rotate`, the backends' API key file.
//! - [`commands::users`]: `users add`, `list`, `disable`, `enable` and `passwd`,
//!   through the stores the configuration names.
//! - [`commands::audit`]: `audit verify` and `audit export`.
//! - [`commands::health`]: `health`, a table of the gateway's view of each backend.
//! - [`commands::gpu`]: `gpu estimate`, `gpu status` and `gpu plan`.
//! - [`commands::deploy`]: `deploy`, the PM2, systemd, nginx and Prometheus files.
//! - [`commands::up`]: `up`, `status` and `stop`, run by [`si_supervisor`] with
//!   this process's directory, executable and environment.

pub mod args;
pub mod commands;
mod run;

pub use run::main;

/// A command that failed, with the message to print.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration (or the `.api_keys.env` file) could not be loaded.
    #[error(transparent)]
    Config(#[from] si_core::ConfigError),
    /// A user database or secret operation failed.
    #[error(transparent)]
    Auth(#[from] si_auth::AuthError),
    /// The supervisor (`up`, `status`, `stop`) failed.
    #[error(transparent)]
    Supervisor(#[from] si_supervisor::SupervisorError),
    /// Anything else, already phrased for a person.
    #[error("{0}")]
    Message(String),
}

/// A single-threaded async runtime for a command's network and database calls.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Message(format!("cannot start the async runtime: {e}")))
}
