//! Metrics of routing decisions (recorded through the `metrics` facade; the server
//! installs the exporter).

use metrics::{counter, describe_counter, describe_histogram};

const FAILOVERS: &str = "si_failovers_total";
const EJECTIONS: &str = "si_backend_ejections_total";
const UPSTREAM: &str = "si_upstream_headers_seconds";
const STATE_CHANGES: &str = "si_backend_state_changes_total";

/// Describes the metrics this crate records.
pub fn describe() {
    describe_counter!(
        FAILOVERS,
        "Requests tried again on another replica, by model"
    );
    describe_counter!(
        EJECTIONS,
        "Backends taken out of rotation after consecutive failures"
    );
    describe_histogram!(
        UPSTREAM,
        metrics::Unit::Seconds,
        "Time to a backend's response headers"
    );
    describe_counter!(
        STATE_CHANGES,
        "Health poll state changes, by backend and new state"
    );
}

pub(crate) fn failover(model: &str) {
    counter!(FAILOVERS, "model" => model.to_owned()).increment(1);
}

pub(crate) fn ejected(backend: &str) {
    counter!(EJECTIONS, "backend" => backend.to_owned()).increment(1);
}

pub(crate) fn upstream_headers(backend: &str, seconds: f64) {
    metrics::histogram!(UPSTREAM, "backend" => backend.to_owned()).record(seconds);
}

pub(crate) fn state_changed(backend: &str, to: &'static str) {
    counter!(STATE_CHANGES, "backend" => backend.to_owned(), "to" => to).increment(1);
}
