//! Static assets: fixed files the server answers outside `/agents/`, the counterpart of a
//! Worker's static assets (a front end served next to its agents).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Method, Response, StatusCode};

use crate::error::Error;

/// One file: its body and the headers every answer carries.
struct Asset {
    content_type: HeaderValue,
    etag: HeaderValue,
    body: Bytes,
}

/// The files registered with [`ServerBuilder::asset`](crate::ServerBuilder::asset), by path.
#[derive(Default)]
pub(crate) struct Assets {
    files: HashMap<String, Asset>,
}

/// An asset as given to the builder, checked when the server binds.
pub(crate) struct AssetSpec {
    pub(crate) path: String,
    pub(crate) content_type: String,
    pub(crate) body: Bytes,
}

impl Assets {
    /// Checks every path and content type: paths are absolute, unique and outside `/agents/`.
    pub(crate) fn build(specs: Vec<AssetSpec>) -> Result<Self, Error> {
        let mut files = HashMap::with_capacity(specs.len());
        for AssetSpec { path, content_type, body } in specs {
            let invalid = |why: &str| Error::msg(format!("asset `{path}`: {why}"));
            let as_requested = path.parse::<http::uri::PathAndQuery>().ok();
            let printable = path.bytes().all(|b| b.is_ascii_graphic());
            if !path.starts_with('/')
                || !printable
                || as_requested.is_none_or(|p| p.as_str() != path)
            {
                return Err(invalid(
                    "the path must start with `/`, have no query, and be written as requested \
                     (percent-encoded)",
                ));
            }
            if path.contains(['?', '#']) {
                return Err(invalid("the path must have no query or fragment"));
            }
            if path == "/agents" || path.starts_with("/agents/") {
                return Err(invalid("paths under /agents/ belong to the agents"));
            }
            let content_type = HeaderValue::from_str(&content_type)
                .map_err(|_| invalid("the content type is not a valid header value"))?;
            let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fingerprint(&body)))
                .expect("hex digits are a valid header value");
            if files.insert(path.clone(), Asset { content_type, etag, body }).is_some() {
                return Err(invalid("registered twice"));
            }
        }
        Ok(Self { files })
    }

    /// The answer for `path`, or `None` when no asset lives there. GET and HEAD get the file
    /// (304 when `If-None-Match` names its ETag), other methods 405.
    pub(crate) fn respond(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<Response<Bytes>> {
        let asset = self.files.get(path)?;
        let mut response = Response::new(Bytes::new());
        if *method != Method::GET && *method != Method::HEAD {
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(response);
        }
        let head = response.headers_mut();
        head.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        head.insert(ETAG, asset.etag.clone());
        // Weak comparison (RFC 9110 13.1.2): a proxy that compresses marks the tag `W/`.
        let matches = headers.get_all(IF_NONE_MATCH).iter().any(|value| {
            value.to_str().is_ok_and(|tags| {
                tags.split(',')
                    .map(str::trim)
                    .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == asset.etag)
            })
        });
        if matches {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return Some(response);
        }
        head.insert(CONTENT_TYPE, asset.content_type.clone());
        head.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if *method == Method::GET {
            *response.body_mut() = asset.body.clone();
        } else {
            let length = HeaderValue::from(asset.body.len());
            response.headers_mut().insert(http::header::CONTENT_LENGTH, length);
        }
        Some(response)
    }
}

/// A content hash for the ETag: stable for the life of the process, which is all a
/// validator of files compiled into the binary needs.
fn fingerprint(body: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> Assets {
        let spec = |path: &str| AssetSpec {
            path: path.into(),
            content_type: "text/html; charset=utf-8".into(),
            body: Bytes::from_static(b"<h1>hi</h1>"),
        };
        Assets::build(vec![spec("/"), spec("/app.js")]).expect("valid assets")
    }

    #[test]
    fn get_head_and_other_methods() {
        let assets = assets();
        let none = HeaderMap::new();
        let get = assets.respond(&Method::GET, "/", &none).expect("an asset");
        assert_eq!(get.status(), StatusCode::OK);
        assert_eq!(get.body().as_ref(), b"<h1>hi</h1>");
        assert_eq!(get.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        let head = assets.respond(&Method::HEAD, "/", &none).expect("an asset");
        assert!(head.body().is_empty());
        assert_eq!(head.headers()[http::header::CONTENT_LENGTH], "11");
        let post = assets.respond(&Method::POST, "/", &none).expect("an asset");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        assert!(assets.respond(&Method::GET, "/missing", &none).is_none());
        assert!(assets.respond(&Method::GET, "/app.js/", &none).is_none());
    }

    #[test]
    fn a_matching_etag_gets_304() {
        let assets = assets();
        let etag =
            assets.respond(&Method::GET, "/", &HeaderMap::new()).expect("an asset").headers()[ETAG]
                .clone();
        let mut conditional = HeaderMap::new();
        conditional.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        conditional.append(IF_NONE_MATCH, etag.clone());
        let answer = assets.respond(&Method::GET, "/", &conditional).expect("an asset");
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        assert!(answer.body().is_empty());
        let weak = format!("\"x\", W/{}", etag.to_str().expect("ascii"));
        let mut weak_only = HeaderMap::new();
        weak_only.insert(IF_NONE_MATCH, HeaderValue::from_str(&weak).expect("a header"));
        let answer = assets.respond(&Method::GET, "/", &weak_only).expect("an asset");
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED, "weak comparison");
        let mut stale = HeaderMap::new();
        stale.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(assets.respond(&Method::GET, "/", &stale).expect("an asset").status(), 200);
    }

    #[test]
    fn bad_paths_and_types_are_refused() {
        let spec = |path: &str, content_type: &str| AssetSpec {
            path: path.into(),
            content_type: content_type.into(),
            body: Bytes::new(),
        };
        for (path, content_type, why) in [
            ("index.html", "text/html", "must start with `/`"),
            ("/a?b", "text/html", "no query"),
            ("/a#b", "text/html", "must start with `/`"),
            ("/a b", "text/html", "percent-encoded"),
            ("/é", "text/html", "percent-encoded"),
            ("/agents/x", "text/html", "belong to the agents"),
            ("/agents", "text/html", "belong to the agents"),
            ("/", "text/html\n", "not a valid header value"),
        ] {
            let error = Assets::build(vec![spec(path, content_type)]).err().expect("refused");
            assert!(error.to_string().contains(why), "{path}: {error}");
        }
        let twice = Assets::build(vec![spec("/", "text/html"), spec("/", "text/html")]);
        assert!(twice.err().expect("refused").to_string().contains("registered twice"));
    }
}
