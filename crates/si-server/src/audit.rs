//! One audit record per request: a draft travels with the request (handlers add
//! who, which agent, which backend), and is written when the response is complete.
//! For a backend's answer that is when its last byte has gone out: [`AuditedBody`]
//! reads the token counts as the answer streams past and holds back the end of the
//! stream until the record is committed.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use si_auth::Claims;
use si_auth::audit::{AuditLog, AuditRecord, AuditUnavailable};
use si_router::UpstreamBody;
use si_router::usage::UsageScanner;

/// Status recorded when the client went away before the answer was complete.
const CLIENT_CLOSED: u16 = 499;

/// The record being assembled for one request.
#[derive(Clone)]
pub(crate) struct AuditDraft {
    record: Arc<Mutex<AuditRecord>>,
    started: Instant,
    /// Lives until the last copy of the draft is gone, however the request ends.
    in_progress: Arc<InProgress>,
}

/// Counts the request in progress, and records it as abandoned (499) if it is
/// dropped unfinished: a client that left before its answer's headers (a long
/// workflow run, a backend slow to start) still leaves a record.
struct InProgress {
    record: Arc<Mutex<AuditRecord>>,
    started: Instant,
    log: Arc<AuditLog>,
    finished: std::sync::atomic::AtomicBool,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        crate::metrics::request_gone();
        if self.finished.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        record.status = CLIENT_CLOSED;
        record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        crate::metrics::request_finished(&record);
        self.log.append_detached(record);
    }
}

impl AuditDraft {
    pub(crate) fn new(record: AuditRecord, log: Arc<AuditLog>) -> Self {
        crate::metrics::request_started();
        let record = Arc::new(Mutex::new(record));
        let started = Instant::now();
        AuditDraft {
            in_progress: Arc::new(InProgress {
                record: record.clone(),
                started,
                log,
                finished: std::sync::atomic::AtomicBool::new(false),
            }),
            record,
            started,
        }
    }

    fn edit(&self, change: impl FnOnce(&mut AuditRecord)) {
        change(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The request's id.
    pub(crate) fn request_id(&self) -> String {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .request_id
            .clone()
    }

    /// The client's address, as recorded.
    pub(crate) fn client_ip(&self) -> String {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .client_ip
            .clone()
    }

    /// Who is calling.
    pub(crate) fn identify(&self, claims: &Claims) {
        self.edit(|r| {
            r.user = Some(claims.sub.clone());
            r.role = Some(claims.role.to_string());
            r.location = Some(claims.loc.clone());
        });
    }

    /// Who logged in (there is no token yet).
    pub(crate) fn identify_login(&self, user: &str, role: &str, location: &str) {
        self.edit(|r| {
            r.user = Some(user.to_owned());
            r.role = Some(role.to_owned());
            r.location = Some(location.to_owned());
        });
    }

    /// Which agent the request named.
    pub(crate) fn agent(&self, agent: &str) {
        self.edit(|r| r.agent = Some(agent.to_owned()));
    }

    /// The first byte of a streamed answer is going out.
    pub(crate) fn first_byte(&self) {
        let agent = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .agent
            .clone();
        let agent = agent.unwrap_or_else(|| "none".into());
        crate::metrics::first_token(&agent, self.started.elapsed().as_secs_f64());
    }

    /// Which backend answered.
    pub(crate) fn answered_by(&self, model: &str, backend: &str) {
        self.edit(|r| {
            r.model = Some(model.to_owned());
            r.backend = Some(backend.to_owned());
        });
    }

    /// The finished record.
    pub(crate) fn finish(&self, status: u16, tokens: Option<(u64, u64)>) -> AuditRecord {
        self.in_progress
            .finished
            .store(true, std::sync::atomic::Ordering::Release);
        let mut record = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        record.status = status;
        record.prompt_tokens = tokens.map(|t| t.0);
        record.completion_tokens = tokens.map(|t| t.1);
        record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        crate::metrics::request_finished(&record);
        record
    }
}

/// Marks a response whose record its body writes.
#[derive(Clone, Copy)]
pub(crate) struct AuditedByBody;

type Commit = Pin<Box<dyn Future<Output = Result<(), AuditUnavailable>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum State {
    Streaming,
    /// Writing the record; then the held-back last frame (if any) and the end.
    Committing(Commit, Option<Frame<Bytes>>),
    Done,
}

/// A backend's answer, passed through frame by frame, audited when it ends.
pub(crate) struct AuditedBody {
    inner: UpstreamBody,
    scanner: Option<UsageScanner>,
    /// Where the record goes; `None` once written (or when not audited).
    audit: Option<(AuditDraft, Arc<AuditLog>)>,
    status: u16,
    state: State,
    /// A stream whose first byte has not gone out yet.
    awaiting_first_byte: bool,
    /// The request's span: lines logged while the body streams carry its request id.
    span: tracing::Span,
}

impl AuditedBody {
    pub(crate) fn new(
        inner: UpstreamBody,
        events: bool,
        status: u16,
        audit: Option<(AuditDraft, Arc<AuditLog>)>,
    ) -> Self {
        let mut body = AuditedBody {
            inner,
            scanner: audit.as_ref().map(|_| UsageScanner::new(events)),
            audit,
            status,
            state: State::Streaming,
            awaiting_first_byte: events,
            span: tracing::Span::current(),
        };
        // An empty answer is never polled: record it now.
        if body.inner.is_end_stream() {
            if let Some((record, log)) = body.take_record(status) {
                log.append_detached(record);
            }
            body.state = State::Done;
        }
        body
    }

    /// Starts writing the record, holding back `last`.
    fn commit(&mut self, last: Option<Frame<Bytes>>) -> State {
        match self.take_record(self.status) {
            Some((record, log)) => {
                State::Committing(Box::pin(async move { log.append(record).await }), last)
            }
            // Nothing to write: pass the frame on at once.
            None => State::Committing(Box::pin(async { Ok(()) }), last),
        }
    }

    /// The status the answer ended with if it was cut short (502 or 504).
    pub(crate) fn failure(&self) -> Option<u16> {
        self.inner.failure()
    }

    /// Records the answer as ended with `status` now, without waiting, when it is
    /// given up before its end (e.g. too large to hold).
    pub(crate) fn abandon(&mut self, status: u16) {
        if let Some((record, log)) = self.take_record(status) {
            log.append_detached(record);
        }
        self.state = State::Done;
    }

    /// The finished record and its log, once.
    fn take_record(&mut self, status: u16) -> Option<(AuditRecord, Arc<AuditLog>)> {
        let (draft, log) = self.audit.take()?;
        // An answer cut short is recorded with the status it ended with.
        let status = self.inner.failure().unwrap_or(status);
        let usage = self.scanner.take().and_then(UsageScanner::finish);
        let tokens = usage.map(|u| (u.prompt_tokens, u.completion_tokens));
        Some((draft.finish(status, tokens), log))
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
                        if let (Some(data), Some(scanner)) =
                            (frame.data_ref(), this.scanner.as_mut())
                        {
                            scanner.feed(data);
                        }
                        if this.awaiting_first_byte
                            && let Some((draft, _)) = &this.audit
                        {
                            this.awaiting_first_byte = false;
                            draft.first_byte();
                        }
                        // With a known length the server stops polling after the last
                        // byte, so that byte waits for the record instead of the end.
                        if !this.inner.is_end_stream() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        this.state = this.commit(Some(frame));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The backend broke off mid-answer.
                        if let Some((record, log)) = this.take_record(502) {
                            log.append_detached(record);
                        }
                        this.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(None) => this.state = this.commit(None),
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
        let span = self.span.clone();
        let _in_request = span.enter();
        // Still unwritten: the client went away before the end.
        if let Some((record, log)) = self.take_record(CLIENT_CLOSED) {
            log.append_detached(record);
        }
    }
}
