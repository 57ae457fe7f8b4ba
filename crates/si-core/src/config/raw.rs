//! Stage one: the TOML as written, with unknown keys refused, and its validation into
//! [`Config`].

mod backends;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::gpus::{RawDeclaredGpu, RawGpu};
use super::rate_limits::RawRateLimits;
use super::reliability::{RawBackendDefaults, RawFailover};
use super::{AuthConfig, Config, ConfigError, GatewayConfig};
use crate::role::RolePolicy;
use backends::{RawAgent, RawBackend, validate_agents, validate_backends, validate_roles};

// The tests check URL parsing on its own, away from a whole file.
#[cfg(test)]
pub(super) use backends::parse_backend_url;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    agents: Vec<RawAgent>,
    /// Role name → agent names, or `["*"]`.
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rate_limits: RawRateLimits,
    #[serde(default)]
    backend_defaults: RawBackendDefaults,
    #[serde(default)]
    failover: RawFailover,
    #[serde(default)]
    gpu: RawGpu,
    #[serde(default)]
    gpus: Vec<RawDeclaredGpu>,
    #[serde(default)]
    workflows: Vec<super::workflows::RawWorkflow>,
    #[serde(default)]
    supervisor: super::supervisor::RawSupervisor,
    #[serde(default)]
    store: super::store::RawStore,
    #[serde(default)]
    deploy: super::deploy::RawDeploy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGateway {
    name: String,
    listen: String,
    data_dir: PathBuf,
    max_body_bytes: u64,
    allow_insecure_dev: bool,
    health_interval_ms: u64,
    health_timeout_ms: u64,
    connect_timeout_ms: u64,
    max_connections: u32,
    max_connections_per_address: u32,
    metrics_max_connections: u32,
    shutdown_grace_ms: u64,
    drain_notice_ms: u64,
    header_read_timeout_ms: u64,
    metrics_listen: String,
    metrics_on_main: bool,
    log_format: String,
}

impl Default for RawGateway {
    fn default() -> Self {
        RawGateway {
            name: String::new(),
            listen: "127.0.0.1:8000".into(),
            data_dir: "./data".into(),
            max_body_bytes: 4 * 1024 * 1024,
            allow_insecure_dev: false,
            health_interval_ms: 5_000,
            health_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            max_connections: 10_000,
            max_connections_per_address: 256,
            metrics_max_connections: 32,
            shutdown_grace_ms: 30_000,
            drain_notice_ms: 2_000,
            metrics_listen: "127.0.0.1:9464".into(),
            metrics_on_main: false,
            log_format: "plain".into(),
            header_read_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    algorithm: String,
    expiry_hours: u64,
    refresh_expiry_hours: u64,
    locations: Vec<String>,
    issuer: String,
    audience: String,
    oidc: Option<super::oidc::RawOidc>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            algorithm: "HS256".into(),
            expiry_hours: 24,
            refresh_expiry_hours: 24 * 7,
            locations: Vec::new(),
            issuer: "synthetic-intelligence".into(),
            audience: "si-gateway".into(),
            oidc: None,
        }
    }
}

/// Largest accepted `max_body_bytes`: big enough for any chat, small enough that one
/// request cannot exhaust memory.
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;
/// Longest accepted token lifetime (30 days).
pub(super) const MAX_EXPIRY_HOURS: u64 = 24 * 30;
/// Longest accepted refresh token lifetime (90 days).
const MAX_REFRESH_EXPIRY_HOURS: u64 = 24 * 90;

impl RawConfig {
    pub(super) fn parse(text: &str, source_name: &str) -> Result<RawConfig, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let location = inner
                .span()
                .map(|span| line_and_column(text, span.start))
                .map(|(line, col)| format!(" (line {line}, column {col})"))
                .unwrap_or_default();
            let key = if key == "." { "(document)".into() } else { key };
            ConfigError::new(
                source_name,
                key,
                format!("{}{location}", inner.message().trim()),
            )
        })
    }

    pub(super) fn validate(self, source: &str) -> Result<Config, ConfigError> {
        let gateway = self.gateway.validate(source)?;
        let auth = self.auth.validate(source)?;
        let connect = gateway.connect_timeout;
        let mut config = Config {
            gateway,
            auth,
            backends: validate_backends(self.backends, &self.backend_defaults, connect, source)?,
            agents: validate_agents(self.agents),
            roles: RolePolicy::default(),
            rate_limits: self.rate_limits.validate(source)?,
            failover: self.failover.validate(source)?,
            gpu: self.gpu.validate(self.gpus, source)?,
            workflows: super::workflows::validate(self.workflows, source)?,
            supervisor: self.supervisor.validate(source)?,
            store: self.store.validate(source)?,
            deploy: self.deploy.validate(source)?,
        };
        config.check(source)?;
        config.roles = validate_roles(self.roles, &config.agents, source)?;
        Ok(config)
    }
}

/// A duration of `min` milliseconds to an hour.
pub(super) fn up_to_an_hour(
    source: &str,
    key: &str,
    value: u64,
    min: u64,
) -> Result<Duration, ConfigError> {
    if (min..=3_600_000).contains(&value) {
        Ok(Duration::from_millis(value))
    } else {
        Err(ConfigError::new(
            source,
            key,
            format!("expected {min} to 3600000 milliseconds, got {value}"),
        ))
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// What a gateway's name may be.
pub(super) const GATEWAY_NAME_WANTED: &str =
    "expected at most 64 printable characters, e.g. \"site-a-1\"";

/// `name` as a gateway's name, if it is one.
pub(super) fn checked_gateway_name(name: &str) -> Option<String> {
    let name = name.trim();
    (!name.is_empty() && name.chars().count() <= 64 && !name.chars().any(char::is_control))
        .then(|| name.to_owned())
}

impl RawGateway {
    fn validate(self, source: &str) -> Result<GatewayConfig, ConfigError> {
        let err = |key: &str, problem: &str| ConfigError::new(source, key, problem);
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            err(
                "gateway.listen",
                "expected an address such as 127.0.0.1:8000",
            )
        })?;
        if self.max_body_bytes == 0 || self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(err(
                "gateway.max_body_bytes",
                "expected 1 to 67108864 bytes",
            ));
        }
        let millis = |key: &str, value: u64, min: u64| up_to_an_hour(source, key, value, min);
        let name = match self.name.trim() {
            "" => None,
            name => Some(
                checked_gateway_name(name)
                    .ok_or_else(|| err("gateway.name", GATEWAY_NAME_WANTED))?,
            ),
        };
        Ok(GatewayConfig {
            name,
            listen,
            data_dir: self.data_dir,
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            allow_insecure_dev: self.allow_insecure_dev,
            health_interval: millis("gateway.health_interval_ms", self.health_interval_ms, 100)?,
            health_timeout: millis("gateway.health_timeout_ms", self.health_timeout_ms, 1)?,
            connect_timeout: millis("gateway.connect_timeout_ms", self.connect_timeout_ms, 1)?,
            max_connections: if (1..=1_000_000).contains(&self.max_connections) {
                self.max_connections
            } else {
                return Err(err("gateway.max_connections", "expected 1 to 1000000"));
            },
            max_connections_per_address: if (1..=self.max_connections)
                .contains(&self.max_connections_per_address)
            {
                self.max_connections_per_address
            } else {
                return Err(err(
                    "gateway.max_connections_per_address",
                    &format!(
                        "expected 1 to gateway.max_connections ({})",
                        self.max_connections
                    ),
                ));
            },
            metrics_max_connections: if (1..=10_000).contains(&self.metrics_max_connections) {
                self.metrics_max_connections
            } else {
                return Err(err(
                    "gateway.metrics_max_connections",
                    "expected 1 to 10000",
                ));
            },
            shutdown_grace: millis("gateway.shutdown_grace_ms", self.shutdown_grace_ms, 0)?,
            drain_notice: millis("gateway.drain_notice_ms", self.drain_notice_ms, 0)?,
            metrics_listen: match self.metrics_listen.trim() {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    err(
                        "gateway.metrics_listen",
                        "expected an address such as 127.0.0.1:9464, or \"\" for none",
                    )
                })?),
            },
            metrics_on_main: self.metrics_on_main,
            json_logs: match self.log_format.as_str() {
                "plain" => false,
                "json" => true,
                _ => return Err(err("gateway.log_format", "expected \"plain\" or \"json\"")),
            },
            header_read_timeout: millis(
                "gateway.header_read_timeout_ms",
                self.header_read_timeout_ms,
                1,
            )?,
        })
    }
}

impl RawAuth {
    fn validate(self, source: &str) -> Result<AuthConfig, ConfigError> {
        let algorithm = self
            .algorithm
            .parse()
            .map_err(|wanted: String| ConfigError::new(source, "auth.algorithm", wanted))?;
        if !(1..=MAX_EXPIRY_HOURS).contains(&self.expiry_hours) {
            return Err(ConfigError::new(
                source,
                "auth.expiry_hours",
                format!("expected 1 to {MAX_EXPIRY_HOURS} hours"),
            ));
        }
        if !(1..=MAX_REFRESH_EXPIRY_HOURS).contains(&self.refresh_expiry_hours) {
            return Err(ConfigError::new(
                source,
                "auth.refresh_expiry_hours",
                format!("expected 1 to {MAX_REFRESH_EXPIRY_HOURS} hours"),
            ));
        }
        for (key, value) in [
            ("auth.issuer", &self.issuer),
            ("auth.audience", &self.audience),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::new(source, key, "expected a non-empty string"));
            }
        }
        Ok(AuthConfig {
            algorithm,
            expiry: Duration::from_secs(self.expiry_hours * 3600),
            refresh_expiry: Duration::from_secs(self.refresh_expiry_hours * 3600),
            issuer: self.issuer,
            audience: self.audience,
            secret: None,
            previous_secret: None,
            locations: self.locations,
            oidc: self.oidc.map(|oidc| oidc.validate(source)).transpose()?,
        })
    }
}
