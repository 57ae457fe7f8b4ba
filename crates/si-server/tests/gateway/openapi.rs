//! `GET /openapi.json`: served to anyone, as JSON, and counted like every request
//! but health checks and scrapes (rate-limited per address, audited).

use crate::support::{Harness, Options};

#[tokio::test]
async fn the_description_is_served_without_a_token_limited_and_audited() {
    let h = Harness::start(Options {
        toml_edits: vec![("per_ip_per_minute = 100", "per_ip_per_minute = 2".into())],
        ..Options::default()
    })
    .await;
    let response = h
        .request("GET", "/openapi.json", None, bytes::Bytes::new())
        .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let (status, doc) = crate::support::read_json(response).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{doc}"
    );
    assert!(doc["paths"]["/v1/chat/completions"]["post"].is_object());
    assert_eq!(h.get_json("/openapi.json", None).await.0, 200);
    let (status, body) = h.get_json("/openapi.json", None).await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = h
        .post_json("/openapi.json", None, serde_json::json!({}))
        .await;
    assert_eq!(
        status, 429,
        "the limit comes before the method check: {body}"
    );

    let audit = si_store::audit_reader(h.gateway.config()).await.unwrap();
    let records = si_test_support::audit::first_records(audit.as_ref(), 100).await;
    let served = records
        .iter()
        .filter(|stored| stored.json.contains("\"path\":\"/openapi.json\""))
        .count();
    assert_eq!(served, 4, "every request is audited, refused or not");
}
