//! The PostgreSQL store against a real server, as two gateways share it. Each test
//! makes its own database. Needs PostgreSQL at `SI_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, trust auth): `.ci/run` starts one
//! and runs these with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use si_auth::store::{RevocationStore, SessionStore, UserStore};
use si_auth::{Accounts, AuthError, NewUser};
use si_store::postgres::PostgresAccounts;
use si_test_support::postgres::fresh_database;

fn accounts(store: &PostgresAccounts) -> Accounts {
    Accounts::new(Arc::new(store.clone()), Arc::new(store.clone())).unwrap()
}

async fn add_doctor(accounts: &Accounts) {
    accounts
        .add(&NewUser {
            username: "doctor1",
            password: &SecretString::from("correct horse battery staple"),
            role: "clinician".parse().unwrap(),
            location: "hospital-01",
        })
        .await
        .unwrap();
}

async fn two_gateways(url: &str) -> (PostgresAccounts, PostgresAccounts) {
    (
        PostgresAccounts::open(url, true, None).await.unwrap(),
        PostgresAccounts::open(url, true, None).await.unwrap(),
    )
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn a_database_is_migrated_once_and_checked_after() {
    let url = fresh_database().await;
    let unmigrated = PostgresAccounts::open(&url, false, None).await.unwrap_err();
    assert!(
        unmigrated.to_string().contains("si-cli db migrate"),
        "{unmigrated}"
    );
    // Two gateways starting together: the advisory lock lets one migrate.
    let (a, b) = tokio::join!(
        PostgresAccounts::open(&url, true, None),
        PostgresAccounts::open(&url, true, None)
    );
    a.unwrap();
    b.unwrap();
    PostgresAccounts::open(&url, false, None).await.unwrap();
    assert!(
        PostgresAccounts::open("mysql://x", true, None)
            .await
            .is_err()
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn a_login_on_one_gateway_is_refreshed_on_another_and_a_replay_ends_it() {
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    let (on_a, on_b) = (accounts(&a), accounts(&b));
    add_doctor(&on_a).await;
    let password = SecretString::from("correct horse battery staple");
    let user = on_b.authenticate("Doctor1", &password).await.unwrap();
    assert_eq!(user.username, "doctor1");
    let first = on_a
        .start_session("doctor1", "hospital-01", 3600)
        .await
        .unwrap();
    let next = on_b.refresh(&first.token, 3600).await.unwrap();
    assert_eq!(next.refresh.family, first.family);
    let before = b.version().await.unwrap();
    // The spent token again, on the other gateway: a replay ends the session.
    let Err(replay) = on_a.refresh(&first.token, 3600).await else {
        panic!("a spent refresh token was taken again");
    };
    assert!(
        matches!(replay, AuthError::RefreshReused { .. }),
        "{replay:?}"
    );
    assert!(b.version().await.unwrap() > before);
    assert!(b.revoked().await.unwrap().families.contains(&first.family));
    assert!(on_b.refresh(&next.refresh.token, 3600).await.is_err());
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn two_gateways_spending_one_refresh_token_at_once_cannot_both_win() {
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    add_doctor(&accounts(&a)).await;
    for round in 0..20 {
        let issued = accounts(&a)
            .start_session("doctor1", "hospital-01", 3600)
            .await
            .unwrap();
        let hash = si_auth::accounts::token_hash(issued.token.expose_secret());
        let (next_a, next_b) = (format!("next-a-{round}"), format!("next-b-{round}"));
        let (left, right) = tokio::join!(
            a.spend(&hash, &next_a, i64::MAX),
            b.spend(&hash, &next_b, i64::MAX)
        );
        let wins = usize::from(left.is_ok()) + usize::from(right.is_ok());
        assert_eq!(wins, 1, "{left:?} {right:?}");
        let loser = left.err().or(right.err()).unwrap();
        assert!(
            matches!(loser, AuthError::RefreshReused { .. }),
            "{loser:?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn revocations_and_look_alike_names_are_shared() {
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    add_doctor(&accounts(&a)).await;
    let taken = accounts(&b)
        .add(&NewUser {
            username: "Doctor1",
            password: &SecretString::from("another long enough password"),
            role: "clinician".parse().unwrap(),
            location: "hospital-01",
        })
        .await
        .unwrap_err();
    assert!(
        matches!(taken, AuthError::UsernameTaken { .. }),
        "{taken:?}"
    );
    let before = a.version().await.unwrap();
    b.revoke("jti-1", u64::MAX / 2, None).await.unwrap();
    accounts(&b).set_disabled("doctor1", true).await.unwrap();
    assert!(a.version().await.unwrap() >= before + 2);
    let revoked = a.revoked().await.unwrap();
    assert!(revoked.jtis.contains("jti-1"));
    assert!(revoked.disabled_users.contains("doctor1"));
    assert_eq!(a.list().await.unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn a_logout_racing_a_refresh_on_another_gateway_ends_the_whole_session() {
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    add_doctor(&accounts(&a)).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for round in 0..30 {
        let issued = accounts(&a)
            .start_session("doctor1", "hospital-01", 3600)
            .await
            .unwrap();
        let hash = si_auth::accounts::token_hash(issued.token.expose_secret());
        let next = format!("next-{round}");
        let (_, _) = tokio::join!(a.spend(&hash, &next, i64::MAX), b.end(&hash));
        let alive: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM refresh_tokens WHERE family = $1 AND NOT revoked",
                &[&issued.family],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(alive, 0, "round {round}: a token outlived the logout");
    }
}

fn record(request_id: &str) -> si_audit::AuditRecord {
    si_audit::AuditRecord {
        at: si_audit::now_rfc3339(),
        request_id: request_id.to_owned(),
        client_ip: "10.0.0.7".into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status: 200,
        ..si_audit::AuditRecord::default()
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn gateways_writing_at_once_make_one_chain_and_verify_names_a_changed_row() {
    use si_audit::{AuditStore, VerifyReport};
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    let (a, b) = (Arc::new(a.audit("site-a")), Arc::new(b.audit("site-b")));
    // 400 records written at once from both, each caller waiting for its commit.
    let mut writers = Vec::new();
    for i in 0..400 {
        let log = if i % 2 == 0 { a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            log.append(record(&format!("req-{i}"))).await
        }));
    }
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    a.append_detached(record("detached"));
    a.flush().await;
    let report = si_audit::verify(a.as_ref(), None).await.unwrap();
    let VerifyReport::Intact { records, .. } = report else {
        panic!("{report:?}")
    };
    assert_eq!(records, 401);
    // Every record says which gateway wrote it, and both did.
    let stored = si_test_support::audit::first_records(a.as_ref(), 1000).await;
    let writers: std::collections::BTreeSet<String> = stored
        .iter()
        .map(|s| {
            let record: si_audit::AuditRecord = serde_json::from_str(&s.json).unwrap();
            record.gateway.unwrap()
        })
        .collect();
    assert_eq!(
        writers.into_iter().collect::<Vec<_>>(),
        ["site-a", "site-b"]
    );

    // Someone with write access changes one record's status.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE audit SET record = replace(record, '\"status\":200', '\"status\":201') WHERE seq = 123",
            &[],
        )
        .await
        .unwrap();
    match si_audit::verify(b.as_ref(), None).await.unwrap() {
        VerifyReport::Broken { seq, .. } => assert_eq!(seq, 123),
        intact => panic!("a changed record verified: {intact:?}"),
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn a_revocation_on_one_gateway_is_pushed_to_the_other() {
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    assert!(b.watch(changed));
    // Listening starts on a connection of its own: give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    a.revoke("jti-1", 4_000_000_000, Some("family-1"))
        .await
        .unwrap();
    let at_ms = tokio::time::timeout(std::time::Duration::from_secs(2), changes.recv())
        .await
        .expect("no notification within 2 s")
        .unwrap();
    assert!(at_ms > 0);
    eprintln!("revocation pushed in {:?}", started.elapsed());
    assert!(b.revoked().await.unwrap().jtis.contains("jti-1"));
}

/// `url` asking for TLS to the server's own name (its certificate's common name),
/// still connecting to the address `url` names.
fn tls_url(url: &str, name: &str) -> String {
    let (user, rest) = url
        .trim_start_matches("postgres://")
        .split_once('@')
        .unwrap();
    let (address, database) = rest.split_once('/').unwrap();
    let (ip, port) = address.rsplit_once(':').unwrap();
    format!("postgres://{user}@{name}:{port}/{database}?sslmode=require&hostaddr={ip}")
}

#[tokio::test]
#[ignore = "needs PostgreSQL with TLS (Debian's default): .ci/run runs this with --ignored"]
async fn a_url_asking_for_tls_is_encrypted_and_the_certificate_verified() {
    let url = fresh_database().await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let show = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let ssl = show(client.query_one("SHOW ssl", &[]).await.unwrap());
    assert_eq!(ssl, "on", "the test server must offer TLS (Debian's does)");
    // Its certificate is self-signed: as the authority, it vouches for itself.
    let certificate = show(client.query_one("SHOW ssl_cert_file", &[]).await.unwrap());
    let subject = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&certificate)
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout).into_owned();
    let name = subject
        .split("CN=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no common name in {certificate}: {subject}"))
        .trim()
        .to_owned();
    let secure = tls_url(&url, &name);

    let store = PostgresAccounts::open(&secure, true, Some(std::path::Path::new(&certificate)))
        .await
        .unwrap();
    assert!(store.encrypted().await.unwrap());
    // Revocations are pushed over a TLS connection of their own too.
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    store.watch(changed);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    store.revoke("jti-tls", 4_000_000_000, None).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(2), changes.recv())
        .await
        .expect("no notification over TLS within 2 s");

    // A certificate that does not name the server asked for is refused (the
    // server's is for its name, not for its address).
    let elsewhere = tls_url(&url, "127.0.0.1");
    let refused =
        PostgresAccounts::open(&elsewhere, true, Some(std::path::Path::new(&certificate)))
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // Without sslmode, no TLS.
    let plain = PostgresAccounts::open(&url, true, None).await.unwrap();
    assert!(!plain.encrypted().await.unwrap());
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn records_cut_off_the_end_of_the_chain_are_found() {
    use si_audit::{AuditStore, VerifyReport};
    let url = fresh_database().await;
    let (a, _) = two_gateways(&url).await;
    let log = a.audit("site-a");
    for i in 0..5 {
        log.append(record(&format!("req-{i}"))).await.unwrap();
    }
    assert!(matches!(
        si_audit::verify(&log, None).await.unwrap(),
        VerifyReport::Intact { records: 5, .. }
    ));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("DELETE FROM audit WHERE seq >= 4", &[])
        .await
        .unwrap();
    match si_audit::verify(&log, None).await.unwrap() {
        VerifyReport::Broken { seq, reason } => {
            assert_eq!(seq, 4);
            assert!(reason.contains("cut off"), "{reason}");
        }
        intact => panic!("a shortened chain verified: {intact:?}"),
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn users_of_single_sign_on() {
    let url = fresh_database().await;
    let store = PostgresAccounts::open(&url, true, None).await.unwrap();
    si_test_support::accounts::single_sign_on_users(&accounts(&store)).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: .ci/run starts one and runs this with --ignored"]
async fn a_key_keeps_its_limit_and_the_latest_use_any_gateway_saw() {
    use si_auth::api_keys::ApiKey;
    use si_auth::store::ApiKeyStore;
    let url = fresh_database().await;
    let (a, b) = two_gateways(&url).await;
    let key = |name: &str, rate_limit| ApiKey {
        name: name.into(),
        role: "clinician".parse().unwrap(),
        location: "hospital-01".into(),
        created_at: 1_000,
        expires_at: None,
        revoked: false,
        forward_user: false,
        rate_limit,
        last_used_at: None,
    };
    a.insert_key(&key("ehr", Some(30)), "hash-ehr")
        .await
        .unwrap();
    a.insert_key(&key("webui", None), "hash-webui")
        .await
        .unwrap();
    let version = a.version().await.unwrap();
    // Each gateway writes what it saw; the later use wins, whichever came last.
    let uses = [("ehr".to_owned(), 2_060), ("nobody".to_owned(), 1)];
    b.record_uses(&uses).await.unwrap();
    a.record_uses(&[("ehr".to_owned(), 2_000)]).await.unwrap();
    a.record_uses(&[]).await.unwrap();
    let got: Vec<_> = a
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| (k.name, k.rate_limit, k.last_used_at))
        .collect();
    assert_eq!(
        got,
        [
            ("ehr".to_owned(), Some(30), Some(2_060)),
            ("webui".to_owned(), None, None)
        ]
    );
    assert_eq!(
        a.version().await.unwrap(),
        version,
        "recording uses makes no gateway reload its keys"
    );
}
