//! Redis that does not answer, at start or later, and coming back.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use si_auth::store::{LoginAttempts, LoginRefusal, Refusal, RequestCounters};
use si_core::config::RedisFailure;
use si_store::memory::ThrottlePolicy;
use si_store::redis::{RedisConnection, RedisCounters, RedisLoginThrottle};
use si_test_support::cut::Cut;
use si_test_support::redis::{address, fresh_prefix, url_via};

use super::{forget, limits};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8));
/// Nothing listens there.
const CLOSED: &str = "redis://127.0.0.1:1";

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn unreachable_redis_fails_open_to_this_gateways_limits() {
    let started = Instant::now();
    let connection = RedisConnection::open(CLOSED, &fresh_prefix(), RedisFailure::FailOpen, None)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "opening waited");
    assert!(!connection.health().is_up());
    let counters = RedisCounters::new(&connection, &limits(3, 0, 0));
    for _ in 0..3 {
        assert_eq!(counters.check_client(CLIENT).await, Ok(()));
    }
    match counters.check_client(CLIENT).await {
        Err(Refusal::Limited(limited)) => assert_eq!(limited.per_minute, 3),
        other => panic!("the local limit did not hold: {other:?}"),
    }
    let throttle = RedisLoginThrottle::new(&connection, ThrottlePolicy::default());
    for _ in 0..5 {
        throttle.begin("ghost", "10.0.0.1").await.unwrap();
        throttle.failed("ghost", "10.0.0.1").await;
    }
    assert!(matches!(
        throttle.begin("ghost", "10.0.0.1").await,
        Err(LoginRefusal::Locked(_))
    ));
    assert!(!connection.health().is_up());
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn unreachable_redis_fails_closed_with_unavailable() {
    let connection = RedisConnection::open(CLOSED, &fresh_prefix(), RedisFailure::FailClosed, None)
        .await
        .unwrap();
    let counters = RedisCounters::new(&connection, &limits(3, 3, 3));
    assert_eq!(
        counters.check_client(CLIENT).await,
        Err(Refusal::Unavailable)
    );
    assert_eq!(
        counters.check_identity("doctor1", "ward-7").await,
        Err(Refusal::Unavailable)
    );
    let throttle = RedisLoginThrottle::new(&connection, ThrottlePolicy::default());
    assert_eq!(
        throttle.begin("doctor1", "10.0.0.1").await,
        Err(LoginRefusal::Unavailable)
    );
    // Unset limits need no Redis.
    let unlimited = RedisCounters::new(&connection, &limits(0, 0, 0));
    assert_eq!(unlimited.check_client(CLIENT).await, Ok(()));
    assert!(!format!("{connection:?}").contains("127.0.0.1:1"));
}

async fn until_up(connection: &RedisConnection) -> Duration {
    let started = Instant::now();
    while !connection.health().is_up() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis not picked up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn redis_going_away_and_coming_back_is_picked_up() {
    // Redis, as the gateway sees it, is not there yet.
    let cut = Cut::start(address().parse().unwrap()).await;
    cut.cut();
    let prefix = fresh_prefix();
    let connection = RedisConnection::open(
        &url_via(cut.addr.port()),
        &prefix,
        RedisFailure::FailClosed,
        None,
    )
    .await
    .unwrap();
    let counters = RedisCounters::new(&connection, &limits(100, 0, 0));
    let throttle = RedisLoginThrottle::new(&connection, ThrottlePolicy::default());
    assert_eq!(
        counters.check_client(CLIENT).await,
        Err(Refusal::Unavailable)
    );

    // Redis appears after the gateway started.
    cut.restore();
    let took = until_up(&connection).await;
    eprintln!("picked up {took:?} after redis appeared");
    assert_eq!(counters.check_client(CLIENT).await, Ok(()));
    assert!(throttle.begin("doctor1", "10.0.0.1").await.is_ok());

    // Redis goes away: what is leased is spent, then requests are refused.
    cut.cut();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(counters.check_client(CLIENT).await);
    }
    assert_eq!(
        outcomes.last(),
        Some(&Err(Refusal::Unavailable)),
        "{outcomes:?}"
    );
    assert!(!connection.health().is_up());
    assert_eq!(
        throttle.begin("doctor1", "10.0.0.1").await,
        Err(LoginRefusal::Unavailable)
    );

    // And comes back.
    cut.restore();
    let took = until_up(&connection).await;
    eprintln!("picked up again {took:?} after redis came back");
    assert_eq!(counters.check_client(CLIENT).await, Ok(()));
    forget(&prefix).await;
}
