//! The Synthetic Intelligence platform as one dependency: a secure gateway and control
//! plane in front of self-hosted llama.cpp model servers.
//!
//! Each part is its own crate, re-exported here for embedding:
//! - [`si_core`]: configuration, the agent table, roles, secret references.
//! - [`si_auth`]: users, sessions (argon2, refresh tokens), JWT access tokens, and
//!   the store traits.
//! - [`si_audit`]: the hash-chained audit trail.
//! - [`si_store`]: the store implementations (SQLite, in-process).
//! - [`si_oidc`]: single sign-on with an OpenID Connect provider.
//! - [`si_router`]: agent resolution, llama-server client, backend health.
//! - [`si_gpu`]: GPUs and what runs on them.
//! - [`si_server`]: the hyper gateway; [`run`] serves a [`Gateway`] on a listener.
//!
//! `examples/embedded_gateway.rs` builds and runs a gateway from code;
//! `examples/router_only.rs` sends one chat through the router crate alone.

pub use si_audit;
pub use si_auth;
pub use si_core;
pub use si_gpu;
pub use si_oidc;
pub use si_router;
pub use si_server;
pub use si_store;

pub use si_core::{Config, Environment};
pub use si_server::{Gateway, GatewayError, GatewayParts, run, watch_key_file};
