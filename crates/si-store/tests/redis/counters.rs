//! Rate limits shared by two gateways through leased allowances.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use si_auth::store::{Refusal, RequestCounters};
use si_core::config::RedisFailure;
use si_store::redis::RedisCounters;
use si_test_support::redis::fresh_prefix;

use super::{forget, gateway, keys, limits};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

async fn two_gateways(prefix: &str, per_ip: u32, per_user: u32) -> (RedisCounters, RedisCounters) {
    let config = limits(per_ip, per_user, 0);
    (
        RedisCounters::new(&gateway(prefix, RedisFailure::FailOpen).await, &config),
        RedisCounters::new(&gateway(prefix, RedisFailure::FailOpen).await, &config),
    )
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn two_gateways_share_one_limit_within_the_documented_bound() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix, 100, 0).await;
    let lease = 100 / 40; // L = max(1, limit / 40)
    let started = Instant::now();
    let mut admitted = 0;
    for n in 0..300 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        match gateway.check_client(CLIENT).await {
            Ok(()) => admitted += 1,
            Err(Refusal::Limited(limited)) => {
                assert_eq!((limited.scope, limited.per_minute), ("client address", 100));
                assert!((1..=60).contains(&limited.retry_after), "{limited:?}");
            }
            Err(Refusal::Unavailable) => panic!("redis is up"),
        }
    }
    // The GCRA frees one token every 600 ms: what the test's own time added.
    let freed = started.elapsed().as_millis() / 600;
    let most = 100 + freed + 2 * lease;
    eprintln!(
        "admitted {admitted} of 300 (limit 100, L {lease}, {freed} freed in {:?}); \
         {} + {} leases asked",
        started.elapsed(),
        a.lease_requests(),
        b.lease_requests()
    );
    assert!(
        (100 - 2 * lease..=most).contains(&admitted),
        "admitted {admitted}, bound {}..={most}",
        100 - 2 * lease
    );
    let keys = keys(&prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains("0a000007"), "the address is kept hashed");
    forget(&prefix).await;
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn a_gateway_sees_what_another_used_and_a_flood_stays_local() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix, 100, 0).await;
    let used = admitted_of(&a, 110).await;
    assert!((100..=102).contains(&used), "first gateway admitted {used}");
    match b.check_client(CLIENT).await {
        Err(Refusal::Limited(limited)) => assert_eq!(limited.scope, "client address"),
        other => panic!("second gateway admitted what the first used: {other:?}"),
    }
    // A flood from the limited address, for longer than a token takes to free.
    let asked = a.lease_requests() + b.lease_requests();
    let started = Instant::now();
    let (mut requests, mut admitted) = (0u64, 0u64);
    while started.elapsed() < Duration::from_millis(1_500) {
        for gateway in [&a, &b] {
            requests += 1;
            admitted += u64::from(gateway.check_client(CLIENT).await.is_ok());
        }
        tokio::task::yield_now().await;
    }
    let calls = a.lease_requests() + b.lease_requests() - asked;
    eprintln!(
        "flood: {requests} requests in {:?}, {admitted} admitted, {calls} redis calls",
        started.elapsed()
    );
    // A token frees every 600 ms; each gateway asks at most twice per token
    // (when its wait ends, then a refill), whatever the number of requests.
    let periods = u64::try_from(started.elapsed().as_millis() / 600).unwrap() + 1;
    assert!(
        calls <= 2 * 2 * periods + 2,
        "{calls} redis calls for {requests} requests"
    );
    assert!(
        admitted <= periods + 2 * 2,
        "{admitted} admitted during the flood"
    );
    forget(&prefix).await;
}

async fn admitted_of(counters: &RedisCounters, checks: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..checks {
        admitted += usize::from(counters.check_client(CLIENT).await.is_ok());
    }
    admitted
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn users_and_locations_are_limited_and_kept_only_hashed() {
    let prefix = fresh_prefix();
    let (a, b) = two_gateways(&prefix, 0, 3).await;
    let mut admitted = 0;
    for n in 0..8 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        match gateway.check_identity("doctor1", "ward-7").await {
            Ok(()) => admitted += 1,
            Err(Refusal::Limited(limited)) => assert_eq!(limited.scope, "user"),
            Err(Refusal::Unavailable) => panic!("redis is up"),
        }
    }
    // L is 1 here: at most one unused token per gateway.
    assert!(
        (1..=3).contains(&admitted),
        "admitted {admitted} of a limit of 3"
    );
    assert!(a.check_identity("nurse2", "ward-7").await.is_ok());
    // The listed location has its own quota of 5 a minute.
    let at_campus = admitted_at(&a, &b, "main-campus").await;
    assert!(
        (3..=5).contains(&at_campus),
        "admitted {at_campus} at main-campus"
    );
    for key in keys(&prefix).await {
        assert!(!key.contains("doctor1") && !key.contains("campus"), "{key}");
    }
    forget(&prefix).await;
}

async fn admitted_at(a: &RedisCounters, b: &RedisCounters, location: &str) -> usize {
    let mut admitted = 0;
    for n in 0..10 {
        let gateway = if n % 2 == 0 { a } else { b };
        let user = format!("user{n}");
        admitted += usize::from(gateway.check_identity(&user, location).await.is_ok());
    }
    admitted
}

#[tokio::test]
#[ignore = "needs Redis: .ci/run starts one and runs this with --ignored"]
async fn a_keys_own_quota_is_shared_by_gateways_and_kept_only_hashed() {
    let prefix = fresh_prefix();
    // No per-address or per-user limits: only the keys' own.
    let (a, b) = two_gateways(&prefix, 0, 0).await;
    let mut admitted = 0;
    for n in 0..12 {
        let gateway = if n % 2 == 0 { &a } else { &b };
        match gateway.check_api_key("ehr-batch", 6).await {
            Ok(()) => admitted += 1,
            Err(Refusal::Limited(limited)) => {
                assert_eq!((limited.scope, limited.per_minute), ("API key", 6));
                assert!((1..=60).contains(&limited.retry_after), "{limited:?}");
            }
            Err(Refusal::Unavailable) => panic!("redis is up"),
        }
    }
    // One quota across both gateways, give or take a lease (L = 1) each.
    assert!((4..=6).contains(&admitted), "admitted {admitted} of 6");
    // Another key with the same quota, and a key with another, count apart.
    assert!(a.check_api_key("open-webui", 6).await.is_ok());
    assert!(b.check_api_key("scribe", 100).await.is_ok());
    let keys = keys(&prefix).await;
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        assert!(key.contains(":rl:key:"), "{key}");
        assert!(!key.contains("ehr") && !key.contains("webui"), "{key}");
    }
    forget(&prefix).await;
}
