use bytes::Bytes;
use serde_json::json;

use crate::support::{Harness, Options, TEST_PASSWORD, chat_body, error_parts};

#[tokio::test]
async fn login_returns_a_bearer_token_with_identity_claims() {
    let h = Harness::start(Options::default()).await;
    let response = h
        .request("POST", "/v1/auth/login", None, Bytes::from(json!({"username": "doctor1", "password": TEST_PASSWORD, "location_id": "hospital-01"}).to_string()))
        .await;
    assert_eq!(response.headers()["cache-control"], "no-store");
    let (status, body) = crate::support::read_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    let claims = h
        .gateway
        .tokens()
        .verify(body["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.sub, "doctor1");
    assert_eq!(claims.role.as_str(), "clinician");
    assert_eq!(claims.loc, "hospital-01");
    assert_eq!(claims.iss, "synthetic-intelligence");
    assert_eq!(claims.aud, "si-gateway");
    assert!(!claims.jti.is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let h = Harness::start(Options::default()).await;
    let (s1, wrong_password) = h
        .post_json("/v1/auth/login", None, json!({"username": "doctor1", "password": "not the password", "location_id": "hospital-01"}))
        .await;
    let (s2, unknown_user) = h
        .post_json("/v1/auth/login", None, json!({"username": "nobody", "password": "not the password", "location_id": "hospital-01"}))
        .await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong_password, unknown_user);
    assert_eq!(error_parts(&wrong_password).1, "invalid_credentials");
    h.shutdown().await;
}

#[tokio::test]
async fn login_location_and_body_are_checked() {
    let h = Harness::start(Options::default()).await;
    let (status, body) = h
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": TEST_PASSWORD, "location_id": "clinic-07"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(error_parts(&body).2.contains("clinic-07"));
    // A user allowed everywhere gets the location asked for.
    let token = h.login("biller").await;
    assert_eq!(
        h.gateway.tokens().verify(&token).unwrap().loc,
        "hospital-01"
    );
    let (status, body) = h
        .post_json("/v1/auth/login", None, json!({"user": "doctor1"}))
        .await;
    assert_eq!(status, 400);
    assert!(error_parts(&body).2.contains("username"), "{body}");
    h.shutdown().await;
}

#[tokio::test]
async fn chat_without_a_valid_token_is_401() {
    let h = Harness::start(Options::default()).await;
    let body = Bytes::from(chat_body("Chat").to_string());
    for token in [
        None,
        Some("not-a-jwt"),
        Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
    ] {
        let response = h
            .request("POST", "/v1/chat/completions", token, body.clone())
            .await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, error) = crate::support::read_json(response).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(error_parts(&error).0, "authentication_error");
    }
    // A token signed by another gateway's secret.
    let mut other = h.gateway.config().auth.clone();
    other.issuer = "synthetic-intelligence".into();
    let forged = si_auth::TokenIssuer::new(
        &other,
        &si_auth::JwtSecrets {
            current: "another-secret-another-secret-another".to_owned().into(),
            previous: None,
        },
    )
    .issue("doctor1", si_core::Role::Admin, "hospital-01", "s1")
    .unwrap();
    use secrecy::ExposeSecret;
    let (status, _) = h
        .post_json(
            "/v1/chat/completions",
            Some(forged.token.expose_secret()),
            chat_body("Chat"),
        )
        .await;
    assert_eq!(status, 401);
    assert!(
        h.sim(8080).chats().await.is_empty() && h.sim(8083).chats().await.is_empty(),
        "nothing reached a backend"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn jwt_algorithm_and_expiry_come_from_the_environment() {
    let env = vec![
        ("JWT_ALGORITHM", "HS512".to_owned()),
        ("JWT_EXPIRY_HOURS", "8".to_owned()),
    ];
    let h = Harness::start(Options {
        env,
        ..Options::default()
    })
    .await;
    let (status, body) = h
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": TEST_PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 8 * 3600);
    let token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS512);
    let claims = h.gateway.tokens().verify(token).unwrap();
    assert_eq!(claims.exp - claims.iat, 8 * 3600);
    assert_eq!(claims.loc, "hospital-01", "no location_id: the user's own");
    h.shutdown().await;
}

#[tokio::test]
async fn login_bodies_are_small_and_never_echo_a_password() {
    let h = Harness::start(Options::default()).await;
    let huge = json!({"username": "doctor1", "password": "x".repeat(10_000)});
    let (status, body) = h.post_json("/v1/auth/login", None, huge).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (413, "body_too_large")
    );

    let (status, body) = h
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": 987654321}),
        )
        .await;
    assert_eq!(status, 400);
    let message = error_parts(&body).2;
    assert!(
        message.contains("password") && !message.contains("987654321"),
        "{message}"
    );

    // A user allowed at any location must say where they are.
    let (status, body) = h
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "biller", "password": TEST_PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (400, "location_required")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn listed_locations_bound_where_anyone_may_log_in() {
    let edit = ("locations = []", "locations = [\"hospital-01\"]".to_owned());
    let h = Harness::start(Options {
        toml_edits: vec![edit],
        ..Options::default()
    })
    .await;
    let login = |location: &'static str| {
        let h = &h;
        async move {
            let body =
                json!({"username": "biller", "password": TEST_PASSWORD, "location_id": location});
            h.post_json("/v1/auth/login", None, body).await
        }
    };
    let (status, body) = login("made-up-clinic").await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (403, "wrong_location")
    );
    assert_eq!(login("hospital-01").await.0, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn a_login_must_name_a_place_not_any_location() {
    let h = Harness::start(Options::default()).await;
    for username in ["biller", "doctor1"] {
        let body = json!({"username": username, "password": TEST_PASSWORD, "location_id": " * "});
        let (status, body) = h.post_json("/v1/auth/login", None, body).await;
        let (kind, code, message) = error_parts(&body);
        assert_eq!(
            (status, kind.as_str(), code.as_str()),
            (400, "invalid_request_error", "invalid_location"),
            "{username}: {body}"
        );
        assert!(message.contains("must name one location"), "{message}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_login_finds_its_user_whatever_the_case_or_width() {
    let h = Harness::start(Options::default()).await;
    for typed in ["Doctor1", "ｄｏｃｔｏｒ１"] {
        let body =
            json!({"username": typed, "password": TEST_PASSWORD, "location_id": "hospital-01"});
        let (status, body) = h.post_json("/v1/auth/login", None, body).await;
        assert_eq!(status, 200, "{typed}: {body}");
        let claims = h
            .gateway
            .tokens()
            .verify(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(claims.sub, "doctor1", "the stored name, not what was typed");
    }
    h.shutdown().await;
}
