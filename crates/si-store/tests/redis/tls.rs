//! `rediss://`: Redis over TLS, its certificate verified. The test starts a Redis
//! of its own that speaks TLS only, with a certificate made for the test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use si_auth::store::{Refusal, RequestCounters};
use si_core::config::RedisFailure;
use si_store::redis::{RedisConnection, RedisCounters};
use si_test_support::ports::free_ports;
use si_test_support::redis::fresh_prefix;

use super::limits;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let made = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl {args:?}: {made:?}");
}

/// An authority `name` in `dir`, and a certificate it signed for `localhost`:
/// the paths of the authority's certificate, the server's, and its key.
fn authority_and_server(dir: &Path, name: &str) -> [std::path::PathBuf; 3] {
    let file = |suffix: &str| format!("{name}-{suffix}");
    let (ca, ca_key) = (file("ca.pem"), file("ca.key"));
    let (server, server_key, request) =
        (file("server.pem"), file("server.key"), file("server.csr"));
    let extensions = file("server.ext");
    std::fs::write(
        dir.join(&extensions),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let new_key = ["-newkey", "rsa:2048", "-nodes", "-keyout"];
    openssl(
        dir,
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=test authority"][..],
            &new_key,
            &[&ca_key, "-out", &ca],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            &["req", "-subj", "/CN=localhost"][..],
            &new_key,
            &[&server_key, "-out", &request],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &request,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-extfile",
            &extensions,
            "-out",
            &server,
        ],
    );
    [ca, server, server_key].map(|name| dir.join(name))
}

#[tokio::test]
#[ignore = "needs redis-server and openssl: .ci/run installs them and runs this with --ignored"]
async fn rediss_is_encrypted_and_the_certificate_verified() {
    let dir = tempfile::tempdir().unwrap();
    let [authority, cert, key] = authority_and_server(dir.path(), "hospital");
    let [stranger, _, _] = authority_and_server(dir.path(), "stranger");
    let [port] = free_ports();
    let _redis = tokio::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&authority)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--bind", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("rediss://localhost:{port}");
    let mut connection = None;
    for _ in 0..50 {
        let opened = RedisConnection::open(
            &url,
            &fresh_prefix(),
            RedisFailure::FailClosed,
            Some(&authority),
        )
        .await
        .unwrap();
        if opened.health().is_up() {
            connection = Some(opened);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connection = connection.expect("the TLS Redis never answered");
    let counters = RedisCounters::new(&connection, &limits(2, 0, 0));
    assert_eq!(counters.check_client(CLIENT).await, Ok(()));
    assert_eq!(counters.check_client(CLIENT).await, Ok(()));
    assert!(matches!(
        counters.check_client(CLIENT).await,
        Err(Refusal::Limited(_))
    ));

    // Trusting another authority, the server's certificate is refused: no answer.
    let refused = RedisConnection::open(
        &url,
        &fresh_prefix(),
        RedisFailure::FailClosed,
        Some(&stranger),
    )
    .await
    .unwrap();
    assert!(!refused.health().is_up());
    let counters = RedisCounters::new(&refused, &limits(2, 0, 0));
    assert_eq!(
        counters.check_client(CLIENT).await,
        Err(Refusal::Unavailable)
    );
}
