//! The gateway end to end: the real server on 127.0.0.1:0 in front of six simulated
//! llama-servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod api_keys;
mod audit;
mod auth;
mod connections;
mod errors;
mod health;
mod jwt_attacks;
mod keys;
mod limits;
mod lockout;
mod metrics;
mod oidc;
mod openapi;
mod poison;
mod reliability;
mod routing;
mod sessions;
mod shared;
mod stream_faults;
mod streaming;
mod workflows;

use si_test_support::{harness as support, raw_backend};

/// The gateway's `/metrics` text (it must serve them on its own port).
async fn metrics_text(h: &support::Harness) -> String {
    use http_body_util::BodyExt;
    let response = h
        .request("GET", "/metrics", None, bytes::Bytes::new())
        .await;
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}
