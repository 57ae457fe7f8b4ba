//! `GET /v1/workflows` and `POST /v1/workflows/{name}/runs`: multi-step runs
//! across agents. Each step is a chat request through the same router as
//! `/v1/chat/completions` (replica choice, failover, capacity), audited like one
//! (metadata only, linked to the run by its id).

mod runner;

use std::collections::BTreeMap;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use si_core::WorkflowConfig;
use si_router::workflow::{self, Progress, RunReport};

use crate::Gateway;
use crate::body::Reply;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::events::EventBody;
use crate::handlers::{authorize, read_limited};
use crate::response::json as json_response;
use runner::GatewayRunner;

/// `GET /v1/workflows`: every workflow, its inputs and steps, and whether the
/// caller's role may run it.
pub(crate) fn list(gateway: &Gateway, ctx: &RequestContext) -> Result<Response<Reply>, ApiError> {
    let caller = ctx.caller.as_ref();
    let data: Vec<Value> = gateway
        .config()
        .workflows
        .iter()
        .map(|w| {
            let allowed = w
                .steps
                .iter()
                .all(|s| authorize(gateway, caller, &s.agent).is_ok());
            json!({
                "name": w.name,
                "description": w.description,
                "inputs": w.inputs,
                "allowed": allowed,
                "timeout_ms": w.timeout.as_millis() as u64,
                "steps": w.steps.iter().map(|s| json!({
                    "id": s.id, "agent": s.agent, "required": s.required,
                    "depends_on": s.depends_on,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    stream: bool,
}

/// `POST /v1/workflows/{name}/runs`.
pub(crate) async fn run(
    gateway: &Gateway,
    ctx: &RequestContext,
    request: Request<Incoming>,
    name: &str,
) -> Result<Response<Reply>, ApiError> {
    let body = read_limited(request.into_body(), gateway.config().gateway.max_body_bytes).await?;
    let Some(workflow) = gateway.config().workflow(name).cloned() else {
        let known: Vec<&str> = gateway
            .config()
            .workflows
            .iter()
            .map(|w| w.name.as_str())
            .collect();
        return Err(ApiError::UnknownWorkflow {
            name: name.chars().take(64).collect(),
            known: known.join(", "),
        });
    };
    let asked: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body must be {{\"inputs\": {{\"NAME\": \"text\", ...}}, \"stream\": false}}: {e}"
        ))
    })?;
    check_inputs(&workflow, &asked.inputs)?;
    // Every agent before anything runs: no step may reach a backend otherwise.
    for step in &workflow.steps {
        authorize(gateway, ctx.caller.as_ref(), &step.agent)?;
    }
    // The run's id is its request's: the request's own audit record, its
    // `x-request-id` and its steps' records share it.
    let runner = GatewayRunner::new(gateway, ctx, &workflow.name);
    if asked.stream {
        return Ok(stream(runner, workflow, asked.inputs));
    }
    let report = workflow::run(&workflow, &asked.inputs, &runner, |_| {}).await;
    crate::metrics::workflow_run(&report);
    Ok(json_response(StatusCode::OK, &result(&ctx.id, &report)))
}

fn check_inputs(
    workflow: &WorkflowConfig,
    inputs: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let missing: Vec<&str> = workflow
        .inputs
        .iter()
        .filter(|i| !inputs.contains_key(*i))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "workflow `{}` needs inputs: {} (missing: {})",
            workflow.name,
            workflow.inputs.join(", "),
            missing.join(", ")
        )));
    }
    if let Some(extra) = inputs.keys().find(|k| !workflow.inputs.contains(k)) {
        return Err(ApiError::BadRequest(format!(
            "workflow `{}` has no input `{}`; it takes: {}",
            workflow.name,
            extra.chars().take(64).collect::<String>(),
            workflow.inputs.join(", ")
        )));
    }
    Ok(())
}

fn result(run_id: &str, report: &RunReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or_default();
    value["run_id"] = json!(run_id);
    value
}

/// The run as server-sent events: one per step event, then `result`.
fn stream(
    runner: GatewayRunner,
    workflow: WorkflowConfig,
    inputs: BTreeMap<String, String>,
) -> Response<Reply> {
    let body = EventBody::spawn(|events| async move {
        let progress = |event: Progress| {
            let name = match &event {
                Progress::StepStarted { .. } => "step_started",
                Progress::StepFinished { .. } => "step_finished",
                Progress::StepFailed { .. } => "step_failed",
                Progress::StepSkipped { .. } => "step_skipped",
            };
            events.send(name, &event);
        };
        let report = workflow::run(&workflow, &inputs, &runner, progress).await;
        crate::metrics::workflow_run(&report);
        events.send("result", &result(runner.run_id(), &report));
    });
    let mut response = Response::new(Reply::Events(body));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    crate::response::mark_stream(headers);
    response
}
