//! The OpenID provider harness against the real `oidc-provider`: tokens for each
//! algorithm, key rotation on the same port, minting, and a browser that reaches
//! a gateway's callback (a stand-in gateway here: the real one has its own tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use serde_json::{Value, json};
use si_test_support::oidc::{
    Alg, Browser, Client, Options, Pkce, Provider, User, browser_sign_in, decode_jwt, random_token,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const NEEDS_NODE: &str = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider";
const REDIRECT: &str = "http://127.0.0.1:9/app/callback";

fn options(alg: Alg) -> Options {
    Options {
        users: vec![User::new(
            "alice",
            &["si-clinician", "ward-3"],
            "hospital-01",
        )],
        clients: vec![Client::new("app", "app-secret", REDIRECT)],
        alg,
        ..Options::default()
    }
}

async fn access_token(provider: &Provider) -> (Value, Value) {
    let tokens = provider
        .user_access_token("app", "app-secret", REDIRECT, "alice")
        .await
        .unwrap();
    decode_jwt(&tokens.access_token).unwrap()
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn user_access_tokens_are_jwts_for_the_audience_with_each_algorithm() {
    for alg in Alg::ALL {
        let provider = Provider::start(options(alg)).await.expect(NEEDS_NODE);
        let tokens = provider
            .user_access_token("app", "app-secret", REDIRECT, "alice")
            .await
            .unwrap();
        let (header, claims) = decode_jwt(&tokens.access_token).unwrap();
        assert_eq!(header["alg"], alg.as_str(), "{header}");
        assert_eq!(header["typ"], "at+jwt", "{header}");
        assert!(header["kid"].is_string(), "{header}");
        assert_eq!(claims["aud"], "si-gateway", "{claims}");
        assert_eq!(claims["iss"], provider.issuer(), "{claims}");
        assert_eq!(claims["sub"], "alice", "{claims}");
        assert_eq!(claims["preferred_username"], "alice", "{claims}");
        assert_eq!(
            claims["groups"],
            json!(["si-clinician", "ward-3"]),
            "{claims}"
        );
        assert_eq!(claims["location"], "hospital-01", "{claims}");

        let (id_header, id_claims) = decode_jwt(&tokens.id_token).unwrap();
        assert_eq!(id_header["alg"], alg.as_str(), "{id_header}");
        assert_eq!(id_header["kid"], header["kid"], "{id_header}");
        assert_eq!(id_claims["aud"], "app", "{id_claims}");
        assert_eq!(id_claims["email"], "alice@hospital.example", "{id_claims}");
        assert_eq!(id_claims["groups"], json!(["si-clinician", "ward-3"]));

        let jwks: Value = reqwest::get(format!("{}/jwks", provider.issuer()))
            .await
            .unwrap()
            .text()
            .await
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap();
        let published = jwks["keys"].as_array().unwrap();
        assert!(
            published.iter().any(|k| k["kid"] == header["kid"]),
            "{jwks}"
        );
        assert!(published.iter().all(|k| k.get("d").is_none()), "{jwks}");
    }
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn a_restart_with_new_keys_keeps_the_port_and_changes_the_kid() {
    let mut provider = Provider::start(options(Alg::Es256))
        .await
        .expect(NEEDS_NODE);
    let (issuer, port) = (provider.issuer().to_owned(), provider.port());
    let (first, _) = access_token(&provider).await;

    provider.stop();
    let refused = provider
        .user_access_token("app", "app-secret", REDIRECT, "alice")
        .await;
    assert!(refused.is_err(), "a stopped provider answered");

    let keys = tempfile::tempdir().unwrap();
    provider
        .restart(Some(keys.path().join("rotated.json")))
        .await
        .unwrap();
    assert_eq!(
        (provider.issuer(), provider.port()),
        (issuer.as_str(), port)
    );
    let (rotated, _) = access_token(&provider).await;
    assert_ne!(first["kid"], rotated["kid"]);

    provider.restart(None).await.unwrap();
    let (again, _) = access_token(&provider).await;
    assert_eq!(
        again["kid"], rotated["kid"],
        "the same keys file, the same key"
    );
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn minting_answers_only_when_enabled() {
    let claims = json!({"iss": "x", "aud": "si-gateway", "sub": "alice", "exp": 1_000_000_000});
    let provider = Provider::start(options(Alg::EdDsa))
        .await
        .expect(NEEDS_NODE);
    let refused = provider.mint(&claims).await.unwrap_err();
    assert!(refused.contains("404"), "{refused}");

    let provider = Provider::start(Options {
        mint: true,
        ..options(Alg::EdDsa)
    })
    .await
    .unwrap();
    let (issued, _) = access_token(&provider).await;
    let (header, payload) = decode_jwt(&provider.mint(&claims).await.unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], issued["kid"], "the provider's own key");
    assert_eq!(payload, claims);
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn an_unknown_account_cannot_sign_in() {
    let provider = Provider::start(options(Alg::Rs256))
        .await
        .expect(NEEDS_NODE);
    let refused = provider
        .user_access_token("app", "app-secret", REDIRECT, "mallory")
        .await
        .unwrap_err();
    assert!(refused.contains("400"), "{refused}");
}

/// A stand-in for the gateway's two routes: login redirects to the provider and
/// sets a cookie; the callback answers only when that cookie comes back.
async fn stand_in_gateway(gateway: &MockServer, provider: &Provider, state: &str, pkce: &Pkce) {
    let callback = format!("{}/v1/auth/oidc/callback", gateway.uri());
    let authorization = provider
        .authorization_url("gateway", &callback, state, &random_token(), pkce)
        .unwrap();
    Mock::given(method("GET"))
        .and(path("/v1/auth/oidc/login"))
        .respond_with(
            ResponseTemplate::new(303)
                .insert_header("location", authorization.as_str())
                .insert_header("set-cookie", "si_oidc=pending; Path=/; HttpOnly"),
        )
        .mount(gateway)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/auth/oidc/callback"))
        .and(|request: &Request| {
            request
                .headers
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|cookies| cookies.contains("si_oidc=pending"))
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"signed_in": true})))
        .mount(gateway)
        .await;
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn a_browser_comes_back_to_the_gateway_with_a_code_and_its_state() {
    let gateway = MockServer::start().await;
    let callback = format!("{}/v1/auth/oidc/callback", gateway.uri());
    let provider = Provider::start(Options {
        clients: vec![
            Client::new("gateway", "gateway-secret", &callback),
            Client::new("app", "app-secret", REDIRECT),
        ],
        ..options(Alg::Rs256)
    })
    .await
    .expect(NEEDS_NODE);
    let (state, pkce) = (random_token(), Pkce::new());
    stand_in_gateway(&gateway, &provider, &state, &pkce).await;

    let browser = Browser::new().unwrap();
    let reached = browser
        .reach_gateway_callback(&gateway.uri(), "alice")
        .await
        .unwrap();
    assert!(reached.as_str().starts_with(&callback), "{reached}");
    let query = |name: &str| {
        reached
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(query("state").as_deref(), Some(state.as_str()));
    assert_eq!(query("iss").as_deref(), Some(provider.issuer()));
    let code = query("code").expect("a code");
    let tokens = provider
        .exchange_code(
            "gateway",
            "gateway-secret",
            &callback,
            &code,
            &pkce.verifier,
        )
        .await
        .unwrap();
    let (_, claims) = decode_jwt(&tokens.access_token).unwrap();
    assert_eq!(claims["preferred_username"], "alice");
    let replayed = provider
        .exchange_code(
            "gateway",
            "gateway-secret",
            &callback,
            &code,
            &pkce.verifier,
        )
        .await
        .unwrap_err();
    assert!(replayed.contains("invalid_grant"), "{replayed}");

    // The same browser at another application: signed in already, it is only
    // asked to consent, which the provider grants at once.
    let elsewhere = provider
        .authorization_url("app", REDIRECT, "s", "n", &Pkce::new())
        .unwrap();
    let reached = browser
        .sign_in_at_provider(&elsewhere, "alice")
        .await
        .unwrap();
    assert!(reached.query_pairs().any(|(k, _)| k == "code"), "{reached}");

    let answer = browser_sign_in(&gateway.uri(), "alice").await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json().unwrap(), json!({"signed_in": true}));
}
