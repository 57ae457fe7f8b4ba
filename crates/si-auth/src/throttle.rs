//! Repeated failed logins are slowed, then locked out for a while, per username and
//! per client address. Usernames are tracked whether or not they exist, so neither
//! the delay nor the lockout reveals which accounts are real.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When to slow down and when to lock out.
#[derive(Clone, Debug)]
pub struct ThrottlePolicy {
    /// Failures for one username within `window` that lock it out.
    pub user_failures: u32,
    /// Failures from one address within `window` that lock it out (higher: a ward's
    /// workstations may share one address).
    pub address_failures: u32,
    /// How long failures are remembered.
    pub window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
    /// Most usernames and addresses tracked at once.
    pub max_tracked: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            user_failures: 5,
            address_failures: 20,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

/// Failed-login bookkeeping, in memory (a restart forgets it, which only helps a
/// user who was locked out).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    failures: Mutex<HashMap<String, Failures>>,
}

fn user_key(user: &str) -> String {
    format!("user:{user}")
}

fn address_key(address: &str) -> String {
    format!("addr:{address}")
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        LoginThrottle {
            policy,
            failures: Mutex::default(),
        }
    }

    /// `Err(wait)` while `user` or `address` is locked out.
    pub fn check(&self, user: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let wait = [user_key(user), address_key(address)]
            .iter()
            .filter_map(|key| failures.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        wait.map_or(Ok(()), Err)
    }

    /// Records a failure; returns how long to wait before answering it (doubling
    /// from 100 ms with each failure, at most 2 s).
    pub fn failed(&self, user: &str, address: &str, now: Instant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= self.policy.max_tracked {
            self.forget_stale(&mut failures, now);
        }
        let mut worst = 0;
        for (key, limit) in [
            (user_key(user), self.policy.user_failures),
            (address_key(address), self.policy.address_failures),
        ] {
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                first: now,
                locked_until: None,
            });
            if now.duration_since(entry.first) > self.policy.window {
                *entry = Failures {
                    count: 0,
                    first: now,
                    locked_until: None,
                };
            }
            entry.count += 1;
            if entry.count >= limit {
                entry.locked_until = Some(now + self.policy.lockout);
            }
            worst = worst.max(entry.count);
        }
        Duration::from_millis(100 << worst.saturating_sub(1).min(5)).min(Duration::from_secs(2))
    }

    /// A successful login clears the user's failures (not the address's).
    pub fn succeeded(&self, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user_key(user));
    }

    /// Drops expired entries; if the table is still full, keeps only lockouts, and
    /// if even those overflow, starts afresh: memory stays bounded.
    fn forget_stale(&self, failures: &mut HashMap<String, Failures>, now: Instant) {
        let window = self.policy.window;
        let locked = |f: &Failures| f.locked_until.is_some_and(|until| until > now);
        failures.retain(|_, f| locked(f) || now.duration_since(f.first) <= window);
        if failures.len() >= self.policy.max_tracked {
            failures.retain(|_, f| locked(f));
        }
        if failures.len() >= self.policy.max_tracked {
            tracing::warn!(
                tracked = failures.len(),
                "login throttle table full; starting afresh"
            );
            failures.clear();
        }
        failures.shrink_to_fit();
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_then_locks_a_username_whether_or_not_it_exists() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for i in 0..4 {
            assert!(
                throttle.check("ghost", "10.0.0.1", t0).is_ok(),
                "attempt {i}"
            );
            delays.push(throttle.failed("ghost", "10.0.0.1", t0));
        }
        assert_eq!(delays, [100, 200, 400, 800].map(Duration::from_millis));
        throttle.failed("ghost", "10.0.0.1", t0);
        let wait = throttle.check("ghost", "10.0.0.2", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(15 * 60));
        assert!(
            throttle.check("other", "10.0.0.2", t0).is_ok(),
            "other users are not affected"
        );
        let later = t0 + Duration::from_secs(15 * 60 + 1);
        assert!(
            throttle.check("ghost", "10.0.0.2", later).is_ok(),
            "the lockout ends"
        );
    }

    #[test]
    fn an_address_spraying_many_usernames_is_locked_out() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for n in 0..20 {
            throttle.failed(&format!("user{n}"), "10.9.9.9", t0);
        }
        assert!(throttle.check("fresh-user", "10.9.9.9", t0).is_err());
        assert!(throttle.check("fresh-user", "10.9.9.8", t0).is_ok());
    }

    #[test]
    fn success_clears_the_user_and_old_failures_expire() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            throttle.failed("ann", "a", t0);
        }
        throttle.succeeded("ann");
        assert_eq!(throttle.failed("ann", "b", t0), Duration::from_millis(100));
        let later = t0 + Duration::from_secs(16 * 60);
        for _ in 0..4 {
            throttle.failed("bob", "c", t0);
        }
        assert_eq!(
            throttle.failed("bob", "c", later),
            Duration::from_millis(100),
            "window restarted"
        );
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
            throttle.failed(&format!("u{n}"), &format!("a{n}"), t0);
            assert!(throttle.tracked() <= 1_000 + 2);
        }
    }
}
