//! A backend's answer on its way to the client. It gives up on an answer that
//! stalls (`idle_timeout`) or runs too long (`total_timeout`), and ends a broken or
//! abandoned stream cleanly: for server-sent events, an error event in
//! llama-server's own mid-stream shape, then the end (no `[DONE]`), never a hang.
//! It holds the backend slot until it is dropped, so a client that goes away frees
//! the slot, and dropping the backend connection stops the generation.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use si_core::BackendLimits;
use tokio::time::{Instant, Sleep};

use crate::InFlight;

/// Error type of [`UpstreamBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an answer was cut short.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(String);

enum State {
    Streaming,
    Done,
}

/// See the module documentation.
pub struct UpstreamBody {
    inner: Incoming,
    events: bool,
    idle: Duration,
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    backend: String,
    failure: Option<u16>,
    state: State,
    /// Whether what went out so far ends between two events, so an error event
    /// sent now is not glued onto half a line.
    at_boundary: bool,
    _slot: InFlight,
}

impl UpstreamBody {
    /// Wraps `inner`, an answer of `backend` (server-sent `events` or not), holding
    /// its `slot`.
    pub fn new(
        inner: Incoming,
        events: bool,
        limits: &BackendLimits,
        backend: &str,
        slot: InFlight,
    ) -> Self {
        let now = Instant::now();
        let deadline = now + limits.total_timeout;
        UpstreamBody {
            inner,
            events,
            idle: limits.idle_timeout,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(
                deadline.min(now + limits.idle_timeout),
            )),
            backend: backend.to_owned(),
            failure: None,
            state: State::Streaming,
            at_boundary: true,
            _slot: slot,
        }
    }

    /// The status the answer ended with if it was cut short: 504 (timeout) or 502
    /// (the backend broke off).
    pub fn failure(&self) -> Option<u16> {
        self.failure
    }

    /// Ends the answer with `status` and `message`: an error event for a stream,
    /// an error (which aborts the response) otherwise.
    fn cut_short(
        &mut self,
        status: u16,
        kind: &str,
        message: String,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failure = Some(status);
        self.state = State::Done;
        tracing::warn!(status, "{message}");
        if !self.events {
            return Poll::Ready(Some(Err(Box::new(Interrupted(message)))));
        }
        let event =
            serde_json::json!({"error": {"code": status, "message": message, "type": kind}});
        let separator = if self.at_boundary { "" } else { "\n\n" };
        let event = format!("{separator}data: {event}\n\n");
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let State::Done = this.state {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    this.at_boundary = data.ends_with(b"\n\n");
                }
                let next = Instant::now() + this.idle;
                this.timer.as_mut().reset(next.min(this.deadline));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                let message = format!("backend `{}` broke off the answer", this.backend);
                this.cut_short(502, "server_error", message)
            }
            Poll::Ready(None) => {
                this.state = State::Done;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let what = if Instant::now() >= this.deadline {
                        "the total time limit"
                    } else {
                        "the idle limit between chunks"
                    };
                    let message = format!(
                        "backend `{}` exceeded {what}; the answer is incomplete",
                        this.backend
                    );
                    this.cut_short(504, "timeout_error", message)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.state {
            State::Done => true,
            State::Streaming => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            // A stream may gain an error event: never promise its length.
            State::Streaming if self.events => {
                let mut hint = SizeHint::new();
                hint.set_lower(self.inner.size_hint().lower());
                hint
            }
            State::Streaming => self.inner.size_hint(),
            State::Done => SizeHint::with_exact(0),
        }
    }
}
