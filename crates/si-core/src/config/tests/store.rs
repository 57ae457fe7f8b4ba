//! `[store]`: the shared stores' URLs, resolved from secret references, and the
//! Redis settings.

use secrecy::ExposeSecret;

use super::*;

/// The built-in configuration with `[store]` (its last table) holding `lines`.
fn with_store(lines: &str) -> String {
    let (before, _) = BUILTIN_TOML.split_once("\n[store]\n").unwrap();
    format!("{before}\n[store]\n{lines}\n")
}

#[test]
fn by_default_counters_stay_on_each_gateway_and_fail_open() {
    let config = builtin();
    assert!(config.store.redis_url_ref.is_none());
    assert!(config.store.redis_url.is_none());
    assert_eq!(config.store.redis_failure, RedisFailure::FailOpen);
    assert_eq!(config.store.redis_prefix, "si");
}

#[test]
fn a_redis_url_is_a_secret_that_must_be_there_when_named() {
    let text = with_store("redis_url = \"env::SITE_REDIS\"\nredis_failure = \"fail_closed\"");
    let mut config = Config::parse(&text, "site.toml").unwrap();
    assert_eq!(config.store.redis_failure, RedisFailure::FailClosed);
    // Named but missing: an error, not counters of this gateway alone.
    let e = config.apply_env(&Environment::default()).unwrap_err();
    assert_eq!(e.key, "store.redis_url");
    assert!(e.to_string().contains("SITE_REDIS"), "{e}");
    config
        .apply_env(&Environment::from_pairs([(
            "SITE_REDIS",
            "rediss://:hunter2@cache:6380/1",
        )]))
        .unwrap();
    let url = config.store.redis_url.as_ref().unwrap();
    assert_eq!(url.expose_secret(), "rediss://:hunter2@cache:6380/1");
}

#[test]
fn the_variable_sets_the_redis_url_and_only_redis_is_accepted() {
    let config = Config::load(
        None,
        &Environment::from_pairs([("SI_REDIS_URL", "redis://127.0.0.1:6379")]),
    )
    .unwrap();
    let url = config.store.redis_url.as_ref().unwrap();
    assert_eq!(url.expose_secret(), "redis://127.0.0.1:6379");
    for wrong in [
        "http://:hunter2@cache",
        "hunter2",
        "postgres://:hunter2@db/si",
    ] {
        let e =
            Config::load(None, &Environment::from_pairs([("SI_REDIS_URL", wrong)])).unwrap_err();
        assert_eq!(e.key, "SI_REDIS_URL");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    // From a file, the error names the key and the reference, never the URL.
    let mut config = Config::parse(&with_store("redis_url = \"env::SITE_REDIS\""), "s").unwrap();
    let e = config
        .apply_env(&Environment::from_pairs([(
            "SITE_REDIS",
            "memcache://:hunter2@c",
        )]))
        .unwrap_err();
    assert_eq!(e.key, "store.redis_url (env::SITE_REDIS)");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn bad_redis_settings_name_their_key() {
    for (lines, key) in [
        ("redis_url = \"redis://:hunter2@cache\"", "store.redis_url"),
        ("redis_prefix = \"\"", "store.redis_prefix"),
        ("redis_prefix = \"si:prod\"", "store.redis_prefix"),
        ("redis_prefix = \"with space\"", "store.redis_prefix"),
    ] {
        let e = parse_err(&with_store(lines));
        assert_eq!(e.key, key, "{lines}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    let e = parse_err(&with_store("redis_failure = \"fail_sometimes\""));
    assert_eq!(e.key, "store.redis_failure");
    assert!(e.problem.contains("fail_closed"), "{e}");
    let config = Config::parse(&with_store("redis_prefix = \"si-test.2\""), "s").unwrap();
    assert_eq!(config.store.redis_prefix, "si-test.2");
}
