//! [`Answer`]: what [`crate::Router::answer`] hands back.

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;

use crate::{Backend, RouterError, Upstream, UpstreamBody};

/// A backend's answer: who gave it, its status and content type, and its body on
/// its way (time limits applied, slot held until dropped).
#[derive(Debug)]
pub struct Answer {
    /// The backend that answered (its `model` says which model did).
    pub backend: Arc<Backend>,
    /// The backend's status (2xx).
    pub status: StatusCode,
    /// The backend's content type.
    pub content_type: Option<HeaderValue>,
    /// The body.
    pub body: UpstreamBody,
}

impl Answer {
    pub(crate) fn new(upstream: Upstream) -> Self {
        let Upstream {
            backend,
            response,
            slot,
        } = upstream;
        let (parts, body) = response.into_parts();
        let content_type = parts.headers.get(CONTENT_TYPE).cloned();
        let events = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = UpstreamBody::new(body, events, &backend.limits, &backend.name, slot);
        Answer {
            backend,
            status: parts.status,
            content_type,
            body,
        }
    }

    /// Whether the body is server-sent events (a stream).
    pub fn is_stream(&self) -> bool {
        self.body.is_events()
    }

    /// Reads the whole body, at most `limit` bytes. An answer cut short or too
    /// large is an error naming the backend.
    pub async fn read_whole(&mut self, limit: usize) -> Result<Bytes, RouterError> {
        let mut pieces: Vec<Bytes> = Vec::with_capacity(1);
        let mut total = 0;
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|e| match e.downcast::<crate::Interrupted>() {
                Ok(cut) => RouterError::CutShort {
                    backend: self.backend.name.clone(),
                    reason: cut.reason,
                    message: cut.message,
                },
                Err(e) => RouterError::CutShort {
                    backend: self.backend.name.clone(),
                    reason: crate::CutShort::BrokeOff,
                    message: format!("backend `{}`: {e}", self.backend.name),
                },
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total += data.len();
            if total > limit {
                return Err(RouterError::TooLarge {
                    backend: self.backend.name.clone(),
                    limit,
                });
            }
            pieces.push(data);
        }
        // Most answers arrive in one piece: keep it without copying.
        Ok(match pieces.len() {
            1 => pieces.swap_remove(0),
            _ => pieces.concat().into(),
        })
    }
}
