//! Backend API keys that change while the gateway runs: `si-cli keys rotate` edits
//! `.api_keys.env`, and the gateway switches to the new key within seconds, with no
//! restart and no failed request (the model server accepts old and new meanwhile).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use si_core::Environment;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Gateway, GatewayError};

impl Gateway {
    /// Resolves every backend's key from `env` again and switches the ones that
    /// changed; returns their names.
    pub fn reload_backend_keys(&self, env: &Environment) -> Result<Vec<String>, GatewayError> {
        let mut changed = Vec::new();
        for config in &self.config().backends {
            let key = config
                .api_key_ref
                .resolve(env)
                .map_err(|e| si_core::ConfigError {
                    source_name: "environment".into(),
                    key: format!("{}.api_key", config.name),
                    problem: e.to_string(),
                })?;
            let Some(backend) = self
                .router()
                .pool()
                .all()
                .iter()
                .find(|b| b.name == config.name)
            else {
                continue;
            };
            if backend.set_key(key.as_ref())? {
                changed.push(config.name.clone());
            }
        }
        Ok(changed)
    }
}

/// Re-reads `file` (beneath `process_env`, which wins) whenever it changes, checked
/// every `interval`, until `shutdown`.
pub fn watch_key_file(
    gateway: Gateway,
    file: PathBuf,
    process_env: Environment,
    interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let stamp = |file: &PathBuf| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(file).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    // The file as the gateway loaded it at start.
    let mut seen = stamp(&file);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let now = stamp(&file);
            if now == seen {
                continue;
            }
            seen = now;
            let reloaded = process_env
                .clone()
                .with_file_defaults(&file)
                .map_err(GatewayError::from)
                .and_then(|env| gateway.reload_backend_keys(&env));
            match reloaded {
                Ok(changed) => {
                    for backend in changed {
                        tracing::info!(%backend, "switched to the backend's new API key");
                    }
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "API keys not reloaded")
                }
            }
        }
    })
}
