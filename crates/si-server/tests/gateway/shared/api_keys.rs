//! An API key's own rate limit on two gateways counting in one Redis: one quota
//! for the key, wherever its requests land; and its last use, written to the
//! shared database behind the requests.

use std::time::Instant;

use secrecy::ExposeSecret;

use super::{chat_at, gateway_counting_in_redis};

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: .ci/run starts them and runs this with --ignored"]
async fn a_keys_limit_of_10_a_minute_admits_about_10_across_both_gateways() {
    let url = si_test_support::postgres::fresh_database().await;
    let prefix = si_test_support::redis::fresh_prefix();
    let redis = si_test_support::redis::url();
    // No per-address limit: only the key's own.
    let env = || vec![("SI_RATE_LIMIT_PER_IP", "0".to_owned())];
    let a = gateway_counting_in_redis(&url, &redis, &prefix, env()).await;
    let b = gateway_counting_in_redis(&url, &redis, &prefix, env()).await;
    let store = crate::api_keys::key_store(&a).await;
    let key = crate::api_keys::make_limited_key(store.as_ref(), "ehr-batch", 10).await;
    let key = key.expose_secret();
    // Taken by both (refused as unknown until then: not counted).
    for gateway in [&a, &b] {
        let (status, body) = gateway.get_json("/v1/workflows", Some(key)).await;
        if status == 200 {
            continue;
        }
        assert_eq!(status, 401, "{body}");
        let started = Instant::now();
        while gateway.get_json("/v1/workflows", Some(key)).await.0 == 401 {
            assert!(started.elapsed().as_secs() < 2, "the new key is not taken");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let started = Instant::now();
    let mut admitted = 2;
    for n in 0..30 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        match chat_at(&gateway.base, key).await.0 {
            200 => admitted += 1,
            429 => {}
            other => panic!("{other}"),
        }
    }
    let (status, body) = b.get_json("/v1/models", Some(key)).await;
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("API key") && message.contains("10 requests per minute"),
        "{message}"
    );
    // The quota, what the minute freed while the test ran, and a lease (L = 1)
    // per gateway.
    let freed = (started.elapsed().as_secs_f64() * 10.0 / 60.0).ceil() as i32;
    eprintln!("{admitted} of 32 admitted across two gateways (the key's limit 10/min)");
    assert!(admitted <= 10 + freed + 2, "{admitted} admitted");
    assert!(admitted >= 10 - 2, "{admitted} admitted");
    // Both gateways wrote when they saw it used (once each this minute).
    let started = Instant::now();
    loop {
        let keys = store.keys().await.unwrap();
        let (key, _) = keys.iter().find(|(k, _)| k.name == "ehr-batch").unwrap();
        if let Some(at) = key.last_used_at {
            assert!(at <= si_auth::users::unix_now(), "{at}");
            break;
        }
        assert!(started.elapsed().as_secs() < 5, "no last use recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
