//! Two gateways sharing one PostgreSQL database: a token from one is honoured by
//! the other, and a logout on one is a logout on both. Needs PostgreSQL (see
//! `si_test_support::postgres`); `.ci/run` runs these with `--ignored`.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Harness, Options, chat_body};

/// Gateways behind one load balancer share the store and the signing secret.
async fn gateway_on(url: &str) -> Harness {
    Harness::start(Options {
        env: vec![
            ("SI_DATABASE_URL", url.to_owned()),
            (
                "JWT_SECRET",
                "0123456789abcdef0123456789abcdef-shared".to_owned(),
            ),
        ],
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
            started.elapsed() < Duration::from_secs(3),
            "A still honoured a token logged out on B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
