//! [`GatewayRunner`]: a workflow step as a chat request through the router, with
//! the chat path's routing, failover and fallback, audited like one (metadata
//! only, under the run's id, with the step's name).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};
use si_audit::{AuditRecord, now_rfc3339};
use si_auth::Claims;
use si_core::{AgentConfig, StepConfig};
use si_router::workflow::{StepAnswer, StepRunner};

use crate::Gateway;
use crate::audit::PendingRecord;
use crate::context::{AuditNotes, RequestContext};
use crate::error::ApiError;
use crate::handlers::may_use_agent;

/// The largest answer a step may give.
const MAX_STEP_ANSWER_BYTES: usize = 4 << 20;

/// Runs a workflow's steps for one run.
pub(super) struct GatewayRunner {
    gateway: Gateway,
    caller: Option<Claims>,
    run_id: String,
    workflow: String,
    client_ip: String,
}

impl GatewayRunner {
    /// A runner for a run of `workflow`, requested in `ctx`.
    pub(super) fn new(gateway: &Gateway, ctx: &RequestContext, workflow: &str) -> Self {
        GatewayRunner {
            gateway: gateway.clone(),
            caller: ctx.caller.clone(),
            run_id: ctx.id.clone(),
            workflow: workflow.to_owned(),
            client_ip: ctx.client.to_string(),
        }
    }

    /// The run's id.
    pub(super) fn run_id(&self) -> &str {
        &self.run_id
    }

    fn record(&self, step: &StepConfig) -> AuditRecord {
        AuditRecord {
            at: now_rfc3339(),
            request_id: self.run_id.clone(),
            user: self.caller.as_ref().map(|c| c.sub.clone()),
            role: self.caller.as_ref().map(|c| c.role.to_string()),
            location: self.caller.as_ref().map(|c| c.loc.clone()),
            client_ip: self.client_ip.clone(),
            method: "POST".into(),
            path: crate::endpoints::workflow_runs_path(&self.workflow),
            agent: Some(step.agent.clone()),
            step: Some(step.id.clone()),
            ..AuditRecord::default()
        }
    }

    async fn ask(
        &self,
        step: &StepConfig,
        prompt: String,
        notes: &AuditNotes,
    ) -> Result<StepAnswer, ApiError> {
        let router = self.gateway.router();
        let agent = router
            .agents()
            .by_name(&step.agent)
            .ok_or_else(|| ApiError::Internal(format!("agent `{}` is gone", step.agent)))?;
        notes.agent(&agent.name);
        let may_use = may_use_agent(&self.gateway, self.caller.as_ref());
        let mut answer = router
            .answer(agent, request_body(agent, step, prompt), may_use)
            .await
            .inspect_err(|e| {
                if let Some(backend) = e.backend() {
                    notes.answered_by(&agent.model, backend);
                }
            })?;
        let (model, backend) = (answer.backend.model.clone(), answer.backend.name.clone());
        notes.answered_by(&model, &backend);
        let whole = answer.read_whole(MAX_STEP_ANSWER_BYTES).await?;
        let reply: Value = serde_json::from_slice(&whole).unwrap_or_default();
        let text = reply["choices"][0]["message"]["content"].as_str();
        let Some(text) = text.filter(|_| answer.status.is_success()) else {
            return Err(ApiError::NoMessage {
                backend,
                status: answer.status.as_u16(),
            });
        };
        let tokens = |key: &str| reply["usage"][key].as_u64();
        Ok(StepAnswer {
            text: text.to_owned(),
            model,
            backend,
            prompt_tokens: tokens("prompt_tokens"),
            completion_tokens: tokens("completion_tokens"),
        })
    }
}

/// The chat request of a step: its system text, its prompt, and its settings.
fn request_body(agent: &AgentConfig, step: &StepConfig, prompt: String) -> Bytes {
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
    Bytes::from(body.to_string())
}

impl StepRunner for GatewayRunner {
    async fn run(&self, step: &StepConfig, prompt: String) -> Result<StepAnswer, String> {
        let log = self.gateway.inner.audit.clone();
        let notes = AuditNotes::default();
        // Written even if the step is dropped while it asks (its time limit, the
        // run's, or the client gone).
        let pending = PendingRecord::step(
            self.record(step),
            notes.clone(),
            &self.workflow,
            step.timeout,
            log.clone(),
        );
        let answer = self.ask(step, prompt, &notes).await;
        let (status, tokens) = match &answer {
            Ok(a) => (
                StatusCode::OK.as_u16(),
                a.prompt_tokens.zip(a.completion_tokens),
            ),
            Err(e) => (e.status().as_u16(), None),
        };
        // No record, no answer, as for a chat request.
        if log.append(pending.finish(status, tokens)).await.is_err() {
            return Err(ApiError::AuditUnavailable.to_string());
        }
        answer.map_err(|e| e.to_string())
    }
}
