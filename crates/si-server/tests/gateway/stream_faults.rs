//! Fault injection in the middle of an answer and around the server itself: broken,
//! stalled and abandoned streams, hangs, overload, slow clients, shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::raw_backend::{Behaviour, FIRST_EVENT, GatedStreamBackend};
use crate::reliability::{backend_state, edits, eventually, stream_body, with_gated};
use crate::support::{Harness, Options, chat_body, error_parts, read_json};

#[tokio::test]
async fn a_stream_that_dies_after_its_first_byte_is_not_retried_and_ends_cleanly() {
    let (h, gated) = with_gated(8080, Behaviour::PauseAfterFirstEvent, Vec::new()).await;
    let token = h.login("admin1").await;
    // The model's first request goes to the first replica, 8080.
    let response = h.stream(&token, "Chat").await;
    assert_eq!(response.headers()["x-si-backend"], "tiny-llama-1b-8080");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, FIRST_EVENT);
    gated.signals.die.store(true, Ordering::SeqCst);
    gated.release();
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the stream hung")
        .unwrap()
        .to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("data: {\"error\":")
            && rest.contains("broke off")
            && rest.ends_with("\n\n"),
        "{rest}"
    );
    assert!(!rest.contains("[DONE]"));
    assert!(
        h.sim(8083).chats().await.is_empty(),
        "retried after bytes reached the client"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_backend_hanging_before_its_headers_times_out_and_is_let_go() {
    let hanging = GatedStreamBackend::start_with(Behaviour::HangBeforeHeaders).await;
    let toml_edits = edits(&[("headers_timeout_ms = 300000", "headers_timeout_ms = 300")]);
    let h = Harness::start(Options {
        toml_edits,
        url_overrides: vec![(8085, hanging.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (504, "backend_timeout")
    );
    assert!(
        eventually(|| async { hanging.signals.closed.load(Ordering::SeqCst) }).await,
        "the backend was never let go"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_whole_answer_that_breaks_off_is_a_clear_502_not_a_cut_connection() {
    let (h, gated) = with_gated(8085, Behaviour::JsonDiesMidBody, Vec::new()).await;
    let token = h.login("admin1").await;
    let (status, body) = h
        .post_json("/v1/chat/completions", Some(&token), chat_body("Clinical"))
        .await;
    assert_eq!(gated.signals.chats.load(Ordering::SeqCst), 1);
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (502, "backend_failed"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("biomistral-7b-8085"),
        "{body}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_stalled_stream_ends_with_a_timeout_event() {
    let gated = GatedStreamBackend::start().await;
    let toml_edits = edits(&[("idle_timeout_ms = 60000", "idle_timeout_ms = 300")]);
    let h = Harness::start(Options {
        toml_edits,
        url_overrides: vec![(8085, gated.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let response = h.stream(&token, "Clinical").await;
    let all = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .expect("hung")
        .unwrap()
        .to_bytes();
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with(FIRST_EVENT), "{all}");
    let event = all.trim_start_matches(FIRST_EVENT);
    assert!(
        event.contains("\"code\":504")
            && event.contains("timeout_error")
            && !event.contains("[DONE]"),
        "{event}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_frees_the_backend_at_once() {
    let (h, gated) = with_gated(8085, Behaviour::PauseAfterFirstEvent, Vec::new()).await;
    let token = h.login("admin1").await;
    let response = h.stream(&token, "Clinical").await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(
        backend_state(&h, "biomistral-7b-8085").await["in_flight"],
        1
    );
    drop(body);
    assert!(
        eventually(|| async { gated.signals.closed.load(Ordering::SeqCst) }).await,
        "the backend kept generating"
    );
    assert!(
        eventually(|| async { backend_state(&h, "biomistral-7b-8085").await["in_flight"] == 0 })
            .await
    );
    h.shutdown().await;
}

#[tokio::test]
async fn overload_queues_a_little_then_refuses_at_once() {
    let gated = GatedStreamBackend::start().await;
    let limits = "api_key = \"env::API_KEY_BIOMISTRAL_8085\"\nmax_in_flight = 1\nqueue_depth = 1";
    let toml_edits = edits(&[("api_key = \"env::API_KEY_BIOMISTRAL_8085\"", limits)]);
    let h = Harness::start(Options {
        toml_edits,
        url_overrides: vec![(8085, gated.url.clone())],
        ..Options::default()
    })
    .await;
    let token = h.login("admin1").await;
    let first = h.stream(&token, "Clinical").await;
    let queued = {
        let (base, token) = (h.base.clone(), token.clone());
        tokio::spawn(async move {
            let request = http::Request::post(format!("{base}/v1/chat/completions"))
                .header("authorization", format!("Bearer {token}"))
                .body(http_body_util::Full::new(stream_body("Clinical")))
                .unwrap();
            let response = crate::support::client().request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    };
    assert!(
        eventually(|| async { backend_state(&h, "biomistral-7b-8085").await["waiting"] == 1 })
            .await
    );
    let refused = h.stream(&token, "Clinical").await;
    assert_eq!(refused.headers()["retry-after"], "5");
    let (status, body) = read_json(refused).await;
    assert_eq!(
        (status, error_parts(&body).1.as_str()),
        (503, "backend_overloaded")
    );
    gated.release();
    let first = first.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&first).ends_with("data: [DONE]\n\n"));
    let (status, queued) = queued.await.unwrap();
    assert_eq!(status, 200);
    assert!(queued.ends_with("data: [DONE]\n\n"), "{queued}");
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_a_stream_in_flight() {
    let (mut h, gated) = with_gated(8085, Behaviour::PauseAfterFirstEvent, Vec::new()).await;
    let token = h.login("admin1").await;
    let response = h.stream(&token, "Clinical").await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    h.begin_shutdown();
    assert!(eventually(|| async { h.gateway.is_draining() }).await);
    let refused = crate::support::client()
        .request(
            http::Request::get(format!("{}/healthz", h.base))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(
        refused.is_err(),
        "new connections must be refused while draining"
    );
    assert!(
        !h.server_finished(),
        "the server stopped before its stream finished"
    );
    gated.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    assert!(eventually(|| async { h.server_finished() }).await);
}

async fn raw_connection(h: &Harness) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Bytes the server sends before `limit` passes or it closes the connection.
async fn read_for(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 4096];
    match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
        Ok(Ok(n)) => Some(buffer[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let toml_edits = edits(&[(
        "header_read_timeout_ms = 10000",
        "header_read_timeout_ms = 300",
    )]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let mut slow = raw_connection(&h).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap(); // never finished
    let answer = read_for(&mut slow, Duration::from_secs(5))
        .await
        .expect("the slow client was never cut off");
    assert!(
        answer.is_empty() || String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_at_once_until_one_closes() {
    use tokio::io::AsyncWriteExt;
    let toml_edits = edits(&[
        ("max_connections = 10000", "max_connections = 2"),
        (
            "max_connections_per_address = 256",
            "max_connections_per_address = 2",
        ),
    ]);
    let h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    let first = raw_connection(&h).await;
    let _second = raw_connection(&h).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = raw_connection(&h).await;
    let refused = read_for(&mut third, Duration::from_secs(5))
        .await
        .expect("left waiting past the cap");
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("\"too_many_connections\""), "{refused}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = raw_connection(&h).await;
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_for(&mut fourth, Duration::from_secs(5))
        .await
        .expect("never served");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    h.shutdown().await;
}

#[tokio::test]
async fn healthz_reports_draining_before_connections_are_refused() {
    let toml_edits = edits(&[("drain_notice_ms = 0", "drain_notice_ms = 1000")]);
    let mut h = Harness::start(Options {
        toml_edits,
        ..Options::default()
    })
    .await;
    h.begin_shutdown();
    assert!(eventually(|| async { h.gateway.is_draining() }).await);
    let (status, body) = h.get_json("/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (503, Some("draining")));
    assert!(eventually(|| async { h.server_finished() }).await);
}
