use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use si_core::config::RateLimitConfig;

use super::*;

fn config(per_ip: u32, per_user: u32, per_location: u32, max: usize) -> RateLimitConfig {
    RateLimitConfig {
        per_ip_per_minute: per_ip,
        per_user_per_minute: per_user,
        per_location_per_minute: per_location,
        locations: [("main-campus".to_owned(), 5)].into(),
        trusted_proxies: Vec::new(),
        max_tracked_clients: max,
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

#[test]
fn each_scope_admits_its_quota_then_refuses() {
    let limits = RateLimits::new(&config(3, 2, 4, 1000));
    for _ in 0..3 {
        assert_eq!(limits.client(ip(1)), Ok(()));
    }
    let refused = limits.client(ip(1)).unwrap_err();
    assert_eq!((refused.scope, refused.per_minute), ("client address", 3));
    assert!((1..=60).contains(&refused.retry_after), "{refused:?}");
    assert_eq!(
        limits.client(ip(2)),
        Ok(()),
        "other clients are not affected"
    );

    assert!(limits.identity("ann", "ward").is_ok());
    assert!(limits.identity("ann", "ward").is_ok());
    assert_eq!(limits.identity("ann", "ward").unwrap_err().scope, "user");
    assert!(limits.identity("bob", "ward").is_ok());
    assert!(limits.identity("cy", "ward").is_ok());
    assert_eq!(limits.identity("di", "ward").unwrap_err().scope, "location");
    // A listed location has its own quota.
    for user in ["a", "b", "c", "d", "e"] {
        assert!(limits.identity(user, "main-campus").is_ok(), "{user}");
    }
    assert_eq!(
        limits.identity("f", "main-campus").unwrap_err().per_minute,
        5
    );
}

#[test]
fn zero_turns_a_limit_off() {
    let limits = RateLimits::new(&config(0, 0, 0, 1000));
    for _ in 0..1000 {
        assert!(limits.client(ip(1)).is_ok());
        assert!(limits.identity("ann", "ward").is_ok());
    }
}

#[test]
fn ipv6_clients_are_limited_per_64() {
    let limits = RateLimits::new(&config(1, 0, 0, 1000));
    let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1));
    let b = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
    let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
    assert!(limits.client(a).is_ok());
    assert!(limits.client(b).is_err(), "same /64");
    assert!(limits.client(other).is_ok());
}

#[test]
fn a_flood_of_distinct_addresses_keeps_state_bounded() {
    let max = 5_000;
    let limits = RateLimits::new(&config(100, 0, 0, max));
    let mut peak = 0;
    for n in 0..200_000u32 {
        let _ = limits.client(ip(n));
        if n % 1000 == 0 {
            peak = peak.max(limits.tracked_clients());
        }
    }
    peak = peak.max(limits.tracked_clients());
    assert!(peak <= max, "tracked {peak} addresses, bound {max}");
    // Limiting still works afterwards.
    for _ in 0..100 {
        let _ = limits.client(ip(u32::MAX));
    }
    assert!(limits.client(ip(u32::MAX)).is_err());
}

proptest! {
    #[test]
    fn never_admits_more_than_the_quota_within_a_minute(quota in 1u32..50, attempts in 1usize..200) {
        let limits = RateLimits::new(&config(quota, 0, 0, 1000));
        let admitted = (0..attempts).filter(|_| limits.client(ip(7)).is_ok()).count();
        // The test runs in far less than the 60/quota seconds a new cell takes.
        prop_assert!(admitted <= quota as usize);
        prop_assert_eq!(admitted, attempts.min(quota as usize));
    }
}

#[test]
fn each_key_has_its_own_quota_on_top_of_the_others() {
    let limits = RateLimits::new(&config(0, 0, 0, 1000));
    for _ in 0..3 {
        assert_eq!(limits.api_key("ehr-batch", 3), Ok(()));
    }
    let refused = limits.api_key("ehr-batch", 3).unwrap_err();
    assert_eq!((refused.scope, refused.per_minute), ("API key", 3));
    assert!((1..=60).contains(&refused.retry_after), "{refused:?}");
    // Another key with the same quota, and one with another quota, are apart.
    assert_eq!(limits.api_key("open-webui", 3), Ok(()));
    for _ in 0..10 {
        assert_eq!(limits.api_key("scribe", 50), Ok(()));
    }
    assert_eq!(limits.api_key("ehr-batch", 0), Ok(()), "0 is no limit");
}
