//! Rate limits counted in Redis through leased allowances (see the module above
//! for how, and for the bound across gateways).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use ::redis::Script;
use si_auth::store::{Limited, Refusal, RequestCounters};
use si_core::config::{RateLimitConfig, RedisFailure};
use tokio::time::Instant;

use super::lease::{Grant, Lease, Take, lease_size};
use super::{RedisConnection, Unanswered, hashed};
use crate::memory::{API_KEY_SCOPE, ClientKey, RateLimits};

/// How long a request may wait for a lease before the limit counts as
/// unreachable: a hung Redis must not hang requests.
const LEASE_TIMEOUT: Duration = Duration::from_millis(250);

static LEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../scripts/redis/lease.lua")));

/// Rate limits per client address, user, location and API key, shared through
/// Redis by every gateway with the same Redis and prefix. While Redis does not answer,
/// `store.redis_failure` decides: this gateway's own counters, or a refusal.
pub struct RedisCounters {
    connection: RedisConnection,
    per_ip: Option<SharedLimit>,
    per_user: Option<SharedLimit>,
    per_location: Option<SharedLimit>,
    location_overrides: HashMap<String, Option<SharedLimit>>,
    /// API keys' own quotas: one limit per quota, made when first needed.
    per_key: Mutex<HashMap<u32, SharedLimit>>,
    max_tracked: usize,
    /// The same limits in this process, for `fail_open`.
    fallback: RateLimits,
    lease_requests: Arc<AtomicU64>,
}

impl RedisCounters {
    /// The limits `config` sets, counted over `connection`.
    pub fn new(connection: &RedisConnection, config: &RateLimitConfig) -> Self {
        let lease_requests = Arc::new(AtomicU64::new(0));
        let limit = |scope, key_scope, per_minute| {
            SharedLimit::new(
                connection,
                (scope, key_scope),
                per_minute,
                config.max_tracked_clients,
                &lease_requests,
            )
        };
        RedisCounters {
            per_ip: limit("client address", "ip", config.per_ip_per_minute),
            per_user: limit("user", "user", config.per_user_per_minute),
            per_location: limit("location", "loc", config.per_location_per_minute),
            location_overrides: config
                .locations
                .iter()
                .map(|(location, per_minute)| {
                    (location.clone(), limit("location", "loc", *per_minute))
                })
                .collect(),
            per_key: Mutex::default(),
            max_tracked: config.max_tracked_clients,
            fallback: RateLimits::new(config),
            connection: connection.clone(),
            lease_requests,
        }
    }

    /// How many leases this gateway has asked Redis for, in the background or
    /// not: for tests and diagnostics (a flood over a limit must not raise it
    /// by one per request).
    pub fn lease_requests(&self) -> u64 {
        self.lease_requests.load(Ordering::Relaxed)
    }

    /// The shared limit of keys whose quota is `per_minute`.
    fn key_limit(&self, per_minute: u32) -> Option<SharedLimit> {
        let mut limits = self.per_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(limit) = limits.get(&per_minute) {
            return Some(limit.clone());
        }
        let limit = SharedLimit::new(
            &self.connection,
            (API_KEY_SCOPE, "key"),
            per_minute,
            self.max_tracked,
            &self.lease_requests,
        )?;
        limits.insert(per_minute, limit.clone());
        Some(limit)
    }

    /// A limit Redis could not answer for: counted here, or refused.
    fn unanswered(&self, local: impl FnOnce() -> Result<(), Limited>) -> Result<(), Refusal> {
        match self.connection.failure() {
            RedisFailure::FailOpen => Ok(local()?),
            RedisFailure::FailClosed => Err(Refusal::Unavailable),
        }
    }
}

#[async_trait::async_trait]
impl RequestCounters for RedisCounters {
    async fn check_client(&self, client: IpAddr) -> Result<(), Refusal> {
        let Some(limit) = &self.per_ip else {
            return Ok(());
        };
        let key = match ClientKey::from(client) {
            ClientKey::V4(v4) => format!("4-{v4:08x}"),
            ClientKey::V6(v6) => format!("6-{v6:016x}"),
        };
        match limit.check(hashed(&key)).await {
            Ok(verdict) => Ok(verdict?),
            Err(Unanswered) => self.unanswered(|| self.fallback.client(client)),
        }
    }

    async fn check_identity(&self, user: &str, location: &str) -> Result<(), Refusal> {
        if let Some(limit) = &self.per_user {
            match limit.check(hashed(user)).await {
                Ok(verdict) => verdict?,
                Err(Unanswered) => self.unanswered(|| self.fallback.user(user))?,
            }
        }
        let limit = match self.location_overrides.get(location) {
            Some(overridden) => overridden.as_ref(),
            None => self.per_location.as_ref(),
        };
        let Some(limit) = limit else {
            return Ok(());
        };
        match limit.check(hashed(location)).await {
            Ok(verdict) => Ok(verdict?),
            Err(Unanswered) => self.unanswered(|| self.fallback.location(location)),
        }
    }

    async fn check_api_key(&self, name: &str, per_minute: u32) -> Result<(), Refusal> {
        let Some(limit) = self.key_limit(per_minute) else {
            return Ok(());
        };
        match limit.check(hashed(name)).await {
            Ok(verdict) => Ok(verdict?),
            Err(Unanswered) => self.unanswered(|| self.fallback.api_key(name, per_minute)),
        }
    }
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quota = |l: &Option<SharedLimit>| l.as_ref().map(|l| l.inner.per_minute);
        f.debug_struct("RedisCounters")
            .field("connection", &self.connection)
            .field("per_ip_per_minute", &quota(&self.per_ip))
            .field("per_user_per_minute", &quota(&self.per_user))
            .field("per_location_per_minute", &quota(&self.per_location))
            .finish()
    }
}

/// One limit (a scope and its quota) over many keys.
#[derive(Clone)]
struct SharedLimit {
    inner: Arc<LimitInner>,
}

struct LimitInner {
    connection: RedisConnection,
    /// As [`Limited::scope`] names it.
    scope: &'static str,
    /// `{prefix}:rl:{scope}:`
    key_prefix: String,
    per_minute: u32,
    lease_size: u32,
    max_keys: usize,
    leases: Mutex<HashMap<String, Entry>>,
    lease_requests: Arc<AtomicU64>,
}

#[derive(Default)]
struct Entry {
    lease: Lease,
    /// Held while asking Redis for this key: one request in flight per key.
    fetch: Arc<tokio::sync::Mutex<()>>,
}

impl SharedLimit {
    fn new(
        connection: &RedisConnection,
        (scope, key_scope): (&'static str, &str),
        per_minute: u32,
        max_keys: usize,
        lease_requests: &Arc<AtomicU64>,
    ) -> Option<Self> {
        (per_minute > 0).then(|| SharedLimit {
            inner: Arc::new(LimitInner {
                scope,
                key_prefix: connection.key(&format!("rl:{key_scope}:")),
                connection: connection.clone(),
                per_minute,
                lease_size: lease_size(per_minute),
                max_keys,
                leases: Mutex::new(HashMap::new()),
                lease_requests: lease_requests.clone(),
            }),
        })
    }

    /// Counts a request against `key`: from the lease when it has a token,
    /// else after asking Redis.
    async fn check(&self, key: String) -> Result<Result<(), Limited>, Unanswered> {
        let inner = &self.inner;
        let now = Instant::now();
        let (take, fetch) = inner.with_lease(&key, now, |entry| {
            (entry.lease.take(now, inner.lease_size), entry.fetch.clone())
        });
        if take != Take::Empty {
            return Ok(inner.decide(take, key, now));
        }
        if !inner.connection.is_up() {
            return Err(Unanswered);
        }
        let _one_fetch = fetch.lock().await;
        // Whoever held the lock may have filled the lease, or learnt to wait.
        let now = Instant::now();
        let take = inner.with_lease(&key, now, |entry| entry.lease.take(now, inner.lease_size));
        if take != Take::Empty {
            return Ok(inner.decide(take, key, now));
        }
        if !inner.connection.is_up() {
            return Err(Unanswered);
        }
        let grant = inner.lease(&key, inner.lease_size).await?;
        let now = Instant::now();
        let take = inner.with_lease(&key, now, |entry| {
            entry.lease.receive(now, grant, inner.lease_size);
            entry.lease.take(now, inner.lease_size)
        });
        Ok(inner.decide(take, key, now))
    }
}

impl LimitInner {
    fn decide(self: &Arc<Self>, take: Take, key: String, now: Instant) -> Result<(), Limited> {
        match take {
            Take::Admitted { refill } => {
                if refill {
                    self.refill_in_background(key);
                }
                Ok(())
            }
            Take::Refused { until } => Err(self.limited(until - now)),
            // Redis's wait was over before its answer was read: the next request
            // asks again.
            Take::Empty => Err(self.limited(Duration::from_secs(1))),
        }
    }

    fn limited(&self, wait: Duration) -> Limited {
        Limited {
            scope: self.scope,
            per_minute: self.per_minute,
            // Rounded up: waiting exactly this long must succeed.
            retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        }
    }

    /// Tops the lease of `key` up, off the request's path.
    fn refill_in_background(self: &Arc<Self>, key: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let fetch = this.with_lease(&key, Instant::now(), |entry| entry.fetch.clone());
            let _one_fetch = fetch.lock().await;
            let now = Instant::now();
            let wanted =
                this.with_lease(&key, now, |entry| entry.lease.wanted(now, this.lease_size));
            if wanted > 0
                && this.connection.is_up()
                && let Ok(grant) = this.lease(&key, wanted).await
            {
                let now = Instant::now();
                this.with_lease(&key, now, |entry| {
                    entry.lease.receive(now, grant, this.lease_size)
                });
            }
            this.with_lease(&key, Instant::now(), |entry| entry.lease.refilled());
        });
    }

    /// Asks Redis for up to `wanted` tokens of `key`.
    async fn lease(&self, key: &str, wanted: u32) -> Result<Grant, Unanswered> {
        self.lease_requests.fetch_add(1, Ordering::Relaxed);
        let mut script = LEASE.key(format!("{}{key}", self.key_prefix));
        script
            .arg(60_000.0 / f64::from(self.per_minute))
            .arg(self.per_minute)
            .arg(wanted);
        let (granted, wait_ms): (u32, u64) =
            self.connection.run("lease", LEASE_TIMEOUT, &script).await?;
        Ok(if granted > 0 {
            Grant::Tokens(granted.min(wanted))
        } else {
            Grant::NotUntil(Instant::now() + Duration::from_millis(wait_ms.max(1)))
        })
    }

    /// Runs `f` on the lease of `key`, keeping at most `max_keys` leases: first
    /// by forgetting idle ones, and under a real flood by starting afresh (which
    /// only costs Redis round trips: Redis keeps the counts).
    fn with_lease<T>(&self, key: &str, now: Instant, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if leases.len() >= self.max_keys && !leases.contains_key(key) {
            leases.retain(|_, entry| !entry.lease.is_idle(now));
            if leases.len() >= self.max_keys {
                tracing::warn!(
                    scope = self.scope,
                    keys = leases.len(),
                    "rate limit leases full; starting afresh"
                );
                leases.clear();
            }
            leases.shrink_to_fit();
        }
        f(leases.entry(key.to_owned()).or_default())
    }
}
