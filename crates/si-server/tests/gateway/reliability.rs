//! Fault injection before the answer: failover, ejection, replica choice, capacity
//! and fallback, each against the real gateway with a misbehaving backend.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::raw_backend::{Behaviour, GatedStreamBackend};
use crate::support::{Harness, Options, chat_body, closed_port_url, error_parts, read_json};

pub(crate) fn edits(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(from, to)| (*from, (*to).to_owned()))
        .collect()
}

/// The harness with the backend on `port` replaced by a [`GatedStreamBackend`].
pub(crate) async fn with_gated(
    port: u16,
    behaviour: Behaviour,
    toml_edits: Vec<(&'static str, String)>,
) -> (Harness, GatedStreamBackend) {
    let gated = GatedStreamBackend::start_with(behaviour).await;
    let url_overrides = vec![(port, gated.url.clone())];
    let h = Harness::start(Options {
        toml_edits,
        url_overrides,
        ..Options::default()
    })
    .await;
    (h, gated)
}

pub(crate) fn stream_body(agent: &str) -> Bytes {
    Bytes::from(json!({"agent_type": agent, "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
}

/// The backend `name` as the backends view shows it (read in process: polling the
/// admin view over HTTP would meet the per-address rate limit).
pub(crate) async fn backend_state(h: &Harness, name: &str) -> Value {
    let backend = h
        .gateway
        .router()
        .pool()
        .all()
        .iter()
        .find(|b| b.name == name)
        .cloned()
        .unwrap();
    json!({
        "name": backend.name,
        "state": backend.state_label(),
        "in_flight": backend.in_flight(),
        "waiting": backend.waiting(),
        "slots": backend.slots(),
    })
}

/// Polls until `done` holds (at most 5 s).
pub(crate) async fn eventually<F: std::future::Future<Output = bool>>(
    mut done: impl FnMut() -> F,
) -> bool {
    for _ in 0..250 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_refused_replica_fails_over_with_no_client_error_and_leaves_the_pick() {
    let (h, mut dying) = with_gated(8080, Behaviour::PauseAfterFirstEvent, Vec::new()).await;
    let token = h.login("admin1").await;
    dying.stop().await; // 8080 now refuses connections; its last health poll said ok
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            h.post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
                .await
                .0,
        );
    }
    assert_eq!(statuses, vec![200; 10]);
    assert_eq!(h.sim(8083).chats().await.len(), 10);
    // Nothing listens there: down at once, until its /health answers again.
    assert_eq!(
        backend_state(&h, "tiny-llama-1b-8080").await["state"],
        "down"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_failing_replica_is_ejected_then_readmitted_by_a_good_probe() {
    let toml_edits = edits(&[
        ("health_interval_ms = 3600000", "health_interval_ms = 100"),
        ("eject_base_ms = 5000", "eject_base_ms = 300"),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    h.sim(8080).set_failing(true);
    // Different requests failing on it say the server is sick (one request failing
    // again and again would say that of the request).
    for i in 0..8 {
        let question = json!({"agent_type": "Chat", "messages": [{"role": "user", "content": format!("question {i}")}]});
        let (status, body) = h
            .post_json("/v1/chat/completions", Some(&token), question)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        backend_state(&h, "tiny-llama-1b-8080").await["state"],
        "ejected"
    );
    let before = h.sim(8080).chats().await.len();
    assert!(
        before <= 4,
        "an ejected backend kept getting traffic: {before}"
    );
    h.sim(8080).set_failing(false);
    assert!(
        eventually(|| async { backend_state(&h, "tiny-llama-1b-8080").await["state"] == "ok" })
            .await
    );
    for _ in 0..4 {
        h.post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
            .await;
    }
    assert!(
        h.sim(8080).chats().await.len() > before,
        "re-admitted backend got no traffic"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn the_last_backend_of_a_model_is_never_ejected_passively() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    h.sim(8081).set_failing(true);
    for _ in 0..6 {
        let (status, _) = h
            .post_json("/v1/chat/completions", Some(&token), chat_body("MedicalQA"))
            .await;
        assert_eq!(status, 502);
    }
    assert_eq!(backend_state(&h, "bimedix2-8b-8081").await["state"], "ok");
    h.sim(8081).set_failing(false);
    assert_eq!(
        h.post_json("/v1/chat/completions", Some(&token), chat_body("MedicalQA"))
            .await
            .0,
        200
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_loading_replica_gets_no_traffic() {
    let toml_edits = edits(&[("health_interval_ms = 3600000", "health_interval_ms = 100")]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    h.sim(8080).set_loading(true);
    assert!(
        eventually(|| async {
            backend_state(&h, "tiny-llama-1b-8080").await["state"] == "loading"
        })
        .await
    );
    let before = h.sim(8080).non_health_requests().await;
    for _ in 0..6 {
        assert_eq!(
            h.post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
                .await
                .0,
            200
        );
    }
    let after = h.sim(8080).non_health_requests().await;
    assert_eq!(after, before);
    h.shutdown().await;
}

#[tokio::test]
async fn another_model_answers_only_where_the_agent_names_a_fallback() {
    let fallback = (
        "description = \"Clinical documentation such as SOAP notes\"",
        "description = \"Clinical documentation such as SOAP notes\"\nfallback = \"Chat\"",
    );
    let toml_edits = edits(&[fallback]);
    let down = vec![(8082, closed_port_url()), (8085, closed_port_url())];
    let h = Harness::start(Options {
        toml_edits,
        url_overrides: down,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let response = h.chat(&token, &chat_body("Documentation")).await;
    assert_eq!(
        response.headers()["x-si-model"],
        "tiny-llama-1b",
        "the answer must say which model answered"
    );
    assert_eq!(read_json(response).await.0, 200);
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (503, "no_healthy_backend"),
        "Clinical has no fallback"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_fallback_agent_answers_only_a_caller_whose_role_may_use_it() {
    // Documentation falls back to Billing, which clinicians may not use.
    let fallback = (
        "description = \"Clinical documentation such as SOAP notes\"",
        "description = \"Clinical documentation such as SOAP notes\"\nfallback = \"Billing\"",
    );
    let h = Harness::start(Options {
        toml_edits: edits(&[fallback]),
        url_overrides: vec![(8082, closed_port_url())],
        ..Options::default()
    })
    .await;
    let clinician = h.login("doctor1").await;
    let (status, body) = h
        .post_json(
            "/v1/chat/completions",
            Some(&clinician),
            chat_body("Documentation"),
        )
        .await;
    let (_, code, message) = error_parts(&body);
    assert_eq!((status, code.as_str()), (403, "agent_forbidden"));
    assert!(message.contains("Billing"), "{message}");
    for port in [8080, 8083] {
        assert!(
            h.sim(port).chats().await.is_empty(),
            "the fallback's model was asked anyway"
        );
    }
    let admin = h.login("admin1").await;
    let response = h.chat(&admin, &chat_body("Documentation")).await;
    assert_eq!(response.headers()["x-si-model"], "tiny-llama-1b");
    assert_eq!(read_json(response).await.0, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn the_least_busy_replica_takes_the_next_request() {
    let (h, gated) = with_gated(8080, Behaviour::PauseAfterFirstEvent, Vec::new()).await;
    let token = h.login("admin1").await;
    let held = h.stream(&token, "Chat").await;
    assert_eq!(held.headers()["x-si-backend"], "tiny-llama-1b-8080");
    for _ in 0..4 {
        assert_eq!(
            h.post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
                .await
                .0,
            200
        );
    }
    // Round robin would have sent two of them to the busy replica.
    assert_eq!(h.sim(8083).chats().await.len(), 4);
    assert_eq!(gated.signals.chats.load(Ordering::SeqCst), 1);
    gated.release();
    held.into_body().collect().await.unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn no_retry_budget_means_no_second_try_after_a_5xx() {
    let toml_edits = edits(&[
        ("retry_budget_percent = 20", "retry_budget_percent = 0"),
        ("min_concurrent_retries = 3", "min_concurrent_retries = 0"),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    h.sim(8080).set_failing(true);
    // The model's first request goes to 8080, which fails it; no budget, no failover.
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (502, "backend_failed")
    );
    assert!(h.sim(8083).chats().await.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_fails_over_without_spending_the_budget() {
    let mut dying = GatedStreamBackend::start().await;
    let toml_edits = edits(&[
        ("retry_budget_percent = 20", "retry_budget_percent = 0"),
        ("min_concurrent_retries = 3", "min_concurrent_retries = 0"),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        url_overrides: vec![(8080, dying.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    dying.stop().await;
    // The model's first request goes to 8080, which refuses: never sent, so never
    // run, so another replica takes it even with no retry budget at all.
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.sim(8083).chats().await.len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn capacity_follows_the_servers_slot_count_unless_configured() {
    let explicit = (
        "api_key = \"env::API_KEY_BIOMISTRAL_8085\"",
        "api_key = \"env::API_KEY_BIOMISTRAL_8085\"\nmax_in_flight = 7",
    );
    let h = Harness::start(Options {
        toml_edits: edits(&[explicit]),
        ..Options::default()
    })
    .await;
    // The simulated servers report two slots in /props.
    assert!(
        eventually(|| async { backend_state(&h, "bimedix2-8b-8081").await["slots"] == 2 }).await
    );
    assert_eq!(
        backend_state(&h, "biomistral-7b-8085").await["slots"],
        7,
        "configured value kept"
    );
    h.shutdown().await;
}
