//! What must hold across a whole configuration, whether it came from a file or was
//! built in code: names are usable and unique, and every agent's model is served.

use std::collections::HashSet;

use super::{Config, ConfigError};

const IDENTIFIER: &str = "expected 1-64 letters, digits, `-`, `_` or `.`";

fn is_identifier(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn check(config: &Config, source: &str) -> Result<(), ConfigError> {
    check_backends(config, source)?;
    check_agents(config, source)?;
    check_insecure_dev(config, source)?;
    super::gpus::check(config, source)?;
    super::workflows::check(config, source)?;
    check_token_lifetimes(config, source)
}

/// A revoked session is remembered as long as its refresh tokens: they must not
/// expire before the access tokens of the same session.
fn check_token_lifetimes(config: &Config, source: &str) -> Result<(), ConfigError> {
    let (access, refresh) = (config.auth.expiry, config.auth.refresh_expiry);
    if refresh < access {
        let problem = format!(
            "expected at least the access token lifetime ({} h)",
            access.as_secs() / 3600
        );
        return Err(ConfigError::new(
            source,
            "auth.refresh_expiry_hours",
            problem,
        ));
    }
    Ok(())
}

/// Serving without login is for a developer's own machine: never on an address
/// other machines can reach.
fn check_insecure_dev(config: &Config, source: &str) -> Result<(), ConfigError> {
    let listen = config.gateway.listen;
    if config.gateway.allow_insecure_dev && !listen.ip().is_loopback() {
        let problem = format!(
            "refused: insecure development mode (no login) may only listen on a loopback \
             address, and the gateway listens on {listen}"
        );
        return Err(ConfigError::new(
            source,
            "gateway.allow_insecure_dev",
            problem,
        ));
    }
    Ok(())
}

fn check_backends(config: &Config, source: &str) -> Result<(), ConfigError> {
    if config.backends.is_empty() {
        return Err(ConfigError::new(
            source,
            "backends",
            "expected at least one [[backends]] table",
        ));
    }
    let mut names = HashSet::new();
    let mut urls = HashSet::new();
    for (i, backend) in config.backends.iter().enumerate() {
        let key = |field: &str| format!("backends[{i}].{field}");
        if !is_identifier(&backend.name) {
            return Err(ConfigError::new(source, key("name"), IDENTIFIER));
        }
        if !is_identifier(&backend.model) {
            return Err(ConfigError::new(source, key("model"), IDENTIFIER));
        }
        if !names.insert(&backend.name) {
            let problem = format!("`{}` is used by another backend", backend.name);
            return Err(ConfigError::new(source, key("name"), problem));
        }
        if !urls.insert(&backend.url) {
            let problem = format!("{} is used by another backend", backend.url);
            return Err(ConfigError::new(source, key("url"), problem));
        }
    }
    Ok(())
}

fn check_agents(config: &Config, source: &str) -> Result<(), ConfigError> {
    if config.agents.is_empty() {
        return Err(ConfigError::new(
            source,
            "agents",
            "expected at least one [[agents]] table",
        ));
    }
    let mut names = HashSet::new();
    for (i, agent) in config.agents.iter().enumerate() {
        let key = |field: &str| format!("agents[{i}].{field}");
        if !is_identifier(&agent.name) {
            return Err(ConfigError::new(source, key("name"), IDENTIFIER));
        }
        if !names.insert(agent.name.to_ascii_lowercase()) {
            let problem = format!(
                "`{}` is used by another agent (names ignore case)",
                agent.name
            );
            return Err(ConfigError::new(source, key("name"), problem));
        }
        if let Some(fallback) = &agent.fallback {
            let target = config
                .agents
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(fallback));
            match target {
                None => {
                    let problem = format!("no agent is named `{fallback}`");
                    return Err(ConfigError::new(source, key("fallback"), problem));
                }
                Some(target) if target.model == agent.model => {
                    let problem = "expected an agent served by a different model".to_owned();
                    return Err(ConfigError::new(source, key("fallback"), problem));
                }
                Some(_) => {}
            }
        }
        if !config.backends.iter().any(|b| b.model == agent.model) {
            let problem = format!("no backend serves model `{}`", agent.model);
            return Err(ConfigError::new(source, key("model"), problem));
        }
    }
    Ok(())
}
