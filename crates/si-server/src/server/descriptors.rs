//! Open-file descriptors: every connection, backend socket and database file takes
//! one, and a process that runs out can accept nothing, not even a health check.
//! At start the soft limit is raised to the hard one, and the listeners' caps are
//! fitted under it with some kept in reserve, so no listener can take them all.

use si_core::config::GatewayConfig;

/// Descriptors kept for everything that is not a client connection: database files,
/// the log, the runtime's own, the key file watcher, a few spare.
const RESERVED: u64 = 64;

/// Descriptors one gateway connection may hold: its socket and a backend's.
const PER_CONNECTION: u64 = 2;

/// Raises the soft open-file limit to the hard one; returns the limit now in force
/// (`None` where the platform has no such limit or it cannot be read).
pub fn raise_descriptor_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Lowers `gateway.max_connections` and `gateway.metrics_max_connections` where
/// `limit` descriptors cannot cover them (two per gateway connection, one per metrics
/// connection, and a reserve); returns a warning naming what was lowered.
pub fn fit_to_descriptors(gateway: &mut GatewayConfig, limit: u64) -> Option<String> {
    let usable = limit.saturating_sub(RESERVED).max(PER_CONNECTION + 1);
    let metrics = u64::from(gateway.metrics_max_connections)
        .min(usable / 8)
        .max(1);
    let connections = u64::from(gateway.max_connections)
        .min((usable - metrics) / PER_CONNECTION)
        .max(1);
    let fitted = (
        u32::try_from(connections).unwrap_or(u32::MAX),
        u32::try_from(metrics).unwrap_or(u32::MAX),
    );
    let wanted = (gateway.max_connections, gateway.metrics_max_connections);
    if fitted == wanted {
        return None;
    }
    (gateway.max_connections, gateway.metrics_max_connections) = fitted;
    // One address keeps at most a quarter of what is left, as it had at most its
    // configured share of the whole.
    gateway.max_connections_per_address = gateway
        .max_connections_per_address
        .min((fitted.0 / 4).max(1));
    Some(format!(
        "the open-file limit ({limit}) cannot cover gateway.max_connections = {} and \
         gateway.metrics_max_connections = {}; serving at most {} and {}; raise the limit \
         (LimitNOFILE= in systemd, ulimit -n) to keep them",
        wanted.0, wanted.1, fitted.0, fitted.1
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(connections: u32, metrics: u32) -> GatewayConfig {
        let mut gateway = si_core::Config::builtin().unwrap().gateway;
        gateway.max_connections = connections;
        gateway.metrics_max_connections = metrics;
        gateway
    }

    #[test]
    fn a_generous_limit_changes_nothing() {
        let mut config = gateway(10_000, 32);
        assert_eq!(fit_to_descriptors(&mut config, 1 << 20), None);
        assert_eq!(
            (config.max_connections, config.metrics_max_connections),
            (10_000, 32)
        );
    }

    #[test]
    fn a_small_limit_lowers_the_caps_and_keeps_a_reserve() {
        for limit in [0, 1, 64, 100, 512, 1024, 4096, 20_063] {
            let mut config = gateway(10_000, 32);
            let warning = fit_to_descriptors(&mut config, limit).unwrap();
            assert!(warning.contains("gateway.max_connections"), "{warning}");
            let (connections, metrics) = (
                u64::from(config.max_connections),
                u64::from(config.metrics_max_connections),
            );
            assert!(connections >= 1 && metrics >= 1);
            assert!(config.max_connections_per_address <= config.max_connections);
            if limit >= 512 {
                assert!(
                    connections * PER_CONNECTION + metrics + RESERVED <= limit,
                    "{limit}: {connections} + {metrics}"
                );
            }
        }
    }
}
