//! Failed-login bookkeeping in this process's memory. A username is locked out
//! only at an address that failed it repeatedly, and an address after many
//! failures for any usernames; failures for a username from everywhere only slow
//! its logins down, so nobody can lock a clinician out from elsewhere. Usernames
//! are tracked whether or not they exist, so neither the delay nor the lockout
//! reveals which accounts are real.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use si_auth::store::{Admitted, FailedLogin, LoginAttempts, LoginRefusal};

/// When to slow down and when to lock out.
#[derive(Clone, Debug)]
pub struct ThrottlePolicy {
    /// Failures for one username from one address within `window` that lock the
    /// username out at that address.
    pub pair_failures: u32,
    /// Failures from one address within `window`, for any usernames, that lock
    /// the address out (higher: a ward's workstations may share one address).
    pub address_failures: u32,
    /// The delay before checking a password once its username has failed once
    /// (from any address); it doubles with each further failure.
    pub first_delay: Duration,
    /// The longest such delay.
    pub max_delay: Duration,
    /// Distinct addresses failing one username within `window` that are reported
    /// as guessing from many places.
    pub distributed_addresses: usize,
    /// How long failures are remembered.
    pub window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
    /// Most entries (username at an address, address, username) kept at once.
    pub max_tracked: usize,
}

impl ThrottlePolicy {
    /// The delay before checking a password after `failed` failures of its
    /// username: none, then doubling from `first_delay` up to `max_delay`.
    pub(crate) fn delay_after(&self, failed: u32) -> Duration {
        match failed {
            0 => Duration::ZERO,
            n => self
                .first_delay
                .saturating_mul(1 << (n - 1).min(16))
                .min(self.max_delay),
        }
    }
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            pair_failures: 5,
            address_failures: 20,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            distributed_addresses: 3,
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
    /// For a username: the first addresses that failed it in this window, up to
    /// the policy's `distributed_addresses`.
    addresses: Vec<String>,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Failures {
            count: 0,
            first: now,
            locked_until: None,
            addresses: Vec::new(),
        }
    }

    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// Failed-login bookkeeping, in this process's memory (a restart forgets it,
/// which only helps a user who was locked out).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    failures: Mutex<HashMap<String, Failures>>,
    /// Hashes over-long usernames, with a key of this process's own.
    hasher: RandomState,
}

/// Usernames longer than this are kept as a hash: no user has such a name, and a
/// flood of 8 KiB names must cost no more memory than short ones.
const LONGEST_KEPT_USERNAME: usize = 128;

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        LoginThrottle {
            policy,
            ..LoginThrottle::default()
        }
    }

    /// Books a login attempt before its password is checked, so attempts sent all
    /// at once count as much as attempts sent one after another. `Err(wait)` while
    /// `user` is locked out at `address`, or `address` is, or once either's budget
    /// of attempts is spent.
    pub fn begin(&self, user: &str, address: &str, now: Instant) -> Result<Admitted, Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() + 3 > self.policy.max_tracked {
            self.forget_stale(&mut failures, now);
        }
        let user = self.user_key(user);
        let limits = self.limits(&user, address);
        for (key, limit) in &limits {
            let entry = self.current(&mut failures, key, now);
            if let Some(until) = entry.locked_until.filter(|until| *until > now) {
                return Err(until - now);
            }
            if entry.count >= *limit {
                entry.locked_until = Some(now + self.policy.lockout);
                return Err(self.policy.lockout);
            }
        }
        for (key, _) in &limits {
            self.current(&mut failures, key, now).count += 1;
        }
        let failed = failures
            .get(&user)
            .filter(|f| now.duration_since(f.first) <= self.policy.window)
            .map_or(0, |f| f.count);
        Ok(Admitted {
            delay: self.policy.delay_after(failed),
        })
    }

    /// The attempt's password was wrong: it counts against the username at this
    /// address, the address, and the username everywhere.
    pub fn failed(&self, user: &str, address: &str, now: Instant) -> FailedLogin {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let user = self.user_key(user);
        for (key, limit) in self.limits(&user, address) {
            let entry = self.current(&mut failures, &key, now);
            if entry.count >= limit {
                entry.locked_until = Some(now + self.policy.lockout);
            }
        }
        let wanted = self.policy.distributed_addresses;
        let entry = self.current(&mut failures, &user, now);
        entry.count = entry.count.saturating_add(1);
        let new_address = !entry.addresses.iter().any(|a| a == address);
        let distributed = new_address && entry.addresses.len() < wanted && {
            entry.addresses.push(address.to_owned());
            entry.addresses.len() == wanted
        };
        FailedLogin { distributed }
    }

    /// The attempt succeeded: the username's failures at this address are
    /// forgotten, and the address gets its booked attempt back (a ward's shared
    /// workstation logs in all day). The username's slow-down stays until its
    /// window ends: a clinician logging in must not wipe out the evidence, or the
    /// cost, of guessing elsewhere.
    pub fn succeeded(&self, user: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let [(pair_key, _), (address_key, _)] = self.limits(&self.user_key(user), address);
        failures.remove(&pair_key);
        if let Some(entry) = failures.get_mut(&address_key) {
            entry.count = entry.count.saturating_sub(1);
        }
    }

    /// The attempt ended before its password was judged: its booking against the
    /// username at this address and the address is given back.
    pub fn void(&self, user: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, _) in self.limits(&self.user_key(user), address) {
            if let Some(entry) = failures.get_mut(&key) {
                entry.count = entry.count.saturating_sub(1);
            }
        }
    }

    /// The table key of a username.
    fn user_key(&self, user: &str) -> String {
        if user.len() <= LONGEST_KEPT_USERNAME {
            format!("user:{user}")
        } else {
            format!("user#{:016x}", self.hasher.hash_one(user))
        }
    }

    /// The locked-out entries of an attempt and their limits: the username (by its
    /// table key) at the address, and the address.
    fn limits(&self, user: &str, address: &str) -> [(String, u32); 2] {
        [
            // The address's length first, so no username can fake a separator.
            (
                format!("pair:{}:{address}:{user}", address.len()),
                self.policy.pair_failures,
            ),
            (format!("addr:{address}"), self.policy.address_failures),
        ]
    }

    /// The key's entry, started afresh once its window has passed (unless locked).
    fn current<'a>(
        &self,
        failures: &'a mut HashMap<String, Failures>,
        key: &str,
        now: Instant,
    ) -> &'a mut Failures {
        let entry = failures
            .entry(key.to_owned())
            .or_insert_with(|| Failures::new(now));
        if !entry.locked(now) && now.duration_since(entry.first) > self.policy.window {
            *entry = Failures::new(now);
        }
        entry
    }

    /// Drops expired entries; if the table is still full, keeps only lockouts, and
    /// if even those overflow, only the half that ends last: memory stays bounded.
    fn forget_stale(&self, failures: &mut HashMap<String, Failures>, now: Instant) {
        let window = self.policy.window;
        failures.retain(|_, f| f.locked(now) || now.duration_since(f.first) <= window);
        if failures.len() + 3 > self.policy.max_tracked {
            failures.retain(|_, f| f.locked(now));
        }
        if failures.len() + 3 > self.policy.max_tracked {
            // Still full of lockouts: keep the half that lasts longest, rather than
            // start afresh (which would let a flood of addresses lift every lockout,
            // its own included).
            let mut ends: Vec<Instant> = failures.values().filter_map(|f| f.locked_until).collect();
            ends.sort_unstable();
            let keep = self.policy.max_tracked / 2;
            if let Some(cutoff) = ends
                .len()
                .checked_sub(keep)
                .and_then(|i| ends.get(i))
                .copied()
            {
                failures.retain(|_, f| f.locked_until.is_some_and(|until| until > cutoff));
            }
            tracing::warn!(
                tracked = failures.len(),
                "login throttle table full of lockouts; forgot those ending soonest"
            );
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
    async fn begin(&self, user: &str, address: &str) -> Result<Admitted, LoginRefusal> {
        LoginThrottle::begin(self, user, address, Instant::now()).map_err(LoginRefusal::Locked)
    }

    async fn failed(&self, user: &str, address: &str) -> FailedLogin {
        LoginThrottle::failed(self, user, address, Instant::now())
    }

    async fn void(&self, user: &str, address: &str) {
        LoginThrottle::void(self, user, address);
    }

    async fn succeeded(&self, user: &str, address: &str) {
        LoginThrottle::succeeded(self, user, address);
    }
}

#[cfg(test)]
mod tests;
