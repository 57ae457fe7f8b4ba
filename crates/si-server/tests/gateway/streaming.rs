use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::raw_backend::{FIRST_EVENT, GatedStreamBackend, SECOND_EVENT};
use crate::support::{Harness, Options, StreamShape, sse_body};

fn stream_request(agent: &str, include_usage: bool) -> Bytes {
    let mut body = json!({"agent_type": agent, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    Bytes::from(body.to_string())
}

#[tokio::test]
async fn both_llama_streaming_shapes_pass_through_intact() {
    let h = Harness::start(Options {
        stream_shapes: vec![
            (8085, StreamShape::Older),
            (8082, StreamShape::MidStreamError),
        ],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let cases = [
        ("Clinical", 8085, "biomistral-7b", StreamShape::Older, false),
        ("Claims", 8084, "openinsurance-8b", StreamShape::Newer, true),
        (
            "Claims",
            8084,
            "openinsurance-8b",
            StreamShape::Newer,
            false,
        ),
        (
            "Documentation",
            8082,
            "medicine-llm-13b",
            StreamShape::MidStreamError,
            false,
        ),
    ];
    for (agent, port, alias, shape, usage) in cases {
        let request = stream_request(agent, usage);
        let response = h
            .request("POST", "/v1/chat/completions", Some(&token), request)
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let expected = sse_body(alias, port, shape, usage);
        assert_eq!(
            String::from_utf8_lossy(&body),
            expected,
            "{agent} {shape:?}"
        );
        // The simulated shapes really differ, so the equality above means something.
        assert_eq!(
            expected.ends_with("data: [DONE]\n\n"),
            shape != StreamShape::MidStreamError
        );
        assert_eq!(expected.contains(":\n\n"), shape == StreamShape::Older);
        assert_eq!(expected.contains("\"choices\":[]"), usage);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn stream_events_are_forwarded_as_they_arrive() {
    let backend = GatedStreamBackend::start().await;
    let h = Harness::start(Options {
        url_overrides: vec![(8085, backend.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let response = h
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&token),
            stream_request("Clinical", false),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();

    // The backend is holding its second event back: the first must already be here.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event was buffered instead of forwarded")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), FIRST_EVENT);

    backend.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        format!("{SECOND_EVENT}data: [DONE]\n\n")
    );
    h.shutdown().await;
}
