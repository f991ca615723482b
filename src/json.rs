//! The JSON answers the layers give by themselves: Django REST framework's `{"detail": ...}`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

/// A response of `status` with the JSON `body`.
pub(crate) fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"detail": detail}` with `status`, the detail escaped as JSON text.
pub(crate) fn detail(status: StatusCode, detail: &str) -> Response<Bytes> {
    response(status, serde_json::json!({ "detail": detail }).to_string())
}
