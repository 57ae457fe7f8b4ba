//! The facade as an embedder uses it: one dependency, a gateway from the
//! built-in configuration on a port of its own, its stores in a data directory
//! of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn an_embedded_gateway_opens_its_stores_and_serves() {
    let data = tempfile::tempdir().unwrap();
    let env =
        si::Environment::from_pairs([("SI_DATA_DIR", data.path().to_string_lossy().into_owned())]);
    let config = si::Config::load(None, &env).unwrap();
    let gateway = si::Gateway::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(si::run(listener, gateway, async move {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#"{"status":"ok","ready":"#), "{answer}");
    // The stores were created where the configuration said, private.
    for file in ["users.db", "audit.db", "jwt_secret"] {
        assert!(data.path().join(file).exists(), "{file} missing");
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
