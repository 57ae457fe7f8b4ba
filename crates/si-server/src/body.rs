//! Response bodies: what a handler answers with ([`Reply`]), and what goes on the
//! wire once `routes::handle` has attached the audit record ([`GatewayBody`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use si_router::UpstreamBody;

use crate::audit::AuditedBody;
use crate::events::EventBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handler's answer body.
pub(crate) enum Reply {
    /// Complete: its request is recorded before it is sent.
    Whole(Full<Bytes>),
    /// A backend's streamed answer: recorded once its last byte is out.
    Answer(UpstreamBody),
    /// A workflow run's events (its steps are recorded one by one).
    Events(EventBody),
}

impl From<Full<Bytes>> for Reply {
    fn from(body: Full<Bytes>) -> Self {
        Reply::Whole(body)
    }
}

/// Every body the gateway sends.
pub(crate) enum GatewayBody {
    /// A whole one.
    Whole(Full<Bytes>),
    /// A backend's answer on its way through (boxed: it is the largest by far).
    Answer(Box<AuditedBody>),
    /// A workflow run's events.
    Events(EventBody),
}

impl From<Full<Bytes>> for GatewayBody {
    fn from(body: Full<Bytes>) -> Self {
        GatewayBody::Whole(body)
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            GatewayBody::Whole(body) => Pin::new(body).poll_frame(cx).map_err(|e| match e {}),
            GatewayBody::Answer(body) => Pin::new(body).poll_frame(cx),
            GatewayBody::Events(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Whole(body) => body.is_end_stream(),
            GatewayBody::Answer(body) => body.is_end_stream(),
            GatewayBody::Events(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Whole(body) => body.size_hint(),
            GatewayBody::Answer(body) => body.size_hint(),
            GatewayBody::Events(body) => body.size_hint(),
        }
    }
}
