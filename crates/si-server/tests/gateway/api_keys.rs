//! API keys: made while the gateway runs (as `si-cli apikeys create` does, from
//! another connection to the store), accepted within a second as `Bearer si-…`
//! with the key's role and location, named in the audit trail, and refused within
//! a second of being revoked.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use si_auth::api_keys::{self, ApiKey};

use crate::support::{Harness, Options, chat_body};

/// The status of a chat request with `key`, and its body.
async fn chat(h: &Harness, key: &str) -> (u16, serde_json::Value) {
    h.post_json("/v1/chat/completions", Some(key), chat_body("Chat"))
        .await
}

/// Waits until a chat request with `key` gets `status`.
async fn until_status(h: &Harness, key: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (got, body) = chat(h, key).await;
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still {got} after 2 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_key_made_revoked_and_named_in_the_audit() {
    let h = Harness::start(Options::default()).await;
    let store = si_store::AccountStores::open(h.gateway.config())
        .await
        .unwrap()
        .api_keys;
    let (key, hash) = api_keys::generate();
    let record = ApiKey {
        name: "open-webui".into(),
        role: "clinician".parse().unwrap(),
        location: "hospital-01".into(),
        created_at: si_auth::users::unix_now(),
        expires_at: None,
        revoked: false,
    };
    store.insert_key(&record, &hash).await.unwrap();
    let took = until_status(&h, key.expose_secret(), 200).await;
    eprintln!("a new key was accepted after {took:?}");

    // Its role holds: a clinician key may not use the billing agent.
    let (status, body) = h
        .post_json(
            "/v1/chat/completions",
            Some(key.expose_secret()),
            chat_body("Billing"),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // A key nobody made is refused like a bad token, saying so.
    let (status, body) = chat(&h, &format!("{}{}", api_keys::PREFIX, "0".repeat(64))).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown API key"),
        "{body}"
    );

    // The audit trail names the key; the key itself appears nowhere in it.
    let audit = si_store::audit_reader(h.gateway.config()).await.unwrap();
    let records = audit
        .page(si_audit::Page {
            after_seq: 0,
            limit: 1000,
            since_ms: None,
            until_ms: None,
        })
        .await
        .unwrap();
    let by_key: Vec<_> = records
        .iter()
        .filter(|stored| stored.json.contains("\"user\":\"key:open-webui\""))
        .collect();
    assert!(
        by_key
            .iter()
            .any(|stored| stored.json.contains("\"status\":200"))
    );
    assert!(
        by_key
            .iter()
            .any(|stored| stored.json.contains("\"location\":\"hospital-01\""))
    );
    assert!(
        records
            .iter()
            .all(|stored| !stored.json.contains(key.expose_secret()))
    );

    store.revoke_key("open-webui").await.unwrap();
    let took = until_status(&h, key.expose_secret(), 401).await;
    eprintln!("a revoked key was refused after {took:?}");
    assert!(took < Duration::from_secs(1) + Duration::from_millis(200));
    let (_, body) = chat(&h, key.expose_secret()).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}
