//! `[rate_limits]` as written, and its validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, RateLimitConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRateLimits {
    per_ip_per_minute: u32,
    per_user_per_minute: u32,
    per_location_per_minute: u32,
    locations: BTreeMap<String, u32>,
    trusted_proxies: Vec<String>,
    max_tracked_clients: usize,
}

impl Default for RawRateLimits {
    fn default() -> Self {
        RawRateLimits {
            per_ip_per_minute: 100,
            per_user_per_minute: 0,
            per_location_per_minute: 0,
            locations: BTreeMap::new(),
            trusted_proxies: Vec::new(),
            max_tracked_clients: 100_000,
        }
    }
}

impl RawRateLimits {
    pub(super) fn validate(self, source: &str) -> Result<RateLimitConfig, ConfigError> {
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse().map_err(|_| {
                    let key = format!("rate_limits.trusted_proxies[{i}]");
                    ConfigError::new(source, key, "expected an IP address such as 127.0.0.1")
                })
            })
            .collect::<Result<_, _>>()?;
        if !(1_000..=10_000_000).contains(&self.max_tracked_clients) {
            let key = "rate_limits.max_tracked_clients";
            return Err(ConfigError::new(source, key, "expected 1000 to 10000000"));
        }
        Ok(RateLimitConfig {
            per_ip_per_minute: self.per_ip_per_minute,
            per_user_per_minute: self.per_user_per_minute,
            per_location_per_minute: self.per_location_per_minute,
            locations: self.locations,
            trusted_proxies,
            max_tracked_clients: self.max_tracked_clients,
        })
    }
}
