use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::support::{Harness, Options, chat_body};

fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}

#[tokio::test]
async fn metrics_use_the_original_names_and_bounded_labels() {
    let edit = (
        "metrics_on_main = false",
        "metrics_on_main = true".to_owned(),
    );
    let h = Harness::start(Options {
        toml_edits: vec![edit],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    h.post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    let stream = json!({"agent_type": "Chat", "stream": true, "stream_options": {"include_usage": true},
                        "messages": [{"role": "user", "content": "hi"}]});
    let response = h
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&token),
            Bytes::from(stream.to_string()),
        )
        .await;
    response.into_body().collect().await.unwrap();
    h.get_json("/v1/no-such-path/for-user-12345", None).await;

    let response = h.request("GET", "/metrics", None, Bytes::new()).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let clinical = [
        "endpoint=\"/v1/chat/completions\"",
        "agent_type=\"Clinical\"",
    ];
    assert!(
        value(&text, "http_requests_total", &clinical).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "http_request_duration_seconds_bucket",
            &["le=\"30\"", "agent_type=\"Clinical\""]
        )
        .is_some()
    );
    assert!(
        value(
            &text,
            "http_request_duration_seconds_bucket",
            &["le=\"0.005\""]
        )
        .is_some(),
        "sub-second buckets"
    );
    assert!(value(&text, "tokens_generated_total", &[]).unwrap_or(0.0) >= 6.0);
    assert!(
        value(
            &text,
            "si_tokens_total",
            &["agent_type=\"Chat\"", "kind=\"prompt\""]
        )
        .unwrap_or(0.0)
            >= 14.0
    );
    assert!(
        value(
            &text,
            "si_time_to_first_token_seconds_count",
            &["agent_type=\"Chat\""]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(value(&text, "http_requests_inprogress", &[]).is_some());
    assert_eq!(
        value(&text, "si_backend_up", &["backend=\"biomistral-7b-8085\""]),
        Some(1.0)
    );
    assert!(
        value(
            &text,
            "si_backend_slots",
            &["backend=\"tiny-llama-1b-8080\""]
        )
        .is_some()
    );
    assert!(value(&text, "si_speed_tier_requests_total", &["tier=\"slow\""]).unwrap_or(0.0) >= 1.0);
    // Unknown paths are one label value, not one per path; no user or token anywhere.
    assert!(text.contains("endpoint=\"other\"") && !text.contains("user-12345"));
    assert!(!text.contains("admin1") && !text.contains(&token));
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_are_not_on_the_public_port_by_default_but_on_their_own_listener() {
    let h = Harness::start(Options::default()).await;
    let (status, _) = h.get_json("/metrics", None).await;
    assert_eq!(status, 404);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(si::si_server::serve_metrics(
        listener,
        h.gateway.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let request = http::Request::get(format!("http://{address}/metrics"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = crate::support::client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("si_backend_up"));
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    h.shutdown().await;
}
