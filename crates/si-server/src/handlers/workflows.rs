//! `GET /v1/workflows` and `POST /v1/workflows/{name}/runs`: multi-step runs
//! across agents. Each step is a chat request through the same router as
//! `/v1/chat/completions` (replica choice, failover, capacity), audited like one
//! (metadata only, linked to the run by its id).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use si_auth::Claims;
use si_auth::audit::{AuditRecord, now_rfc3339};
use si_core::{StepConfig, WorkflowConfig};
use si_router::UpstreamBody;
use si_router::workflow::{self, Progress, RunReport, StepAnswer, StepRunner};
use tokio::sync::mpsc;

use crate::Gateway;
use crate::audit::AuditDraft;
use crate::body::{GatewayBody, json as json_response, read_limited};
use crate::error::ApiError;
use crate::handlers::{authenticate, authorize};

/// `NAME` of `/v1/workflows/NAME/runs`.
pub(crate) fn name_in_path(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/workflows/")?
        .strip_suffix("/runs")
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// The largest answer a step may give.
const MAX_STEP_ANSWER_BYTES: usize = 4 << 20;

/// `GET /v1/workflows`: every workflow, its inputs and steps, and whether the
/// caller's role may run it.
pub(crate) fn list<B>(
    gateway: &Gateway,
    request: &Request<B>,
) -> Result<Response<GatewayBody>, ApiError> {
    let caller = authenticate(gateway, request)?;
    let data: Vec<Value> = gateway
        .config()
        .workflows
        .iter()
        .map(|w| {
            let allowed = w
                .steps
                .iter()
                .all(|s| authorize(gateway, caller.as_ref(), &s.agent).is_ok());
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
    request: Request<Incoming>,
    name: &str,
) -> Result<Response<GatewayBody>, ApiError> {
    let caller = authenticate(gateway, &request)?;
    let draft = request.extensions().get::<AuditDraft>().cloned();
    let client_ip = draft
        .as_ref()
        .map(AuditDraft::client_ip)
        .unwrap_or_default();
    // The run's id is its request's: the request's own audit record, its
    // `x-request-id` and its steps' records share it.
    let run_id = draft
        .as_ref()
        .map(AuditDraft::request_id)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
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
        authorize(gateway, caller.as_ref(), &step.agent)?;
    }
    let runner = GatewayRunner {
        gateway: gateway.clone(),
        caller,
        run_id,
        path: format!("/v1/workflows/{}/runs", workflow.name),
        workflow: workflow.name.clone(),
        client_ip,
    };
    if asked.stream {
        return Ok(stream(runner, workflow, asked.inputs));
    }
    let report = workflow::run(&workflow, &asked.inputs, &runner, |_| {}).await;
    crate::metrics::workflow_run(&report);
    Ok(json_response(
        StatusCode::OK,
        &result(&runner.run_id, &report),
    ))
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
) -> Response<GatewayBody> {
    let (events, received) = mpsc::unbounded_channel::<Bytes>();
    let span = tracing::Span::current();
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let progress = |event: Progress| {
                let name = match &event {
                    Progress::StepStarted { .. } => "step_started",
                    Progress::StepFinished { .. } => "step_finished",
                    Progress::StepFailed { .. } => "step_failed",
                    Progress::StepSkipped { .. } => "step_skipped",
                };
                let data = serde_json::to_string(&event).unwrap_or_default();
                let _ = events.send(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
            };
            let report = workflow::run(&workflow, &inputs, &runner, progress).await;
            crate::metrics::workflow_run(&report);
            let data = result(&runner.run_id, &report);
            let _ = events.send(Bytes::from(format!("event: result\ndata: {data}\n\n")));
        },
        span,
    ));
    let body = EventBody {
        received,
        task: task.abort_handle(),
        keep_alive: tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
    };
    let mut response = Response::new(crate::body::events(body));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// A comment line goes out this long after the last event, so that proxies with
/// idle timeouts (nginx: 60 s) keep a run with slow steps open.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The events of a streamed run. Dropping it (the client went away) stops the run,
/// which drops its steps' backend requests.
pub(crate) struct EventBody {
    received: mpsc::UnboundedReceiver<Bytes>,
    task: tokio::task::AbortHandle,
    keep_alive: tokio::time::Interval,
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = si_router::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(event) = self.received.poll_recv(cx) {
            self.keep_alive.reset();
            return Poll::Ready(event.map(|data| Ok(Frame::data(data))));
        }
        match self.keep_alive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Runs a step as a chat request through the gateway's router.
struct GatewayRunner {
    gateway: Gateway,
    caller: Option<Claims>,
    run_id: String,
    path: String,
    workflow: String,
    client_ip: String,
}

impl GatewayRunner {
    fn record(&self, step: &StepConfig) -> AuditRecord {
        AuditRecord {
            at: now_rfc3339(),
            request_id: self.run_id.clone(),
            user: self.caller.as_ref().map(|c| c.sub.clone()),
            role: self.caller.as_ref().map(|c| c.role.to_string()),
            location: self.caller.as_ref().map(|c| c.loc.clone()),
            client_ip: self.client_ip.clone(),
            method: "POST".into(),
            path: self.path.clone(),
            agent: Some(step.agent.clone()),
            step: Some(step.id.clone()),
            ..AuditRecord::default()
        }
    }

    async fn ask(
        &self,
        step: &StepConfig,
        prompt: String,
        record: &mut AuditRecord,
    ) -> Result<StepAnswer, ApiError> {
        let router = self.gateway.router();
        let agent = router
            .agents()
            .by_name(&step.agent)
            .ok_or_else(|| ApiError::Internal(format!("agent `{}` is gone", step.agent)))?;
        record.agent = Some(agent.name.clone());
        let mut messages = Vec::new();
        if let Some(system) = &step.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let mut body = json!({"model": agent.model, "messages": messages, "stream": false});
        if let Some(max_tokens) = step.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = step.temperature {
            body["temperature"] = json!(temperature);
        }
        let upstream = router.chat(agent, Bytes::from(body.to_string())).await;
        let upstream = upstream.inspect_err(|e| {
            if let Some(backend) = e.backend() {
                record.backend = Some(backend.to_owned());
            }
        })?;
        record.model = Some(upstream.backend.model.clone());
        record.backend = Some(upstream.backend.name.clone());
        let (parts, body) = upstream.response.into_parts();
        let body = UpstreamBody::new(
            body,
            false,
            &upstream.backend.limits,
            &upstream.backend.name,
            upstream.slot,
        );
        let whole = http_body_util::Limited::new(body, MAX_STEP_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ApiError::AnswerCutShort {
                status: 502,
                message: format!("backend `{}`: {e}", upstream.backend.name),
            })?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&whole).unwrap_or_default();
        let text = answer["choices"][0]["message"]["content"].as_str();
        let Some(text) = text.filter(|_| parts.status.is_success()) else {
            return Err(ApiError::AnswerCutShort {
                status: 502,
                message: format!(
                    "backend `{}` answered {} without a message",
                    upstream.backend.name, parts.status
                ),
            });
        };
        let tokens = |key: &str| answer["usage"][key].as_u64();
        Ok(StepAnswer {
            text: text.to_owned(),
            model: upstream.backend.model.clone(),
            backend: upstream.backend.name.clone(),
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
        })
    }
}

impl StepRunner for GatewayRunner {
    async fn run(&self, step: &StepConfig, prompt: String) -> Result<StepAnswer, String> {
        let mut pending = PendingRecord {
            record: Some(self.record(step)),
            runner: self,
            step,
            started: Instant::now(),
        };
        // The record stays with the guard while the step asks its agent.
        let answer = match pending.record.as_mut() {
            Some(record) => self.ask(step, prompt, record).await,
            None => Err(ApiError::Internal("step record missing".into())),
        };
        let mut record = pending.record.take().unwrap_or_default();
        match &answer {
            Ok(answer) => {
                record.status = 200;
                record.prompt_tokens = answer.prompt_tokens;
                record.completion_tokens = answer.completion_tokens;
            }
            Err(e) => record.status = e.status().as_u16(),
        }
        let record = pending.finish(record);
        // No record, no answer, as for a chat request.
        if self.gateway.inner.audit.append(record).await.is_err() {
            return Err(ApiError::AuditUnavailable.to_string());
        }
        answer.map_err(|e| e.to_string())
    }
}

/// A step's audit record until it is written: a step dropped before it ends (its
/// time limit, the run's, or the client gone) is still recorded, as 504 past its
/// own limit and 499 otherwise, like a chat request whose client left.
struct PendingRecord<'a> {
    record: Option<AuditRecord>,
    runner: &'a GatewayRunner,
    step: &'a StepConfig,
    started: Instant,
}

impl PendingRecord<'_> {
    /// The finished record, with its latency, for the caller to write.
    fn finish(&mut self, mut record: AuditRecord) -> AuditRecord {
        record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.measure();
        record
    }

    fn measure(&self) {
        crate::metrics::workflow_step(
            &self.runner.workflow,
            &self.step.id,
            self.started.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for PendingRecord<'_> {
    fn drop(&mut self) {
        // Taken by `run` once the agent answered; still here if the step was
        // dropped while asking.
        let Some(mut record) = self.record.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        record.status = if elapsed >= self.step.timeout {
            504
        } else {
            499
        };
        record.latency_ms = elapsed.as_secs_f64() * 1000.0;
        self.measure();
        self.runner.gateway.inner.audit.append_detached(record);
    }
}
