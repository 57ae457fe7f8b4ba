//! API keys: made while the gateway runs (as `si-cli apikeys create` does, from
//! another connection to the store), accepted within a second as `Bearer si-…`
//! with the key's role and location, named in the audit trail, and refused within
//! a second of being revoked; a key's own rate limit, and when it was last used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use si_auth::api_keys::{self, ApiKey};
use si_auth::store::ApiKeyStore;

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
    let store = key_store(&h).await;
    let key = make_key(store.as_ref(), "open-webui", false).await;
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
    let records = si_test_support::audit::first_records(audit.as_ref(), 1000).await;
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

/// A chat request with `token` and `headers`: its status, and its request id.
async fn chat_with(h: &Harness, token: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = http::Request::post(format!("{}/v1/chat/completions", h.base))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat_body("Chat").to_string(),
        )))
        .unwrap();
    let response = si_test_support::harness::client()
        .request(request)
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.status().as_u16(), id)
}

/// The key store of `h`'s configuration, through a connection of its own, as
/// `si-cli apikeys` reaches it.
pub(crate) async fn key_store(h: &Harness) -> Arc<dyn ApiKeyStore> {
    si_store::AccountStores::open(h.gateway.config())
        .await
        .unwrap()
        .api_keys
}

/// Makes a clinician's key at hospital-01 named `name` in `store`.
pub(crate) async fn make_key(
    store: &dyn ApiKeyStore,
    name: &str,
    forward_user: bool,
) -> secrecy::SecretString {
    insert_key(store, name, forward_user, None).await
}

/// Makes a clinician's key at hospital-01 named `name` in `store`, limited to
/// `per_minute` requests a minute of its own (`si-cli apikeys create
/// --rate-limit`).
pub(crate) async fn make_limited_key(
    store: &dyn ApiKeyStore,
    name: &str,
    per_minute: u32,
) -> secrecy::SecretString {
    insert_key(store, name, false, Some(per_minute)).await
}

async fn insert_key(
    store: &dyn ApiKeyStore,
    name: &str,
    forward_user: bool,
    rate_limit: Option<u32>,
) -> secrecy::SecretString {
    let (key, hash) = api_keys::generate();
    let record = ApiKey {
        name: name.into(),
        role: "clinician".parse().unwrap(),
        location: "hospital-01".into(),
        created_at: si_auth::users::unix_now(),
        expires_at: None,
        revoked: false,
        forward_user,
        rate_limit,
        last_used_at: None,
    };
    store.insert_key(&record, &hash).await.unwrap();
    key
}

/// Makes a key named `name`, and waits until the gateway takes it.
async fn key_for(h: &Harness, name: &str, forward_user: bool) -> secrecy::SecretString {
    let key = make_key(key_store(h).await.as_ref(), name, forward_user).await;
    until_status(h, key.expose_secret(), 200).await;
    key
}

#[tokio::test]
async fn a_front_end_key_names_its_user_and_nobody_else_can() {
    // Two requests a minute per user, so that each user's own limit shows.
    let h = Harness::start(Options {
        toml_edits: vec![("per_user_per_minute = 0", "per_user_per_minute = 2".into())],
        ..Options::default()
    })
    .await;
    let webui = key_for(&h, "open-webui", true).await;
    let plain = key_for(&h, "batch", false).await;
    let jane = [("x-openwebui-user-email", "jane@hospital.example")];
    let bob = [("x-openwebui-user-id", "bob-42")];

    let (status, jane_id) = chat_with(&h, webui.expose_secret(), &jane).await;
    assert_eq!(status, 200);
    assert_eq!(chat_with(&h, webui.expose_secret(), &jane).await.0, 200);
    assert_eq!(
        chat_with(&h, webui.expose_secret(), &jane).await.0,
        429,
        "jane's own limit"
    );
    assert_eq!(
        chat_with(&h, webui.expose_secret(), &bob).await.0,
        200,
        "bob has his own"
    );
    // A key not made to forward, and a person's token, cannot name someone else.
    let (_, plain_id) = chat_with(&h, plain.expose_secret(), &jane).await;
    let token = h.login("doctor1").await;
    let (status, doctor_id) = chat_with(&h, &token, &jane).await;
    assert_eq!(status, 200);
    // A value that names nobody is refused.
    let nobody = [("x-openwebui-user-email", " ")];
    assert_eq!(chat_with(&h, webui.expose_secret(), &nobody).await.0, 400);
    // A key has no session to log out of.
    let (status, body) = h
        .post_json(
            "/v1/auth/logout",
            Some(webui.expose_secret()),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("si-cli apikeys revoke"), "{body}");

    let audit = si_store::audit_reader(h.gateway.config()).await.unwrap();
    let records: Vec<si_audit::AuditRecord> =
        si_test_support::audit::first_records(audit.as_ref(), 1000)
            .await
            .iter()
            .map(|stored| serde_json::from_str(&stored.json).unwrap())
            .collect();
    let by_id = |id: &str| records.iter().find(|r| r.request_id == id).unwrap().clone();
    let jane_record = by_id(&jane_id);
    assert_eq!(
        jane_record.user.as_deref(),
        Some("key:open-webui/jane@hospital.example")
    );
    assert_eq!(jane_record.api_key.as_deref(), Some("open-webui"));
    let plain_record = by_id(&plain_id);
    assert_eq!(plain_record.user.as_deref(), Some("key:batch"));
    assert_eq!(plain_record.api_key.as_deref(), Some("batch"));
    let doctor_record = by_id(&doctor_id);
    assert_eq!(doctor_record.user.as_deref(), Some("doctor1"));
    assert_eq!(doctor_record.api_key, None);
}

/// Waiting for a new key polls: no per-address limit to run into meanwhile.
fn without_address_limit() -> Options {
    Options {
        env: vec![("SI_RATE_LIMIT_PER_IP", "0".into())],
        ..Options::default()
    }
}

#[tokio::test]
async fn a_key_over_its_own_limit_is_refused_naming_the_limit() {
    let h = Harness::start(without_address_limit()).await;
    let store = key_store(&h).await;
    let limited = make_limited_key(store.as_ref(), "ehr-batch", 3).await;
    // The first request it is accepted with is the first of its minute.
    until_status(&h, limited.expose_secret(), 200).await;
    for n in 2..=3 {
        assert_eq!(
            chat(&h, limited.expose_secret()).await.0,
            200,
            "request {n}"
        );
    }
    let refused = h.chat(limited.expose_secret(), &chat_body("Chat")).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.headers()["x-ratelimit-limit"], "3");
    let (status, body) = si_test_support::harness::read_json(refused).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("API key") && message.contains("3 requests per minute"),
        "{message}"
    );
    // Every endpoint a key reaches counts against the same quota.
    assert_eq!(
        h.get_json("/v1/models", Some(limited.expose_secret()))
            .await
            .0,
        429
    );
    // Keys without a limit of their own, and people, are not held by it.
    let unlimited = key_for(&h, "open-webui", false).await;
    for _ in 0..10 {
        assert_eq!(chat(&h, unlimited.expose_secret()).await.0, 200);
    }
    let token = h.login("doctor1").await;
    assert_eq!(chat(&h, &token).await.0, 200);
}

#[tokio::test]
async fn a_used_key_shows_when_it_was_last_used_and_an_unused_one_never() {
    let h = Harness::start(without_address_limit()).await;
    let store = key_store(&h).await;
    let before = si_auth::users::unix_now();
    let used = key_for(&h, "open-webui", false).await;
    make_key(store.as_ref(), "never-used", false).await;
    for _ in 0..20 {
        assert_eq!(chat(&h, used.expose_secret()).await.0, 200);
    }
    // Written behind the requests, within seconds.
    let started = Instant::now();
    let keys = loop {
        let keys = store.keys().await.unwrap();
        if keys.iter().any(|(key, _)| key.last_used_at.is_some()) {
            break keys;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no last use recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "a key's last use was recorded after {:?}",
        started.elapsed()
    );
    let last_used = |name: &str| {
        keys.iter()
            .find(|(key, _)| key.name == name)
            .unwrap()
            .0
            .last_used_at
    };
    let at = last_used("open-webui").unwrap();
    assert!((before..=si_auth::users::unix_now()).contains(&at), "{at}");
    assert_eq!(last_used("never-used"), None);
}
