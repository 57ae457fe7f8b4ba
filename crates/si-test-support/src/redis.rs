//! A key prefix of its own for each test that needs Redis, on the server at
//! `SI_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`; `.ci/run` makes sure one
//! answers).

use std::sync::atomic::{AtomicU32, Ordering};

/// The test server's URL.
pub fn url() -> String {
    std::env::var("SI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The test server's URL with its host and port replaced by `127.0.0.1:port`
/// (credentials and database kept): the same server through a proxy.
pub fn url_via(port: u16) -> String {
    let url = url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (format!("{credentials}@"), rest),
        None => (String::new(), rest),
    };
    let database = rest.find('/').map_or("", |at| &rest[at..]);
    format!("{scheme}://{credentials}127.0.0.1:{port}{database}")
}

/// The test server's host and port.
pub fn address() -> String {
    let url = url();
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap().to_owned()
}

/// A key prefix no other test, and no earlier run, uses.
pub fn fresh_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "si-test-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
