//! The agent table: which agent a request is for.

use si_core::AgentConfig;

use crate::request::ChatRequestHead;
use crate::{BackendPool, RouterError};

/// Every configured agent, looked up by name ignoring ASCII case.
#[derive(Debug, Clone)]
pub struct AgentTable {
    agents: Vec<AgentConfig>,
}

impl AgentTable {
    /// A table of `agents` (already validated: unique names, served models).
    pub fn new(agents: &[AgentConfig]) -> Self {
        AgentTable {
            agents: agents.to_vec(),
        }
    }

    /// All agents, in configuration order.
    pub fn all(&self) -> &[AgentConfig] {
        &self.agents
    }

    /// The agent named `name`.
    pub fn by_name(&self, name: &str) -> Option<&AgentConfig> {
        self.agents
            .iter()
            .find(|agent| agent.name.eq_ignore_ascii_case(name))
    }

    /// `agent_type` names an agent. Otherwise `model` names an agent, or a model id,
    /// which goes to the first agent served by that model (so OpenAI SDKs work with
    /// `model="Clinical"` or `model="biomistral-7b"`).
    pub fn resolve(
        &self,
        head: &ChatRequestHead<'_>,
        pool: &BackendPool,
    ) -> Result<&AgentConfig, RouterError> {
        if let Some(name) = head.agent_type.as_deref() {
            return self.by_name(name).ok_or_else(|| self.unknown(name, pool));
        }
        let Some(model) = head.model.as_deref() else {
            return Err(RouterError::NoAgent {
                valid: self.names(),
            });
        };
        self.by_name(model)
            .or_else(|| self.agents.iter().find(|agent| agent.model == model))
            .ok_or_else(|| self.unknown(model, pool))
    }

    fn names(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }

    fn unknown(&self, given: &str, pool: &BackendPool) -> RouterError {
        let mut models: Vec<String> = pool
            .models()
            .filter(|m| self.agents.iter().any(|a| &a.model == m))
            .map(str::to_owned)
            .collect();
        models.dedup();
        RouterError::UnknownAgent {
            given: given.chars().take(64).collect(),
            valid: self.names(),
            models,
        }
    }
}
