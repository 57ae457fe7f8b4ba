//! A hand-written llama-server stand-in over raw TCP, for what wiremock cannot do:
//! hold a stream open between two events until the test says so.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub const FIRST_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first\"}}]}\n\n";
pub const SECOND_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"second\"}}]}\n\n";

/// Serves `/health` and a chat stream that pauses after its first event until
/// `release` is notified.
pub struct GatedStreamBackend {
    pub url: String,
    pub release: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl GatedStreamBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let release = Arc::new(Notify::new());
        let gate = release.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, gate.clone()));
            }
        });
        GatedStreamBackend {
            url,
            release,
            task: Some(task),
        }
    }

    /// Stops listening; once this returns, new connections are refused.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for GatedStreamBackend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve(mut stream: TcpStream, gate: Arc<Notify>) {
    let Some(head) = read_request(&mut stream).await else {
        return;
    };
    if head.starts_with("GET /health") {
        let body = "{\"status\":\"ok\"}";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        return;
    }
    let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-accel-buffering: no\r\n\
                  transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    if stream.write_all(header.as_bytes()).await.is_err()
        || stream
            .write_all(chunk(FIRST_EVENT).as_bytes())
            .await
            .is_err()
    {
        return;
    }
    let _ = stream.flush().await;
    gate.notified().await;
    let rest = format!(
        "{}{}0\r\n\r\n",
        chunk(SECOND_EVENT),
        chunk("data: [DONE]\n\n")
    );
    let _ = stream.write_all(rest.as_bytes()).await;
}

/// Reads one request (headers and a `content-length` body); returns the head.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}
