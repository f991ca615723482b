//! The proxy's own answers, a status and a JSON detail, and the body every answer has.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// What a body's error is boxed as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of the responses the proxy forwards or makes.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// `status` with `{"detail": detail}`, in the JSON shape of Django REST framework's errors
/// (the crate's own refusals have it too).
pub fn answer(status: StatusCode, detail: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "detail": detail }).to_string();
    let body = Full::new(Bytes::from(body))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
