//! Prometheus metrics, under the original deployment's names where it had them
//! (`http_requests_total`, `http_request_duration_seconds`, `tokens_generated_total`,
//! `http_requests_inprogress`) so existing dashboards keep working.
//!
//! Labels are bounded sets only (endpoint, agent, model, backend, status, tier,
//! scope): never a user, a location id from a request, or free text. Request metrics
//! come from the same finished record as the audit trail, so the two cannot
//! disagree.

pub(crate) mod store;

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use si_audit::AuditRecord;
use si_router::BackendPool;

const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds";
const IN_PROGRESS: &str = "http_requests_inprogress";
const TOKENS_GENERATED: &str = "tokens_generated_total";
const TOKENS: &str = "si_tokens_total";
const ERRORS: &str = "si_errors_total";
const CANCELLED: &str = "si_cancelled_requests_total";
const TIME_TO_FIRST_TOKEN: &str = "si_time_to_first_token_seconds";
const TIER: &str = "si_speed_tier_requests_total";
const RATE_LIMITED: &str = "si_rate_limited_total";
const CONNECTIONS_OPEN: &str = "si_connections_open";
const CONNECTIONS_REFUSED: &str = "si_connections_refused_total";
const LOGIN_FAILURES: &str = "si_login_failures_total";
const LOGIN_DISTRIBUTED: &str = "si_login_distributed_guessing_total";
const BACKEND_UP: &str = "si_backend_up";
const BACKEND_IN_FLIGHT: &str = "si_backend_in_flight";
const BACKEND_WAITING: &str = "si_backend_queue_depth";
const BACKEND_SLOTS: &str = "si_backend_slots";
const GPU_MEMORY_TOTAL: &str = "si_gpu_memory_total_bytes";
const GPU_MEMORY_USED: &str = "si_gpu_memory_used_bytes";
const GPU_UTILIZATION: &str = "si_gpu_utilization_ratio";
const GPU_TEMPERATURE: &str = "si_gpu_temperature_celsius";
const GPU_INFO: &str = "si_gpu_info";
const WORKFLOW_EFFICIENCY: &str = "si_workflow_efficiency_ratio";
const WORKFLOW_RUNS: &str = "si_workflow_runs_total";
const WORKFLOW_STEP_DURATION: &str = "si_workflow_step_duration_seconds";

/// Request latencies in seconds: sub-second steps for the fast tier, and the
/// original's 1, 5 and 30 s for the slow one.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. `None` when the
/// embedding program installed another `metrics` recorder first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.into()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                })
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Histogram samples wait in a buffer until folded into their buckets, which a
/// scrape also does: without this, a gateway nobody scrapes would grow by every
/// request's samples.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start metrics upkeep; memory grows until /metrics is scraped");
    }
}

fn describe() {
    describe_counter!(REQUESTS, "Requests answered, by method, endpoint and agent");
    describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Request duration, to the last byte"
    );
    describe_gauge!(IN_PROGRESS, "Requests being answered now");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now, by listener");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused on arrival, by listener and reason (listener_full, address_full)"
    );
    describe_counter!(TOKENS_GENERATED, "Completion tokens generated");
    describe_counter!(
        TOKENS,
        "Tokens by agent, model and kind (prompt or completion)"
    );
    describe_counter!(
        ERRORS,
        "Answers with status 400 or above, by agent and status"
    );
    describe_counter!(
        CANCELLED,
        "Requests whose client went away before the answer ended"
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Time to the first streamed byte"
    );
    describe_counter!(TIER, "Chat requests by the agent's speed tier");
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit or login lockout, by scope"
    );
    describe_counter!(
        LOGIN_FAILURES,
        "Logins refused for a wrong password, unknown user or disabled user"
    );
    describe_counter!(
        LOGIN_DISTRIBUTED,
        "Times one username's failed logins came from several addresses within 15 minutes"
    );
    // Present from the start, so the first increase is seen by `increase()` and
    // alerts on these counters can fire on the first event.
    counter!(LOGIN_FAILURES).absolute(0);
    counter!(LOGIN_DISTRIBUTED).absolute(0);
    describe_gauge!(BACKEND_UP, "1 if the backend takes traffic, else 0");
    describe_gauge!(BACKEND_IN_FLIGHT, "Requests the backend is answering");
    describe_gauge!(
        BACKEND_WAITING,
        "Requests waiting for one of the backend's slots"
    );
    describe_gauge!(BACKEND_SLOTS, "Slots the gateway uses on the backend");
    describe_gauge!(
        GPU_MEMORY_TOTAL,
        metrics::Unit::Bytes,
        "GPU memory, by GPU index"
    );
    describe_gauge!(
        GPU_MEMORY_USED,
        metrics::Unit::Bytes,
        "GPU memory in use (live readings only), by GPU index"
    );
    describe_gauge!(
        GPU_UTILIZATION,
        "Share of the last sample period a kernel ran on the GPU, 0 to 1"
    );
    describe_gauge!(GPU_TEMPERATURE, "GPU core temperature, degrees Celsius");
    describe_gauge!(
        GPU_INFO,
        "1 per GPU, labelled with its name and where readings come from"
    );
    describe_gauge!(
        WORKFLOW_EFFICIENCY,
        "Last workflow run's summed step time over its wall time, by workflow"
    );
    describe_counter!(WORKFLOW_RUNS, "Workflow runs, by workflow and outcome");
    describe_histogram!(
        WORKFLOW_STEP_DURATION,
        metrics::Unit::Seconds,
        "Workflow step durations, by workflow and step"
    );
    si_router::metrics::describe();
    store::describe();
    si_store::redis::describe_metrics();
}

/// The method label: a standard method, or `other` (clients may invent methods).
fn method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// A request began.
pub(crate) fn request_started() {
    gauge!(IN_PROGRESS).increment(1.0);
}

/// A request no longer in progress (finished, or abandoned before it could be).
pub(crate) fn request_gone() {
    gauge!(IN_PROGRESS).decrement(1.0);
}

/// A request ended, as its audit record says; `abandoned` when its client went
/// away first.
pub(crate) fn request_finished(record: &AuditRecord, abandoned: bool) {
    let agent = record.agent.clone().unwrap_or_else(|| "none".into());
    let endpoint = crate::endpoints::label_of(&record.path);
    counter!(REQUESTS, "method" => method(&record.method), "endpoint" => endpoint, "agent_type" => agent.clone())
        .increment(1);
    histogram!(DURATION, "endpoint" => endpoint, "agent_type" => agent.clone())
        .record(record.latency_ms / 1000.0);
    let model = record.model.clone().unwrap_or_else(|| "none".into());
    if let Some(completion) = record.completion_tokens {
        counter!(TOKENS_GENERATED).increment(completion);
        counter!(TOKENS, "agent_type" => agent.clone(), "model" => model.clone(), "kind" => "completion")
            .increment(completion);
    }
    if let Some(prompt) = record.prompt_tokens {
        counter!(TOKENS, "agent_type" => agent.clone(), "model" => model, "kind" => "prompt")
            .increment(prompt);
    }
    if abandoned {
        counter!(CANCELLED, "agent_type" => agent.clone()).increment(1);
    }
    if record.status >= 400 {
        counter!(ERRORS, "agent_type" => agent, "status" => record.status.to_string()).increment(1);
    }
}

/// The first byte of a streamed answer went out.
pub(crate) fn first_token(agent: &str, seconds: f64) {
    histogram!(TIME_TO_FIRST_TOKEN, "agent_type" => agent.to_owned()).record(seconds);
}

/// A chat for an agent of `tier`.
pub(crate) fn tier(tier: &'static str) {
    counter!(TIER, "tier" => tier).increment(1);
}

/// A request refused by a limit of `scope`.
pub(crate) fn rate_limited(scope: &'static str) {
    counter!(RATE_LIMITED, "scope" => scope).increment(1);
}

/// `open` connections on `listener` now.
pub(crate) fn connections_open(listener: &'static str, open: usize) {
    gauge!(CONNECTIONS_OPEN, "listener" => listener).set(open as f64);
}

/// A connection to `listener` was refused for `reason`.
pub(crate) fn connection_refused(listener: &'static str, reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "listener" => listener, "reason" => reason).increment(1);
}

/// A login failed its password check; `distributed` when its username has now
/// failed from several addresses.
pub(crate) fn login_failed(distributed: bool) {
    counter!(LOGIN_FAILURES).increment(1);
    if distributed {
        counter!(LOGIN_DISTRIBUTED).increment(1);
    }
}

/// The current state of every backend, set just before a scrape.
pub(crate) fn backend_gauges(pool: &BackendPool) {
    for backend in pool.all() {
        let labels = [
            ("backend", backend.name.clone()),
            ("model", backend.model.clone()),
        ];
        gauge!(BACKEND_UP, &labels).set(if backend.is_routable() { 1.0 } else { 0.0 });
        gauge!(BACKEND_IN_FLIGHT, &labels).set(backend.in_flight() as f64);
        gauge!(BACKEND_WAITING, &labels).set(backend.waiting() as f64);
        gauge!(BACKEND_SLOTS, &labels).set(backend.slots() as f64);
    }
}

/// One sample of every GPU, from an inventory whose readings come from `source`.
pub(crate) fn gpu_gauges(readings: &[si_gpu::GpuReading], source: &'static str) {
    for gpu in readings {
        let index = gpu.index.to_string();
        let labels = [("gpu", index.clone())];
        gauge!(GPU_INFO, "gpu" => index, "name" => gpu.name.clone(), "source" => source).set(1.0);
        gauge!(GPU_MEMORY_TOTAL, &labels).set(gpu.memory_total_bytes as f64);
        if let Some(used) = gpu.memory_used_bytes {
            gauge!(GPU_MEMORY_USED, &labels).set(used as f64);
        }
        if let Some(utilization) = gpu.utilization {
            gauge!(GPU_UTILIZATION, &labels).set(utilization);
        }
        if let Some(celsius) = gpu.temperature_celsius {
            gauge!(GPU_TEMPERATURE, &labels).set(f64::from(celsius));
        }
    }
}

/// A workflow run ended. Workflow and step names come from the configuration.
pub(crate) fn workflow_run(report: &si_router::workflow::RunReport) {
    let status = match report.status {
        si_router::workflow::RunStatus::Succeeded => "succeeded",
        si_router::workflow::RunStatus::Failed => "failed",
        si_router::workflow::RunStatus::TimedOut => "timed_out",
    };
    counter!(WORKFLOW_RUNS, "workflow" => report.workflow.clone(), "status" => status).increment(1);
    gauge!(WORKFLOW_EFFICIENCY, "workflow" => report.workflow.clone()).set(report.efficiency);
}

/// A workflow step ended after `seconds`.
pub(crate) fn workflow_step(workflow: &str, step: &str, seconds: f64) {
    histogram!(WORKFLOW_STEP_DURATION, "workflow" => workflow.to_owned(), "step" => step.to_owned())
        .record(seconds);
}

/// The exposition text, or `None` without a recorder.
pub(crate) fn render(pool: &BackendPool) -> Option<String> {
    let handle = handle()?;
    backend_gauges(pool);
    handle.run_upkeep();
    Some(handle.render())
}
