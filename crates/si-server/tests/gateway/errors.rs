use bytes::Bytes;
use serde_json::json;

use crate::raw_backend::GatedStreamBackend;
use crate::support::{Harness, Options, chat_body, closed_port_url, error_parts, read_json};

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let send = |body: &'static str| {
        h.request(
            "POST",
            "/v1/chat/completions",
            Some(&token),
            Bytes::from(body),
        )
    };

    let (status, body) = read_json(send(r#"{"agent_type":"Chat","messages":[}"#).await).await;
    assert_eq!(status, 400);
    let (kind, code, message) = error_parts(&body);
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("invalid_request_error", "invalid_request")
    );
    assert!(
        message.contains("not valid JSON") && message.contains("line 1 column 34"),
        "{message}"
    );

    let (status, body) = read_json(
        send(r#"{"agent_type":"Radiology","messages":[{"role":"user","content":"x"}]}"#).await,
    )
    .await;
    assert_eq!(status, 400);
    let (_, code, message) = error_parts(&body);
    assert_eq!(code, "unknown_agent");
    for valid in [
        "Radiology",
        "Chat",
        "MedicalQA",
        "Documentation",
        "Billing",
        "Claims",
        "Clinical",
    ] {
        assert!(message.contains(valid), "{message} lacks {valid}");
    }

    let (status, body) =
        read_json(send(r#"{"messages":[{"role":"user","content":"x"}]}"#).await).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (400, "missing_agent")
    );

    let (status, body) = read_json(send(r#"{"agent_type":"Chat","messages":[]}"#).await).await;
    assert_eq!(status, 400);
    assert!(error_parts(&body).2.contains("non-empty array"));
    h.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let h = Harness::start(Options {
        toml_edits: vec![("max_body_bytes = 4194304", "max_body_bytes = 1024".into())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let big =
        json!({"agent_type": "Chat", "messages": [{"role": "user", "content": "x".repeat(2000)}]});
    let (status, body) = h.post_json("/v1/chat/completions", Some(&token), big).await;
    assert_eq!(status, 413);
    assert!(error_parts(&body).2.contains("1024 bytes"));
    assert!(h.sim(8080).chats().await.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let h = Harness::start(Options::default()).await;
    let (status, body) = h.get_json("/v1/embeddings", None).await;
    assert_eq!(
        (status, error_parts(&body).0.as_str()),
        (404, "not_found_error")
    );
    let response = h
        .request("GET", "/v1/chat/completions", None, Bytes::new())
        .await;
    assert_eq!(response.headers()["allow"], "POST");
    let (status, body) = read_json(response).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (405, "method_not_allowed")
    );
    let (status, _) = h.post_json("/healthz", None, json!({})).await;
    assert_eq!(status, 405);
    h.shutdown().await;
}

#[tokio::test]
async fn a_backend_rejecting_our_key_is_a_502_that_names_the_variable_not_the_key() {
    let h = Harness::start(Options {
        wrong_key_ports: vec![8084],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Claims"))
        .await;
    assert_eq!(status, 502);
    let (kind, code, message) = error_parts(&body);
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("upstream_error", "backend_key_rejected")
    );
    assert!(message.contains("API_KEY_OPENINSURANCE_8084"), "{message}");
    assert!(
        !message.contains("wrong-key") && !message.contains(&h.sim(8084).key),
        "{message}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_loading_backend_is_a_503_with_retry_after() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    // Loading after the health poll said ok: the chat itself gets llama's 503.
    h.sim(8081).set_loading(true);
    let response = h.chat(&token, &chat_body("MedicalQA")).await;
    assert_eq!(response.headers()["retry-after"], "5");
    let (status, body) = read_json(response).await;
    assert_eq!(status, 503);
    let (_, code, message) = error_parts(&body);
    assert_eq!(code, "backend_unavailable");
    assert!(message.contains("Loading model"), "{message}");
    h.shutdown().await;
}

#[tokio::test]
async fn backends_known_down_or_loading_are_not_tried() {
    let h = Harness::start(Options {
        url_overrides: vec![(8082, closed_port_url())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json(
            "/v1/chat/completions",
            Some(&token),
            chat_body("Documentation"),
        )
        .await;
    assert_eq!(status, 503);
    let (_, code, message) = error_parts(&body);
    assert_eq!(code, "no_healthy_backend");
    assert!(message.contains("medicine-llm-13b-8082: down"), "{message}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_went_away_is_a_502() {
    let mut backend = GatedStreamBackend::start().await;
    let h = Harness::start(Options {
        url_overrides: vec![(8085, backend.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    backend.stop().await;

    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    assert_eq!(status, 502, "{body}");
    let (_, code, message) = error_parts(&body);
    assert_eq!(code, "backend_unreachable");
    assert!(
        message.contains("biomistral-7b-8085") && message.contains("refused"),
        "{message}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_request_the_backend_refuses_keeps_its_status_and_message() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    let long =
        json!({"agent_type": "Chat", "messages": [{"role": "user", "content": "x".repeat(1500)}]});
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), long)
        .await;
    assert_eq!(status, 400);
    let (kind, code, message) = error_parts(&body);
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("exceed_context_size_error", "backend_rejected_request")
    );
    assert!(
        message.contains("exceeds the available context size"),
        "{message}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_takes_too_long_is_a_504() {
    let h = Harness::start(Options {
        toml_edits: vec![(
            "headers_timeout_ms = 300000",
            "headers_timeout_ms = 200".into(),
        )],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let slow = json!({"agent_type": "Clinical", "messages": [{"role": "user", "content": "think slowly"}]});
    // The backend would answer after 60 s: a 504 (not a 200) proves the timeout cut in.
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), slow)
        .await;
    assert_eq!(status, 504, "{body}");
    let (_, code, message) = error_parts(&body);
    assert_eq!(code, "backend_timeout");
    assert!(
        message.contains("biomistral-7b-8085") && message.contains("0.2 s"),
        "{message}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_backend_wanting_a_key_we_do_not_have_says_which_variable_to_set() {
    let h = Harness::start(Options {
        no_key_ports: vec![8081],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("MedicalQA"))
        .await;
    assert_eq!(status, 502);
    let message = error_parts(&body).2;
    assert!(
        message.contains("the gateway has none") && message.contains("API_KEY_BIMEDIX2_8081"),
        "{message}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_backend_500_is_a_502_unless_it_names_the_request() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("admin1").await;
    // llama-server's parser failures are 500s about the request: the caller's.
    let unparsable =
        json!({"agent_type": "Claims", "messages": [{"role": "user", "content": "fail: x"}]});
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), unparsable)
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (400, "backend_rejected_request"),
        "{body}"
    );
    h.sim(8084).set_failing(true);
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Claims"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (502, "backend_failed")
    );
    h.shutdown().await;
}
