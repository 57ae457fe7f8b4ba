//! Connection limits: one address cannot take every connection, and a flood from it
//! does not hold up anyone else.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{Harness, Options};

/// A connection to `gateway` from the local address `from` (any of 127/8 is local).
async fn connect_from(from: &str, gateway: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(gateway).await
}

/// Whatever arrives on `stream` within `wait`.
async fn read_for(stream: &mut TcpStream, wait: Duration) -> String {
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut bytes)).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn a_flood_from_one_address_gets_its_share_and_others_are_still_served() {
    let h = Harness::start(Options {
        toml_edits: vec![
            ("max_connections = 10000", "max_connections = 200".into()),
            (
                "max_connections_per_address = 256",
                "max_connections_per_address = 20".into(),
            ),
            (
                "header_read_timeout_ms = 10000",
                "header_read_timeout_ms = 60000".into(),
            ),
        ],
        ..Options::default()
    })
    .await;
    let gateway: SocketAddr = h.base.trim_start_matches("http://").parse().unwrap();

    // More half-sent requests from one address than the whole gateway takes.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut stream = connect_from("127.0.0.1", gateway).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        flood.push(stream);
    }

    // Another address is answered at once, not after the flood's header timeout.
    let mut other = connect_from("127.0.0.2", gateway).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_for(&mut other, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // The flood's connections past its share were answered 429 and closed; the
    // others are still open, waiting for the rest of their headers.
    let mut refused = 0;
    let mut waiting = 0;
    for stream in &mut flood {
        let reply = read_for(stream, Duration::from_millis(20)).await;
        if reply.starts_with("HTTP/1.1 429") {
            assert!(
                reply.contains("too_many_connections_from_address"),
                "{reply}"
            );
            refused += 1;
        } else {
            assert_eq!(reply, "");
            waiting += 1;
        }
    }
    assert_eq!((waiting, refused), (20, 280));

    // Once its connections close, the address is served again.
    drop(flood);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = h.get_json("/healthz", None).await;
    assert_eq!(status, 200);
}
