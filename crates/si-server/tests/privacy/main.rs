//! Patient text and secrets never reach the log or `Debug` output.
//!
//! Its own test binary: the log capture is the process-wide subscriber, which is
//! reliable where a per-thread one races tracing's callsite caching.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use si_test_support::{harness as support, raw_backend};

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::support::{Harness, Options, TEST_PASSWORD};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const PROMPT: &str = "Jane Doe, MRN 12345, HbA1c 9.1";

/// Everything every test in this binary logs, at every level.
fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}

#[tokio::test]
async fn logs_hold_metadata_only() {
    let capture = captured();

    let h = Harness::start(Options {
        toml_edits: vec![(
            "trusted_proxies = []",
            "trusted_proxies = [\"127.0.0.1\"]".to_owned(),
        )],
        ..Options::default()
    })
    .await;
    let token = h.login("doctor1").await;
    let ask = |content: String, stream: bool| json!({"agent_type": "Clinical", "stream": stream, "messages": [{"role": "user", "content": content}]});
    let (status, answer) = h
        .post_json(
            "/v1/chat/completions",
            Some(&token),
            ask(PROMPT.into(), false),
        )
        .await;
    assert_eq!(status, 200);
    let streamed = h
        .request(
            "POST",
            "/v1/chat/completions",
            Some(&token),
            Bytes::from(ask(PROMPT.into(), true).to_string()),
        )
        .await;
    let _ = streamed.into_body().collect().await.unwrap();
    let (status, _) = h
        .post_json(
            "/v1/chat/completions",
            Some(&token),
            ask(format!("fail: {PROMPT}"), false),
        )
        .await;
    assert_eq!(status, 400, "the backend blamed the request");
    let (status, _) = h
        .post_json(
            "/v1/chat/completions",
            Some(&token),
            ask(format!("crash: the patient requires {PROMPT}"), false),
        )
        .await;
    assert_eq!(status, 502, "the backend failed");
    // A workflow puts patient text into several prompts and answers.
    let inputs = json!({"inputs": {"diagnosis": PROMPT, "patient_context": PROMPT}});
    let (status, run) = h
        .post_json("/v1/workflows/patient_education/runs", Some(&token), inputs)
        .await;
    assert_eq!(status, 200, "{run}");

    // A request id from the proxy in front is kept, returned and on its log lines.
    let traced = http::Request::get(format!("{}/v1/models", h.base))
        .header("authorization", format!("Bearer {token}"))
        .header("x-request-id", "trace-abc-123")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let traced = support::client().request(traced).await.unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-abc-123");

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("trace-abc-123") && l.contains("request")),
        "{log}"
    );
    assert!(
        log.contains("login") && log.contains("request failed"),
        "nothing was captured: {log}"
    );
    let answer_text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret =
        std::fs::read_to_string(h.gateway.config().gateway.data_dir.join("jwt_secret")).unwrap();
    let mut forbidden = vec![
        PROMPT.to_owned(),
        "MRN".into(),
        answer_text,
        TEST_PASSWORD.into(),
        token.clone(),
        secret.trim().to_owned(),
    ];
    forbidden.extend(h.sims.iter().map(|s| s.key.clone()));
    for text in forbidden {
        assert!(!log.contains(&text), "the log contains `{text}`");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn lines_logged_while_an_answer_streams_carry_its_request_id() {
    let capture = captured();
    let gated = raw_backend::GatedStreamBackend::start().await;
    let h = Harness::start(Options {
        toml_edits: vec![
            (
                "trusted_proxies = []",
                "trusted_proxies = [\"127.0.0.1\"]".to_owned(),
            ),
            (
                "idle_timeout_ms = 60000",
                "idle_timeout_ms = 300".to_owned(),
            ),
        ],
        url_overrides: vec![(8085, gated.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let ask = json!({"agent_type": "Clinical", "stream": true, "messages": [{"role": "user", "content": PROMPT}]});
    let request = http::Request::post(format!("{}/v1/chat/completions", h.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("x-request-id", "stall-xyz-789")
        .body(http_body_util::Full::new(Bytes::from(ask.to_string())))
        .unwrap();
    let response = support::client().request(request).await.unwrap();
    // The backend sends one event, then stalls past the idle limit: the gateway
    // logs why it ended the answer, long after the handler returned.
    let _ = response.into_body().collect().await.unwrap();
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("exceeded the idle limit"))
        .unwrap_or_else(|| panic!("no timeout line: {log}"));
    assert!(line.contains("stall-xyz-789"), "{line}");
    h.shutdown().await;
}

#[tokio::test]
async fn debug_output_redacts_secrets() {
    let env = vec![(
        "JWT_SECRET",
        "a-jwt-secret-that-is-long-enough-0123456789".to_owned(),
    )];
    let h = Harness::start(Options {
        env,
        ..Options::default()
    })
    .await;
    let shown = format!("{:?}", h.gateway);
    assert!(shown.contains("REDACTED"), "{shown}");
    assert!(
        !shown.contains("a-jwt-secret-that-is-long-enough"),
        "JWT secret in Debug output"
    );
    for sim in &h.sims {
        assert!(!shown.contains(&sim.key), "API key in Debug output");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_request_id_from_an_untrusted_client_is_replaced() {
    let h = Harness::start(Options::default()).await;
    let request = http::Request::get(format!("{}/healthz", h.base))
        .header("x-request-id", "chosen-by-the-client")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = support::client().request(request).await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "chosen-by-the-client");
    assert_eq!(id.len(), 16);
    h.shutdown().await;
}
