use si_core::Config;

use super::*;

fn pool() -> BackendPool {
    BackendPool::new(&Config::builtin().unwrap().backends).unwrap()
}

#[test]
fn replicas_take_turns_and_unhealthy_ones_are_skipped() {
    let pool = pool();
    let mut picked: Vec<String> = (0..4)
        .map(|_| pool.pick("tiny-llama-1b", &[]).unwrap().url.clone())
        .collect();
    picked.sort();
    assert_eq!(
        picked,
        [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8083",
            "http://127.0.0.1:8083"
        ]
    );

    pool.all()[0].set_state(HealthState::Loading, 10);
    for _ in 0..3 {
        assert_eq!(
            pool.pick("tiny-llama-1b", &[]).unwrap().url,
            "http://127.0.0.1:8083"
        );
    }
    pool.all()[3].set_state(HealthState::Down, 10);
    let err = pool.pick("tiny-llama-1b", &[]).unwrap_err().to_string();
    assert!(err.contains("tiny-llama-1b-8080: loading"), "{err}");
    assert!(err.contains("tiny-llama-1b-8083: down"), "{err}");
}

#[test]
fn interleaved_agents_do_not_starve_a_replica() {
    let pool = pool();
    let mut on_8080 = 0;
    for _ in 0..10 {
        pool.pick("bimedix2-8b", &[]).unwrap();
        if pool
            .pick("tiny-llama-1b", &[])
            .unwrap()
            .url
            .ends_with(":8080")
        {
            on_8080 += 1;
        }
    }
    assert_eq!(on_8080, 5);
}

#[test]
fn a_model_never_loses_its_last_replica_to_ejection() {
    let config = Config::builtin().unwrap();
    let pool = BackendPool::new(&config.backends).unwrap();
    let (a, b) = (pool.all()[0].clone(), pool.all()[3].clone());
    let ejected = |backend: &Backend| {
        (0..3)
            .filter_map(|_| pool.backend_failed(backend, &config.failover))
            .count()
    };
    assert_eq!(ejected(&a), 1);
    assert_eq!(
        ejected(&b),
        0,
        "the other replica is the last one in rotation"
    );
    assert!(a.is_ejected() && !b.is_ejected());
    // With every healthy replica out of rotation, traffic still goes somewhere.
    b.set_state(HealthState::Down, 0);
    assert_eq!(pool.pick("tiny-llama-1b", &[]).unwrap().name, a.name);
}

#[test]
fn models_are_listed_once() {
    let pool = pool();
    let models: Vec<&str> = pool.models().collect();
    assert_eq!(
        models,
        [
            "tiny-llama-1b",
            "bimedix2-8b",
            "medicine-llm-13b",
            "openinsurance-8b",
            "biomistral-7b"
        ]
    );
}

#[test]
fn debug_never_shows_the_key() {
    let mut config = Config::builtin().unwrap();
    config.backends[0].api_key = Some("super-secret-key".to_owned().into());
    let pool = BackendPool::new(&config.backends).unwrap();
    let shown = format!("{pool:?}");
    assert!(!shown.contains("super-secret-key"));
    assert!(shown.contains("[REDACTED]"));
}

#[test]
fn a_key_with_a_newline_is_refused() {
    let mut config = Config::builtin().unwrap();
    config.backends[0].api_key = Some("bad\nkey".to_owned().into());
    assert!(matches!(
        BackendPool::new(&config.backends),
        Err(RouterError::UnusableKey { .. })
    ));
}
