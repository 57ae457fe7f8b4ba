//! Repeated failed logins are slowed, then locked out for a while, per username and
//! per client address. Usernames are tracked whether or not they exist, so neither
//! the delay nor the lockout reveals which accounts are real.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use si_auth::store::LoginAttempts;

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

/// Failed-login bookkeeping, in this process's memory (a restart forgets it,
/// which only helps a user who was locked out).
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

    /// Books a login attempt before its password is checked, so attempts sent all
    /// at once count as much as attempts sent one after another. `Err(wait)` while
    /// `user` or `address` is locked out, or once its budget of attempts is spent.
    pub fn begin(&self, user: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= self.policy.max_tracked {
            self.forget_stale(&mut failures, now);
        }
        let keys = self.keys(user, address);
        for (key, limit) in &keys {
            let entry = self.current(&mut failures, key, now);
            if let Some(until) = entry.locked_until.filter(|until| *until > now) {
                return Err(until - now);
            }
            if entry.count >= *limit {
                entry.locked_until = Some(now + self.policy.lockout);
                return Err(self.policy.lockout);
            }
        }
        for (key, _) in &keys {
            self.current(&mut failures, key, now).count += 1;
        }
        Ok(())
    }

    /// The attempt failed; returns how long to wait before answering it (doubling
    /// from 100 ms with each failure, at most 2 s).
    pub fn failed(&self, user: &str, address: &str, now: Instant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut worst = 0;
        for (key, limit) in self.keys(user, address) {
            let entry = self.current(&mut failures, &key, now);
            if entry.count >= limit {
                entry.locked_until = Some(now + self.policy.lockout);
            }
            worst = worst.max(entry.count);
        }
        Duration::from_millis(100 << worst.saturating_sub(1).min(5)).min(Duration::from_secs(2))
    }

    /// The attempt succeeded: the user's failures are forgotten, and the address
    /// gets its booked attempt back (a ward's shared workstation logs in all day).
    pub fn succeeded(&self, user: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&user_key(user));
        if let Some(entry) = failures.get_mut(&address_key(address)) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    fn keys(&self, user: &str, address: &str) -> [(String, u32); 2] {
        [
            (user_key(user), self.policy.user_failures),
            (address_key(address), self.policy.address_failures),
        ]
    }

    /// The key's entry, started afresh once its window has passed (unless locked).
    fn current<'a>(
        &self,
        failures: &'a mut HashMap<String, Failures>,
        key: &str,
        now: Instant,
    ) -> &'a mut Failures {
        let entry = failures.entry(key.to_owned()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        let locked = entry.locked_until.is_some_and(|until| until > now);
        if !locked && now.duration_since(entry.first) > self.policy.window {
            *entry = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        entry
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

#[async_trait::async_trait]
impl LoginAttempts for LoginThrottle {
    async fn begin(&self, user: &str, address: &str) -> Result<(), Duration> {
        LoginThrottle::begin(self, user, address, Instant::now())
    }

    async fn failed(&self, user: &str, address: &str) -> Duration {
        LoginThrottle::failed(self, user, address, Instant::now())
    }

    async fn succeeded(&self, user: &str, address: &str) {
        LoginThrottle::succeeded(self, user, address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One failed attempt, as the login handler makes it.
    fn fail(
        throttle: &LoginThrottle,
        user: &str,
        address: &str,
        now: Instant,
    ) -> Result<Duration, Duration> {
        throttle.begin(user, address, now)?;
        Ok(throttle.failed(user, address, now))
    }

    #[test]
    fn slows_then_locks_a_username_whether_or_not_it_exists() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|_| fail(&throttle, "ghost", "10.0.0.1", t0).unwrap())
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600].map(Duration::from_millis)
        );
        let wait = throttle.begin("ghost", "10.0.0.2", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(15 * 60));
        assert!(
            throttle.begin("other", "10.0.0.2", t0).is_ok(),
            "other users are not affected"
        );
        let later = t0 + Duration::from_secs(15 * 60 + 1);
        assert!(
            throttle.begin("ghost", "10.0.0.2", later).is_ok(),
            "the lockout ends"
        );
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
        assert!(throttle.begin("fresh-user", "10.9.9.9", t0).is_err());
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
    fn success_clears_the_user_and_old_failures_expire() {
        let throttle = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            fail(&throttle, "ann", "a", t0).unwrap();
        }
        throttle.begin("ann", "a", t0).unwrap();
        throttle.succeeded("ann", "a");
        assert_eq!(
            fail(&throttle, "ann", "b", t0),
            Ok(Duration::from_millis(100))
        );
        for _ in 0..4 {
            fail(&throttle, "bob", "c", t0).unwrap();
        }
        let later = t0 + Duration::from_secs(16 * 60);
        assert_eq!(
            fail(&throttle, "bob", "c", later),
            Ok(Duration::from_millis(100)),
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
            let _ = fail(&throttle, &format!("u{n}"), &format!("a{n}"), t0);
            assert!(throttle.tracked() <= 1_000 + 2);
        }
    }
}
