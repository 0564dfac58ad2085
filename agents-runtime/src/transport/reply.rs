//! Plain-text HTTP replies: what the routes and the upgrade answer when they refuse, and the
//! default `Content-Type` of an agent's text responses.

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

/// What the Workers runtime gives `new Response("text")`: a response with a body of text
/// (valid UTF-8) and no `Content-Type` gets `text/plain;charset=UTF-8`. A binary body, an empty
/// one, or one whose type the agent set, is left as it is.
pub(super) fn with_default_content_type(mut response: crate::Response) -> crate::Response {
    let headers = response.headers();
    let body = response.body();
    if !headers.contains_key(http::header::CONTENT_TYPE)
        && !body.is_empty()
        && std::str::from_utf8(body).is_ok()
    {
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain;charset=UTF-8"),
        );
    }
    response
}
