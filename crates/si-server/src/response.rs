//! Whole responses: a JSON document.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

/// A response carrying `value` as JSON.
pub(crate) fn json<B: From<Full<Bytes>>>(
    status: StatusCode,
    value: &impl Serialize,
) -> Response<B> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(B::from(Full::new(Bytes::from(bytes))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Like [`json`], marked not to be cached (it carries a token).
pub(crate) fn json_no_store<B: From<Full<Bytes>>>(
    status: StatusCode,
    value: &impl Serialize,
) -> Response<B> {
    let mut response = json(status, value);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Headers for server-sent events: no caching, and no buffering by nginx and
/// friends, so each event is passed on as it comes.
pub(crate) fn mark_stream(headers: &mut http::HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}
