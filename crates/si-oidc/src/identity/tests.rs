use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use url::Url;

use super::*;

fn config() -> OidcConfig {
    OidcConfig {
        issuer: "https://idp.example".into(),
        client_id: "si".into(),
        client_secret_ref: None,
        client_secret: None,
        audience: "si".into(),
        redirect_uri: Url::parse("https://si.example/v1/auth/oidc/callback").unwrap(),
        scopes: vec!["openid".into()],
        username_claim: "preferred_username".into(),
        groups_claim: "groups".into(),
        roles: BTreeMap::from([
            ("si-clinicians".to_owned(), Role::Clinician),
            ("si-admins".to_owned(), Role::Admin),
            ("si-billing".to_owned(), Role::Billing),
        ]),
        location_claim: Some("site".into()),
        location_group_prefix: Some("si-site-".into()),
        default_location: None,
        local_login: true,
        ca_file: None,
        jwks_refetch_interval: Duration::from_secs(10),
    }
}

fn claims(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn groups_map_to_the_first_role_and_a_location() {
    let identity = map(
        &config(),
        &claims(json!({
            "preferred_username": "alice@hospital.example",
            "groups": ["other", "si-billing", "si-admins", "si-site-north"],
            "jti": "t1", "iat": 10, "exp": 20
        })),
    )
    .unwrap();
    assert_eq!(identity.username, "alice@hospital.example");
    assert_eq!(identity.role, Role::Admin, "admin comes first in Role::ALL");
    assert_eq!(identity.location, "north");
    assert_eq!(identity.token_id.as_deref(), Some("t1"));
    assert_eq!((identity.issued_at, identity.expires_at), (10, 20));
}

#[test]
fn the_location_claim_wins_and_one_group_may_be_a_string() {
    let identity = map(
        &config(),
        &claims(json!({"preferred_username": "bob", "groups": "si-clinicians", "site": "icu", "exp": 1})),
    )
    .unwrap();
    assert_eq!(
        (identity.role, identity.location.as_str()),
        (Role::Clinician, "icu")
    );
}

#[test]
fn no_mapped_group_no_location_or_a_bad_name_is_refused() {
    let no_role = map(
        &config(),
        &claims(json!({"preferred_username": "eve", "groups": ["visitors", "si-site-north"]})),
    );
    assert!(
        matches!(no_role, Err(OidcError::NoRole { count: 2, .. })),
        "{no_role:?}"
    );
    let no_location = map(
        &config(),
        &claims(json!({"preferred_username": "eve", "groups": ["si-billing"]})),
    );
    assert!(matches!(no_location, Err(OidcError::NoLocation)));
    let mut with_default = config();
    with_default.default_location = Some("main".into());
    let located = map(
        &with_default,
        &claims(json!({"preferred_username": "eve", "groups": ["si-billing"]})),
    )
    .unwrap();
    assert_eq!(located.location, "main");
    for bad in [
        json!({"groups": ["si-billing"]}),
        json!({"preferred_username": "a b", "groups": ["si-billing"]}),
    ] {
        assert!(matches!(
            map(&with_default, &claims(bad)),
            Err(OidcError::BadIdentity(_))
        ));
    }
    let odd_site = map(
        &config(),
        &claims(json!({"preferred_username": "eve", "groups": ["si-billing"], "site": "../x"})),
    );
    assert!(matches!(odd_site, Err(OidcError::BadIdentity(_))));
}
