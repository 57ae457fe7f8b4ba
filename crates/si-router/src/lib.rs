//! Which llama-server answers a chat request, and talking to it.
//!
//! - [`request`]: the few fields of a chat request the gateway reads (`agent_type`,
//!   `model`, `stream`, `messages`); the body itself is forwarded untouched.
//! - [`agents`]: the agent table, resolving a request to an agent and its model.
//! - [`pool`]: the backends, their health state and replica choice.
//! - [`client`]: the HTTP client for llama-server: chat, `/health`, and turning its
//!   error answers into [`RouterError`]s that say whose fault they are.
//! - [`usage`]: token counts read from an answer as it streams past.
//! - [`health`]: the background poll of every backend's `/health`.
//!
//! [`Router`] ties them together. This crate never builds a response for a client of
//! the gateway; the server maps [`RouterError`] to statuses.

pub mod agents;
pub mod client;
mod error;
pub mod health;
pub mod pool;
pub mod request;
pub mod usage;

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use si_core::{AgentConfig, Config};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use agents::AgentTable;
pub use client::LlamaClient;
pub use error::RouterError;
pub use pool::{Backend, BackendPool, HealthState};
pub use request::ChatRequestHead;

/// A backend's answer to a chat request that went well (status 2xx), body unread.
#[derive(Debug)]
pub struct Upstream {
    /// The backend that answered.
    pub backend: Arc<Backend>,
    /// Its response; the body streams as the backend produces it.
    pub response: http::Response<Incoming>,
}

/// Agents, backends and a client: everything needed to route a chat request.
#[derive(Debug, Clone)]
pub struct Router {
    agents: Arc<AgentTable>,
    pool: Arc<BackendPool>,
    client: LlamaClient,
}

impl Router {
    /// Builds the router for `config` (API keys must already be resolved).
    pub fn new(config: &Config) -> Result<Self, RouterError> {
        Ok(Router {
            agents: Arc::new(AgentTable::new(&config.agents)),
            pool: Arc::new(BackendPool::new(&config.backends)?),
            client: LlamaClient::new(
                config.gateway.connect_timeout,
                config.gateway.response_timeout,
            ),
        })
    }

    /// The agent table.
    pub fn agents(&self) -> &AgentTable {
        &self.agents
    }

    /// The backends.
    pub fn pool(&self) -> &BackendPool {
        &self.pool
    }

    /// The agent a request is for, by `agent_type`, else by `model`.
    pub fn resolve(&self, head: &ChatRequestHead<'_>) -> Result<&AgentConfig, RouterError> {
        self.agents.resolve(head, &self.pool)
    }

    /// Sends `body` unchanged to a routable backend of `agent`'s model.
    pub async fn chat(&self, agent: &AgentConfig, body: Bytes) -> Result<Upstream, RouterError> {
        let backend = self.pool.pick(&agent.model)?;
        let response = self.client.chat(&backend, body).await?;
        Ok(Upstream { backend, response })
    }

    /// Polls every backend's `/health` until `shutdown` is cancelled.
    pub fn spawn_health_monitor(
        &self,
        interval: std::time::Duration,
        timeout: std::time::Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        health::spawn(
            self.pool.clone(),
            self.client.clone(),
            interval,
            timeout,
            shutdown,
        )
    }
}
