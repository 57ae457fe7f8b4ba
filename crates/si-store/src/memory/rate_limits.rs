//! Request rate limits per client address, per user, per location and per API
//! key, with governor's GCRA limiters. Memory is bounded: past `max_tracked_clients` keys a
//! limiter drops idle keys, and if the flood is real, starts afresh.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::RwLock;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use si_auth::store::{Limited, Refusal, RequestCounters};
use si_core::config::RateLimitConfig;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One keyed limiter with a bound on the keys it tracks.
struct Limiter<K: Hash + Eq + Clone> {
    scope: &'static str,
    per_minute: NonZeroU32,
    max_keys: usize,
    limiter: RwLock<Keyed<K>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(scope: &'static str, per_minute: u32, max_keys: usize) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        Some(Limiter {
            scope,
            per_minute,
            max_keys,
            limiter: RwLock::new(Self::fresh(per_minute)),
        })
    }

    fn fresh(per_minute: NonZeroU32) -> Keyed<K> {
        RateLimiter::keyed(Quota::per_minute(per_minute)).with_middleware()
    }

    fn check(&self, key: &K) -> Result<(), Limited> {
        self.bound_memory();
        let limiter = self.limiter.read().unwrap_or_else(|e| e.into_inner());
        match limiter.check_key(key) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Limited {
                    scope: self.scope,
                    per_minute: self.per_minute.get(),
                    // Rounded up: waiting exactly this long must succeed.
                    retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                })
            }
        }
    }

    /// Keeps the number of tracked keys at most `max_keys`: first by forgetting keys
    /// whose state is back to fresh, then, under a real flood, by starting over.
    fn bound_memory(&self) {
        if self.len() < self.max_keys {
            return;
        }
        let mut limiter = self.limiter.write().unwrap_or_else(|e| e.into_inner());
        limiter.retain_recent();
        if limiter.len() >= self.max_keys {
            tracing::warn!(
                scope = self.scope,
                keys = limiter.len(),
                "rate limit state full; starting afresh"
            );
            *limiter = Self::fresh(self.per_minute);
        }
        limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A client address as a limit key: IPv4 whole, IPv6 by its /64 (one site or host
/// owns a /64, so rotating within it gains nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// All configured limits, counted in this process (one gateway).
pub struct RateLimits {
    per_ip: Option<Limiter<ClientKey>>,
    per_user: Option<Limiter<String>>,
    per_location: Option<Limiter<String>>,
    location_overrides: HashMap<String, Option<Limiter<String>>>,
    /// API keys' own quotas: one limiter per quota (keys are few, and made by
    /// administrators), keyed by the key's name.
    per_key: RwLock<HashMap<NonZeroU32, Limiter<String>>>,
    max_keys: usize,
}

/// How [`Limited::scope`] names a key's own quota.
pub(crate) const API_KEY_SCOPE: &str = "API key";

impl RateLimits {
    /// The limits `config` sets.
    pub fn new(config: &RateLimitConfig) -> Self {
        let max = config.max_tracked_clients;
        RateLimits {
            per_ip: Limiter::new("client address", config.per_ip_per_minute, max),
            per_user: Limiter::new("user", config.per_user_per_minute, max),
            per_location: Limiter::new("location", config.per_location_per_minute, max),
            location_overrides: config
                .locations
                .iter()
                .map(|(location, per_minute)| {
                    (location.clone(), Limiter::new("location", *per_minute, max))
                })
                .collect(),
            per_key: RwLock::default(),
            max_keys: max,
        }
    }

    /// Counts a request with the API key `name` against its quota, `per_minute`.
    pub(crate) fn api_key(&self, name: &str, per_minute: u32) -> Result<(), Limited> {
        let Some(quota) = NonZeroU32::new(per_minute) else {
            return Ok(());
        };
        let name = name.to_owned();
        {
            let limiters = self.per_key.read().unwrap_or_else(|e| e.into_inner());
            if let Some(limiter) = limiters.get(&quota) {
                return limiter.check(&name);
            }
        }
        let mut limiters = self.per_key.write().unwrap_or_else(|e| e.into_inner());
        match limiters.entry(quota) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.get().check(&name),
            std::collections::hash_map::Entry::Vacant(entry) => {
                match Limiter::new(API_KEY_SCOPE, per_minute, self.max_keys) {
                    Some(limiter) => entry.insert(limiter).check(&name),
                    None => Ok(()),
                }
            }
        }
    }

    /// Counts a request from `client`.
    pub(crate) fn client(&self, client: IpAddr) -> Result<(), Limited> {
        self.per_ip
            .as_ref()
            .map_or(Ok(()), |l| l.check(&ClientKey::from(client)))
    }

    /// Counts a request by `user` at `location`.
    pub(crate) fn identity(&self, user: &str, location: &str) -> Result<(), Limited> {
        self.user(user)?;
        self.location(location)
    }

    /// Counts a request by `user`.
    pub(crate) fn user(&self, user: &str) -> Result<(), Limited> {
        self.per_user
            .as_ref()
            .map_or(Ok(()), |l| l.check(&user.to_owned()))
    }

    /// Counts a request at `location`, under its own quota if it has one.
    pub(crate) fn location(&self, location: &str) -> Result<(), Limited> {
        let limiter = match self.location_overrides.get(location) {
            Some(overridden) => overridden.as_ref(),
            None => self.per_location.as_ref(),
        };
        limiter.map_or(Ok(()), |l| l.check(&location.to_owned()))
    }

    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        self.per_ip.as_ref().map_or(0, Limiter::len)
    }
}

#[async_trait::async_trait]
impl RequestCounters for RateLimits {
    async fn check_client(&self, client: IpAddr) -> Result<(), Refusal> {
        Ok(self.client(client)?)
    }

    async fn check_identity(&self, user: &str, location: &str) -> Result<(), Refusal> {
        Ok(self.identity(user, location)?)
    }

    async fn check_api_key(&self, name: &str, per_minute: u32) -> Result<(), Refusal> {
        Ok(self.api_key(name, per_minute)?)
    }
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quota = |l: &Option<Limiter<_>>| l.as_ref().map(|l: &Limiter<_>| l.per_minute.get());
        f.debug_struct("RateLimits")
            .field(
                "per_ip_per_minute",
                &self.per_ip.as_ref().map(|l| l.per_minute.get()),
            )
            .field("per_user_per_minute", &quota(&self.per_user))
            .field("per_location_per_minute", &quota(&self.per_location))
            .finish()
    }
}

#[cfg(test)]
mod tests;
