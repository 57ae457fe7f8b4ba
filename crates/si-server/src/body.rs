//! Response bodies: a JSON document, or a backend's body streamed through untouched.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use crate::audit::AuditedBody;
use crate::error::ApiError;
use crate::handlers::workflows::EventBody;

/// Every response body the gateway sends: a whole one, a backend's answer on its
/// way through, or a workflow run's events.
pub(crate) type GatewayBody = Either<Full<Bytes>, Either<AuditedBody, EventBody>>;

/// A backend's answer as a response body.
pub(crate) fn audited(body: AuditedBody) -> GatewayBody {
    Either::Right(Either::Left(body))
}

/// A workflow run's events as a response body.
pub(crate) fn events(body: EventBody) -> GatewayBody {
    Either::Right(Either::Right(body))
}

/// A response carrying `value` as JSON.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<GatewayBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Like [`json`], marked not to be cached (it carries a token).
pub(crate) fn json_no_store<T: Serialize>(status: StatusCode, value: &T) -> Response<GatewayBody> {
    let mut response = json(status, value);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A client must finish sending its request body within this time, so a trickling
/// client cannot hold a connection and a buffer forever.
pub(crate) const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a request body of at most `limit` bytes within [`BODY_READ_TIMEOUT`].
pub(crate) async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read request body: {e}"
        ))),
    }
}
