use super::*;

const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// One failed attempt, as the login handler makes it: the delay it was given.
fn fail(
    throttle: &LoginThrottle,
    user: &str,
    address: &str,
    now: Instant,
) -> Result<Duration, Duration> {
    let admitted = throttle.begin(user, address, now)?;
    throttle.failed(user, address, now);
    Ok(admitted.delay)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn a_username_is_locked_out_only_at_the_address_that_failed_it() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    let delays: Vec<_> = (0..5)
        .map(|_| fail(&throttle, "ghost", "10.0.0.1", t0).unwrap())
        .collect();
    assert_eq!(delays, [0, 100, 200, 400, 800].map(ms));
    assert_eq!(throttle.begin("ghost", "10.0.0.1", t0), Err(LOCKOUT));
    // Elsewhere the name is slowed down, not locked out.
    assert_eq!(
        throttle.begin("ghost", "10.0.0.2", t0),
        Ok(Admitted { delay: ms(1600) })
    );
    assert_eq!(
        throttle.begin("other", "10.0.0.1", t0),
        Ok(Admitted {
            delay: Duration::ZERO
        }),
        "other users at the address are not affected"
    );
    let later = t0 + LOCKOUT + Duration::from_secs(1);
    assert!(
        throttle.begin("ghost", "10.0.0.1", later).is_ok(),
        "the lockout ends"
    );
}

#[test]
fn a_username_failing_from_everywhere_is_slowed_never_locked() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    let mut last = Duration::ZERO;
    for n in 0..60 {
        // Four failures from each of fifteen addresses: under every lockout.
        let address = format!("10.1.0.{}", n / 4);
        last = fail(&throttle, "doctor1", &address, t0).unwrap();
    }
    assert_eq!(last, Duration::from_secs(5), "the delay is capped");
    let admitted = throttle.begin("doctor1", "10.2.0.1", t0).unwrap();
    assert_eq!(admitted.delay, Duration::from_secs(5));
    throttle.succeeded("doctor1", "10.2.0.1");
}

#[test]
fn attempts_in_flight_count_before_they_fail() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    // Fifty guesses sent at once: five get their password checked.
    let admitted = (0..50)
        .filter(|_| throttle.begin("doctor1", "10.0.0.1", t0).is_ok())
        .count();
    assert_eq!(admitted, 5);
}

#[test]
fn an_address_spraying_many_usernames_is_locked_out() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    for n in 0..20 {
        fail(&throttle, &format!("user{n}"), "10.9.9.9", t0).unwrap();
    }
    assert_eq!(throttle.begin("fresh-user", "10.9.9.9", t0), Err(LOCKOUT));
    assert!(throttle.begin("fresh-user", "10.9.9.8", t0).is_ok());
}

#[test]
fn successes_do_not_use_up_a_shared_address() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    for n in 0..100 {
        let user = format!("nurse{n}");
        throttle.begin(&user, "ward-pc", t0).unwrap();
        throttle.succeeded(&user, "ward-pc");
    }
    assert!(throttle.begin("nurse", "ward-pc", t0).is_ok());
}

#[test]
fn success_clears_the_address_but_not_the_slow_down_and_old_failures_expire() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    for _ in 0..4 {
        fail(&throttle, "ann", "a", t0).unwrap();
    }
    throttle.begin("ann", "a", t0).unwrap();
    throttle.succeeded("ann", "a");
    let delays: Vec<_> = (0..5)
        .map(|_| fail(&throttle, "ann", "a", t0).unwrap())
        .collect();
    assert_eq!(
        delays,
        [800, 1600, 3200, 5000, 5000].map(ms),
        "five more tries at the address, still slowed"
    );
    assert!(throttle.begin("ann", "a", t0).is_err());

    for _ in 0..4 {
        fail(&throttle, "bob", "c", t0).unwrap();
    }
    let later = t0 + Duration::from_secs(16 * 60);
    let delays: Vec<_> = (0..5)
        .map(|_| fail(&throttle, "bob", "c", later).unwrap())
        .collect();
    assert_eq!(delays, [0, 100, 200, 400, 800].map(ms), "window restarted");
}

#[test]
fn guessing_from_several_addresses_is_reported_once_a_window() {
    let throttle = LoginThrottle::default();
    let report = |address: &str, now: Instant| {
        throttle.begin("doctor1", address, now).unwrap();
        throttle.failed("doctor1", address, now).distributed
    };
    let t0 = Instant::now();
    let seen: Vec<_> = ["a", "a", "b", "c", "d", "c"]
        .iter()
        .map(|address| report(address, t0))
        .collect();
    assert_eq!(seen, [false, false, false, true, false, false]);
    let later = t0 + Duration::from_secs(16 * 60);
    let seen: Vec<_> = ["e", "f", "g"]
        .iter()
        .map(|address| report(address, later))
        .collect();
    assert_eq!(seen, [false, false, true]);
}

#[test]
fn memory_stays_bounded_under_a_flood_of_names() {
    let policy = ThrottlePolicy {
        max_tracked: 1_000,
        ..ThrottlePolicy::default()
    };
    let throttle = LoginThrottle::new(policy);
    let t0 = Instant::now();
    for n in 0..50_000 {
        let _ = fail(&throttle, &format!("u{n}"), &format!("a{n}"), t0);
        assert!(throttle.tracked() <= 1_000);
    }
}

#[test]
fn over_long_usernames_are_kept_small_and_apart() {
    let throttle = LoginThrottle::default();
    let t0 = Instant::now();
    let long = |last: char| format!("{}{last}", "x".repeat(8 * 1024));
    for _ in 0..5 {
        fail(&throttle, &long('a'), "10.0.0.1", t0).unwrap();
    }
    assert!(throttle.begin(&long('a'), "10.0.0.1", t0).is_err());
    assert!(throttle.begin(&long('b'), "10.0.0.1", t0).is_ok());
    let failures = throttle.failures.lock().unwrap();
    let longest = failures.keys().map(String::len).max().unwrap();
    assert!(longest < 64, "{longest}");
}
