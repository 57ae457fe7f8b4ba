//! [`EventBody`]: server-sent events made by the gateway itself (a workflow run's
//! progress), with a keep-alive comment when they are slow to come.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use serde::Serialize;
use tokio::sync::mpsc;

/// A comment line goes out this long after the last event, so that proxies with
/// idle timeouts (nginx: 60 s) keep a run with slow steps open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The events of a task. Dropping the body (the client went away) stops the task.
pub(crate) struct EventBody {
    received: mpsc::UnboundedReceiver<Bytes>,
    task: tokio::task::AbortHandle,
    keep_alive: tokio::time::Interval,
}

/// Where a task sends its events.
pub(crate) struct EventSender(mpsc::UnboundedSender<Bytes>);

impl EventSender {
    /// Sends event `name` with `data` as JSON.
    pub(crate) fn send(&self, name: &str, data: &impl Serialize) {
        let data = serde_json::to_string(data).unwrap_or_default();
        let _ = self
            .0
            .send(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
    }
}

impl EventBody {
    /// Spawns `task` (in the current span) with a sender for its events, and
    /// streams them as they come.
    pub(crate) fn spawn<F>(task: impl FnOnce(EventSender) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (events, received) = mpsc::unbounded_channel::<Bytes>();
        let task = tokio::spawn(tracing::Instrument::instrument(
            task(EventSender(events)),
            tracing::Span::current(),
        ));
        EventBody {
            received,
            task: task.abort_handle(),
            keep_alive: tokio::time::interval_at(
                tokio::time::Instant::now() + KEEP_ALIVE,
                KEEP_ALIVE,
            ),
        }
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = si_router::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(event) = self.received.poll_recv(cx) {
            self.keep_alive.reset();
            return Poll::Ready(event.map(|data| Ok(Frame::data(data))));
        }
        match self.keep_alive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}
