//! Requests that make a healthy model server fail, and a replica that dies under
//! load: neither may cost other users their answers.

use serde_json::{Value, json};

use crate::raw_backend::GatedStreamBackend;
use crate::reliability::{backend_state, edits};
use crate::support::{Harness, Options, chat_body, error_parts};

fn with_image(agent: &str) -> Value {
    json!({"agent_type": agent, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what does this X-ray show?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]}]})
}

async fn chats_on_tiny_llama(h: &Harness) -> usize {
    h.sim(8080).chats().await.len() + h.sim(8083).chats().await.len()
}

#[tokio::test]
async fn images_for_a_model_without_vision_are_refused_before_any_backend() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), with_image("Chat"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (400, "images_not_accepted"),
        "{body}"
    );
    assert!(error_parts(&body).2.contains("tiny-llama-1b"), "{body}");
    assert_eq!(chats_on_tiny_llama(&h).await, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn a_request_the_server_cannot_take_is_the_callers_and_ejects_nothing() {
    // Configured as vision servers, but (like a server started without its
    // projector) they answer image parts with llama-server's 500.
    let toml_edits = edits(&[
        (
            "api_key = \"env::API_KEY_TINY_LLAMA_1B_8080\"",
            "api_key = \"env::API_KEY_TINY_LLAMA_1B_8080\"\nvision = true",
        ),
        (
            "api_key = \"env::API_KEY_TINY_LLAMA_1B_8083\"",
            "api_key = \"env::API_KEY_TINY_LLAMA_1B_8083\"\nvision = true",
        ),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    for _ in 0..6 {
        let (status, body) = h
            .post_json("/v1/chat/completions", Some(&token), with_image("Chat"))
            .await;
        assert_eq!(
            (status, error_parts(&body).1.as_str()),
            (400, "backend_rejected_request"),
            "{body}"
        );
        assert!(
            error_parts(&body)
                .2
                .contains("image input is not supported")
        );
    }
    assert_eq!(
        chats_on_tiny_llama(&h).await,
        6,
        "retried on another replica"
    );
    for name in ["tiny-llama-1b-8080", "tiny-llama-1b-8083"] {
        assert_eq!(backend_state(&h, name).await["state"], "ok", "{name}");
    }
    let (status, _) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
        .await;
    assert_eq!(status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn one_request_failing_again_and_again_does_not_eject_a_healthy_replica() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    h.sim(8080).set_failing(true);
    for _ in 0..8 {
        let (status, body) = h
            .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(h.sim(8080).chats().await.len() >= 3);
    // Its /health is fine and only one request ever failed there.
    assert_eq!(backend_state(&h, "tiny-llama-1b-8080").await["state"], "ok");
    h.shutdown().await;
}

#[tokio::test]
async fn a_replica_killed_under_200_concurrent_requests_loses_none() {
    let mut killed = GatedStreamBackend::start().await;
    let toml_edits = edits(&[
        ("per_ip_per_minute = 100", "per_ip_per_minute = 0"),
        ("queue_depth = 32", "queue_depth = 512"),
        ("# max_in_flight = 4", "max_in_flight = 64"),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        url_overrides: vec![(8080, killed.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    // Answers take a while, as real ones do, so retries overlap.
    h.sim(8083).set_delay(std::time::Duration::from_millis(300));
    killed.stop().await; // its last health poll said ok
    let mut requests = tokio::task::JoinSet::new();
    let url = format!("{}/v1/chat/completions", h.base);
    for i in 0..200 {
        let (url, token) = (url.clone(), token.clone());
        requests.spawn(async move {
            let body = json!({"agent_type": "Chat", "messages": [{"role": "user", "content": format!("q{i}")}]});
            let request = http::Request::post(url)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap();
            let response = crate::support::client().request(request).await.unwrap();
            crate::support::read_json(response).await
        });
    }
    let mut failures = Vec::new();
    while let Some(answered) = requests.join_next().await {
        let (status, body) = answered.unwrap();
        if status != 200 {
            failures.push((status, body));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(h.sim(8083).chats().await.len(), 200);
    h.shutdown().await;
}
