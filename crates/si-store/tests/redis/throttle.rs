//! The failed-login throttle shared by two gateways.

use std::time::Duration;

use si_auth::store::{LoginAttempts, LoginRefusal};
use si_core::config::RedisFailure;
use si_store::memory::ThrottlePolicy;
use si_store::redis::RedisLoginThrottle;
use si_test_support::redis::fresh_prefix;

use super::{forget, gateway, keys};

const LOCKOUT: Duration = Duration::from_secs(15 * 60);

async fn two_gateways(prefix: &str) -> (RedisLoginThrottle, RedisLoginThrottle) {
    let policy = ThrottlePolicy::default();
    (
        RedisLoginThrottle::new(
            &gateway(prefix, RedisFailure::FailClosed).await,
            policy.clone(),
        ),
        RedisLoginThrottle::new(&gateway(prefix, RedisFailure::FailClosed).await, policy),
    )
}

/// One failed attempt as the login handler makes it: the delay it was given.
async fn fail(throttle: &RedisLoginThrottle, user: &str, address: &str) -> Duration {
    let admitted = throttle.begin(user, address).await.unwrap();
    throttle.failed(user, address).await;
    admitted.delay
}

fn locked_for_about_the_lockout(refusal: Result<impl std::fmt::Debug, LoginRefusal>) {
    match refusal {
        Err(LoginRefusal::Locked(wait)) => {
            assert!(
                wait > LOCKOUT - Duration::from_secs(5) && wait <= LOCKOUT,
                "{wait:?}"
            );
        }
        other => panic!("not locked out: {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn failures_over_two_gateways_lock_the_pair_on_both() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix).await;
    let mut delays = Vec::new();
    for n in 0..5 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        delays.push(fail(gateway, "ghost", "10.0.0.1").await.as_millis());
    }
    assert_eq!(delays, [0, 100, 200, 400, 800], "one slow-down for both");
    locked_for_about_the_lockout(a.begin("ghost", "10.0.0.1").await);
    locked_for_about_the_lockout(b.begin("ghost", "10.0.0.1").await);
    // Elsewhere the name is slowed down, not locked out; others are untouched.
    let elsewhere = b.begin("ghost", "10.0.0.2").await.unwrap();
    assert_eq!(elsewhere.delay, Duration::from_millis(1600));
    b.void("ghost", "10.0.0.2").await;
    let other = a.begin("other", "10.0.0.1").await.unwrap();
    assert_eq!(other.delay, Duration::ZERO);
    a.succeeded("other", "10.0.0.1").await;
    for key in keys(&prefix).await {
        assert!(!key.contains("ghost") && !key.contains("10.0.0"), "{key}");
    }
    forget(&prefix).await;
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn attempts_in_flight_on_both_gateways_share_one_budget() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix).await;
    // Fifty guesses sent at once to two gateways: five get their password checked.
    let attempts = (0..50).map(|n| {
        let gateway = if n % 2 == 0 { &a } else { &b };
        gateway.begin("doctor1", "10.0.0.9")
    });
    let admitted = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(admitted, 5);
    forget(&prefix).await;
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn bookings_are_given_back_and_spraying_locks_the_address() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix).await;
    // A ward's shared workstation logs many users in, on either gateway.
    for n in 0..40 {
        let (gateway, user) = (if n % 2 == 0 { &a } else { &b }, format!("nurse{n}"));
        gateway.begin(&user, "ward-pc").await.unwrap();
        if n % 3 == 0 {
            gateway.void(&user, "ward-pc").await;
        } else {
            gateway.succeeded(&user, "ward-pc").await;
        }
    }
    assert!(a.begin("nurse", "ward-pc").await.is_ok());
    // Twenty failures for any usernames lock the address.
    for n in 0..20 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        fail(gateway, &format!("user{n}"), "10.9.9.9").await;
    }
    locked_for_about_the_lockout(b.begin("fresh-user", "10.9.9.9").await);
    assert!(a.begin("fresh-user", "10.9.9.8").await.is_ok());
    forget(&prefix).await;
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn guessing_from_several_addresses_is_reported_once() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix).await;
    let mut seen = Vec::new();
    for (n, address) in ["a", "a", "b", "c", "d", "c"].into_iter().enumerate() {
        let gateway = if n % 2 == 0 { &a } else { &b };
        gateway.begin("doctor1", address).await.unwrap();
        seen.push(gateway.failed("doctor1", address).await.distributed);
    }
    assert_eq!(seen, [false, false, false, true, false, false]);
    forget(&prefix).await;
}
