//! The Redis engine: rate limits and failed-login bookkeeping shared by every
//! gateway that names the same Redis (and key prefix).
//!
//! - [`RedisCounters`]: rate limits per client address, user, location and API
//!   key (a key's own quota, which it carries: one shared limit per quota). GCRA
//!   state per limit key lives in Redis (`{prefix}:rl:{scope}:{key}`, the
//!   theoretical arrival time in ms of Redis's own clock), but a request does not
//!   wait for Redis on the common path: each gateway *leases* up to
//!   L = max(1, limit / 40) tokens at a time with one atomic script, takes from the
//!   lease in memory, and refills it in the background once it is half spent (one
//!   refill in flight per key). Only an empty lease makes a request wait for
//!   Redis; when Redis answers "no token until X", the gateway refuses that key
//!   until X without asking again, so a flood from one address does not become a
//!   flood of Redis calls. Leases older than a minute are dropped unused.
//!
//!   **The bound.** A gateway never holds more than L unused tokens, and Redis
//!   never grants more than the GCRA allows, so across N gateways the requests
//!   admitted in any interval are at most the GCRA allowance + N×L (2.5% of the
//!   limit per gateway, but at least one request per gateway), and at most N×L
//!   below it while leased tokens go unused (until they are dropped).
//! - [`RedisLoginThrottle`]: the failed-login throttle of
//!   [`crate::memory::LoginThrottle`], with the same policy, in atomic scripts
//!   over keys that expire with their window or lockout, so that failures spread
//!   over several gateways count against one budget. Logins are rare and already
//!   slow (argon2), so each step is one Redis round trip.
//!
//! Usernames, locations, key names and client addresses appear in keys only
//! hashed, so no input can shape a key, and Redis holds no names. Every call has a
//! short timeout. While Redis does not answer, `store.redis_failure` decides: `fail_open` counts on this
//! gateway alone (the in-process engine), `fail_closed` refuses; either way one
//! warning per outage, `si_redis_errors_total{operation}`, and `si_redis_up` at 0
//! until a probe sees Redis answer again.

mod counters;
mod health;
mod lease;
mod throttle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{FromRedisValue, ScriptInvocation};
use sha2::{Digest, Sha256};
use si_core::config::RedisFailure;

pub use counters::RedisCounters;
pub use health::{RedisHealth, describe_metrics};
pub use throttle::RedisLoginThrottle;

use crate::StoreError;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// How often a Redis that stopped answering is asked again.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long a probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// A connection to the Redis that several gateways share, with what they agreed
/// on (the key prefix) and what to do while it does not answer. Cheap to clone.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// Reconnects by itself after a broken connection.
    manager: ConnectionManager,
    prefix: String,
    failure: RedisFailure,
    health: RedisHealth,
    /// A probe is waiting for Redis to answer again.
    probing: AtomicBool,
}

/// A Redis call that got no usable answer (already counted and logged).
#[derive(Debug)]
pub(crate) struct Unanswered;

impl RedisConnection {
    /// Connects to the Redis at `url` (`redis://`, or `rediss://` for TLS, its
    /// certificate verified against the system's roots or, if given, the
    /// authorities in `tls_ca_file`), for keys under `prefix`. A Redis that does
    /// not answer yet is not an error: the connection keeps trying, and until it
    /// answers `failure` decides. Only a URL that cannot be used is (never
    /// echoed: it may hold a password).
    pub async fn open(
        url: &str,
        prefix: &str,
        failure: RedisFailure,
        tls_ca_file: Option<&std::path::Path>,
    ) -> Result<Self, StoreError> {
        let unusable =
            |_| StoreError::Redis("not a usable redis:// URL (host, port, database)".into());
        if !url.starts_with("rediss://") {
            tracing::warn!(
                "connections to the shared Redis are not encrypted; use a rediss:// URL unless \
                 the network is private to the gateways"
            );
        }
        let client = match tls_ca_file {
            Some(path) if url.starts_with("rediss://") => {
                let (pem, _) = crate::tls::authorities(path).map_err(StoreError::Redis)?;
                let certificates = ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                ::redis::Client::build_with_tls(url, certificates).map_err(unusable)?
            }
            _ => ::redis::Client::open(url).map_err(unusable)?,
        };
        // Few quick retries: while Redis is away the probe asks, not every request.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(unusable)?;
        let connection = RedisConnection {
            inner: Arc::new(Inner {
                manager,
                prefix: prefix.to_owned(),
                failure,
                health: RedisHealth::starting(),
                probing: AtomicBool::new(false),
            }),
        };
        if connection.ping().await {
            connection.inner.health.answered();
        } else {
            tracing::warn!(
                failure = failure.as_str(),
                "redis does not answer at start; {}",
                health::meanwhile(failure)
            );
            connection.watch_for_return();
        }
        Ok(connection)
    }

    /// Whether Redis answers, for the health endpoint.
    pub fn health(&self) -> RedisHealth {
        self.inner.health.clone()
    }

    /// Whether Redis answers (no call is made while it does not; a probe asks).
    pub(crate) fn is_up(&self) -> bool {
        self.inner.health.is_up()
    }

    /// What requests get while Redis does not answer.
    pub fn failure(&self) -> RedisFailure {
        self.inner.failure
    }

    /// The Redis key `{prefix}:{rest}`.
    pub(crate) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.inner.prefix)
    }

    /// Runs a script with `timeout`; a failure or no answer in time marks Redis
    /// down (counted as `operation`) until the probe sees it answer.
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        operation: &'static str,
        timeout: Duration,
        script: &ScriptInvocation<'_>,
    ) -> Result<T, Unanswered> {
        let mut manager = self.inner.manager.clone();
        match tokio::time::timeout(timeout, script.invoke_async(&mut manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(operation, &e)),
            Err(_) => Err(self.failed(operation, &format!("no answer within {timeout:?}"))),
        }
    }

    fn failed(&self, operation: &'static str, error: &dyn std::fmt::Display) -> Unanswered {
        if self
            .inner
            .health
            .failed(operation, error, self.inner.failure)
        {
            self.watch_for_return();
        }
        Unanswered
    }

    /// Asks Redis every [`PROBE_EVERY`] until it answers (one probe at a time; it
    /// ends when the connection is dropped).
    fn watch_for_return(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let connection = RedisConnection { inner };
                if connection.ping().await {
                    // Cleared first: a failure right after must start a new probe.
                    connection.inner.probing.store(false, Ordering::Release);
                    connection.inner.health.answered();
                    return;
                }
            }
        });
    }

    async fn ping(&self) -> bool {
        let mut manager = self.inner.manager.clone();
        let ping = ::redis::cmd("PING");
        let answer = tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut manager));
        matches!(answer.await, Ok(Ok(_)))
    }
}

impl std::fmt::Debug for RedisConnection {
    // Not the manager's: its client would print the URL, password included.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("prefix", &self.inner.prefix)
            .field("failure", &self.inner.failure)
            .field("up", &self.inner.health.is_up())
            .finish()
    }
}

/// A name (user, location, address) as a key part: the first 128 bits of its
/// SHA-256, in hex. Fixed length and no separators, whatever was typed. Not a
/// secret: an address or a known username is found from its hash by trying
/// candidates, so Redis needs the same protection as the gateways' logs.
pub(crate) fn hashed(name: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(name.as_bytes());
    digest
        .iter()
        .take(16)
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}
