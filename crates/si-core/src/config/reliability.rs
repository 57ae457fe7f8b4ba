//! Capacity, timeouts and failover: `[backend_defaults]`, the same keys on each
//! `[[backends]]` to override them, and `[failover]`.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// How much one backend is given and how long it is waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendLimits {
    /// Requests sent to it at once (its llama-server slots, `-np`).
    pub max_in_flight: u32,
    /// `max_in_flight` was not configured: take the server's own slot count from
    /// its `/props` once it is up (`max_in_flight` is the guess until then).
    pub slots_from_server: bool,
    /// Requests waiting for a slot beyond that; more are refused at once.
    pub queue_depth: u32,
    /// Longest a request waits in the queue.
    pub queue_timeout: Duration,
    /// Longest a TCP connect may take (`gateway.connect_timeout_ms` unless set).
    pub connect_timeout: Duration,
    /// Longest wait for response headers (a non-streamed answer arrives whole, so
    /// this bounds its generation).
    pub headers_timeout: Duration,
    /// Longest gap between two pieces of a streamed answer.
    pub idle_timeout: Duration,
    /// Longest a whole answer may take.
    pub total_timeout: Duration,
}

/// When to retry elsewhere and when to stop sending to a failing backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Retries in flight may be at most this share of requests in flight (Envoy's
    /// retry budget), so a sick model cannot double the load on its replicas.
    pub retry_budget_percent: u32,
    /// Retries always allowed at once, however few requests are in flight.
    pub min_concurrent_retries: u32,
    /// Consecutive failures (connect errors, 5xx) that eject a backend.
    pub eject_after_failures: u32,
    /// First ejection period; it doubles on each repeat ejection.
    pub eject_base: Duration,
    /// Longest ejection period.
    pub eject_max: Duration,
}

/// llama-server's default slot count (`-np` auto), assumed until `/props` says.
const DEFAULT_SLOTS: u32 = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBackendDefaults {
    max_in_flight: Option<u32>,
    queue_depth: u32,
    queue_timeout_ms: u64,
    headers_timeout_ms: u64,
    idle_timeout_ms: u64,
    total_timeout_ms: u64,
}

impl Default for RawBackendDefaults {
    fn default() -> Self {
        RawBackendDefaults {
            max_in_flight: None,
            queue_depth: 32,
            queue_timeout_ms: 10_000,
            headers_timeout_ms: 120_000,
            idle_timeout_ms: 60_000,
            total_timeout_ms: 900_000,
        }
    }
}

/// The per-backend overrides, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimitOverrides {
    pub(super) max_in_flight: Option<u32>,
    pub(super) queue_depth: Option<u32>,
    pub(super) queue_timeout_ms: Option<u64>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) headers_timeout_ms: Option<u64>,
    pub(super) idle_timeout_ms: Option<u64>,
    pub(super) total_timeout_ms: Option<u64>,
}

pub(super) fn millis(source: &str, key: String, value: u64) -> Result<Duration, ConfigError> {
    if (1..=86_400_000).contains(&value) {
        Ok(Duration::from_millis(value))
    } else {
        Err(ConfigError::new(
            source,
            key,
            format!("expected 1 to 86400000 milliseconds, got {value}"),
        ))
    }
}

fn count(source: &str, key: String, value: u32, min: u32) -> Result<u32, ConfigError> {
    if (min..=100_000).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::new(
            source,
            key,
            format!("expected {min} to 100000, got {value}"),
        ))
    }
}

impl RawBackendDefaults {
    /// The limits of one backend: its overrides over these defaults. `prefix` is the
    /// key path errors name (`backend_defaults` or `backends[3]`).
    pub(super) fn resolve(
        &self,
        overrides: &RawLimitOverrides,
        connect_default: Duration,
        prefix: &str,
        source: &str,
    ) -> Result<BackendLimits, ConfigError> {
        let key = |field: &str| format!("{prefix}.{field}");
        let ms = |field: &str, own: Option<u64>, default: u64| {
            millis(source, key(field), own.unwrap_or(default))
        };
        Ok(BackendLimits {
            max_in_flight: count(
                source,
                key("max_in_flight"),
                overrides
                    .max_in_flight
                    .or(self.max_in_flight)
                    .unwrap_or(DEFAULT_SLOTS),
                1,
            )?,
            slots_from_server: overrides.max_in_flight.or(self.max_in_flight).is_none(),
            queue_depth: count(
                source,
                key("queue_depth"),
                overrides.queue_depth.unwrap_or(self.queue_depth),
                0,
            )?,
            queue_timeout: ms(
                "queue_timeout_ms",
                overrides.queue_timeout_ms,
                self.queue_timeout_ms,
            )?,
            connect_timeout: match overrides.connect_timeout_ms {
                Some(own) => millis(source, key("connect_timeout_ms"), own)?,
                None => connect_default,
            },
            headers_timeout: ms(
                "headers_timeout_ms",
                overrides.headers_timeout_ms,
                self.headers_timeout_ms,
            )?,
            idle_timeout: ms(
                "idle_timeout_ms",
                overrides.idle_timeout_ms,
                self.idle_timeout_ms,
            )?,
            total_timeout: ms(
                "total_timeout_ms",
                overrides.total_timeout_ms,
                self.total_timeout_ms,
            )?,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFailover {
    retry_budget_percent: u32,
    min_concurrent_retries: u32,
    eject_after_failures: u32,
    eject_base_ms: u64,
    eject_max_ms: u64,
}

impl Default for RawFailover {
    fn default() -> Self {
        RawFailover {
            retry_budget_percent: 20,
            min_concurrent_retries: 3,
            eject_after_failures: 3,
            eject_base_ms: 5_000,
            eject_max_ms: 120_000,
        }
    }
}

impl RawFailover {
    pub(super) fn validate(self, source: &str) -> Result<FailoverConfig, ConfigError> {
        let key = |field: &str| format!("failover.{field}");
        if self.retry_budget_percent > 100 {
            return Err(ConfigError::new(
                source,
                key("retry_budget_percent"),
                "expected 0 to 100",
            ));
        }
        let eject_base = millis(source, key("eject_base_ms"), self.eject_base_ms)?;
        let eject_max = millis(source, key("eject_max_ms"), self.eject_max_ms)?;
        if eject_max < eject_base {
            return Err(ConfigError::new(
                source,
                key("eject_max_ms"),
                "expected at least eject_base_ms",
            ));
        }
        Ok(FailoverConfig {
            retry_budget_percent: self.retry_budget_percent,
            min_concurrent_retries: self.min_concurrent_retries,
            eject_after_failures: count(
                source,
                key("eject_after_failures"),
                self.eject_after_failures,
                1,
            )?,
            eject_base,
            eject_max,
        })
    }
}
