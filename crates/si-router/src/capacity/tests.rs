use std::time::Duration;

use si_core::{BackendLimits, FailoverConfig};

use super::*;

fn limits(max_in_flight: u32, queue_depth: u32) -> BackendLimits {
    BackendLimits {
        max_in_flight,
        slots_from_server: false,
        queue_depth,
        queue_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
        headers_timeout: Duration::from_secs(120),
        idle_timeout: Duration::from_secs(60),
        total_timeout: Duration::from_secs(900),
    }
}

fn policy() -> FailoverConfig {
    FailoverConfig {
        retry_budget_percent: 20,
        min_concurrent_retries: 3,
        eject_after_failures: 3,
        eject_base: Duration::from_secs(5),
        eject_max: Duration::from_secs(60),
    }
}

#[tokio::test(start_paused = true)]
async fn slots_then_a_bounded_queue_then_refusal() {
    let capacity = Arc::new(Capacity::new(&limits(2, 1)));
    let a = capacity.admit().await.unwrap();
    let _b = capacity.admit().await.unwrap();
    assert_eq!(capacity.in_flight(), 2);
    // The third waits in the queue; the fourth finds it full.
    let waiter = {
        let capacity = capacity.clone();
        tokio::spawn(async move { capacity.admit().await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(capacity.waiting(), 1);
    assert_eq!(capacity.admit().await.unwrap_err(), NoSlot::QueueFull);
    drop(a);
    assert_eq!(waiter.await.unwrap(), Ok(()));
    assert_eq!(capacity.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_gives_up_at_the_deadline() {
    let capacity = Capacity::new(&limits(1, 5));
    let _held = capacity.admit().await.unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(capacity.admit().await.unwrap_err(), NoSlot::TimedOut);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    assert_eq!(capacity.in_flight(), 1);
}

#[test]
fn ejection_needs_consecutive_failures_and_another_replica() {
    let health = PassiveHealth::default();
    let now = Instant::now();
    assert_eq!(health.failed(true, &policy(), now), None);
    health.succeeded();
    assert_eq!(health.failed(true, &policy(), now), None);
    assert_eq!(health.failed(true, &policy(), now), None);
    assert_eq!(
        health.failed(false, &policy(), now),
        None,
        "the last replica stays"
    );
    assert!(!health.is_ejected());
    assert_eq!(
        health.failed(true, &policy(), now),
        Some(Duration::from_secs(5))
    );
    assert!(health.is_ejected());
}

#[test]
fn a_good_probe_readmits_after_the_period_and_repeats_back_off_longer() {
    let health = PassiveHealth::default();
    let t0 = Instant::now();
    let eject = |at: Instant| {
        (0..3)
            .filter_map(|_| health.failed(true, &policy(), at))
            .next()
    };
    assert_eq!(eject(t0), Some(Duration::from_secs(5)));
    assert!(
        !health.probe_succeeded(t0 + Duration::from_secs(4)),
        "too early"
    );
    assert!(health.is_ejected());
    assert!(health.probe_succeeded(t0 + Duration::from_secs(5)));
    assert!(!health.is_ejected());
    let t1 = t0 + Duration::from_secs(6);
    assert_eq!(eject(t1), Some(Duration::from_secs(10)), "doubled");
    assert!(health.probe_succeeded(t1 + Duration::from_secs(10)));
    let t2 = t1 + Duration::from_secs(11);
    assert_eq!(eject(t2), Some(Duration::from_secs(20)));
    assert!(health.probe_succeeded(t2 + Duration::from_secs(20)));
    // A long good run forgets the history.
    let t3 = t2 + Duration::from_secs(20 + 61);
    assert_eq!(eject(t3), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_in_the_queue_gives_its_place_back() {
    let capacity = Arc::new(Capacity::new(&limits(1, 1)));
    let _held = capacity.admit().await.unwrap();
    let queued = {
        let capacity = capacity.clone();
        tokio::spawn(async move { capacity.admit().await.map(|_| ()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(capacity.waiting(), 1);
    queued.abort();
    let _ = queued.await;
    assert_eq!(capacity.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn slots_follow_the_servers_own_count() {
    let capacity = Capacity::new(&limits(1, 0));
    let _one = capacity.admit().await.unwrap();
    assert_eq!(capacity.admit().await.unwrap_err(), NoSlot::QueueFull);
    capacity.resize(3);
    let _two = capacity.admit().await.unwrap();
    let _three = capacity.admit().await.unwrap();
    assert_eq!(capacity.admit().await.unwrap_err(), NoSlot::QueueFull);
    assert_eq!(capacity.size(), 3);
}
