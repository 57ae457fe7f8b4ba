//! `si-cli health` against a live gateway in front of simulated llama-servers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use si_test_support::harness::{Harness, Options, closed_port_url};

#[tokio::test]
async fn cli_health_prints_a_table_and_fails_when_a_backend_is_down() {
    let h = Harness::start(Options::default()).await;
    let mut out = Vec::new();
    assert!(
        si_cli::commands::health::check(&h.base, Some(&h.metrics_base), &mut out)
            .await
            .unwrap()
    );
    let table = String::from_utf8(out).unwrap();
    assert!(table.lines().count() == 8, "{table}");
    assert!(
        table.contains("biomistral-7b-8085") && table.contains(" ok "),
        "{table}"
    );
    let mut out = Vec::new();
    assert!(
        si_cli::commands::health::check(&h.base, None, &mut out)
            .await
            .unwrap(),
        "ok and ready, though the backends are not shown"
    );
    h.shutdown().await;

    let h = Harness::start(Options {
        url_overrides: vec![(8084, closed_port_url())],
        ..Options::default()
    })
    .await;
    let mut out = Vec::new();
    assert!(
        !si_cli::commands::health::check(&h.base, Some(&h.metrics_base), &mut out)
            .await
            .unwrap()
    );
    assert!(String::from_utf8(out).unwrap().contains("down"));
    // Without the metrics listener the gateway's readiness decides: Claims has no
    // backend left.
    let mut out = Vec::new();
    assert!(
        !si_cli::commands::health::check(&h.base, None, &mut out)
            .await
            .unwrap()
    );
    let table = String::from_utf8(out).unwrap();
    assert!(table.contains("backends not shown"), "{table}");
    h.shutdown().await;

    let mut out = Vec::new();
    assert!(
        !si_cli::commands::health::check(&closed_port_url(), None, &mut out)
            .await
            .unwrap()
    );
    assert!(String::from_utf8(out).unwrap().contains("cannot reach"));
}
