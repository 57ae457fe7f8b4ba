//! Stage three: the environment variables the original deployment used, and secrets.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::raw::MAX_EXPIRY_HOURS;
use super::{Config, ConfigError};
use crate::env::Environment;
use crate::secret::SecretRef;

pub(super) const SOURCE: &str = "environment";

/// Shortest `JWT_SECRET` accepted: 256 bits, the HS256 key size.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

pub(super) fn apply(config: &mut Config, env: &Environment) -> Result<(), ConfigError> {
    if let Some(dir) = non_empty(env, "SI_DATA_DIR") {
        config.gateway.data_dir = dir.into();
    }
    if let Some(name) = non_empty(env, "SI_GATEWAY_NAME") {
        config.gateway.name = Some(super::raw::checked_gateway_name(name).ok_or_else(|| {
            ConfigError::new(SOURCE, "SI_GATEWAY_NAME", super::raw::GATEWAY_NAME_WANTED)
        })?);
    }
    if let Some(value) = non_empty(env, "ALLOW_INSECURE_DEV") {
        config.gateway.allow_insecure_dev = parse_bool(value).ok_or_else(|| {
            ConfigError::new(SOURCE, "ALLOW_INSECURE_DEV", "expected true or false")
        })?;
    }
    if let Some(value) = non_empty(env, "JWT_ALGORITHM") {
        config.auth.algorithm = value
            .parse()
            .map_err(|wanted: String| ConfigError::new(SOURCE, "JWT_ALGORITHM", wanted))?;
    }
    if let Some(value) = non_empty(env, "JWT_EXPIRY_HOURS") {
        let hours = value
            .parse::<u64>()
            .ok()
            .filter(|h| (1..=MAX_EXPIRY_HOURS).contains(h))
            .ok_or_else(|| {
                ConfigError::new(
                    SOURCE,
                    "JWT_EXPIRY_HOURS",
                    format!("expected a whole number of hours from 1 to {MAX_EXPIRY_HOURS}"),
                )
            })?;
        config.auth.expiry = Duration::from_secs(hours * 3600);
    }
    if let Some(value) = non_empty(env, "SI_RATE_LIMIT_PER_IP") {
        config.rate_limits.per_ip_per_minute = value.parse().map_err(|_| {
            let wanted = "expected requests per minute, a whole number (0 turns the limit off)";
            ConfigError::new(SOURCE, "SI_RATE_LIMIT_PER_IP", wanted)
        })?;
    }
    if let Some(secret) = non_empty(env, "JWT_SECRET") {
        config.auth.secret = Some(checked_jwt_secret(secret)?);
    }
    if let Some(secret) = non_empty(env, "JWT_SECRET_PREVIOUS") {
        let secret = checked_jwt_secret(secret).map_err(|e| ConfigError {
            key: "JWT_SECRET_PREVIOUS".into(),
            ..e
        })?;
        config.auth.previous_secret = Some(secret);
    }
    let database_url = shared_url(
        env,
        "SI_DATABASE_URL",
        config.store.database_url_ref.as_ref(),
        "store.database_url",
    )?;
    config.store.database_url = database_url
        .map(|(url, key)| super::store::checked_database_url(url, &key))
        .transpose()?;
    let redis_url = shared_url(
        env,
        "SI_REDIS_URL",
        config.store.redis_url_ref.as_ref(),
        "store.redis_url",
    )?;
    config.store.redis_url = redis_url
        .map(|(url, key)| super::store::checked_redis_url(url, &key))
        .transpose()?;
    if let Some(oidc) = &mut config.auth.oidc
        && let Some(reference) = &oidc.client_secret_ref
    {
        // Named but missing would turn the gateway into a public client the
        // provider refuses at every sign-in: say so now.
        let secret = reference
            .resolve(env)
            .map_err(|e| ConfigError::new(SOURCE, "auth.oidc.client_secret", e.to_string()))?
            .ok_or_else(|| {
                let problem = format!("{reference} is unset or empty");
                ConfigError::new(SOURCE, "auth.oidc.client_secret", problem)
            })?;
        oidc.client_secret = Some(secret);
    }
    for (i, backend) in config.backends.iter_mut().enumerate() {
        backend.api_key = backend.api_key_ref.resolve(env).map_err(|e| {
            ConfigError::new(SOURCE, format!("backends[{i}].api_key"), e.to_string())
        })?;
    }
    Ok(())
}

/// The URL of a store several gateways share, and what names it in errors: the
/// variable `variable`, else what `reference` (the file's `key`) points at.
fn shared_url(
    env: &Environment,
    variable: &str,
    reference: Option<&SecretRef>,
    key: &str,
) -> Result<Option<(SecretString, String)>, ConfigError> {
    if let Some(url) = non_empty(env, variable) {
        return Ok(Some((SecretString::from(url), variable.to_owned())));
    }
    let Some(reference) = reference else {
        return Ok(None);
    };
    // Named but missing must not quietly become a store of this gateway alone: it
    // (or si-cli) would no longer share anything with the others.
    let url = reference
        .resolve(env)
        .map_err(|e| ConfigError::new(SOURCE, key, e.to_string()))?
        .ok_or_else(|| ConfigError::new(SOURCE, key, format!("{reference} is unset or empty")))?;
    Ok(Some((url, format!("{key} ({reference})"))))
}

/// Refuses a secret shorter than [`MIN_JWT_SECRET_BYTES`] (never echoing it).
pub fn checked_jwt_secret(secret: &str) -> Result<SecretString, ConfigError> {
    let secret = SecretString::from(secret.trim());
    let len = secret.expose_secret().len();
    if len < MIN_JWT_SECRET_BYTES {
        return Err(ConfigError::new(
            SOURCE,
            "JWT_SECRET",
            format!(
                "expected at least {MIN_JWT_SECRET_BYTES} bytes, got {len}; \
                 generate one with `openssl rand -hex 32`, or unset it to use a generated one"
            ),
        ));
    }
    Ok(secret)
}

fn non_empty<'a>(env: &'a Environment, name: &str) -> Option<&'a str> {
    env.get(name).map(str::trim).filter(|v| !v.is_empty())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}
