//! Whether the shared Redis answers: one warning when it stops, one notice when
//! it is back, `si_redis_errors_total{operation}` for every failed call and
//! `si_redis_up` (1 or 0) for dashboards and alerts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{counter, describe_counter, describe_gauge, gauge};
use si_core::config::RedisFailure;

const ERRORS: &str = "si_redis_errors_total";
const UP: &str = "si_redis_up";

/// Describes the metrics of the Redis engine (for the exporter's help text).
pub fn describe_metrics() {
    describe_counter!(
        ERRORS,
        "Redis calls for shared rate limits and the login throttle that failed or timed out, by operation"
    );
    describe_gauge!(
        UP,
        "1 while the Redis shared by the gateways answers, 0 while counting falls back"
    );
}

/// Whether the shared Redis answers; cheap to read and to clone (the health
/// endpoint reads it).
#[derive(Clone, Debug)]
pub struct RedisHealth {
    up: Arc<AtomicBool>,
}

impl RedisHealth {
    /// Down until the first answer.
    pub(crate) fn starting() -> Self {
        gauge!(UP).set(0.0);
        RedisHealth {
            up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Redis answered its last probe and no call has failed since.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Redis answered: noted once per outage.
    pub(crate) fn answered(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            gauge!(UP).set(1.0);
            tracing::info!("redis answers; rate limits and the login throttle are shared");
        }
    }

    /// A call failed: counted always, logged once per outage. True when this
    /// failure began the outage.
    pub(crate) fn failed(
        &self,
        operation: &'static str,
        error: &dyn std::fmt::Display,
        failure: RedisFailure,
    ) -> bool {
        counter!(ERRORS, "operation" => operation).increment(1);
        let began = self.up.swap(false, Ordering::AcqRel);
        if began {
            gauge!(UP).set(0.0);
            tracing::warn!(
                operation,
                failure = failure.as_str(),
                %error,
                "redis does not answer; {}",
                meanwhile(failure)
            );
        }
        began
    }
}

/// What happens while Redis does not answer, for the log.
pub(super) fn meanwhile(failure: RedisFailure) -> &'static str {
    match failure {
        RedisFailure::FailOpen => {
            "counting rate limits and failed logins on this gateway alone until it does"
        }
        RedisFailure::FailClosed => "refusing requests and logins until it does (fail_closed)",
    }
}
