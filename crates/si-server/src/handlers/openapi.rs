//! `GET /openapi.json`: the OpenAPI 3.1 description of every route of the
//! gateway, checked in beside the crate (`openapi.json`) and built into the
//! binary. The tests below hold it and the route table to each other, both ways,
//! so neither can gain a route the other lacks.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::Full;

use crate::body::Reply;

/// The document, as served.
const DOCUMENT: &[u8] = include_bytes!("../../openapi.json");

/// `GET /openapi.json`.
pub(crate) fn handle() -> Response<Reply> {
    let mut response = Response::new(Reply::Whole(Full::new(Bytes::from_static(DOCUMENT))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests;
