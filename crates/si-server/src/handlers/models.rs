//! `GET /v1/models`: the agents and models a caller can name, OpenAI list shape.

use http::{Request, Response, StatusCode};
use serde::Serialize;

use crate::Gateway;
use crate::body::{GatewayBody, json};
use crate::error::ApiError;
use crate::handlers::authenticate;

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

pub(crate) fn handle<B>(
    gateway: &Gateway,
    request: &Request<B>,
) -> Result<Response<GatewayBody>, ApiError> {
    authenticate(gateway, request)?;
    let router = gateway.router();
    let agents = router.agents().all();
    let backends = router.pool().all();
    let mut data: Vec<ModelEntry<'_>> = agents
        .iter()
        .map(|agent| ModelEntry {
            id: &agent.name,
            object: "model",
            owned_by: OWNER,
            kind: "agent",
            model: Some(&agent.model),
            tier: Some(agent.tier.as_str()),
            description: Some(&agent.description)
                .filter(|d| !d.is_empty())
                .map(String::as_str),
            backends: Vec::new(),
            agents: Vec::new(),
        })
        .collect();
    data.extend(router.pool().models().map(|model| {
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
            agents: agents
                .iter()
                .filter(|a| a.model == model)
                .map(|a| a.name.as_str())
                .collect(),
        }
    }));
    Ok(json(
        StatusCode::OK,
        &ModelList {
            object: "list",
            data,
        },
    ))
}
