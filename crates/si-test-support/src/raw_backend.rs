//! A hand-written llama-server stand-in over raw TCP, for what wiremock cannot do:
//! hold a stream open between two events, hang before its headers, die mid-stream,
//! and notice when the gateway closes the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub const FIRST_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first\"}}]}\n\n";
pub const SECOND_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"second\"}}]}\n\n";

/// What the chat endpoint does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Headers and the first event, then waits for `release`, then the rest.
    PauseAfterFirstEvent,
    /// Waits for `release` before sending anything at all.
    HangBeforeHeaders,
    /// A JSON answer whose headers promise more bytes than come before the close.
    JsonDiesMidBody,
}

#[derive(Default)]
pub struct Signals {
    /// Lets a paused or hanging answer go on.
    pub release: Notify,
    pub released: AtomicBool,
    /// When set at release, the answer is broken off instead of finished.
    pub die: AtomicBool,
    /// Set when the gateway closed a connection whose answer was still pending.
    pub closed: AtomicBool,
    /// Chat requests received.
    pub chats: AtomicUsize,
}

/// Serves `/health` and a chat endpoint that does what its [`Behaviour`] says.
pub struct GatedStreamBackend {
    pub url: String,
    pub signals: Arc<Signals>,
    task: Option<JoinHandle<()>>,
}

impl GatedStreamBackend {
    pub async fn start() -> Self {
        Self::start_with(Behaviour::PauseAfterFirstEvent).await
    }

    pub async fn start_with(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let signals = Arc::new(Signals::default());
        let shared = signals.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone(), behaviour));
            }
        });
        GatedStreamBackend {
            url,
            signals,
            task: Some(task),
        }
    }

    /// Lets the pending answers (and any later ones) go on.
    pub fn release(&self) {
        self.signals.released.store(true, Ordering::SeqCst);
        self.signals.release.notify_waiters();
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

async fn serve(mut stream: TcpStream, signals: Arc<Signals>, behaviour: Behaviour) {
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
    if head.starts_with("GET ") {
        let response = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let _ = stream.write_all(response.as_bytes()).await;
        return;
    }
    signals.chats.fetch_add(1, Ordering::SeqCst);
    if behaviour == Behaviour::JsonDiesMidBody {
        let partial = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"choices\":[{\"index\":0,";
        let _ = stream.write_all(partial.as_bytes()).await;
        return;
    }
    let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-accel-buffering: no\r\n\
                  transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    if behaviour == Behaviour::HangBeforeHeaders && !wait_for_release(&mut stream, &signals).await {
        return;
    }
    if stream.write_all(header.as_bytes()).await.is_err()
        || stream
            .write_all(chunk(FIRST_EVENT).as_bytes())
            .await
            .is_err()
    {
        return;
    }
    let _ = stream.flush().await;
    if behaviour == Behaviour::PauseAfterFirstEvent
        && !wait_for_release(&mut stream, &signals).await
    {
        return;
    }
    if signals.die.load(Ordering::SeqCst) {
        // Broken off: no more chunks, no terminator.
        return;
    }
    let rest = format!(
        "{}{}0\r\n\r\n",
        chunk(SECOND_EVENT),
        chunk("data: [DONE]\n\n")
    );
    let _ = stream.write_all(rest.as_bytes()).await;
}

/// Waits for `release`; false (and `closed` set) if the gateway closes first.
async fn wait_for_release(stream: &mut TcpStream, signals: &Signals) -> bool {
    let mut byte = [0u8; 1];
    let notified = signals.release.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if signals.released.load(Ordering::SeqCst) {
        return true;
    }
    tokio::select! {
        () = notified => true,
        read = stream.read(&mut byte) => {
            if matches!(read, Ok(0) | Err(_)) {
                signals.closed.store(true, Ordering::SeqCst);
            }
            false
        }
    }
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
