//! The gateway: a bare hyper 1 server that composes [`si_auth`] (who is calling) and
//! [`si_router`] (which llama-server answers) behind an OpenAI-compatible HTTP API.
//!
//! - [`gateway`]: [`Gateway`], the state one server instance runs with, and how it is
//!   opened from a [`si_core::Config`].
//! - [`server`]: [`run`], the accept loop with graceful shutdown, exactly what the
//!   binary and the tests run.
//! - `endpoints`: the route table, read by dispatch, `405 Allow` and metrics.
//! - `routes`: answering one request (context, checks, handler, audit record);
//!   `handlers`: what each endpoint does.
//! - `context`: what a request's handling knows about it; `client_ip`: who the
//!   client is behind a trusted proxy.
//! - `error`: the one place where every error, and everything else a client sees
//!   when something goes wrong, becomes HTTP.
//! - `response`, `body`, `events`: JSON responses, response bodies, server-sent
//!   events made by the gateway.
//! - `audit`: each request's and workflow step's audit record.
//! - [`keys`]: switching backend API keys while running (rotation); `key_use`:
//!   an application API key's own rate limit, and when it was last used.
//! - [`command`]: the `si-server` program (arguments, configuration, logging,
//!   signals), so the binary is one line and the benchmark runs the same code.
//!
//! This crate owns HTTP; the libraries below it never build a response.

mod audit;
mod body;
mod client_ip;
pub mod command;
mod context;
mod endpoints;
mod error;
mod events;
pub mod gateway;
mod handlers;
mod key_use;
pub mod keys;
pub mod metrics;
mod response;
mod routes;
pub mod server;
mod store_monitor;

pub use gateway::{Gateway, GatewayError, GatewayParts};
pub use keys::watch_key_file;
pub use server::{run, serve_metrics};
