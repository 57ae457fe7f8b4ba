use bytes::Bytes;
use serde_json::json;

use crate::support::{Harness, Options, chat_body, error_parts, read_json};

fn edits(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(from, to)| (*from, (*to).to_owned()))
        .collect()
}

async fn get_models(
    h: &Harness,
    token: &str,
    forwarded_for: Option<&str>,
) -> http::Response<hyper::body::Incoming> {
    let mut request = http::Request::get(format!("{}/v1/models", h.base))
        .header("authorization", format!("Bearer {token}"));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let request = request
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    crate::support::client().request(request).await.unwrap()
}

#[tokio::test]
async fn over_the_per_address_limit_is_429_with_rate_limit_headers() {
    let toml_edits = edits(&[("per_ip_per_minute = 100", "per_ip_per_minute = 3")]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await; // request 1
    assert_eq!(get_models(&h, &token, None).await.status(), 200);
    assert_eq!(get_models(&h, &token, None).await.status(), 200);
    let refused = get_models(&h, &token, None).await;
    assert_eq!(refused.headers()["x-ratelimit-limit"], "3");
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        refused.headers()["x-ratelimit-reset"].to_str().unwrap(),
        retry.to_string()
    );
    let (status, body) = read_json(refused).await;
    assert_eq!(status, 429);
    let (kind, code, message) = error_parts(&body);
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("rate_limit_error", "rate_limited")
    );
    assert!(
        message.contains("client address") && message.contains("3 requests per minute"),
        "{message}"
    );
    // Health checks are never limited.
    assert_eq!(h.get_json("/healthz", None).await.0, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let untrusted = edits(&[("per_ip_per_minute = 100", "per_ip_per_minute = 4")]);
    let h = Harness::start(Options {
        toml_edits: untrusted,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let statuses = [
        get_models(&h, &token, Some("198.51.100.1")).await.status(),
        get_models(&h, &token, Some("198.51.100.2")).await.status(),
        get_models(&h, &token, Some("198.51.100.3")).await.status(),
        get_models(&h, &token, Some("198.51.100.4")).await.status(),
    ];
    assert_eq!(
        statuses.map(|s| s.as_u16()),
        [200, 200, 200, 429],
        "spoofed headers must not help"
    );
    h.shutdown().await;

    let trusted = edits(&[
        ("per_ip_per_minute = 100", "per_ip_per_minute = 4"),
        ("trusted_proxies = []", "trusted_proxies = [\"127.0.0.1\"]"),
    ]);
    let h = Harness::start(Options {
        toml_edits: trusted,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    for n in 1..=10 {
        let client = format!("198.51.100.{n}");
        assert_eq!(
            get_models(&h, &token, Some(&client)).await.status(),
            200,
            "{client}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn per_user_and_per_location_limits_come_from_configuration() {
    let toml_edits = edits(&[
        ("per_user_per_minute = 0", "per_user_per_minute = 2"),
        ("per_location_per_minute = 0", "per_location_per_minute = 3"),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let admin = h.login("admin1").await;
    let doctor = h.login("doctor1").await;
    let chat = |token: &str| {
        let token = token.to_owned();
        let h = &h;
        async move {
            h.post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
                .await
        }
    };
    assert_eq!(chat(&admin).await.0, 200);
    assert_eq!(chat(&admin).await.0, 200);
    let (status, body) = chat(&admin).await;
    assert_eq!(status, 429);
    assert!(error_parts(&body).2.contains("this user"), "{body}");
    // Same location (hospital-01), quota 3: the admin's two admitted requests and
    // the doctor's first fill it (a request refused per user counts for nothing else).
    assert_eq!(chat(&doctor).await.0, 200);
    let (status, body) = chat(&doctor).await;
    assert_eq!(status, 429, "{body}");
    assert!(error_parts(&body).2.contains("this location"), "{body}");
    h.shutdown().await;
}

#[tokio::test]
async fn the_environment_can_switch_the_address_limit_off() {
    let toml_edits = edits(&[("per_ip_per_minute = 100", "per_ip_per_minute = 2")]);
    let env = vec![("SI_RATE_LIMIT_PER_IP", "0".to_owned())];
    let h = Harness::start(Options {
        toml_edits,
        env,
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    for _ in 0..10 {
        let (status, _) = h
            .post_json(
                "/v1/chat/completions",
                Some(&token),
                json!({"agent_type": "Chat", "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(status, 200);
    }
    h.shutdown().await;
}
