use jsonwebtoken::{EncodingKey, Header};
use si_core::Config;

use super::*;

const SECRET: &str = "test-secret-test-secret-test-secret-0123";

fn issuer() -> TokenIssuer {
    let config = Config::builtin().unwrap();
    TokenIssuer::new(
        &config.auth,
        &JwtSecrets {
            current: SecretString::from(SECRET),
            previous: None,
        },
    )
}

fn sign(claims: &serde_json::Value, alg: Algorithm, key: &[u8]) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

fn claims_json(overrides: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let now = unix_now();
    let mut claims = serde_json::json!({
        "sub": "doctor1", "role": "clinician", "loc": "hospital-01", "jti": "abc", "sid": "s1",
        "iat": now, "exp": now + 3600, "iss": "synthetic-intelligence", "aud": "si-gateway",
    });
    for (key, value) in overrides {
        match value {
            serde_json::Value::Null => {
                claims.as_object_mut().unwrap().remove(*key);
            }
            v => claims[*key] = v.clone(),
        }
    }
    claims
}

#[test]
fn issued_tokens_verify_with_all_claims() {
    let issuer = issuer();
    let issued = issuer
        .issue("doctor1", Role::Clinician, "hospital-01", "s1")
        .unwrap();
    assert_eq!(issued.expires_in, 86_400);
    let claims = issuer.verify(issued.token.expose_secret()).unwrap();
    assert_eq!(claims, issued.claims);
    assert_eq!(claims.sub, "doctor1");
    assert_eq!(claims.role, Role::Clinician);
    assert_eq!(claims.loc, "hospital-01");
    assert_eq!(claims.exp - claims.iat, 86_400);
    assert_eq!(claims.jti.len(), 32);
    let other = issuer
        .issue("doctor1", Role::Clinician, "hospital-01", "s1")
        .unwrap();
    assert_ne!(other.claims.jti, claims.jti);
}

#[test]
fn rejects_forgeries_and_bad_claims() {
    let issuer = issuer();
    let now = unix_now();
    let hs256 = |c: &serde_json::Value| sign(c, Algorithm::HS256, SECRET.as_bytes());
    let cases = [
        (
            "wrong key",
            sign(
                &claims_json(&[]),
                Algorithm::HS256,
                b"another-secret-another-secret-00",
            ),
        ),
        (
            "other hmac",
            sign(&claims_json(&[]), Algorithm::HS512, SECRET.as_bytes()),
        ),
        (
            "expired",
            hs256(&claims_json(&[("exp", (now - 120).into())])),
        ),
        (
            "no exp",
            hs256(&claims_json(&[("exp", serde_json::Value::Null)])),
        ),
        ("wrong iss", hs256(&claims_json(&[("iss", "evil".into())]))),
        ("wrong aud", hs256(&claims_json(&[("aud", "other".into())]))),
        (
            "future nbf",
            hs256(&claims_json(&[("nbf", (now + 3600).into())])),
        ),
        (
            "future iat",
            hs256(&claims_json(&[("iat", (now + 3600).into())])),
        ),
        ("bad role", hs256(&claims_json(&[("role", "root".into())]))),
        (
            "two segments",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0".into(),
        ),
        ("four segments", format!("{}.x", hs256(&claims_json(&[])))),
        ("bad base64", "e$$.e$$.e$$".into()),
        ("huge", "a".repeat(MAX_TOKEN_BYTES + 1)),
    ];
    for (name, token) in cases {
        assert!(issuer.verify(&token).is_err(), "{name} was accepted");
    }
}

#[test]
fn rejects_alg_none_and_stripped_signature() {
    let issuer = issuer();
    let good = issuer.issue("doctor1", Role::Admin, "hq", "s1").unwrap();
    let parts: Vec<&str> = good.token.expose_secret().split('.').collect();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    for token in [
        format!("{none_header}.{}.", parts[1]),
        format!("{}.{}.", parts[0], parts[1]),
    ] {
        assert!(issuer.verify(&token).is_err(), "{token}");
    }
}

#[test]
fn debug_redacts_the_secret() {
    let shown = format!("{:?}", issuer());
    assert!(shown.contains("[REDACTED]"));
    assert!(!shown.contains(SECRET));
}

#[test]
fn expiry_maps_to_its_own_error() {
    let token = sign(
        &claims_json(&[
            ("exp", (unix_now() - 3600).into()),
            ("iat", (unix_now() - 7200).into()),
        ]),
        Algorithm::HS256,
        SECRET.as_bytes(),
    );
    assert!(matches!(
        issuer().verify(&token),
        Err(AuthError::ExpiredToken)
    ));
}
