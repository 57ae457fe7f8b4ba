//! `si-cli` against a shared PostgreSQL store, as an operator of several gateways
//! runs it: migrations and the audit chain every gateway writes. Needs
//! PostgreSQL (see `si_test_support::postgres`); `.ci/run` runs these with
//! `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use si_audit::{AuditRecord, AuditStore};
use si_store::postgres::PostgresAccounts;

fn si_cli(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    si_test_support::cli::run_with_env(
        env!("CARGO_BIN_EXE_si-cli"),
        dir,
        args,
        &[("SI_DATABASE_URL", url)],
    )
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn migrate_and_audit_work_on_the_shared_database() {
    let url = si_test_support::postgres::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let out = si_cli(dir.path(), &url, &["db", "migrate"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("schema up to date"), "{said}");
    // Never the password of the URL, and never a local file.
    assert!(!dir.path().join("data").exists());

    // Two gateways' records in one chain.
    let store = PostgresAccounts::open(&url, false, None).await.unwrap();
    for (i, gateway) in ["site-a", "site-b", "site-a"].iter().enumerate() {
        store
            .audit(gateway)
            .append(AuditRecord {
                at: format!("2026-12-01T08:00:0{i}.000Z"),
                request_id: format!("req-{i}"),
                status: 200,
                ..AuditRecord::default()
            })
            .await
            .unwrap();
    }
    let out = si_cli(dir.path(), &url, &["audit", "verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("intact: 3 records"), "{said}");
    let out = si_cli(
        dir.path(),
        &url,
        &["audit", "export", "--since", "2026-12-01T08:00:01Z"],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.lines().count(), 2, "{said}");
    assert!(said.contains("\"gateway\":\"site-b\""), "{said}");

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE audit SET record = replace(record, 'req-1', 'req-9') WHERE seq = 2",
            &[],
        )
        .await
        .unwrap();
    let out = si_cli(dir.path(), &url, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("BROKEN at record 2"), "{said}");
}
