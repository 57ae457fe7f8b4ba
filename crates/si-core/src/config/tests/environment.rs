//! Environment overrides, loading, and the checks of configurations built in code.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;

#[test]
fn configurations_built_in_code_are_checked_too() {
    let mut config = builtin();
    assert_eq!(config.check("code"), Ok(()));
    config.agents[0].model = "unserved".into();
    assert_eq!(
        config.check("code").map_err(|e| e.key),
        Err("agents[0].model".into())
    );
    let mut config = builtin();
    config.backends[1].name = config.backends[0].name.clone();
    assert_eq!(
        config.check("code").map_err(|e| e.key),
        Err("backends[1].name".into())
    );
    let mut config = builtin();
    config.backends.clear();
    assert_eq!(
        config.check("code").map_err(|e| e.key),
        Err("backends".into())
    );
}

#[test]
fn environment_overrides_and_resolves_keys() -> Result<(), ConfigError> {
    let env = Environment::from_pairs([
        ("SI_DATA_DIR", "/var/lib/si"),
        ("ALLOW_INSECURE_DEV", "true"),
        ("JWT_ALGORITHM", "HS512"),
        ("JWT_EXPIRY_HOURS", "8"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ("SI_RATE_LIMIT_PER_IP", "0"),
        ("API_KEY_BIOMISTRAL_8085", "key-8085"),
    ]);
    let config = Config::load(None, &env)?;
    assert_eq!(config.gateway.data_dir, std::path::Path::new("/var/lib/si"));
    assert!(config.gateway.allow_insecure_dev);
    assert_eq!(config.auth.algorithm, JwtAlgorithm::Hs512);
    assert_eq!(config.auth.expiry, Duration::from_secs(8 * 3600));
    assert!(config.auth.secret.is_some());
    let biomistral = config.backends.iter().find(|b| b.url.port == 8085);
    let key = biomistral
        .and_then(|b| b.api_key.as_ref())
        .map(|k| k.expose_secret());
    assert_eq!(key, Some("key-8085"));
    assert_eq!(config.backends_without_key().count(), 5);
    assert_eq!(config.rate_limits.per_ip_per_minute, 0);
    Ok(())
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (name, value) in [
        ("JWT_SECRET", "too-short"),
        ("JWT_ALGORITHM", "RS999"),
        ("JWT_EXPIRY_HOURS", "-1"),
        ("ALLOW_INSECURE_DEV", "maybe"),
        ("SI_RATE_LIMIT_PER_IP", "lots"),
    ] {
        let env = Environment::from_pairs([(name, value)]);
        match Config::load(None, &env) {
            Ok(_) => panic!("{name}={value} accepted"),
            Err(e) => {
                assert_eq!(e.key, name);
                assert!(!e.to_string().contains("too-short"), "secret echoed: {e}");
            }
        }
    }
}

#[test]
fn a_missing_file_is_a_config_error() {
    let err = Config::load(
        Some(std::path::Path::new("/nonexistent/si.toml")),
        &Environment::default(),
    );
    assert!(matches!(err, Err(e) if e.source_name == "/nonexistent/si.toml"));
}

#[test]
fn insecure_dev_mode_is_refused_off_loopback() {
    let env = Environment::from_pairs([("ALLOW_INSECURE_DEV", "true")]);
    assert!(Config::load(None, &env).is_ok(), "loopback is fine");
    let mut config = builtin();
    config.gateway.listen = "0.0.0.0:8000".parse().unwrap();
    let err = config.apply_env(&env).unwrap_err();
    assert_eq!(err.key, "gateway.allow_insecure_dev");
    assert!(err.problem.contains("0.0.0.0:8000"), "{err}");
    config.gateway.allow_insecure_dev = false;
    assert!(config.check("code").is_ok());
}

#[test]
fn refresh_tokens_must_outlive_access_tokens() {
    let text = BUILTIN_TOML.replace("refresh_expiry_hours = 168", "refresh_expiry_hours = 1");
    assert_eq!(parse_err(&text).key, "auth.refresh_expiry_hours");
    let env = Environment::from_pairs([("JWT_EXPIRY_HOURS", "200")]);
    assert_eq!(
        Config::load(None, &env).map_err(|e| e.key).err().as_deref(),
        Some("auth.refresh_expiry_hours")
    );
}

#[test]
fn a_database_url_is_a_postgres_secret_that_must_be_there_when_named() {
    let named = BUILTIN_TOML.replace(
        "# database_url = \"env::SI_DATABASE_URL\"",
        "database_url = \"env::SITE_DB\"",
    );
    let mut config = Config::parse(&named, "site.toml").unwrap();
    // Named but missing: an error, not a private SQLite file.
    let e = config.apply_env(&Environment::default()).unwrap_err();
    assert_eq!(e.key, "store.database_url");
    assert!(e.to_string().contains("SITE_DB"), "{e}");
    config
        .apply_env(&Environment::from_pairs([(
            "SITE_DB",
            "postgres://si:hunter2@db/si",
        )]))
        .unwrap();
    let url = config.store.database_url.as_ref().unwrap();
    assert_eq!(url.expose_secret(), "postgres://si:hunter2@db/si");
    // The variable overrides the file; not PostgreSQL is refused, never echoed.
    let e = Config::load(
        None,
        &Environment::from_pairs([("SI_DATABASE_URL", "mysql://root:hunter2@db/si")]),
    )
    .unwrap_err();
    assert_eq!(e.key, "SI_DATABASE_URL");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // Unset, the SQLite default.
    assert!(builtin().store.database_url.is_none());
}

#[test]
fn a_gateway_is_named_by_its_file_or_environment_else_by_host_and_port() {
    let config = builtin();
    assert_eq!(config.gateway.name, None);
    assert!(config.gateway.instance_name().ends_with(":8000"));
    let named = BUILTIN_TOML.replace("[gateway]", "[gateway]\nname = \" site-a-1 \"");
    let mut config = Config::parse(&named, "si.toml").unwrap();
    assert_eq!(config.gateway.instance_name(), "site-a-1");
    config
        .apply_env(&Environment::from_pairs([("SI_GATEWAY_NAME", "site-b-2")]))
        .unwrap();
    assert_eq!(config.gateway.instance_name(), "site-b-2");
    let err = parse_err(&BUILTIN_TOML.replace("[gateway]", "[gateway]\nname = \"a\\u0007b\""));
    assert_eq!(err.key, "gateway.name");
    let long = "x".repeat(65);
    let err = builtin()
        .apply_env(&Environment::from_pairs([(
            "SI_GATEWAY_NAME",
            long.as_str(),
        )]))
        .unwrap_err();
    assert_eq!(err.key, "SI_GATEWAY_NAME");
}
