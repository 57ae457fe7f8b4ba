//! A backend's answer on its way to the client. It gives up on an answer that
//! stalls (`idle_timeout`) or runs too long (`total_timeout`), and reports an
//! answer cut short (by a timeout, or by the backend breaking off) as an
//! [`Interrupted`] error with a typed [`CutShort`] reason, never a hang; what the
//! client then sees is the server's to decide. It holds the backend slot until it
//! is dropped, so a client that goes away frees the slot, and dropping the backend
//! connection stops the generation.

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

/// Why an answer ended before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutShort {
    /// No chunk within the idle limit, or past the total time limit.
    Timeout,
    /// The backend broke the connection off mid-answer.
    BrokeOff,
}

/// An answer cut short: why, and a message naming the backend (never its text).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    /// Why.
    pub reason: CutShort,
    /// For people and logs.
    pub message: String,
}

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
    failure: Option<CutShort>,
    state: State,
    _slot: InFlight,
}

impl UpstreamBody {
    /// Wraps `inner`, an answer of `backend` (server-sent `events` or not), holding
    /// its `slot`.
    pub(crate) fn new(
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
            _slot: slot,
        }
    }

    /// Why the answer ended early, if it did.
    pub fn failure(&self) -> Option<CutShort> {
        self.failure
    }

    /// Whether the answer is server-sent events.
    pub fn is_events(&self) -> bool {
        self.events
    }

    /// Ends the answer for `reason`, with an [`Interrupted`] error.
    fn cut_short(
        &mut self,
        reason: CutShort,
        message: String,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.failure = Some(reason);
        self.state = State::Done;
        tracing::warn!(reason = ?reason, "{message}");
        Poll::Ready(Some(Err(Box::new(Interrupted { reason, message }))))
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("backend", &self.backend)
            .field("events", &self.events)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
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
                let next = Instant::now() + this.idle;
                this.timer.as_mut().reset(next.min(this.deadline));
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                let message = format!("backend `{}` broke off the answer", this.backend);
                this.cut_short(CutShort::BrokeOff, message)
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
                    this.cut_short(CutShort::Timeout, message)
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
            // The server may end a stream with an error event: never promise its
            // length.
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
