use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{Value, json};
use si_audit::{AuditRecord, VerifyReport};

use crate::raw_backend::GatedStreamBackend;
use crate::support::{Harness, Options, TEST_PASSWORD, chat_body};

const PROMPT: &str = "Patient Jane Roe, DOB 1961-02-03, chest pain";

/// Every record of `h`'s audit trail, as `si-cli audit export` reads them.
pub(crate) async fn export(h: &Harness) -> String {
    let store = si_store::audit_reader(h.gateway.config()).await.unwrap();
    let mut out = Vec::new();
    si_audit::export(store.as_ref(), None, None, &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

pub(crate) async fn records(h: &Harness) -> Vec<AuditRecord> {
    export(h)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn every_request_leaves_one_metadata_only_record() {
    let h = Harness::start(Options::default()).await;
    let token = h.login("doctor1").await;
    let ask = json!({"agent_type": "Clinical", "messages": [{"role": "user", "content": PROMPT}]});
    let response = h.chat(&token, &ask).await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    let mut stream = ask.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let streamed = h.chat(&token, &stream).await;
    streamed.into_body().collect().await.unwrap();
    h.post_json("/v1/chat/completions", Some(&token), chat_body("Billing"))
        .await; // 403
    h.post_json("/v1/chat/completions", None, chat_body("Chat"))
        .await; // 401
    h.get_json("/healthz", None).await; // not audited

    // Each response was complete only once its record was committed.
    let log = records(&h).await;
    let summary: Vec<(u64, &str, u16)> = log
        .iter()
        .map(|r| (r.seq, r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "/v1/auth/login", 200),
            (2, "/v1/chat/completions", 200),
            (3, "/v1/chat/completions", 200),
            (4, "/v1/chat/completions", 403),
            (5, "/v1/chat/completions", 401)
        ]
    );
    assert_eq!(log[0].user.as_deref(), Some("doctor1"));
    let chat = &log[1];
    assert_eq!(chat.request_id, request_id);
    assert_eq!(
        (
            chat.user.as_deref(),
            chat.role.as_deref(),
            chat.location.as_deref()
        ),
        (Some("doctor1"), Some("clinician"), Some("hospital-01"))
    );
    assert_eq!(
        (
            chat.agent.as_deref(),
            chat.model.as_deref(),
            chat.backend.as_deref()
        ),
        (
            Some("Clinical"),
            Some("biomistral-7b"),
            Some("biomistral-7b-8085")
        )
    );
    assert_eq!(
        (chat.prompt_tokens, chat.completion_tokens),
        (Some(14), Some(3))
    );
    assert_eq!(chat.client_ip, "127.0.0.1");
    assert!(chat.latency_ms > 0.0);
    assert_eq!(
        (log[2].prompt_tokens, log[2].completion_tokens),
        (Some(14), Some(3)),
        "streamed usage"
    );
    assert_eq!(
        (log[3].agent.as_deref(), log[3].user.as_deref()),
        (Some("Billing"), Some("doctor1"))
    );
    assert_eq!(log[4].user, None);

    // Nothing of the conversation or any secret is in the file.
    let path = h.gateway.config().gateway.data_dir.join("audit.db");
    let mut raw = std::fs::read(&path).unwrap();
    raw.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
    let raw = String::from_utf8_lossy(&raw);
    let answer_text: Value = serde_json::from_slice(&answer).unwrap();
    for secret in [
        PROMPT,
        "Jane Roe",
        answer_text["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
        TEST_PASSWORD,
        &token,
    ] {
        assert!(!raw.contains(secret), "audit log contains `{secret}`");
    }
    let store = si_store::audit_reader(h.gateway.config()).await.unwrap();
    assert!(matches!(
        si_audit::verify(store.as_ref(), None).await.unwrap(),
        VerifyReport::Intact { records: 5, .. }
    ));
    h.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_recorded_as_499() {
    let backend = GatedStreamBackend::start().await;
    let h = Harness::start(Options {
        url_overrides: vec![(8085, backend.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let ask = json!({"agent_type": "Clinical", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let response = h.chat(&token, &ask).await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses = records(&h).await.iter().map(|r| r.status).collect();
        if statuses.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, [200, 499]);
    h.shutdown().await;
}
