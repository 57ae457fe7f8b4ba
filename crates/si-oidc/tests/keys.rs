//! The key cache against a provider that is a plain HTTP server (the real
//! provider's tests live with the gateway's): algorithms refused before any key
//! is looked at, and made-up key ids costing the provider one fetch per interval.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use si_core::Role;
use si_core::config::OidcConfig;
use si_oidc::{OidcError, Provider, is_provider_token};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: issuer.into(),
        client_id: "si".into(),
        client_secret_ref: None,
        client_secret: None,
        audience: "si-gateway".into(),
        redirect_uri: url::Url::parse("http://127.0.0.1:1/v1/auth/oidc/callback").unwrap(),
        scopes: vec!["openid".into()],
        username_claim: "preferred_username".into(),
        groups_claim: "groups".into(),
        roles: BTreeMap::from([("si-clinicians".to_owned(), Role::Clinician)]),
        location_claim: None,
        location_group_prefix: None,
        default_location: Some("main".into()),
        local_login: true,
        ca_file: None,
        jwks_refetch_interval: Duration::from_secs(60),
    }
}

/// A token with this header and claims, and a signature of junk: enough for
/// everything that is refused before a signature is checked.
fn unsigned(header: serde_json::Value, claims: serde_json::Value) -> String {
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(header),
        part(claims),
        URL_SAFE_NO_PAD.encode(b"junk")
    )
}

async fn provider_server() -> MockServer {
    let server = MockServer::start().await;
    let issuer = server.uri();
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn none_hmac_and_embedded_keys_never_reach_the_provider() {
    let server = provider_server().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": []})))
        .expect(0)
        .mount(&server)
        .await;
    let provider = Provider::new(&config(&server.uri()), "k".to_owned().into()).unwrap();
    let claims =
        json!({"sub": "x", "iss": server.uri(), "aud": "si-gateway", "exp": 4_000_000_000u64});
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "HS256", "kid": "k1"}),
        json!({"alg": "RS256", "kid": "k1", "jwk": {"kty": "oct", "k": "AA"}}),
        json!({"alg": "RS256", "jku": "https://evil.example/jwks"}),
        json!({"alg": "ES256", "x5u": "https://evil.example/cert"}),
    ] {
        let token = unsigned(header.clone(), claims.clone());
        assert!(!is_provider_token(&token), "{header}");
        let refused = provider.verify_access_token(&token).await;
        assert!(
            matches!(refused, Err(OidcError::InvalidToken(_))),
            "{header}: {refused:?}"
        );
    }
    assert!(is_provider_token(&unsigned(
        json!({"alg": "EdDSA", "kid": "a"}),
        claims
    )));
}

#[tokio::test]
async fn a_flood_of_made_up_key_ids_fetches_the_keys_once_per_interval() {
    let server = provider_server().await;
    // A public key (P-256), as a provider publishes one.
    let published = json!({
        "kty": "EC", "crv": "P-256", "kid": "published", "alg": "ES256", "use": "sig",
        "x": "WgTZZb2mmtOkvvuUp5KbRT-19w2bQhjUY8so-CaJZKs",
        "y": "FgSSReQuxj_lmuAsyXikImOD5FL1iM3d8VDREcuwK5c",
    });
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [published]})))
        .expect(1)
        .mount(&server)
        .await;
    let provider = Provider::new(&config(&server.uri()), "k".to_owned().into()).unwrap();
    let claims =
        json!({"sub": "x", "iss": server.uri(), "aud": "si-gateway", "exp": 4_000_000_000u64});
    let mut refused = 0;
    for i in 0..500 {
        let token = unsigned(
            json!({"alg": "RS256", "kid": format!("made-up-{i}")}),
            claims.clone(),
        );
        match provider.verify_access_token(&token).await {
            Err(OidcError::InvalidToken("unknown key id")) => refused += 1,
            other => panic!("made-up key id {i}: {other:?}"),
        }
    }
    assert_eq!(refused, 500);
    // MockServer checks `expect(1)` when dropped.
}

#[tokio::test]
async fn a_provider_that_never_answered_gives_unreachable_not_an_invalid_token() {
    let server = provider_server().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let provider = Provider::new(&config(&server.uri()), "k".to_owned().into()).unwrap();
    let claims =
        json!({"sub": "x", "iss": server.uri(), "aud": "si-gateway", "exp": 4_000_000_000u64});
    let token = unsigned(json!({"alg": "RS256", "kid": "k"}), claims);
    for _ in 0..2 {
        let answer = provider.verify_access_token(&token).await;
        assert!(
            matches!(answer, Err(OidcError::Unreachable(_))),
            "{answer:?}"
        );
    }
    let started = provider.begin_sign_in().await.unwrap();
    assert!(
        started
            .redirect
            .starts_with(&format!("{}/auth?", server.uri()))
    );
    for needed in [
        "code_challenge_method=S256",
        "state=",
        "nonce=",
        "code_challenge=",
        "response_type=code",
    ] {
        assert!(
            started.redirect.contains(needed),
            "{needed} in {}",
            started.redirect
        );
    }
    // Nothing listens on port 1.
    let down = Provider::new(&config("http://127.0.0.1:1"), "k".to_owned().into()).unwrap();
    let refused = down.begin_sign_in().await;
    assert!(matches!(refused, Err(OidcError::Unreachable(_))));
}
