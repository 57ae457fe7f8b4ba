use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Harness, Options, TEST_PASSWORD, chat_body, error_parts};

async fn login(h: &Harness, username: &str) -> Value {
    let body =
        json!({"username": username, "password": TEST_PASSWORD, "location_id": "hospital-01"});
    let (status, tokens) = h.post_json("/v1/auth/login", None, body).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn refresh(h: &Harness, tokens: &Value) -> (u16, Value) {
    let body = json!({"refresh_token": tokens["refresh_token"]});
    h.post_json("/v1/auth/refresh", None, body).await
}

async fn chat_status(h: &Harness, tokens: &Value) -> u16 {
    let token = tokens["access_token"].as_str().unwrap();
    h.post_json("/v1/chat/completions", Some(token), chat_body("Chat"))
        .await
        .0
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_token_ends_the_session() {
    let h = Harness::start(Options::default()).await;
    let first = login(&h, "doctor1").await;
    assert_eq!(first["refresh_expires_in"], 7 * 24 * 3600);
    let (status, second) = refresh(&h, &first).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(chat_status(&h, &second).await, 200);
    let claims = h
        .gateway
        .tokens()
        .verify(second["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.loc.as_str()),
        ("doctor1", "hospital-01")
    );

    // The spent token again: refused, and the whole session with it.
    let (status, body) = refresh(&h, &first).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (401, "refresh_reused")
    );
    let (status, _) = refresh(&h, &second).await;
    assert_eq!(
        status, 401,
        "the newest refresh token of the family is dead too"
    );
    assert_eq!(
        chat_status(&h, &second).await,
        401,
        "access tokens of the family are revoked"
    );
    assert_eq!(chat_status(&h, &first).await, 401);

    // Another login of the same user is its own session.
    let other = login(&h, "doctor1").await;
    assert_eq!(chat_status(&h, &other).await, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn logout_revokes_the_access_token_and_its_refresh_token() {
    let h = Harness::start(Options::default()).await;
    let tokens = login(&h, "doctor1").await;
    let other = login(&h, "doctor1").await;
    let token = tokens["access_token"].as_str().unwrap();
    let (status, _) = h.post_json("/v1/auth/logout", Some(token), json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(token), chat_body("Chat"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (401, "token_revoked")
    );
    assert_eq!(refresh(&h, &tokens).await.0, 401);
    assert_eq!(
        chat_status(&h, &other).await,
        200,
        "other sessions are untouched"
    );
    let (status, _) = h.post_json("/v1/auth/logout", None, json!({})).await;
    assert_eq!(status, 401);
    h.shutdown().await;
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let h = Harness::start(Options::default()).await;
    let tokens = login(&h, "doctor1").await;
    let token = tokens["access_token"].as_str().unwrap();
    h.post_json("/v1/auth/logout", Some(token), json!({})).await;
    // A second gateway on the same data directory, as after a restart.
    let restarted = si_server::Gateway::open(h.gateway.config().clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(si_server::run(listener, restarted, async move {
        let _ = stopped.await;
    }));
    let request = http::Request::post(format!("{base}/v1/chat/completions"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            chat_body("Chat").to_string(),
        )))
        .unwrap();
    let response = crate::support::client().request(request).await.unwrap();
    assert_eq!(
        response.status(),
        401,
        "a logged-out token works again after a restart"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    h.shutdown().await;
}

#[tokio::test]
async fn logout_by_refresh_token_when_the_access_token_is_gone() {
    let h = Harness::start(Options::default()).await;
    let tokens = login(&h, "doctor1").await;
    let body = json!({"refresh_token": tokens["refresh_token"]});
    let (status, _) = h.post_json("/v1/auth/logout", None, body).await;
    assert_eq!(status, 200);
    assert_eq!(refresh(&h, &tokens).await.0, 401);
    assert_eq!(
        chat_status(&h, &tokens).await,
        401,
        "the session's access token is revoked too"
    );
    let (status, _) = h
        .post_json("/v1/auth/logout", None, json!({"refresh_token": "unknown"}))
        .await;
    assert_eq!(status, 401);
    h.shutdown().await;
}

#[tokio::test]
async fn a_refresh_token_spent_twice_at_once_yields_at_most_one_session() {
    let h = Harness::start(Options::default()).await;
    let tokens = login(&h, "doctor1").await;
    let attempts = (0..8).map(|_| refresh(&h, &tokens));
    let outcomes = futures_util::future::join_all(attempts).await;
    let winners: Vec<&Value> = outcomes
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
        .collect();
    assert!(winners.len() <= 1, "{} refreshes succeeded", winners.len());
    // The replays revoked the family: whatever won is dead too.
    for winner in winners {
        assert_eq!(chat_status(&h, winner).await, 401);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn disabling_a_user_elsewhere_stops_their_tokens_within_seconds() {
    let h = Harness::start(Options::default()).await;
    let tokens = login(&h, "doctor1").await;
    assert_eq!(chat_status(&h, &tokens).await, 200);
    // Another process's connection, as `si-cli users disable` would use.
    let cli = si_store::AccountStores::open(h.gateway.config())
        .await
        .unwrap()
        .accounts()
        .unwrap();
    cli.set_disabled("doctor1", true).await.unwrap();
    let mut status = 200;
    for _ in 0..50 {
        status = chat_status(&h, &tokens).await;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 401,
        "the disabled user's token still worked after 5 s"
    );
    let body =
        json!({"username": "doctor1", "password": TEST_PASSWORD, "location_id": "hospital-01"});
    let (status, body) = h.post_json("/v1/auth/login", None, body).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (401, "invalid_credentials")
    );
    cli.set_disabled("doctor1", false).await.unwrap();
    let fresh = login(&h, "doctor1").await;
    let mut status = 401;
    for _ in 0..50 {
        status = chat_status(&h, &fresh).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "re-enabled user still refused");
    h.shutdown().await;
}
