//! `si-cli jwt rotate`.

use si_core::Config;

use crate::CliError;

/// Rotates the secret in the data directory; returns the new key id. Refused when
/// `JWT_SECRET` is set, since the gateway then does not read the file.
pub fn rotate(config: &Config) -> Result<String, CliError> {
    if config.auth.secret.is_some() {
        return Err(CliError::Message(
            "JWT_SECRET is set in the environment, so the gateway does not use the secret \
             file: rotate it there (move its value to JWT_SECRET_PREVIOUS, set a new \
             JWT_SECRET, restart the gateway)"
                .into(),
        ));
    }
    Ok(si_auth::secret::rotate_jwt_secret(
        &config.gateway.data_dir,
    )?)
}
