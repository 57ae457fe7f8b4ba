//! The gateway end to end: the real server on 127.0.0.1:0 in front of six simulated
//! llama-servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod audit;
mod auth;
mod errors;
mod health;
mod jwt_attacks;
mod keys;
mod limits;
mod llama_sim;
mod metrics;
mod raw_backend;
mod reliability;
mod routing;
mod sessions;
mod stream_faults;
mod streaming;
mod support;
