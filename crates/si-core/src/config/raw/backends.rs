//! The `[[backends]]`, `[[agents]]` and `[roles]` tables as written, and their
//! validation: the tables that name one another.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::launch::RawLaunch;
use crate::config::reliability::{RawBackendDefaults, RawLimitOverrides};
use crate::config::{AgentConfig, BackendConfig, BackendUrl, ConfigError, SpeedTier, is_host_name};
use crate::role::{AgentGrant, Role, RolePolicy};
use crate::secret::SecretRef;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    name: String,
    url: String,
    host: Option<String>,
    model: String,
    api_key: String,
    gpu: Option<u32>,
    vision: Option<bool>,
    // Overrides of [backend_defaults] (serde's flatten cannot refuse unknown keys).
    max_in_flight: Option<u32>,
    queue_depth: Option<u32>,
    queue_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    headers_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    total_timeout_ms: Option<u64>,
    // How it is started (serde's flatten cannot refuse unknown keys either).
    model_file: Option<PathBuf>,
    ctx_size: Option<u64>,
    gpu_layers: Option<u32>,
    cache_type_k: Option<String>,
    cache_type_v: Option<String>,
    flash_attn: Option<String>,
    gpu_pinned: Option<bool>,
    threads: Option<u32>,
    parallel: Option<u32>,
    #[serde(default)]
    extra_args: Vec<String>,
}

impl RawBackend {
    fn launch(&mut self) -> RawLaunch {
        RawLaunch {
            model_file: self.model_file.take(),
            ctx_size: self.ctx_size,
            gpu_layers: self.gpu_layers,
            cache_type_k: self.cache_type_k.take(),
            cache_type_v: self.cache_type_v.take(),
            flash_attn: self.flash_attn.take(),
            gpu_pinned: self.gpu_pinned,
            threads: self.threads,
            parallel: self.parallel,
            extra_args: std::mem::take(&mut self.extra_args),
        }
    }

    fn overrides(&self) -> RawLimitOverrides {
        RawLimitOverrides {
            max_in_flight: self.max_in_flight,
            queue_depth: self.queue_depth,
            queue_timeout_ms: self.queue_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            headers_timeout_ms: self.headers_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            total_timeout_ms: self.total_timeout_ms,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    name: String,
    model: String,
    tier: SpeedTierName,
    #[serde(default)]
    description: String,
    #[serde(default)]
    fallback: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SpeedTierName {
    Fast,
    Slow,
}

pub(super) fn validate_backends(
    raw: Vec<RawBackend>,
    defaults: &RawBackendDefaults,
    connect_default: Duration,
    source: &str,
) -> Result<Vec<BackendConfig>, ConfigError> {
    // A bad default is reported as the default's key, not the first backend's.
    defaults.resolve(
        &RawLimitOverrides::default(),
        connect_default,
        "backend_defaults",
        source,
    )?;
    raw.into_iter()
        .enumerate()
        .map(|(i, mut backend)| {
            let key = |field: &str| format!("backends[{i}].{field}");
            let prefix = format!("backends[{i}]");
            let limits =
                defaults.resolve(&backend.overrides(), connect_default, &prefix, source)?;
            let launch = backend.launch().validate(&prefix, source)?;
            // A projector named in the launch arguments makes a vision server.
            let vision = backend.vision.unwrap_or_else(|| {
                launch
                    .extra_args
                    .iter()
                    .any(|arg| PROJECTOR_ARGS.contains(&arg.split('=').next().unwrap_or(arg)))
            });
            let url = parse_backend_url(&backend.url)
                .map_err(|problem| ConfigError::new(source, key("url"), problem))?;
            let api_key_ref = SecretRef::parse(&backend.api_key)
                .map_err(|e| ConfigError::new(source, key("api_key"), e.to_string()))?;
            let host = backend
                .host
                .map(|host| {
                    checked_host(host).map_err(|p| ConfigError::new(source, key("host"), p))
                })
                .transpose()?;
            Ok(BackendConfig {
                name: backend.name,
                url,
                host,
                model: backend.model,
                api_key_ref,
                api_key: None,
                gpu: backend.gpu,
                vision,
                limits,
                launch,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|backends| replicas_agree_on_vision(backends, source))
}

/// llama-server's arguments that load a vision projector.
const PROJECTOR_ARGS: [&str; 4] = ["--mmproj", "-mm", "--mmproj-url", "-mmu"];

/// Replicas of one model are interchangeable, so they must all take images or none:
/// otherwise an image request would fail on some and not others.
fn replicas_agree_on_vision(
    backends: Vec<BackendConfig>,
    source: &str,
) -> Result<Vec<BackendConfig>, ConfigError> {
    for (i, backend) in backends.iter().enumerate() {
        if let Some(other) = backends[..i]
            .iter()
            .find(|o| o.model == backend.model && o.vision != backend.vision)
        {
            return Err(ConfigError::new(
                source,
                format!("backends[{i}].vision"),
                format!(
                    "expected {} like `{}`, the other replica of model `{}` (replicas must \
                     all take images or none)",
                    other.vision, other.name, backend.model
                ),
            ));
        }
    }
    Ok(backends)
}

/// Accepts `http://host:port` with an optional trailing `/`.
pub(in crate::config) fn parse_backend_url(text: &str) -> Result<BackendUrl, String> {
    const WANTED: &str = "expected http://HOST:PORT, e.g. http://127.0.0.1:8080";
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(if text.starts_with("https://") {
            "https backends are not supported; reach llama-server over http on a private \
             interface"
                .into()
        } else {
            WANTED.into()
        });
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').ok_or(WANTED)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| WANTED.to_owned())?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    if !host_ok || port == 0 {
        return Err(WANTED.into());
    }
    Ok(BackendUrl {
        host: host.to_owned(),
        port,
    })
}

/// A GPU host's name as `si-cli up --host` is given it: a host name or an address.
fn checked_host(host: String) -> Result<String, String> {
    if is_host_name(&host) {
        Ok(host)
    } else if host.trim().is_empty() {
        Err(
            "expected the name of the GPU host that runs this backend (as `si-cli up \
             --host` is given it), not an empty string; leave `host` out to mean the host \
             in the backend's url"
                .into(),
        )
    } else {
        Err(format!(
            "expected a host name such as gpu-a or gpu-a.hospital.local (letters, digits, \
             `-`, `.`, `_`), not `{host}`"
        ))
    }
}

pub(super) fn validate_agents(raw: Vec<RawAgent>) -> Vec<AgentConfig> {
    raw.into_iter()
        .map(|agent| AgentConfig {
            name: agent.name,
            model: agent.model,
            tier: match agent.tier {
                SpeedTierName::Fast => SpeedTier::Fast,
                SpeedTierName::Slow => SpeedTier::Slow,
            },
            description: agent.description,
            fallback: agent.fallback,
        })
        .collect()
}

/// Roles not listed keep their default grant; listed ones must name real agents.
pub(super) fn validate_roles(
    raw: BTreeMap<String, Vec<String>>,
    agents: &[AgentConfig],
    source: &str,
) -> Result<RolePolicy, ConfigError> {
    let mut policy = RolePolicy::default();
    for (name, names) in raw {
        let key = format!("roles.{name}");
        let role: Role = name
            .parse()
            .map_err(|e: crate::role::UnknownRole| ConfigError::new(source, &key, e.to_string()))?;
        let grant = if names.iter().any(|n| n == "*") {
            if names.len() != 1 {
                return Err(ConfigError::new(
                    source,
                    key,
                    "expected [\"*\"] alone, or agent names",
                ));
            }
            AgentGrant::All
        } else {
            for agent in &names {
                if !agents.iter().any(|a| a.name.eq_ignore_ascii_case(agent)) {
                    let problem = format!("no agent is named `{agent}`");
                    return Err(ConfigError::new(source, key, problem));
                }
            }
            AgentGrant::Only(names)
        };
        policy.set(role, grant);
    }
    Ok(policy)
}
