//! Two gateways sharing one PostgreSQL database: a token from one is honoured by
//! the other, a logout on one is a logout on both, the audit trail is one chain,
//! and one gateway killed or the database cut off are survived. Needs PostgreSQL
//! (see `si_test_support::postgres`); `.ci/run` runs these with `--ignored`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Harness, Options, chat_body};

mod api_keys;

/// Gateways behind one load balancer share the store and the signing secret.
async fn gateway_on(url: &str) -> Harness {
    gateway_with(url, vec![]).await
}

async fn gateway_with(url: &str, mut env: Vec<(&'static str, String)>) -> Harness {
    env.extend([
        ("SI_DATABASE_URL", url.to_owned()),
        (
            "JWT_SECRET",
            "0123456789abcdef0123456789abcdef-shared".to_owned(),
        ),
    ]);
    Harness::start(Options {
        env,
        ..Options::default()
    })
    .await
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn a_login_on_one_gateway_works_on_the_other_and_a_logout_ends_it_on_both() {
    let url = si_test_support::postgres::fresh_database().await;
    let (a, b) = (gateway_on(&url).await, gateway_on(&url).await);
    assert!(a.gateway.config().store.database_url.is_some());
    let (status, login) = a
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": crate::support::TEST_PASSWORD, "location_id": "hospital-01"}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    // The refresh token is single use across both.
    let (status, refreshed) = b
        .post_json("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let (status, _) = a
        .post_json("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(
        status, 401,
        "a spent refresh token was taken on the other gateway"
    );

    let (status, login) = b
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": crate::support::TEST_PASSWORD, "location_id": "hospital-01"}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    // A token from B is honoured by A.
    assert_eq!(
        a.post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
            .await
            .0,
        200
    );
    // Logging out on B ends the session on A: its refresh token at once, its
    // access token within the revocation check's second.
    let (status, _) = b
        .post_json("/v1/auth/logout", Some(&token), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = a
        .post_json("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, 401);
    let started = Instant::now();
    loop {
        let (status, _) = a
            .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
            .await;
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "A still honoured a token logged out on B after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "a logout on B was in force on A within {:?}",
        started.elapsed()
    );
}

/// A chat request to the gateway at `base`: its status and request id.
async fn chat_at(base: &str, token: &str) -> (u16, String) {
    let request = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat_body("Chat").to_string(),
        )))
        .unwrap();
    match si_test_support::harness::client().request(request).await {
        Ok(response) => {
            let id = response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let status = response.status().as_u16();
            // The answer counts as received only once its body is.
            match http_body_util::BodyExt::collect(response.into_body()).await {
                Ok(_) => (status, id),
                Err(_) => (0, id),
            }
        }
        Err(_) => (0, String::new()),
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn one_chain_for_both_gateways_and_no_answered_record_lost_when_one_is_killed() {
    let url = si_test_support::postgres::fresh_database().await;
    let unlimited = || {
        vec![
            ("SI_RATE_LIMIT_PER_IP", "0".to_owned()),
            ("SI_GATEWAY_NAME", "gw-a".to_owned()),
        ]
    };
    let a = gateway_with(&url, unlimited()).await;
    let (mut b, b_base, _b_dir) = a
        .spawn_process(
            env!("CARGO_BIN_EXE_si-server"),
            &[("SI_GATEWAY_NAME", "gw-b".to_owned())],
        )
        .await;
    let token = a.login("doctor1").await;
    // 300 requests at B, 30 at a time; B is killed (SIGKILL) a third of the way.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for worker in 0..30 {
        let (base, token, answered) = (b_base.clone(), token.clone(), answered.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..10 {
                let (status, id) = chat_at(&base, &token).await;
                if status == 200 {
                    answered.lock().unwrap().push(id);
                }
            }
            worker
        }));
    }
    while answered.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b.start_kill().unwrap();
    let _ = b.wait().await;
    for worker in load {
        worker.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() < 300,
        "B was killed after it had answered everything"
    );
    // A keeps serving.
    for _ in 0..20 {
        assert_eq!(chat_at(&a.base, &token).await.0, 200);
    }
    // One chain, written by both, verifies; every answer B sent has its record.
    let store = si_store::audit_reader(a.gateway.config()).await.unwrap();
    let report = si_audit::verify(store.as_ref(), None).await.unwrap();
    assert!(
        matches!(report, si_audit::VerifyReport::Intact { .. }),
        "{report:?}"
    );
    let records = si_test_support::audit::first_records(store.as_ref(), 10_000).await;
    let written: std::collections::HashMap<String, String> = records
        .iter()
        .map(|stored| {
            let record: si_audit::AuditRecord = serde_json::from_str(&stored.json).unwrap();
            (record.request_id, record.gateway.unwrap_or_default())
        })
        .collect();
    for id in &answered {
        assert_eq!(
            written.get(id).map(String::as_str),
            Some("gw-b"),
            "request {id} was answered by B but has no record of B's"
        );
    }
    assert!(written.values().any(|gateway| gateway == "gw-a"));
    eprintln!(
        "B answered {} of 300 before SIGKILL; {} records in the chain, every answered one among them",
        answered.len(),
        records.len()
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn the_database_cut_off_gives_503_and_service_comes_back_without_a_restart() {
    let url = si_test_support::postgres::fresh_database().await;
    let server = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(host, _)| host.parse().unwrap())
        .unwrap();
    let cut = si_test_support::cut::Cut::start(server).await;
    let a = gateway_on(&cut.url(&url)).await;
    let token = a.login("doctor1").await;
    assert_eq!(chat_at(&a.base, &token).await.0, 200);

    cut.cut();
    // Requests that need the database are refused with 503, not hung or lost.
    let started = Instant::now();
    let (status, body) = a
        .post_json("/v1/chat/completions", Some(&token), chat_body("Chat"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable");
    let (status, body) = a
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": crate::support::TEST_PASSWORD, "location_id": "hospital-01"}),
        )
        .await;
    // The user database fails it first, then its record cannot be written
    // either: whichever is said, it is a 503 to retry, with no internals.
    assert_eq!(status, 503, "{body}");
    assert!(
        ["store_unavailable", "audit_unavailable"]
            .contains(&body["error"]["code"].as_str().unwrap()),
        "{body}"
    );
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(12));
    let health = wait_for_store(&a, "unreachable").await;
    assert_eq!(health["status"], "ok", "{health}");

    cut.restore();
    wait_for_store(&a, "ok").await;
    let started = Instant::now();
    while chat_at(&a.base, &token).await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!a.login("doctor1").await.is_empty());
}

/// `/healthz` once it reports the shared store as `state`.
async fn wait_for_store(gateway: &Harness, state: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (_, health) = gateway.get_json("/healthz", None).await;
        if health["store"] == state {
            return health;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/healthz never said the store is {state}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two gateways on one database and one Redis, under `prefix`, with `env`.
async fn gateway_counting_in_redis(
    url: &str,
    redis: &str,
    prefix: &str,
    env: Vec<(&'static str, String)>,
) -> Harness {
    let mut env = env;
    env.extend([
        ("SI_DATABASE_URL", url.to_owned()),
        ("SI_REDIS_URL", redis.to_owned()),
        (
            "JWT_SECRET",
            "0123456789abcdef0123456789abcdef-shared".to_owned(),
        ),
    ]);
    Harness::start(Options {
        env,
        toml_edits: vec![(
            "redis_prefix = \"si\"",
            format!("redis_prefix = \"{prefix}\""),
        )],
        ..Options::default()
    })
    .await
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: .ci/run starts them and runs this with --ignored"]
async fn a_limit_of_100_a_minute_admits_about_100_across_both_gateways() {
    let url = si_test_support::postgres::fresh_database().await;
    let prefix = si_test_support::redis::fresh_prefix();
    let redis = si_test_support::redis::url();
    let limit = || vec![("SI_RATE_LIMIT_PER_IP", "100".to_owned())];
    let a = gateway_counting_in_redis(&url, &redis, &prefix, limit()).await;
    let b = gateway_counting_in_redis(&url, &redis, &prefix, limit()).await;
    let (_, health) = a.get_json("/healthz", None).await;
    assert_eq!(health["counters"], "ok", "{health}");
    let token = a.login("doctor1").await; // counted too
    let started = Instant::now();
    let mut admitted = 1;
    for i in 0..300 {
        let gateway = if i % 2 == 0 { &a } else { &b };
        let (status, body) = gateway.get_json("/v1/models", Some(&token)).await;
        match status {
            200 => admitted += 1,
            429 => assert_eq!(body["error"]["code"], "rate_limited", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // The documented bound: the quota, plus what the minute's rate freed while
    // the test ran, plus one lease (L = 2) per gateway.
    let freed = (seconds * 100.0 / 60.0).ceil() as i32;
    eprintln!("{admitted} of 301 admitted across two gateways in {seconds:.2} s (limit 100/min)");
    assert!(admitted <= 100 + freed + 2 * 2, "{admitted} admitted");
    assert!(admitted >= 100 - 2 * 2, "{admitted} admitted");
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: .ci/run starts them and runs this with --ignored"]
async fn without_redis_the_gateway_keeps_serving_on_local_limits_and_says_so() {
    let url = si_test_support::postgres::fresh_database().await;
    let prefix = si_test_support::redis::fresh_prefix();
    let cut =
        si_test_support::cut::Cut::start(si_test_support::redis::address().parse().unwrap()).await;
    let redis = si_test_support::redis::url_via(cut.addr.port());
    let a = gateway_counting_in_redis(&url, &redis, &prefix, vec![]).await;
    let token = a.login("doctor1").await;
    cut.cut();
    // fail_open (the default): clinicians keep working.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(chat_at(&a.base, &token).await.0, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let started = Instant::now();
    loop {
        let (_, health) = a.get_json("/healthz", None).await;
        if health["counters"] == "unreachable" {
            assert_eq!(health["store"], "ok", "{health}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cut.restore();
    let started = Instant::now();
    loop {
        let (_, health) = a.get_json("/healthz", None).await;
        if health["counters"] == "ok" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(chat_at(&a.base, &token).await.0, 200);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn an_api_key_revoked_through_one_store_is_refused_by_both_gateways_at_once() {
    use secrecy::ExposeSecret;
    let url = si_test_support::postgres::fresh_database().await;
    let (a, b) = (gateway_on(&url).await, gateway_on(&url).await);
    let store = crate::api_keys::key_store(&a).await;
    let key = crate::api_keys::make_key(store.as_ref(), "ehr-batch", false).await;
    for gateway in [&a, &b] {
        let started = Instant::now();
        while chat_at(&gateway.base, key.expose_secret()).await.0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "the new key is not accepted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    store.revoke_key("ehr-batch").await.unwrap();
    let started = Instant::now();
    for gateway in [&a, &b] {
        while chat_at(&gateway.base, key.expose_secret()).await.0 != 401 {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "a revoked key still works"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eprintln!(
        "a revoked key was refused by both gateways within {:?}",
        started.elapsed()
    );
}
