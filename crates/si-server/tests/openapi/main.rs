//! The gateway against its own API description: schemathesis reads the document
//! the gateway serves at `GET /openapi.json` (the checked-in file, which it
//! loads from disk so that `GET /openapi.json` itself is tested too; it skips
//! the operation it loaded the description from), and, against a running
//! gateway with six simulated llama-servers behind it, generates requests for
//! every operation (examples, boundary cases, then
//! random ones, valid and not), sends them with an admin's API key, and fails on
//! any 5xx and on any answer the document does not describe: its status, content
//! type, headers or body. It needs schemathesis, which `.ci/run` installs
//! (`.ci/schemathesis`, into a virtualenv under `target/`) and passes in
//! `SI_SCHEMATHESIS`; run it with
//! `cargo test -p si-server --test openapi -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use si_auth::api_keys::{self, ApiKey};
use si_test_support::harness::{Harness, Options};

/// The checks every answer must pass.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      unsupported_method,allow_header_conformance,ignored_auth";
/// Cases per operation in the random phase: the run stays within a few minutes
/// on two cores.
const MAX_EXAMPLES: &str = "200";
/// The same cases every run, unless `SI_SCHEMATHESIS_SEED` asks for others.
const SEED: &str = "20260101";

/// An admin's API key (one for the whole run: a key has no session for the
/// fuzzer's logouts to end), once the gateway takes it.
async fn admin_key(h: &Harness) -> String {
    let store = si_store::AccountStores::open(h.gateway.config())
        .await
        .unwrap()
        .api_keys;
    let (key, hash) = api_keys::generate();
    let record = ApiKey {
        name: "schemathesis".into(),
        role: "admin".parse().unwrap(),
        location: "hospital-01".into(),
        created_at: si_auth::users::unix_now(),
        expires_at: None,
        revoked: false,
        forward_user: false,
        rate_limit: None,
        last_used_at: None,
    };
    store.insert_key(&record, &hash).await.unwrap();
    let key = key.expose_secret().to_owned();
    let started = Instant::now();
    while h.get_json("/v1/models", Some(&key)).await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(5), "key not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis: .ci/run installs it and runs this with --ignored"]
async fn every_answer_is_one_the_description_allows() {
    let exe = std::env::var("SI_SCHEMATHESIS")
        .expect("SI_SCHEMATHESIS names the schemathesis executable (bash .ci/schemathesis)");
    let seed = std::env::var("SI_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    // No per-address limit: one client sends everything. Metrics on the main
    // port, so that `GET /metrics` is there to test. Every other limit and check
    // is as deployed.
    let h = Harness::start(Options {
        env: vec![("SI_RATE_LIMIT_PER_IP", "0".into())],
        toml_edits: vec![("metrics_on_main = false", "metrics_on_main = true".into())],
        ..Options::default()
    })
    .await;
    let key = admin_key(&h).await;
    let document = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let served = h
        .request("GET", "/openapi.json", None, bytes::Bytes::new())
        .await;
    let served = http_body_util::BodyExt::collect(served.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        served,
        std::fs::read(&document).unwrap(),
        "the served document is the file"
    );
    // Its reports, and hypothesis's example database, under target/.
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let started = Instant::now();
    let output = tokio::process::Command::new(&exe)
        .current_dir(&work)
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&document)
        .args(["--url", &h.base])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(["--report", "junit", "--report-dir", "report"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The summary, whatever happened (the key is masked in its output).
    eprintln!("{stdout}\n{stderr}\nschemathesis took {took:.1?}");
    assert!(
        !stdout.contains(&key) && !stderr.contains(&key),
        "the key was printed"
    );
    assert!(
        output.status.success(),
        "schemathesis found problems: see above"
    );
    h.shutdown().await;
}
