//! Which llama-server answers a chat request, and talking to it.
//!
//! - [`request`]: the few fields of a chat request the gateway reads (`agent_type`,
//!   `model`, `stream`, `messages`); the body itself is forwarded untouched.
//! - [`agents`]: the agent table, resolving a request to an agent and its model.
//! - [`pool`]: the backends, their health state and replica choice.
//! - [`client`]: the HTTP client for llama-server: chat, `/health`, and turning its
//!   error answers into [`RouterError`]s that say whose fault they are.
//! - [`usage`]: token counts read from an answer as it streams past.
//! - [`body`]: an answer on its way out: timeouts, clean ends of broken streams.
//! - [`health`]: the background poll of every backend's `/health`.
//!
//! [`Router`] ties them together: [`Router::answer`] is the one call that answers a
//! chat request. This crate never builds a response for a client of the gateway and
//! never decides a status: the server maps [`RouterError`] and [`CutShort`] to what
//! the client sees.

pub mod agents;
mod answer;
pub mod body;
mod capacity;
pub mod client;
mod error;
pub mod health;
pub mod metrics;
pub mod pool;
pub mod request;
mod retry;
pub mod usage;
pub mod workflow;

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use si_core::{AgentConfig, Config, FailoverConfig};

use crate::capacity::NoSlot;
use crate::retry::RetryBudget;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use agents::AgentTable;
pub use answer::Answer;
pub use body::{CutShort, Interrupted, UpstreamBody};
pub use capacity::InFlight;
pub use client::LlamaClient;
pub use error::{Reach, RouterError};
pub use pool::{Backend, BackendPool, HealthState};
pub use request::ChatRequestHead;

/// A backend's answer (status 2xx) whose body is not read yet, with the slot it
/// occupies.
struct Upstream {
    backend: Arc<Backend>,
    response: http::Response<Incoming>,
    slot: InFlight,
}

/// Agents, backends and a client: everything needed to route a chat request.
#[derive(Debug, Clone)]
pub struct Router {
    agents: Arc<AgentTable>,
    pool: Arc<BackendPool>,
    client: LlamaClient,
    failover: FailoverConfig,
    budget: Arc<RetryBudget>,
    /// How long a health check after a failure may take.
    health_timeout: std::time::Duration,
}

/// A fingerprint of a request body, to tell different failing requests apart.
fn fingerprint(body: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    hasher.write(body);
    hasher.finish()
}

impl Router {
    /// Builds the router for `config` (API keys must already be resolved).
    pub fn new(config: &Config) -> Result<Self, RouterError> {
        Ok(Router {
            agents: Arc::new(AgentTable::new(&config.agents)),
            pool: Arc::new(BackendPool::new(&config.backends)?),
            client: LlamaClient::new(config.gateway.connect_timeout),
            failover: config.failover.clone(),
            budget: Arc::new(RetryBudget::default()),
            health_timeout: config.gateway.health_timeout,
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

    /// The agent a chat request's `body` is for; an error says where the body is not
    /// a chat request, or lists the agents when it names none of them.
    /// Image parts are refused here for a model that takes none, before any backend
    /// sees them.
    pub fn agent_for(&self, body: &[u8]) -> Result<&AgentConfig, RouterError> {
        let head = ChatRequestHead::parse(body)?;
        let agent = self.resolve(&head)?;
        if head.has_images() && !self.pool.accepts_images(&agent.model) {
            return Err(RouterError::ImagesNotAccepted {
                agent: agent.name.clone(),
                model: agent.model.clone(),
            });
        }
        Ok(agent)
    }

    /// Answers a chat request for `agent` with `body`, forwarded unchanged: to the
    /// least busy routable backend of its model, then, if that fails before
    /// answering, to another replica (see [`Router::send`]), then, if the agent
    /// names a `fallback` agent and `may_use` allows it, to the fallback. The
    /// answer's body is already wrapped: time limits apply, and its slot is held
    /// until it is dropped.
    pub async fn answer(
        &self,
        agent: &AgentConfig,
        body: Bytes,
        may_use: impl Fn(&AgentConfig) -> bool,
    ) -> Result<Answer, RouterError> {
        let failed = match self.send(agent, body.clone()).await {
            Ok(upstream) => return Ok(Answer::new(upstream)),
            Err(e) => e,
        };
        let fallback = agent
            .fallback
            .as_deref()
            .and_then(|f| self.agents.by_name(f));
        let Some(fallback) = fallback.filter(|_| {
            failed.is_retryable() || matches!(failed, RouterError::NoHealthyBackend { .. })
        }) else {
            return Err(failed);
        };
        if !may_use(fallback) {
            return Err(RouterError::FallbackForbidden {
                agent: agent.name.clone(),
                fallback: fallback.name.clone(),
            });
        }
        tracing::warn!(agent = %agent.name, fallback = %fallback.name, "answered by the fallback agent");
        self.send(fallback, body).await.map(Answer::new)
    }

    /// Sends `body` unchanged to the least busy routable backend of `agent`'s
    /// model. A request that never left (no connection was made) goes on to the
    /// next replica at no cost; a 5xx or a dropped connection (nothing has reached
    /// the client yet) is tried once more on another replica, within the retry
    /// budget.
    async fn send(&self, agent: &AgentConfig, body: Bytes) -> Result<Upstream, RouterError> {
        let _active = self.budget.request();
        let mut tried: Vec<String> = Vec::new();
        let mut retried = None;
        let mut last_failure = None;
        loop {
            let backend = match self.pool.pick(&agent.model, &tried) {
                Ok(backend) => backend,
                Err(e) => return Err(last_failure.unwrap_or(e)),
            };
            tried.push(backend.name.clone());
            let slot = backend
                .capacity
                .admit()
                .await
                .map_err(|why| RouterError::Overloaded {
                    backend: backend.name.clone(),
                    why: match why {
                        NoSlot::QueueFull => "every slot is busy and the queue is full",
                        NoSlot::TimedOut => "no slot came free within the queue timeout",
                    },
                })?;
            let sent = std::time::Instant::now();
            let answered = backend.client.chat(&backend, body.clone()).await;
            metrics::upstream_headers(&backend.name, sent.elapsed().as_secs_f64());
            let e = match answered {
                Ok(response) => {
                    backend.passive.succeeded();
                    return Ok(Upstream {
                        backend,
                        response,
                        slot,
                    });
                }
                Err(e) => e,
            };
            drop(slot);
            self.count_failure(&backend, &e, &body);
            // Never sent, so never run: another replica is always safe, and the
            // retry budget (which protects a sick model from doubled load) is not
            // spent on a server that is not there.
            let free = e.never_sent();
            let budgeted = || {
                (retried.is_none() && e.is_retryable())
                    .then(|| self.budget.retry(&self.failover))
                    .flatten()
            };
            if !free {
                match budgeted() {
                    Some(guard) => retried = Some(guard),
                    None => return Err(e),
                }
            }
            metrics::failover(&agent.model);
            // What a request that was sent met says more than a refused connect.
            if !free || last_failure.as_ref().is_none_or(RouterError::never_sent) {
                last_failure = Some(e);
            }
        }
    }

    /// Judges a failure of `backend` at `body`: a refused connection takes it out of
    /// the pick at once; a connection not made counts towards ejecting it; a dropped
    /// connection, a 5xx or a hang counts only for a request that has not failed on
    /// it already in this run of failures (one user repeating a request the server
    /// cannot take must not eject it), and has its `/health` checked at once.
    fn count_failure(&self, backend: &Arc<Backend>, error: &RouterError, body: &[u8]) {
        let counts = match error {
            RouterError::Unreachable {
                reach: Reach::Refused,
                ..
            } => {
                health::refused(backend);
                false
            }
            RouterError::Unreachable {
                reach: Reach::NotConnected,
                ..
            } => true,
            // A dropped connection may be a request that crashed the server: judged
            // like a 5xx, so one such request cannot eject every replica in turn.
            RouterError::Unreachable {
                reach: Reach::Dropped,
                ..
            }
            | RouterError::Failed { .. }
            | RouterError::Timeout { .. } => {
                health::check_after_failure(backend, &self.client, self.health_timeout);
                backend.passive.is_new_failure(fingerprint(body))
            }
            _ => false,
        };
        if !counts {
            return;
        }
        if let Some(period) = self.pool.backend_failed(backend, &self.failover) {
            metrics::ejected(&backend.name);
            tracing::warn!(backend = %backend.name, seconds = period.as_secs(), "backend ejected after consecutive failures");
        }
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
