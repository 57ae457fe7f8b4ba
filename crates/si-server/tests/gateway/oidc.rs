//! Single sign-on against a real OpenID provider (`oidc-provider` under Node, see
//! si-test-support): browser sign-in ending in a gateway session, groups mapped
//! to roles, the provider's own access tokens as bearer tokens with each
//! algorithm, another issuer, an expired token, key rotation at the provider,
//! and the provider going away.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use si_test_support::oidc::{self, Alg, Browser, Client, Provider, User};
use si_test_support::ports::free_ports;

use crate::support::{Harness, Options, TEST_PASSWORD, chat_body, error_parts};

const NEEDS_NODE: &str = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider";
/// An application registered at the provider (it holds its own access tokens).
const APP_REDIRECT: &str = "http://127.0.0.1:9/app/callback";

/// The provider's users: a clinician, an admin who is also in billing, someone in
/// no mapped group, and one named like a local user of the gateway.
fn users() -> Vec<User> {
    vec![
        User::new("alice", &["si-clinicians", "staff"], "hospital-01"),
        User::new("carol", &["si-billing", "si-admins"], "hospital-01"),
        User::new("bob", &["visitors"], "hospital-01"),
        User::new("doctor1", &["si-clinicians"], "hospital-01"),
    ]
}

/// A provider on `port` whose client `si` comes back to a gateway on
/// `gateway_port`.
async fn provider(port: u16, gateway_port: u16, alg: Alg) -> Provider {
    Provider::start(oidc::Options {
        users: users(),
        clients: vec![
            Client::new("si", "si-client-secret", &callback(gateway_port)),
            Client::new("app", "app-secret", APP_REDIRECT),
        ],
        alg,
        mint: true,
        port,
        ..oidc::Options::default()
    })
    .await
    .expect(NEEDS_NODE)
}

fn callback(gateway_port: u16) -> String {
    format!("http://127.0.0.1:{gateway_port}/v1/auth/oidc/callback")
}

/// A gateway on `port` signing users in at the provider on `provider_port`.
async fn gateway(port: u16, provider_port: u16, local_login: bool) -> Harness {
    let table = format!(
        r#"[auth.oidc]
issuer = "http://127.0.0.1:{provider_port}"
client_id = "si"
client_secret = "env::SI_OIDC_CLIENT_SECRET"
audience = "si-gateway"
redirect_uri = "{}"
location_claim = "location"
local_login = {local_login}
jwks_refetch_interval_secs = 1

[auth.oidc.roles]
"si-clinicians" = "clinician"
"si-billing" = "billing"
"si-admins" = "admin"

[backend_defaults]"#,
        callback(port)
    );
    Harness::start(Options {
        port,
        toml_edits: vec![("[backend_defaults]", table)],
        env: vec![("SI_OIDC_CLIENT_SECRET", "si-client-secret".into())],
        ..Options::default()
    })
    .await
}

async fn app_token(provider: &Provider, account: &str) -> String {
    provider
        .user_access_token("app", "app-secret", APP_REDIRECT, account)
        .await
        .unwrap()
        .access_token
}

async fn chat(h: &Harness, token: &str, agent: &str) -> (u16, Value) {
    h.post_json("/v1/chat/completions", Some(token), chat_body(agent))
        .await
}

fn code_of(body: &Value) -> String {
    error_parts(body).1
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn a_browser_signs_in_and_gets_a_session_of_the_role_its_groups_map_to() {
    let [gateway_port, provider_port] = free_ports::<2>();
    let _provider = provider(provider_port, gateway_port, Alg::Rs256).await;
    let h = gateway(gateway_port, provider_port, true).await;

    let signed_in = oidc::browser_sign_in(&h.base, "alice").await.unwrap();
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    // The sign-in cookie is spent.
    assert!(
        signed_in
            .set_cookies
            .iter()
            .any(|c| c.starts_with("si_oidc=;") && c.contains("Max-Age=0")),
        "{:?}",
        signed_in.set_cookies
    );
    let tokens = signed_in.json().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    // A clinician: Chat yes, Billing no, exactly as for a local clinician.
    assert_eq!(chat(&h, access, "Chat").await.0, 200);
    let (status, body) = chat(&h, access, "Billing").await;
    assert_eq!((status, code_of(&body).as_str()), (403, "agent_forbidden"));
    // The gateway's own refresh works for the session.
    let (status, refreshed) = h
        .post_json(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");

    // An admin who is also in billing gets the first role: admin.
    let carol = oidc::browser_sign_in(&h.base, "carol").await.unwrap();
    let carol_token = carol.json().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = h.get_json("/v1/admin/backends", Some(&carol_token)).await;
    assert_eq!(status, 200, "{body}");

    // No mapped group: a clear 403 saying what to ask for.
    let bob = oidc::browser_sign_in(&h.base, "bob").await.unwrap();
    assert_eq!(bob.status, 403, "{}", bob.body);
    let body = bob.json().unwrap();
    assert_eq!(code_of(&body), "no_role");
    assert!(
        body.to_string().contains("no group that grants a role"),
        "{body}"
    );

    // A provider user may not take a local user's name.
    let clash = oidc::browser_sign_in(&h.base, "doctor1").await.unwrap();
    assert_eq!(clash.status, 409, "{}", clash.body);
    assert_eq!(code_of(&clash.json().unwrap()), "local_account_exists");

    // A callback whose state is not the browser's, or from another browser
    // (without the sign-in cookie), is refused.
    let browser = Browser::new().unwrap();
    let back = browser
        .reach_gateway_callback(&h.base, "alice")
        .await
        .unwrap();
    let mut forged = back.clone();
    let pairs: Vec<(String, String)> = back
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                "forged".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = browser.get(forged.as_str()).await.unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("state"), "{}", refused.body);
    let stranger = Browser::new().unwrap();
    let refused = stranger.get(back.as_str()).await.unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("no sign-in in progress"),
        "{}",
        refused.body
    );
    // The provider's own error comes back as one.
    let denied = format!(
        "{}/v1/auth/oidc/callback?error=access_denied&state=x",
        h.base
    );
    let refused = browser.get(&denied).await.unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("access_denied"), "{}", refused.body);

    // The audit names the signed-in user, with the role the groups gave.
    let audit = si_store::audit_reader(h.gateway.config()).await.unwrap();
    let records: Vec<si_audit::AuditRecord> =
        si_test_support::audit::first_records(audit.as_ref(), 1000)
            .await
            .iter()
            .map(|stored| serde_json::from_str(&stored.json).unwrap())
            .collect();
    assert!(records.iter().any(|r| r.path == "/v1/auth/oidc/callback"
        && r.status == 200
        && r.user.as_deref() == Some("alice")
        && r.role.as_deref() == Some("clinician")));
    assert!(records.iter().any(|r| r.path == "/v1/chat/completions"
        && r.user.as_deref() == Some("alice")
        && r.status == 200));
    // No code or state is kept in the trail.
    assert!(records.iter().all(|r| !r.path.contains('?')));

    // Disabled here, the user is refused on the next refresh and sign-in.
    h.gateway
        .accounts()
        .set_disabled("alice", true)
        .await
        .unwrap();
    let again = oidc::browser_sign_in(&h.base, "alice").await.unwrap();
    assert_eq!(again.status, 403, "{}", again.body);
    assert_eq!(code_of(&again.json().unwrap()), "user_disabled");
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn the_providers_own_access_tokens_are_bearer_tokens_with_each_algorithm() {
    for alg in Alg::ALL {
        let [gateway_port, provider_port] = free_ports::<2>();
        let provider = provider(provider_port, gateway_port, alg).await;
        let h = gateway(gateway_port, provider_port, true).await;
        let token = app_token(&provider, "alice").await;
        let (status, body) = chat(&h, &token, "Chat").await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        let (status, body) = chat(&h, &token, "Billing").await;
        assert_eq!(status, 403, "{alg:?}: {body}");
        // Bob's token is genuine, but his groups grant nothing.
        let (status, body) = chat(&h, &app_token(&provider, "bob").await, "Chat").await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (403, "no_role"),
            "{alg:?}"
        );
        // A provider user named like a local user cannot pass for them.
        let (status, body) = chat(&h, &app_token(&provider, "doctor1").await, "Chat").await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (409, "local_account_exists")
        );
        // A user who only ever came with provider tokens can still be disabled
        // here, and is then refused within the revocation sync.
        h.gateway
            .accounts()
            .set_disabled("alice", true)
            .await
            .unwrap();
        let started = Instant::now();
        while chat(&h, &token, "Chat").await.0 != 401 {
            assert!(started.elapsed() < Duration::from_secs(3), "still served");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs node_modules: npm ci --prefix crates/si-test-support/oidc-provider"]
async fn other_issuers_expired_tokens_rotation_and_a_provider_that_is_down() {
    let [gateway_port, provider_port, other_port, twin_port] = free_ports::<4>();
    let mut provider = provider(provider_port, gateway_port, Alg::Rs256).await;
    let h = gateway(gateway_port, provider_port, false).await;
    let token = app_token(&provider, "alice").await;
    assert_eq!(chat(&h, &token, "Chat").await.0, 200);

    // Another provider's token, for the same audience: refused.
    let other = self::provider(other_port, gateway_port, Alg::Rs256).await;
    let (status, body) = chat(&h, &app_token(&other, "alice").await, "Chat").await;
    assert_eq!(status, 401, "{body}");
    // Even signed with the very same keys, another issuer is another issuer.
    let twin = Provider::start(oidc::Options {
        users: users(),
        clients: vec![Client::new("app", "app-secret", APP_REDIRECT)],
        keys_file: Some(provider.keys_file().to_owned()),
        port: twin_port,
        ..oidc::Options::default()
    })
    .await
    .expect(NEEDS_NODE);
    let (status, body) = chat(&h, &app_token(&twin, "alice").await, "Chat").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("wrong issuer"), "{body}");

    // Expired (beyond the 30 s leeway), signed with the provider's real key.
    let now = si_auth::users::unix_now();
    let claims = |exp: i64, aud: &str| {
        json!({
            "iss": provider.issuer(), "aud": aud, "sub": "alice", "preferred_username": "alice",
            "groups": ["si-clinicians"], "location": "hospital-01",
            "iat": now - 3600, "exp": exp, "jti": format!("minted-{exp}-{aud}"),
        })
    };
    let expired = provider
        .mint(&claims(now - 120, "si-gateway"))
        .await
        .unwrap();
    let (status, body) = chat(&h, &expired, "Chat").await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (401, "token_expired"),
        "{body}"
    );
    let elsewhere = provider
        .mint(&claims(now + 600, "another-api"))
        .await
        .unwrap();
    let (status, body) = chat(&h, &elsewhere, "Chat").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("wrong audience"), "{body}");

    // Local login is off on this gateway: single sign-on only.
    let (status, body) = h
        .post_json(
            "/v1/auth/login",
            None,
            json!({"username": "doctor1", "password": TEST_PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (403, "local_login_disabled")
    );

    // The provider rotates its keys: a token under the new key id is accepted
    // once the keys are fetched again; the withdrawn key's tokens are not.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated_keys = tempfile::tempdir().unwrap();
    provider
        .restart(Some(rotated_keys.path().join("keys.json")))
        .await
        .unwrap();
    let rotated = app_token(&provider, "alice").await;
    let kid = |token: &str| oidc::decode_jwt(token).unwrap().0["kid"].clone();
    assert_ne!(kid(&rotated), kid(&token), "the provider's key id changed");
    let started = Instant::now();
    let (status, body) = chat(&h, &rotated, "Chat").await;
    assert_eq!(status, 200, "{body}");
    eprintln!("a rotated key was picked up in {:?}", started.elapsed());
    let (status, body) = chat(&h, &token, "Chat").await;
    assert_eq!(status, 401, "a withdrawn key: {body}");

    // The provider goes away: tokens under cached keys keep working, a new
    // browser sign-in gets a clear 503.
    provider.stop();
    assert_eq!(chat(&h, &rotated, "Chat").await.0, 200);
    let (status, body) = h.get_json("/v1/auth/oidc/login", None).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (503, "sso_unavailable"),
        "{body}"
    );
    assert!(
        body.to_string()
            .contains("identity provider cannot be reached"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internals: {body}"
    );
}
