//! The Redis engine against a real server, as several gateways share it: each
//! instance here is one gateway, with its own connection, and each test has its
//! own key prefix. Needs Redis at `SI_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`): `.ci/run` starts one and runs these with
//! `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod counters;
mod outage;
mod throttle;
mod tls;

use si_core::config::{RateLimitConfig, RedisFailure};
use si_store::redis::RedisConnection;

/// One gateway's connection to the test server, under `prefix`.
async fn gateway(prefix: &str, failure: RedisFailure) -> RedisConnection {
    let connection = RedisConnection::open(&si_test_support::redis::url(), prefix, failure, None)
        .await
        .unwrap();
    assert!(connection.health().is_up(), "the test Redis answers");
    connection
}

fn limits(per_ip: u32, per_user: u32, per_location: u32) -> RateLimitConfig {
    RateLimitConfig {
        per_ip_per_minute: per_ip,
        per_user_per_minute: per_user,
        per_location_per_minute: per_location,
        locations: [("main-campus".to_owned(), 5)].into(),
        trusted_proxies: Vec::new(),
        max_tracked_clients: 1_000,
    }
}

/// The keys under `prefix`, straight from the server.
async fn keys(prefix: &str) -> Vec<String> {
    let client = ::redis::Client::open(si_test_support::redis::url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// Deletes the keys under `prefix` (they would expire anyway).
async fn forget(prefix: &str) {
    let keys = keys(prefix).await;
    if keys.is_empty() {
        return;
    }
    let client = ::redis::Client::open(si_test_support::redis::url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = ::redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut connection)
        .await
        .unwrap();
}
