//! Every JWT attack a verifier must refuse (RFC 8725, jwt_tool's checks), against the
//! running gateway: each gets a 401, and a correctly built control token gets a 200,
//! so the forger below demonstrably produces tokens the gateway would accept.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use si_auth::token::key_id;

use crate::support::{Harness, Options, chat_body, read_json};

const SECRET: &str = "the-gateway-secret-for-attack-tests-0123456789";
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_raw(header: &[u8], payload: &[u8], key: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

fn sign(header: &Value, claims: &Value, key: &[u8]) -> String {
    sign_raw(
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
        key,
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"sub": "doctor1", "role": "admin", "loc": "hospital-01", "jti": "attack-jti", "sid": "attack-sid",
           "iat": now(), "exp": now() + 3600, "iss": "synthetic-intelligence", "aud": "si-gateway"})
}

fn with(mut value: Value, key: &str, field: Value) -> Value {
    if field.is_null() {
        value.as_object_mut().unwrap().remove(key);
    } else {
        value[key] = field;
    }
    value
}

async fn status_for(h: &Harness, authorization: &str) -> u16 {
    let request = http::Request::post(format!("{}/v1/chat/completions", h.base))
        .header("authorization", authorization)
        .body(http_body_util::Full::new(Bytes::from(
            chat_body("Chat").to_string(),
        )))
        .unwrap();
    match crate::support::client().request(request).await {
        Ok(response) => read_json(response).await.0,
        // A header too large for the HTTP parser: the connection is refused outright.
        Err(_) => 431,
    }
}

#[tokio::test]
async fn every_jwt_attack_is_refused() {
    let h = Harness::start(Options {
        env: vec![("JWT_SECRET", SECRET.into())],
        ..Options::default()
    })
    .await;
    let kid = key_id(&SECRET.to_owned().into());
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let key = SECRET.as_bytes();
    let good = sign(&header, &claims(), key);
    assert_eq!(
        status_for(&h, &format!("Bearer {good}")).await,
        200,
        "the control token must work"
    );

    let parts: Vec<&str> = good.split('.').collect();
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            parts[1]
        )
    };
    let t = now();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned("none")),
        ("alg None", unsigned("None")),
        ("alg NONE", unsigned("NONE")),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        (
            "payload swapped under a valid signature",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(with(claims(), "sub", json!("someone-else"))
                    .to_string()
                    .as_bytes()),
                parts[2]
            ),
        ),
        (
            "HS256 keyed with a public key",
            sign(&header, &claims(), PUBLIC_KEY.as_bytes()),
        ),
        (
            "HS512 with the right secret",
            sign(&with(header.clone(), "alg", json!("HS512")), &claims(), key),
        ),
        (
            "embedded jwk",
            sign(
                &with(
                    header.clone(),
                    "jwk",
                    json!({"kty": "oct", "k": b64(b"attacker-key")}),
                ),
                &claims(),
                key,
            ),
        ),
        (
            "remote jku",
            sign(
                &with(header.clone(), "jku", json!("http://127.0.0.1:9/keys.json")),
                &claims(),
                key,
            ),
        ),
        (
            "remote x5u",
            sign(
                &with(header.clone(), "x5u", json!("http://127.0.0.1:9/cert.pem")),
                &claims(),
                key,
            ),
        ),
        (
            "crit header",
            sign(
                &with(header.clone(), "crit", json!(["exp"])),
                &claims(),
                key,
            ),
        ),
        (
            "kid path traversal",
            sign(
                &with(header.clone(), "kid", json!("../../../../dev/null")),
                &claims(),
                b"",
            ),
        ),
        (
            "kid SQL",
            sign(
                &with(header.clone(), "kid", json!("' OR '1'='1")),
                &claims(),
                key,
            ),
        ),
        (
            "kid 10 KB",
            sign(
                &with(header.clone(), "kid", json!("k".repeat(10_240))),
                &claims(),
                key,
            ),
        ),
        (
            "unknown kid",
            sign(
                &with(header.clone(), "kid", json!("0011223344556677")),
                &claims(),
                key,
            ),
        ),
        (
            "expired beyond leeway",
            sign(&header, &with(claims(), "exp", json!(t - 120)), key),
        ),
        (
            "nbf in the future",
            sign(&header, &with(claims(), "nbf", json!(t + 3600)), key),
        ),
        (
            "iat in the future",
            sign(&header, &with(claims(), "iat", json!(t + 3600)), key),
        ),
        (
            "missing exp",
            sign(&header, &with(claims(), "exp", Value::Null), key),
        ),
        (
            "missing sid",
            sign(&header, &with(claims(), "sid", Value::Null), key),
        ),
        (
            "wrong iss",
            sign(&header, &with(claims(), "iss", json!("evil")), key),
        ),
        (
            "wrong aud",
            sign(
                &header,
                &with(claims(), "aud", json!("another-service")),
                key,
            ),
        ),
        (
            "unknown role",
            sign(&header, &with(claims(), "role", json!("root")), key),
        ),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.{}", parts[2])),
        (
            "bad base64url",
            format!("{}.{}!!.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "payload not UTF-8",
            sign_raw(
                header.to_string().as_bytes(),
                b"{\"sub\":\"\xff\xfe\"}",
                key,
            ),
        ),
        (
            "payload not JSON",
            sign_raw(header.to_string().as_bytes(), b"not json", key),
        ),
        ("empty token", String::new()),
    ];
    for (name, token) in &cases {
        assert_eq!(
            status_for(&h, &format!("Bearer {token}")).await,
            401,
            "{name} was accepted"
        );
    }
    // Oversized headers never reach the decoder.
    assert_eq!(
        status_for(&h, &format!("Bearer {}", "a".repeat(8 * 1024))).await,
        401,
        "8 KB"
    );
    let huge = status_for(&h, &format!("Bearer {}", "a".repeat(1024 * 1024))).await;
    assert!(huge == 401 || huge == 431, "1 MB header: {huge}");
    // A revoked token id.
    let (status, _) = h.post_json("/v1/auth/logout", Some(&good), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        status_for(&h, &format!("Bearer {good}")).await,
        401,
        "revoked jti"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_rotated_secret_keeps_earlier_tokens_valid_until_dropped() {
    const OLD: &str = "the-secret-before-rotation-0123456789-abcdef";
    let old_token = {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": key_id(&OLD.to_owned().into())});
        sign(&header, &claims(), OLD.as_bytes())
    };
    let env = vec![
        ("JWT_SECRET", SECRET.to_owned()),
        ("JWT_SECRET_PREVIOUS", OLD.to_owned()),
    ];
    let h = Harness::start(Options {
        env,
        ..Options::default()
    })
    .await;
    assert_eq!(
        status_for(&h, &format!("Bearer {old_token}")).await,
        200,
        "previous secret accepted"
    );
    let fresh = h.login("admin1").await;
    let kid = jsonwebtoken::decode_header(&fresh).unwrap().kid;
    assert_eq!(
        kid,
        Some(key_id(&SECRET.to_owned().into())),
        "new tokens use the current secret"
    );
    h.shutdown().await;

    let h = Harness::start(Options {
        env: vec![("JWT_SECRET", SECRET.into())],
        ..Options::default()
    })
    .await;
    assert_eq!(
        status_for(&h, &format!("Bearer {old_token}")).await,
        401,
        "previous secret dropped"
    );
    h.shutdown().await;
}
