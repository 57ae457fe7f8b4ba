//! One audit record per request and per workflow step, metadata only.
//!
//! [`PendingRecord`] is the one "record it even if nobody finishes it" rule: a
//! record dropped before it was finished (the client went away, a step was
//! stopped) is still written, with the status `error.rs` gives an abandoned
//! request. `routes::handle` finishes a request's record when the response is
//! complete; for a backend's streamed answer that is when its last byte has gone
//! out, which [`AuditedBody`] waits for.

mod body;

use std::sync::Arc;
use std::time::{Duration, Instant};

use si_audit::{AuditRecord, AuditStore, now_rfc3339};

use crate::context::{AuditNotes, RequestContext};
use crate::error;

pub(crate) use body::AuditedBody;

/// Whose record it is, for its metrics and the status it gets if abandoned.
#[derive(Debug)]
enum Owner {
    /// A request.
    Request,
    /// A workflow step, past whose limit an abandoned step counts as timed out.
    Step {
        workflow: String,
        step: String,
        limit: Duration,
    },
}

/// A record being assembled; written with an "abandoned" status if dropped
/// before [`PendingRecord::finish`].
#[derive(Debug)]
pub(crate) struct PendingRecord {
    record: Option<AuditRecord>,
    /// What its handler noted on the way.
    notes: AuditNotes,
    owner: Owner,
    started: Instant,
    log: Arc<dyn AuditStore>,
}

impl PendingRecord {
    /// The record of a request (counted in progress until it is dropped).
    pub(crate) fn request(
        ctx: &RequestContext,
        method: &str,
        path: &str,
        log: Arc<dyn AuditStore>,
    ) -> Self {
        crate::metrics::request_started();
        PendingRecord {
            record: Some(AuditRecord {
                at: now_rfc3339(),
                request_id: ctx.id.clone(),
                client_ip: ctx.client.to_string(),
                method: method.to_owned(),
                path: path.chars().take(200).collect(),
                ..AuditRecord::default()
            }),
            notes: ctx.notes.clone(),
            owner: Owner::Request,
            started: ctx.started,
            log,
        }
    }

    /// The record of a workflow step of `workflow`, which may run for `limit`.
    pub(crate) fn step(
        record: AuditRecord,
        notes: AuditNotes,
        workflow: &str,
        limit: Duration,
        log: Arc<dyn AuditStore>,
    ) -> Self {
        PendingRecord {
            notes,
            owner: Owner::Step {
                workflow: workflow.to_owned(),
                step: record.step.clone().unwrap_or_default(),
                limit,
            },
            record: Some(record),
            started: Instant::now(),
            log,
        }
    }

    /// Where the record goes.
    pub(crate) fn log(&self) -> &Arc<dyn AuditStore> {
        &self.log
    }

    /// The first byte of a streamed answer is going out.
    pub(crate) fn first_byte(&self) {
        let agent = self.notes.agent_name().unwrap_or_else(|| "none".into());
        crate::metrics::first_token(&agent, self.started.elapsed().as_secs_f64());
    }

    /// The finished record, for the caller to write: `status`, and `tokens` when
    /// the caller counted them.
    pub(crate) fn finish(mut self, status: u16, tokens: Option<(u64, u64)>) -> AuditRecord {
        self.close(status, tokens, false).unwrap_or_default()
    }

    fn close(
        &mut self,
        status: u16,
        tokens: Option<(u64, u64)>,
        abandoned: bool,
    ) -> Option<AuditRecord> {
        let mut record = self.record.take()?;
        let elapsed = self.started.elapsed();
        record.status = status;
        record.prompt_tokens = tokens.map(|t| t.0);
        record.completion_tokens = tokens.map(|t| t.1);
        record.latency_ms = elapsed.as_secs_f64() * 1000.0;
        self.notes.fill(&mut record);
        match &self.owner {
            Owner::Request => crate::metrics::request_finished(&record, abandoned),
            Owner::Step { workflow, step, .. } => {
                crate::metrics::workflow_step(workflow, step, elapsed.as_secs_f64());
            }
        }
        Some(record)
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        let past_limit = match &self.owner {
            Owner::Request => false,
            Owner::Step { limit, .. } => self.started.elapsed() >= *limit,
        };
        let status = error::abandoned_status(past_limit);
        if let Some(record) = self.close(status, None, true) {
            self.log.append_detached(record);
        }
        if let Owner::Request = self.owner {
            crate::metrics::request_gone();
        }
    }
}
