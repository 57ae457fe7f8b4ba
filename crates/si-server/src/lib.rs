//! The gateway: a bare hyper 1 server that composes [`si_auth`] (who is calling) and
//! [`si_router`] (which llama-server answers) behind an OpenAI-compatible HTTP API.
//!
//! - [`gateway`]: [`Gateway`], the state one server instance runs with, and how it is
//!   opened from a [`si_core::Config`].
//! - [`server`]: [`run`], the accept loop with graceful shutdown, exactly what the
//!   binary and the tests run.
//! - `routes` and `handlers`: which path does what.
//! - `error`: the one place where every error becomes an HTTP status and JSON body.
//! - `body`: response bodies (JSON, or a backend's stream passed through).
//! - [`keys`]: switching backend API keys while running (rotation).
//! - [`command`]: the `si-server` program (arguments, configuration, logging,
//!   signals), so the binary is one line and the benchmark runs the same code.
//! - `limits`, `audit`, `client_ip`: rate limits, the audit record of each request,
//!   and who the client is behind a trusted proxy.
//!
//! This crate owns HTTP; the libraries below it never build a response.

mod audit;
mod body;
mod client_ip;
pub mod command;
mod error;
pub mod gateway;
mod handlers;
pub mod keys;
mod limits;
pub mod metrics;
mod routes;
pub mod server;

pub use gateway::{Gateway, GatewayError};
pub use keys::watch_key_file;
pub use server::{run, serve_metrics};
