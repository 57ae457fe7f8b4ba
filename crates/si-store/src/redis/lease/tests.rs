use proptest::prelude::*;

use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn a_lease_is_spent_then_refilled_at_half_then_empty() {
    let t0 = Instant::now();
    let mut lease = Lease::default();
    assert_eq!(lease.take(t0, 4), Take::Empty);
    assert_eq!(lease.wanted(t0, 4), 4);
    lease.receive(t0, Grant::Tokens(4), 4);
    assert_eq!(lease.take(t0, 4), Take::Admitted { refill: false });
    // Half spent: one refill starts, and only one.
    assert_eq!(lease.take(t0, 4), Take::Admitted { refill: true });
    assert_eq!(lease.take(t0, 4), Take::Admitted { refill: false });
    assert_eq!(lease.wanted(t0, 4), 3, "fills up to the size, not beyond");
    assert_eq!(lease.take(t0, 4), Take::Admitted { refill: false });
    assert_eq!(lease.take(t0, 4), Take::Empty);
    lease.refilled();
    assert!(lease.is_idle(t0));
}

#[test]
fn overlapping_grants_never_fill_a_lease_past_its_size() {
    let t0 = Instant::now();
    let mut lease = Lease::default();
    lease.receive(t0, Grant::Tokens(3), 4);
    lease.receive(t0, Grant::Tokens(3), 4);
    assert_eq!(lease.tokens(), 4);
}

#[test]
fn a_wait_from_redis_refuses_locally_until_it_ends() {
    let t0 = Instant::now();
    let mut lease = Lease::default();
    lease.receive(t0, Grant::NotUntil(t0 + ms(600)), 2);
    for n in 0..1000 {
        assert_eq!(
            lease.take(t0 + ms(n % 600), 2),
            Take::Refused {
                until: t0 + ms(600)
            }
        );
    }
    assert_eq!(lease.wanted(t0, 2), 0, "no refill while told to wait");
    assert!(!lease.is_idle(t0));
    assert_eq!(lease.take(t0 + ms(600), 2), Take::Empty);
}

#[test]
fn tokens_left_unused_for_a_minute_are_dropped() {
    let t0 = Instant::now();
    let mut lease = Lease::default();
    lease.receive(t0, Grant::Tokens(2), 2);
    assert_eq!(
        lease.take(t0 + LEASE_LIFETIME, 2),
        Take::Admitted { refill: true }
    );
    lease.refilled();
    assert_eq!(lease.take(t0 + LEASE_LIFETIME + ms(1), 2), Take::Empty);
    assert_eq!(lease.tokens(), 0);
}

#[derive(Clone, Debug)]
enum Step {
    /// A request.
    Take,
    /// The key's fetch lock is taken: ask, and Redis grants at most this many.
    Refill(u32),
    /// Redis says none for this long.
    Wait(u64),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Take),
        2 => (0u32..100).prop_map(Step::Refill),
        1 => (1u64..2_000).prop_map(Step::Wait),
        1 => (0u64..30_000).prop_map(Step::Advance),
    ]
}

proptest! {
    #[test]
    fn never_admits_more_than_leased_nor_holds_more_than_one_lease(
        size in 1u32..50,
        steps in proptest::collection::vec(step(), 1..300),
    ) {
        let mut now = Instant::now();
        let mut lease = Lease::default();
        let (mut granted, mut admitted) = (0u64, 0u64);
        for step in steps {
            match step {
                Step::Take => {
                    if let Take::Admitted { .. } = lease.take(now, size) {
                        admitted += 1;
                    }
                }
                Step::Refill(offered) => {
                    let tokens = offered.min(lease.wanted(now, size));
                    granted += u64::from(tokens);
                    lease.receive(now, Grant::Tokens(tokens), size);
                    lease.refilled();
                }
                Step::Wait(millis) => lease.receive(now, Grant::NotUntil(now + ms(millis)), size),
                Step::Advance(millis) => now += ms(millis),
            }
            prop_assert!(admitted <= granted, "admitted {admitted} of {granted} leased");
            prop_assert!(lease.tokens() <= size, "holds {} over {size}", lease.tokens());
            prop_assert!(u64::from(lease.tokens()) <= granted - admitted);
        }
    }
}
