//! [`AuditedBody`]: a backend's streamed answer passed through frame by frame,
//! its token counts read on the way, its record written when it ends. The end of
//! the stream is held back until the record is committed: no answer without its
//! record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use si_audit::{AuditRecord, AuditStore, AuditUnavailable};
use si_router::usage::UsageScanner;
use si_router::{Interrupted, UpstreamBody};

use super::PendingRecord;
use crate::error;

type Commit = Pin<Box<dyn Future<Output = Result<(), AuditUnavailable>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum State {
    Streaming,
    /// Writing the record; then the held-back last frame (if any) and the end.
    Committing(Commit, Option<Frame<Bytes>>),
    Done,
}

/// See the module documentation.
pub(crate) struct AuditedBody {
    inner: UpstreamBody,
    scanner: Option<UsageScanner>,
    /// The record, until it is written.
    pending: Option<PendingRecord>,
    /// The backend's status.
    status: u16,
    state: State,
    /// A stream whose first byte has not gone out yet.
    awaiting_first_byte: bool,
    /// Whether what went out so far ends between two events, so that an error
    /// event sent now is not glued onto half a line.
    at_boundary: bool,
    /// The request's span: lines logged while the body streams carry its id.
    span: tracing::Span,
}

impl AuditedBody {
    /// `inner`, answered with `status`, recorded in `pending` (if audited) when it
    /// ends.
    pub(crate) fn new(inner: UpstreamBody, status: u16, pending: Option<PendingRecord>) -> Self {
        let events = inner.is_events();
        let mut body = AuditedBody {
            inner,
            scanner: Some(UsageScanner::new(events)),
            pending,
            status,
            state: State::Streaming,
            awaiting_first_byte: events,
            at_boundary: true,
            span: tracing::Span::current(),
        };
        // An empty answer is never polled: record it now.
        if body.inner.is_end_stream() {
            body.record_detached(status);
            body.state = State::Done;
        }
        body
    }

    /// The finished record and its log, once.
    fn take_record(&mut self, status: u16) -> Option<(AuditRecord, Arc<dyn AuditStore>)> {
        let pending = self.pending.take()?;
        let log = pending.log().clone();
        let usage = self.scanner.take().and_then(UsageScanner::finish);
        let tokens = usage.map(|u| (u.prompt_tokens, u.completion_tokens));
        Some((pending.finish(status, tokens), log))
    }

    fn record_detached(&mut self, status: u16) {
        if let Some((record, log)) = self.take_record(status) {
            log.append_detached(record);
        }
    }

    /// Starts writing the record with `status`, holding back `last`.
    fn commit(&mut self, last: Option<Frame<Bytes>>, status: u16) -> State {
        match self.take_record(status) {
            Some((record, log)) => {
                State::Committing(Box::pin(async move { log.append(record).await }), last)
            }
            None => State::Committing(Box::pin(async { Ok(()) }), last),
        }
    }

    fn pass(&mut self, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
            if let Some(scanner) = self.scanner.as_mut() {
                scanner.feed(data);
            }
            self.at_boundary = data.ends_with(b"\n\n");
        }
        if self.awaiting_first_byte {
            self.awaiting_first_byte = false;
            if let Some(pending) = &self.pending {
                pending.first_byte();
            }
        }
    }

    /// The backend's answer broke off or stalled: a stream ends with an error
    /// event once the record is written; anything else ends with the error.
    fn cut_short(&mut self, error: BoxError) -> Option<Result<Frame<Bytes>, BoxError>> {
        match error.downcast_ref::<Interrupted>() {
            Some(cut) if self.inner.is_events() => {
                let event = error::stream_error_event(cut, self.at_boundary);
                let status = error::cut_short_status(cut.reason);
                self.state = self.commit(Some(Frame::data(event)), status);
                None
            }
            cut => {
                let status = cut.map_or(
                    error::cut_short_status(si_router::CutShort::BrokeOff),
                    |c| error::cut_short_status(c.reason),
                );
                self.record_detached(status);
                self.state = State::Done;
                Some(Err(error))
            }
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let span = this.span.clone();
        let _in_request = span.enter();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Committing(commit, last) => {
                    return match commit.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => {
                            let last = last.take();
                            this.state = State::Done;
                            Poll::Ready(last.map(Ok))
                        }
                        // Not audited, not finished: the client sees a broken answer.
                        Poll::Ready(Err(e)) => {
                            this.state = State::Done;
                            Poll::Ready(Some(Err(e.into())))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                State::Streaming => match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        this.pass(&frame);
                        // With a known length the server stops polling after the last
                        // byte, so that byte waits for the record instead of the end.
                        if !this.inner.is_end_stream() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        this.state = this.commit(Some(frame), this.status);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        if let Some(ended) = this.cut_short(e) {
                            return Poll::Ready(Some(ended));
                        }
                    }
                    Poll::Ready(None) => this.state = this.commit(None, this.status),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Streaming => self.inner.size_hint(),
            State::Committing(_, Some(frame)) => {
                SizeHint::with_exact(frame.data_ref().map_or(0, |d| d.len() as u64))
            }
            State::Committing(_, None) | State::Done => SizeHint::with_exact(0),
        }
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // Still unwritten, the record is written as abandoned by its own drop;
        // lines logged then carry the request's id.
        let span = self.span.clone();
        let _in_request = span.enter();
        self.pending.take();
    }
}
