//! `[auth.oidc]`: single sign-on settings, checked where a mistake would open the
//! door or lock everyone out.

use secrecy::ExposeSecret;

use crate::Role;

use super::*;

/// The built-in configuration with an `[auth.oidc]` table holding `lines`.
fn with_oidc(lines: &str) -> String {
    format!("{BUILTIN_TOML}\n[auth.oidc]\n{lines}\n")
}

const MINIMAL: &str = r#"
issuer = "https://login.microsoftonline.com/tenant-id/v2.0"
client_id = "c0ffee"
redirect_uri = "https://si.hospital.example/v1/auth/oidc/callback"
[auth.oidc.roles]
"si-clinicians" = "clinician"
"si-admins" = "Admin"
"#;

#[test]
fn unset_means_local_login_only() {
    assert!(builtin().auth.oidc.is_none());
}

#[test]
fn a_minimal_table_takes_the_defaults() {
    let config = Config::parse(&with_oidc(MINIMAL), "si.toml").unwrap();
    let oidc = config.auth.oidc.unwrap();
    assert_eq!(
        oidc.issuer,
        "https://login.microsoftonline.com/tenant-id/v2.0"
    );
    assert_eq!(
        oidc.audience, "c0ffee",
        "the audience defaults to the client id"
    );
    assert_eq!(oidc.scopes, ["openid", "profile", "email"]);
    assert_eq!(oidc.username_claim, "preferred_username");
    assert_eq!(oidc.groups_claim, "groups");
    assert_eq!(oidc.roles.get("si-admins"), Some(&Role::Admin));
    assert!(oidc.local_login);
    assert!(oidc.client_secret_ref.is_none());
    assert_eq!(oidc.jwks_refetch_interval.as_secs(), 10);
}

#[test]
fn mistakes_are_named() {
    let cases = [
        ("issuer", MINIMAL.replace("https://login", "http://login")),
        ("redirect_uri", MINIMAL.replace("https://si.", "http://si.")),
        (
            "issuer",
            MINIMAL.replace("https://login.microsoftonline.com", "not a url"),
        ),
        ("client_id", MINIMAL.replace("c0ffee", " ")),
        (
            "client_secret",
            format!("client_secret = \"hunter2\"\n{MINIMAL}"),
        ),
        ("scopes", format!("scopes = [\"profile\"]\n{MINIMAL}")),
        (
            "roles.si-clinicians",
            MINIMAL.replace("= \"clinician\"", "= \"doctor\""),
        ),
        (
            "jwks_refetch_interval_secs",
            format!("jwks_refetch_interval_secs = 0\n{MINIMAL}"),
        ),
    ];
    for (key, text) in cases {
        let e = parse_err(&with_oidc(&text));
        assert_eq!(e.key, format!("auth.oidc.{key}"), "{e}");
    }
    let no_roles = MINIMAL.split("[auth.oidc.roles]").next().unwrap();
    let e = parse_err(&with_oidc(no_roles));
    assert_eq!(e.key, "auth.oidc.roles");
    assert!(e.problem.contains("no one can sign in"), "{e}");
    // A secret never appears in the error.
    let e = parse_err(&with_oidc(&format!(
        "client_secret = \"hunter2\"\n{MINIMAL}"
    )));
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn http_is_allowed_to_this_host_only() {
    let local = MINIMAL
        .replace(
            "https://login.microsoftonline.com/tenant-id/v2.0",
            "http://127.0.0.1:9000",
        )
        .replace("https://si.hospital.example", "http://localhost:8000");
    let config = Config::parse(&with_oidc(&local), "si.toml").unwrap();
    assert_eq!(config.auth.oidc.unwrap().issuer, "http://127.0.0.1:9000");
}

#[test]
fn the_client_secret_is_a_reference_that_must_resolve() {
    let text = with_oidc(&format!(
        "client_secret = \"env::SI_OIDC_SECRET\"\n{MINIMAL}"
    ));
    let mut config = Config::parse(&text, "si.toml").unwrap();
    let e = config.apply_env(&Environment::default()).unwrap_err();
    assert_eq!(e.key, "auth.oidc.client_secret");
    config
        .apply_env(&Environment::from_pairs([("SI_OIDC_SECRET", "s3cret")]))
        .unwrap();
    let secret = config.auth.oidc.unwrap().client_secret.unwrap();
    assert_eq!(secret.expose_secret(), "s3cret");
}
