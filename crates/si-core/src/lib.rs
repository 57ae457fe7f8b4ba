//! The vocabulary every other crate of the platform shares.
//!
//! - [`config`]: the TOML configuration, loaded in two stages (raw serde structs that
//!   refuse unknown keys, then [`config::Config`] with checked, typed values), the
//!   built-in default deployment, and environment overrides.
//! - [`env`]: the variables the configuration may read, handed in by the caller (this
//!   crate never reads the process environment itself).
//! - [`secret`]: references to secrets (`env::NAME`, `path::FILE`) and their resolution.
//! - [`role`]: user roles.
//! - [`template`]: workflow prompt templates (`{{input.NAME}}`, `{{steps.ID}}`).
//!
//! This crate knows nothing about HTTP, SQLite, JWTs or GPUs.

pub mod config;
pub mod env;
pub mod role;
pub mod secret;
pub mod template;

pub use config::{
    AgentConfig, AuthConfig, BackendConfig, BackendLimits, Config, ConfigError, DeclaredGpu,
    FailoverConfig, FlashAttn, GatewayConfig, GpuConfig, GpuSource, LaunchConfig, StepConfig,
    SupervisorConfig, WorkflowConfig,
};
pub use env::Environment;
pub use role::{AgentGrant, Role, RolePolicy};
