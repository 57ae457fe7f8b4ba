//! A mock llama-server that is never the bottleneck: canned answers in llama-server's
//! wire shapes, on three listeners: zero delay, a fixed delay, and a stream of chunks
//! at a fixed interval. `/health` and `/props` answer as a loaded server does.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How the listener of one mode answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// The whole answer at once.
    Immediate,
    /// The whole answer after a delay.
    Delayed(Duration),
    /// A stream of `chunks` events `interval` apart when the request asks for one.
    Streaming { chunks: u32, interval: Duration },
}

const ANSWER: &str = concat!(
    r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1757141666,"#,
    r#""model":"bench","system_fingerprint":"b6210-a094f381","choices":[{"index":0,"#,
    r#""finish_reason":"stop","message":{"role":"assistant","content":"The patient is "#,
    r#"stable and may be discharged."}}],"usage":{"prompt_tokens":24,"completion_tokens":9,"#,
    r#""total_tokens":33},"timings":{"prompt_n":24,"prompt_ms":21.3,"predicted_n":9,"#,
    r#""predicted_ms":80.1,"predicted_per_second":112.4,"cache_n":0}}"#
);

const CHUNK: &str = concat!(
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1757141666,"#,
    r#""model":"bench","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}"#,
    "\n\n"
);

const LAST_CHUNKS: &str = concat!(
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1757141666,"#,
    r#""model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1757141666,"#,
    r#""model":"bench","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":20,"#,
    r#""total_tokens":44}}"#,
    "\n\n",
    "data: [DONE]\n\n"
);

/// Serves `listener` in `mode` until the process ends.
pub async fn serve(listener: TcpListener, mode: Mode) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, mode));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type MockBody = http_body_util::Either<http_body_util::Full<Bytes>, Chunks>;

async fn answer(request: Request<Incoming>, mode: Mode) -> Result<Response<MockBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let json = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(http_body_util::Either::Left(http_body_util::Full::new(
            Bytes::from_static(body.as_bytes()),
        )));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    };
    match path.as_str() {
        "/health" => return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#)),
        "/props" => {
            return Ok(json(
                StatusCode::OK,
                r#"{"total_slots":4096,"default_generation_settings":{"n_ctx":4096},"model_path":"/models/bench.gguf"}"#,
            ));
        }
        "/v1/chat/completions" => {}
        _ => {
            return Ok(json(
                StatusCode::NOT_FOUND,
                r#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#,
            ));
        }
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    match mode {
        Mode::Immediate => Ok(json(StatusCode::OK, ANSWER)),
        Mode::Delayed(delay) => {
            tokio::time::sleep(delay).await;
            Ok(json(StatusCode::OK, ANSWER))
        }
        Mode::Streaming { chunks, interval } => {
            if !wants_stream(&body) {
                return Ok(json(StatusCode::OK, ANSWER));
            }
            let mut response =
                Response::new(http_body_util::Either::Right(Chunks::new(chunks, interval)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            Ok(response)
        }
    }
}

fn wants_stream(body: &[u8]) -> bool {
    body.windows(b"\"stream\":true".len())
        .any(|w| w == b"\"stream\":true")
}

/// `remaining` content events, the first at once and then one per `interval`,
/// then the end of the stream (finish, usage, `[DONE]`).
pub struct Chunks {
    remaining: u32,
    interval: tokio::time::Interval,
}

impl Chunks {
    fn new(chunks: u32, interval: Duration) -> Self {
        let mut interval = tokio::time::interval(interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Chunks {
            remaining: chunks + 1,
            interval,
        }
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.interval.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                self.remaining -= 1;
                let event = if self.remaining == 0 {
                    LAST_CHUNKS
                } else {
                    CHUNK
                };
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(event.as_bytes())))))
            }
        }
    }
}

/// The mock llama-server process: three listeners (immediate, delayed by
/// `delay_ms`, streaming `chunks` every `interval_ms`), their addresses on the
/// first line of standard output, served until killed.
pub fn run(delay_ms: u64, chunks: u32, interval_ms: u64) -> Result<(), String> {
    crate::runtime()?.block_on(async {
        let mut listeners = Vec::new();
        for _ in 0..3 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            listeners.push(listener);
        }
        let addresses: Vec<String> = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.to_string())
            .collect();
        println!("READY {}", addresses.join(" "));
        let modes = [
            Mode::Immediate,
            Mode::Delayed(Duration::from_millis(delay_ms)),
            Mode::Streaming {
                chunks,
                interval: Duration::from_millis(interval_ms),
            },
        ];
        let mut tasks = Vec::new();
        for (listener, mode) in listeners.into_iter().zip(modes) {
            tasks.push(tokio::spawn(serve(listener, mode)));
        }
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    })
}
