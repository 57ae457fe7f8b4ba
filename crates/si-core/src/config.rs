//! The platform's configuration: typed, checked values.
//!
//! Loading goes raw TOML → [`raw::RawConfig`] (serde, unknown keys refused) →
//! [`Config`] (every value checked, see `raw.rs`) → environment overrides and secret
//! resolution ([`Config::apply_env`]). Every failure is one [`ConfigError`] naming the
//! source, the key and what was wanted.

mod check;
mod deploy;
mod gpus;
mod hosts;
mod launch;
mod oidc;
mod overrides;
mod rate_limits;
mod raw;
mod reliability;
mod store;
mod supervisor;
mod workflows;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Serialize;

use crate::env::Environment;
use crate::role::RolePolicy;
use crate::secret::SecretRef;

/// The built-in configuration: the original deployment (six llama-servers on
/// 127.0.0.1:8080-8085, gateway on 127.0.0.1:8000), documented key by key.
///
/// It lives inside the crate so that the packaged crate builds on its own;
/// `examples/si.toml` is the copy readers find, kept identical by a test.
pub const BUILTIN_TOML: &str = include_str!("config/builtin.toml");

/// What [`ConfigError`] names as the source when no file was given.
pub const BUILTIN_SOURCE: &str = "built-in defaults";

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The gateway's own settings.
    pub gateway: GatewayConfig,
    /// Token issuing and checking.
    pub auth: AuthConfig,
    /// One entry per llama-server process.
    pub backends: Vec<BackendConfig>,
    /// The agents users pick, each served by the backends of one model.
    pub agents: Vec<AgentConfig>,
    /// Which agents each role may use.
    pub roles: RolePolicy,
    /// Request rate limits.
    pub rate_limits: RateLimitConfig,
    /// Retries and ejection of failing backends.
    pub failover: FailoverConfig,
    /// The GPUs and how they are read.
    pub gpu: GpuConfig,
    /// Multi-step workflows.
    pub workflows: Vec<WorkflowConfig>,
    /// How `si-cli up` runs the processes.
    pub supervisor: SupervisorConfig,
    /// Where users, sessions and revocations live, and where the rate limits and
    /// the failed-login throttle are counted.
    pub store: StoreConfig,
    /// What `si-cli deploy` renders for the whole installation: the gateways
    /// behind the load balancer.
    pub deploy: DeployConfig,
}

/// Request rate limits, in requests per minute; `0` turns a limit off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Per client address (the original's 100 per minute). `SI_RATE_LIMIT_PER_IP`
    /// overrides it.
    pub per_ip_per_minute: u32,
    /// Per user (token subject).
    pub per_user_per_minute: u32,
    /// Per location (token `loc`), unless listed in `locations`.
    pub per_location_per_minute: u32,
    /// Per-location overrides of `per_location_per_minute`.
    pub locations: BTreeMap<String, u32>,
    /// Reverse proxies whose `X-Forwarded-For` / `X-Real-IP` name the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Most client addresses tracked at once, so a flood of addresses cannot grow
    /// memory without bound.
    pub max_tracked_clients: usize,
}

/// The gateway's listener, data and timing settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// This gateway's name in the audit records, where several share one chain
    /// (`None`: [`GatewayConfig::instance_name`] makes one up).
    pub name: Option<String>,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the user database and the generated JWT secret live.
    pub data_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Serve without login (development only).
    pub allow_insecure_dev: bool,
    /// Period of the backend health poll.
    pub health_interval: Duration,
    /// Longest one health poll may take.
    pub health_timeout: Duration,
    /// Longest a TCP connect to a backend may take.
    pub connect_timeout: Duration,
    /// Most client connections open at once; more are refused with 503.
    pub max_connections: u32,
    /// Most connections open at once from one client address (an IPv6 /64);
    /// trusted proxies are exempt, since they carry many clients.
    pub max_connections_per_address: u32,
    /// Most connections open at once to the metrics listener.
    pub metrics_max_connections: u32,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long `/healthz` reports draining while new connections
    /// are still accepted, so load balancers move traffic away first.
    pub drain_notice: Duration,
    /// A client must send its request headers within this time (slowloris guard).
    pub header_read_timeout: Duration,
    /// Where `/metrics` is served on its own (loopback by default); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Also serve `/metrics` on the gateway's own port (off: it is public).
    pub metrics_on_main: bool,
    /// Log lines as JSON objects instead of plain text.
    pub json_logs: bool,
}

/// How access tokens are signed and checked.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Signing algorithm.
    pub algorithm: JwtAlgorithm,
    /// Lifetime of an access token.
    pub expiry: Duration,
    /// Lifetime of a refresh token (each refresh issues a new one).
    pub refresh_expiry: Duration,
    /// `iss` written and required.
    pub issuer: String,
    /// `aud` written and required.
    pub audience: String,
    /// `JWT_SECRET` when set; otherwise the caller generates or loads one.
    pub secret: Option<SecretString>,
    /// `JWT_SECRET_PREVIOUS`: still accepted for tokens signed before a rotation.
    pub previous_secret: Option<SecretString>,
    /// The locations a login may name; empty: any well-formed one.
    pub locations: Vec<String>,
    /// Single sign-on with an OpenID provider, if configured.
    pub oidc: Option<OidcConfig>,
}

/// The HMAC algorithms a shared secret can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256, the original's default.
    Hs256,
    /// HMAC-SHA384.
    Hs384,
    /// HMAC-SHA512.
    Hs512,
}

impl FromStr for JwtAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "HS384" => Ok(JwtAlgorithm::Hs384),
            "HS512" => Ok(JwtAlgorithm::Hs512),
            _ => Err(format!("one of HS256, HS384, HS512, not `{s}`")),
        }
    }
}

/// One llama-server process.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Unique name, e.g. `tiny-llama-1b-8080`.
    pub name: String,
    /// Where it listens.
    pub url: BackendUrl,
    /// The GPU host that runs it, as `si-cli up --host` names it; `None`: the host
    /// in `url` (see [`BackendConfig::host_name`]).
    pub host: Option<String>,
    /// The model it serves; backends with the same model are replicas.
    pub model: String,
    /// Where its API key comes from.
    pub api_key_ref: SecretRef,
    /// The key, once resolved by [`Config::apply_env`]; `None` if not configured.
    pub api_key: Option<SecretString>,
    /// The GPU it runs on, if known.
    pub gpu: Option<u32>,
    /// Whether it accepts image parts (its llama-server has a vision projector);
    /// requests with images for a model without one are refused before sending.
    pub vision: bool,
    /// Capacity and timeouts.
    pub limits: BackendLimits,
    /// How its llama-server is started.
    pub launch: LaunchConfig,
}

/// A plain-HTTP backend address (`http://host:port`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendUrl {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// An agent users can pick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AgentConfig {
    /// Name as users write it, e.g. `MedicalQA`.
    pub name: String,
    /// The model that answers for it.
    pub model: String,
    /// How fast answers are expected.
    pub tier: SpeedTier,
    /// One line for people.
    pub description: String,
    /// The agent that answers when every backend of this one's model fails before
    /// answering. None by default: a clinical question is never answered by another
    /// model unless configured so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// Expected answer speed of an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpeedTier {
    /// Seconds.
    Fast,
    /// Tens of seconds.
    Slow,
}

impl SpeedTier {
    /// `fast` or `slow`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpeedTier::Fast => "fast",
            SpeedTier::Slow => "slow",
        }
    }
}

/// A configuration that cannot be used: where, which key, and what was wanted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {key}: {problem}")]
pub struct ConfigError {
    /// The file, `environment`, or [`BUILTIN_SOURCE`].
    pub source_name: String,
    /// The key (dotted path) or variable name.
    pub key: String,
    /// What was expected.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(
        source_name: &str,
        key: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError {
            source_name: source_name.to_owned(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// This machine's host name (`gateway` if it has none).
pub fn host_name() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_owned();
    if name.is_empty() {
        "gateway".to_owned()
    } else {
        name
    }
}

impl GatewayConfig {
    /// How long the gateway may take to stop after SIGTERM: the drain notice, then
    /// the grace for requests in flight, plus a margin. Service managers wait this
    /// long before killing it.
    pub fn stop_timeout(&self) -> Duration {
        self.drain_notice + self.shutdown_grace + Duration::from_secs(5)
    }

    /// The gateway's name in audit records: `gateway.name`, else this machine's
    /// host name and the port it listens on (`ward-server:8000`), which tells
    /// gateways apart on one host too.
    pub fn instance_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        format!("{}:{}", host_name(), self.listen.port())
    }
}

impl Config {
    /// Parses and validates TOML text; `source_name` is used in errors. Secrets are not
    /// resolved and the environment is not consulted: see [`Config::apply_env`].
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        raw::RawConfig::parse(text, source_name)?.validate(source_name)
    }

    /// The built-in configuration ([`BUILTIN_TOML`]), before environment overrides.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::parse(BUILTIN_TOML, BUILTIN_SOURCE)
    }

    /// Loads `path` (or the built-in configuration when `None`), then applies `env`.
    pub fn load(path: Option<&Path>, env: &Environment) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::builtin()?,
            Some(path) => {
                let source_name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(&source_name, "(file)", format!("cannot be read: {e}"))
                })?;
                Config::parse(&text, &source_name)?
            }
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Applies the original's environment variables (`ALLOW_INSECURE_DEV`, `JWT_SECRET`,
    /// `JWT_ALGORITHM`, `JWT_EXPIRY_HOURS`) and ours (`SI_DATA_DIR`,
    /// `SI_RATE_LIMIT_PER_IP`, `JWT_SECRET_PREVIOUS`, `SI_DATABASE_URL`,
    /// `SI_REDIS_URL`), resolves every backend's API key and the store URLs, and
    /// checks the result again.
    pub fn apply_env(&mut self, env: &Environment) -> Result<(), ConfigError> {
        overrides::apply(self, env)?;
        self.check("environment")
    }

    /// Checks what loading a file guarantees, for configurations built or changed in
    /// code: usable, unique names and URLs, and a backend for every agent's model.
    /// `source_name` is what errors name as the source.
    pub fn check(&self, source_name: &str) -> Result<(), ConfigError> {
        check::check(self, source_name)
    }

    /// The workflow named `name`.
    pub fn workflow(&self, name: &str) -> Option<&WorkflowConfig> {
        self.workflows.iter().find(|w| w.name == name)
    }

    /// The agent named `name`, ignoring ASCII case.
    pub fn agent(&self, name: &str) -> Option<&AgentConfig> {
        self.agents
            .iter()
            .find(|agent| agent.name.eq_ignore_ascii_case(name))
    }

    /// Backends that have no API key after [`Config::apply_env`]: the gateway still
    /// runs, but such a backend must accept requests without a key.
    pub fn backends_without_key(&self) -> impl Iterator<Item = &BackendConfig> {
        self.backends.iter().filter(|b| b.api_key.is_none())
    }
}

pub use deploy::{DeployConfig, GatewayAddress};
pub use gpus::{DeclaredGpu, GpuConfig, GpuSource};
pub use hosts::{HostPlacement, NoBackendOnHost, is_host_name};
pub use launch::{CACHE_TYPES, FlashAttn, LaunchConfig};
pub use oidc::{OidcConfig, is_secure_url};
pub use overrides::{MIN_JWT_SECRET_BYTES, checked_jwt_secret};
pub use reliability::{BackendLimits, FailoverConfig};
pub use store::{RedisFailure, StoreConfig};
pub use supervisor::SupervisorConfig;
pub use workflows::{StepConfig, WorkflowConfig};

#[cfg(test)]
mod tests;
