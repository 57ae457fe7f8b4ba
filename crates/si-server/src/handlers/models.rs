//! `GET /v1/models`: the agents and models a caller can name, OpenAI list shape.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::Serialize;
use si_core::AgentConfig;
use si_router::Backend;

use crate::Gateway;
use crate::body::Reply;
use crate::context::RequestContext;
use crate::response::json;

const OWNER: &str = "synthetic-intelligence";

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

/// One entry per agent, then one per model; `kind` tells them apart.
#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    owned_by: &'static str,
    kind: &'static str,
    /// For an agent: the model serving it.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// For a model: its backends.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    backends: Vec<&'a str>,
    /// For a model: the agents it serves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    agents: Vec<&'a str>,
}

pub(crate) fn handle(gateway: &Gateway, ctx: &RequestContext) -> Response<Reply> {
    let caller = ctx.caller.as_ref();
    // A caller sees the agents its role may use, and the models serving them.
    let policy = &gateway.config().roles;
    let agents: Vec<&AgentConfig> = gateway
        .router()
        .agents()
        .all()
        .iter()
        .filter(|a| caller.is_none_or(|c| policy.allows(c.role, &a.name)))
        .collect();
    let mut data: Vec<ModelEntry<'_>> = agents.iter().map(|agent| agent_entry(agent)).collect();
    let pool = gateway.router().pool();
    data.extend(pool.models().filter_map(|model| {
        let served: Vec<&str> = agents
            .iter()
            .filter(|a| a.model == model)
            .map(|a| a.name.as_str())
            .collect();
        (!served.is_empty()).then(|| model_entry(model, served, pool.all()))
    }));
    json(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data,
        },
    )
}

fn agent_entry(agent: &AgentConfig) -> ModelEntry<'_> {
    ModelEntry {
        id: &agent.name,
        object: "model",
        owned_by: OWNER,
        kind: "agent",
        model: Some(&agent.model),
        tier: Some(agent.tier.as_str()),
        description: Some(agent.description.as_str()).filter(|d| !d.is_empty()),
        backends: Vec::new(),
        agents: Vec::new(),
    }
}

fn model_entry<'a>(
    model: &'a str,
    agents: Vec<&'a str>,
    backends: &'a [Arc<Backend>],
) -> ModelEntry<'a> {
    ModelEntry {
        id: model,
        object: "model",
        owned_by: OWNER,
        kind: "model",
        model: None,
        tier: None,
        description: None,
        backends: backends
            .iter()
            .filter(|b| b.model == model)
            .map(|b| b.name.as_str())
            .collect(),
        agents,
    }
}
