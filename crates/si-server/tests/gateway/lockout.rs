//! Failed logins: slowed down wherever they come from, locked out only at the
//! address they come from, so nobody can lock a clinician out from elsewhere.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{Harness, Options, TEST_PASSWORD, client, error_parts, read_json};

/// A gateway behind a proxy on loopback, so each request may say where it is from.
fn behind_a_proxy(more: &[(&'static str, &str)]) -> Options {
    let mut toml_edits = vec![(
        "trusted_proxies = []",
        "trusted_proxies = [\"127.0.0.1\"]".to_owned(),
    )];
    toml_edits.extend(more.iter().map(|(from, to)| (*from, (*to).to_owned())));
    Options {
        toml_edits,
        ..Options::default()
    }
}

/// A login from client address `from`: status, body and `Retry-After` seconds.
async fn login_from(
    h: &Harness,
    username: &str,
    password: &str,
    from: &str,
) -> (u16, Value, Option<u64>) {
    let body = json!({"username": username, "password": password, "location_id": "hospital-01"});
    let request = http::Request::post(format!("{}/v1/auth/login", h.base))
        .header("content-type", "application/json")
        .header("x-forwarded-for", from)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let (status, body) = read_json(response).await;
    (status, body, retry_after)
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_clinician_out_elsewhere() {
    let h = Harness::start(behind_a_proxy(&[])).await;
    let (guesser, ward) = ("198.51.100.66", "198.51.100.7");
    for _ in 0..5 {
        let (status, ..) = login_from(&h, "doctor1", "wrong password!!", guesser).await;
        assert_eq!(status, 401);
    }
    let (status, body, retry_after) = login_from(&h, "doctor1", TEST_PASSWORD, guesser).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (429, "login_locked")
    );
    assert!(matches!(retry_after, Some(1..=900)), "{retry_after:?}");

    // The clinician, from the ward, gets in: slowed down, not locked out.
    let started = std::time::Instant::now();
    let (status, body, _) = login_from(&h, "doctor1", TEST_PASSWORD, ward).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1600),
        "logins for a username that keeps failing are slowed"
    );
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(h.gateway.tokens().verify(token).unwrap().sub, "doctor1");
    // The guesser's address stays locked out of it.
    assert_eq!(
        login_from(&h, "doctor1", TEST_PASSWORD, guesser).await.0,
        429
    );
    h.shutdown().await;
}

#[tokio::test]
async fn case_and_width_variants_spend_one_budget() {
    let h = Harness::start(Options::default()).await;
    for variant in [
        "doctor1",
        "Doctor1",
        "DOCTOR1",
        "ｄｏｃｔｏｒ１",
        "Ｄｏｃｔｏｒ１",
    ] {
        let body = json!({"username": variant, "password": "wrong password!!", "location_id": "hospital-01"});
        assert_eq!(h.post_json("/v1/auth/login", None, body).await.0, 401);
    }
    let body =
        json!({"username": "doctor1", "password": TEST_PASSWORD, "location_id": "hospital-01"});
    let (status, body) = h.post_json("/v1/auth/login", None, body).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (429, "login_locked")
    );
    h.shutdown().await;
}

/// A counter's value in the gateway's `/metrics`.
async fn counter(h: &Harness, name: &str) -> f64 {
    let text = crate::metrics_text(h).await;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn one_username_failing_from_three_addresses_is_counted() {
    let h = Harness::start(behind_a_proxy(&[(
        "metrics_on_main = false",
        "metrics_on_main = true",
    )]))
    .await;
    let distributed = "si_login_distributed_guessing_total";
    let (guessing_before, failures_before) = (
        counter(&h, distributed).await,
        counter(&h, "si_login_failures_total").await,
    );
    for from in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let (status, ..) = login_from(&h, "doctor1", "wrong password!!", from).await;
        assert_eq!(status, 401);
    }
    assert!(counter(&h, distributed).await >= guessing_before + 1.0);
    assert!(counter(&h, "si_login_failures_total").await >= failures_before + 3.0);
    h.shutdown().await;
}

#[tokio::test]
async fn repeated_failures_lock_out_real_and_unknown_users_alike() {
    let h = Harness::start(Options::default()).await;
    let attempt = |username: &'static str, password: &'static str| {
        let h = &h;
        async move {
            let body =
                json!({"username": username, "password": password, "location_id": "hospital-01"});
            h.post_json("/v1/auth/login", None, body).await
        }
    };
    let fail_five = |username: &'static str| async move {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(attempt(username, "wrong password!!").await.0);
        }
        statuses
    };
    let started = std::time::Instant::now();
    let (real, ghost) = tokio::join!(fail_five("doctor1"), fail_five("nobody"));
    assert_eq!(real, [401; 5]);
    assert_eq!(ghost, [401; 5]);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(100 + 200 + 400 + 800),
        "failures were not slowed"
    );

    // Now even the right password is refused, and an unknown name looks the same.
    let (status, locked_real) = attempt("doctor1", TEST_PASSWORD).await;
    let (_, locked_ghost) = attempt("nobody", TEST_PASSWORD).await;
    assert_eq!(status, 429);
    assert_eq!(error_parts(&locked_real).1, "login_locked");
    // Same status, type and code; only the seconds to wait may differ by a tick.
    let (kind, code, message) = error_parts(&locked_ghost);
    assert_eq!(
        (kind, code),
        (error_parts(&locked_real).0, error_parts(&locked_real).1)
    );
    assert!(
        message.starts_with("too many failed logins from this address"),
        "{message}"
    );
    // Other users log in as usual.
    assert_eq!(attempt("biller", TEST_PASSWORD).await.0, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn guesses_sent_all_at_once_get_no_more_tries() {
    let h = Harness::start(Options::default()).await;
    let guesses = (0..30).map(|n| {
        let h = &h;
        async move {
            let body = json!({"username": "doctor1", "password": format!("guess number {n}"), "location_id": "hospital-01"});
            h.post_json("/v1/auth/login", None, body).await.0
        }
    });
    let statuses = futures_util::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 5,
        "{checked} passwords were checked: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30 - checked);
    h.shutdown().await;
}

#[tokio::test]
async fn attempts_abandoned_before_the_password_check_do_not_count() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(behind_a_proxy(&[])).await;
    let ward = "198.51.100.7";
    // Two failures: the username's logins now wait before their check.
    for _ in 0..2 {
        assert_eq!(
            login_from(&h, "doctor1", "wrong password!!", ward).await.0,
            401
        );
    }
    // Attempts whose client leaves during that wait never reach the check: each
    // gives its booking back instead of counting towards a lockout.
    let body = json!({"username": "doctor1", "password": "wrong password!!", "location_id": "hospital-01"}).to_string();
    let address = h.base.trim_start_matches("http://").to_owned();
    for _ in 0..6 {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             x-forwarded-for: {ward}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, body, _) = login_from(&h, "doctor1", TEST_PASSWORD, ward).await;
    assert_eq!(status, 200, "{body}");
    h.shutdown().await;
}
