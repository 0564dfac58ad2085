//! What an agent sees of HTTP: the upgrade request of a connection, and plain requests.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

/// A plain (non-WebSocket) HTTP request routed to an agent's `on_request`.
pub type Request = http::Request<Bytes>;

/// The answer `on_request` returns. `Response::new("text".into())` is a 200 with that body.
pub type Response = http::Response<Bytes>;

/// The upgrade request of a WebSocket connection, given to `on_connect` and `connection_tags`
/// (the docs' `ctx.request`): URL, query, headers.
///
/// ```no_run
/// use agents_runtime::prelude::*;
///
/// #[derive(Default)]
/// struct Secure;
///
/// #[agent]
/// impl Secure {
///     fn on_connect(&mut self, _ctx: &mut Context<Self>, conn: &Connection, conn_ctx: &ConnectionContext) -> Result<()> {
///         // `new URL(ctx.request.url).searchParams.get("token")`
///         let Some(token) = conn_ctx.query("token") else {
///             conn.close(4001, "Unauthorized")?;
///             return Ok(());
///         };
///         let agent = conn_ctx.headers().get("user-agent").and_then(|v| v.to_str().ok());
///         conn.send(format!("welcome {token} from {agent:?} at {}", conn_ctx.url()))?;
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    url: String,
}

impl ConnectionContext {
    pub(crate) fn new(method: Method, uri: Uri, headers: HeaderMap) -> Self {
        let url = absolute_url(&uri, &headers);
        Self { method, uri, headers, url }
    }

    /// The full request URL, as `new URL(ctx.request.url)` sees it: scheme (`http`, or `https`
    /// behind a proxy that sets `X-Forwarded-Proto`), `Host`, path and query.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request target as received: raw path and query.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The request method (`GET` for a WebSocket upgrade).
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request headers (cookies, `Origin`, `Authorization`, ...).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The first value of query parameter `key`, percent-decoded
    /// (`url.searchParams.get(key)`).
    pub fn query(&self, key: &str) -> Option<Cow<'_, str>> {
        query_param(self.uri.query(), key)
    }

    /// Every query parameter in order, percent-decoded.
    pub fn query_pairs(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        form_urlencoded::parse(self.uri.query().unwrap_or("").as_bytes())
    }
}

pub(crate) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v)
}

fn absolute_url(uri: &Uri, headers: &HeaderMap) -> String {
    let scheme = match headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        Some("https") => "https",
        _ => "http",
    };
    let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_query() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "example.com:8787".parse().expect("header"));
        let uri: Uri = "/agents/chat-room/r1?username=Ada%20L&x=1&username=B".parse().expect("uri");
        let ctx = ConnectionContext::new(Method::GET, uri, headers);
        assert_eq!(
            ctx.url(),
            "http://example.com:8787/agents/chat-room/r1?username=Ada%20L&x=1&username=B"
        );
        assert_eq!(ctx.query("username").as_deref(), Some("Ada L"));
        assert_eq!(ctx.query("missing"), None);
        assert_eq!(ctx.query_pairs().count(), 3);
    }
}
