//! Plain-text HTTP replies: what the routes and the upgrade answer when they refuse.

use bytes::Bytes;
use http::StatusCode;
use warp::reply::Reply;

/// `status` with `body` as `text/plain`.
pub(super) fn text(status: StatusCode, body: &'static str) -> warp::reply::Response {
    let mut response = http::Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.into_response()
}
