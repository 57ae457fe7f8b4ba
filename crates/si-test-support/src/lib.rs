//! What the platform's integration tests share: the real gateway on 127.0.0.1:0
//! in front of six simulated llama-servers ([`harness`]), the simulator itself
//! ([`llama_sim`]), a backend that misbehaves below HTTP ([`raw_backend`]), free
//! ports ([`ports`]), running the workspace's executables ([`cli`]), a
//! database or key prefix of its own for each test of a shared store
//! ([`postgres`], [`redis`]), a connection to cut ([`cut`]), the audit trail
//! read back ([`audit`]), and a real OpenID provider with an application and a
//! browser that sign in at it ([`oidc`]).
//!
//! A dev-dependency only: a harness that cannot start must fail its test at
//! once, loudly, so unwrap and panic are allowed here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod accounts;
pub mod audit;
pub mod cli;
pub mod cut;
pub mod harness;
pub mod llama_sim;
pub mod oidc;
pub mod ports;
pub mod postgres;
pub mod raw_backend;
pub mod redis;
