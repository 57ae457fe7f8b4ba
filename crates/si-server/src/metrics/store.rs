//! Metrics of the state several gateways share: the database's pool and whether
//! it answers, and how long a revocation took to reach this gateway.

use metrics::{Unit, describe_gauge, describe_histogram, gauge, histogram};

const STORE_UP: &str = "si_store_up";
const POOL_CONNECTIONS: &str = "si_store_pool_connections";
const POOL_WAITING: &str = "si_store_pool_waiting";
const REVOCATION_LAG: &str = "si_revocation_lag_seconds";

pub(super) fn describe() {
    describe_gauge!(
        STORE_UP,
        "1 if the shared database answered its last ping, else 0"
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Connections to the shared database, by state (in_use, idle) and the pool's max"
    );
    describe_gauge!(
        POOL_WAITING,
        "Callers waiting for a connection to the shared database"
    );
    describe_histogram!(
        REVOCATION_LAG,
        Unit::Seconds,
        "From a revocation's commit, by any gateway, to this gateway refusing its tokens"
    );
}

/// The shared database answered (or not), and its pool now.
pub(crate) fn shared_database(up: bool, pool: &si_store::postgres::PoolStatus) {
    gauge!(STORE_UP).set(if up { 1.0 } else { 0.0 });
    let in_use = pool.open.saturating_sub(pool.idle);
    gauge!(POOL_CONNECTIONS, "state" => "in_use").set(in_use as f64);
    gauge!(POOL_CONNECTIONS, "state" => "idle").set(pool.idle as f64);
    gauge!(POOL_CONNECTIONS, "state" => "max").set(pool.max as f64);
    gauge!(POOL_WAITING).set(pool.waiting as f64);
}

/// A revocation committed at `at_ms` (the database's clock, ms since the epoch)
/// is in force here now.
pub(crate) fn revocation_applied(at_ms: i64) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    // Clocks of different hosts may disagree by a little: never negative.
    histogram!(REVOCATION_LAG).record((now_ms - at_ms).max(0) as f64 / 1000.0);
}
