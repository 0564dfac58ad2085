//! WebSocket upgrades answered without hyper. A connection whose first read holds a whole
//! request head asking for a valid upgrade to an agent's route (what clients send, in one
//! packet) is upgraded right there, in the connection's own task. Anything else (a head in
//! pieces, plain HTTP, an upgrade to refuse, a full server) goes to hyper with the bytes
//! read, and gets hyper's answers. In a reconnect storm, hyper's connection, warp's filters
//! and the second task per socket took a tenth of the server's CPU time.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use tokio::net::TcpStream;

use crate::request::ConnectionContext;
use crate::transport::edge::Edge;
use crate::transport::routes::Route;
use crate::transport::upgrade::{self, Opening};
use crate::wire::read::recv;

/// The longest request head taken here (longer ones go to hyper, which takes up to
/// `max_request_head_size`).
const HEAD: usize = 4096;

/// The most header lines taken here (hyper takes up to 100).
const HEADERS: usize = 32;

/// What a connection's first read found.
pub(super) enum First {
    /// An upgrade taken here, upgraded: the socket's life.
    Upgrade(Box<Opening>),
    /// For hyper: the stream, what was read of it, and the server.
    Http(TcpStream, Vec<u8>, Arc<Edge>),
    /// The peer closed, or the socket failed.
    Gone,
}

/// Reads what the client sent so far (the socket reads as readable) and upgrades it here if it
/// can; gives `stream` and `edge` back if nothing was there after all.
pub(super) fn first_read(
    stream: TcpStream,
    edge: Arc<Edge>,
) -> Result<First, (TcpStream, Arc<Edge>)> {
    // Into the thread's read buffer (the socket reader's); a short read clears tokio's
    // readiness, so the socket's first read waits for new bytes.
    let mut taken = None;
    let mut for_hyper = Vec::new();
    let read = recv(&stream, HEAD, |read| match take(read, &edge) {
        Some((opening, switching, head)) => {
            taken = Some((opening, switching, Bytes::copy_from_slice(&read[head..])));
        }
        None => for_hyper = read.to_vec(),
    });
    match read {
        Ok(0) => return Ok(First::Gone),
        Ok(_) => {}
        // Not there after all (the readiness, now cleared, was stale).
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err((stream, edge)),
        Err(_) => return Ok(First::Gone),
    }
    Ok(match taken {
        Some((opening, switching, read)) => {
            First::Upgrade(opening.upgraded(stream, switching, read))
        }
        None => First::Http(stream, for_hyper, edge),
    })
}

/// The upgrade in `read`, if it is one taken here: the opening, the 101 to answer with, and
/// the length of the head.
fn take(read: &[u8], edge: &Arc<Edge>) -> Option<(Box<Opening>, Vec<u8>, usize)> {
    let Asked { uri, headers, accept, head } = asked(read)?;
    let route = Route::parse(uri.path())?;
    let class = edge.directory.classes.get(route.agent).copied()?;
    let name = route.name.to_owned();
    let slot = edge.admit_connection()?;
    let conn_ctx = ConnectionContext::new(Method::GET, uri, headers);
    let opening = Opening::new(slot, edge.clone(), class, name, conn_ctx);
    Some((opening, switching_protocols(&accept), head))
}

/// A whole request head that asks for a valid upgrade.
#[derive(Debug)]
struct Asked {
    uri: Uri,
    headers: HeaderMap,
    /// The `Sec-WebSocket-Accept` to answer with.
    accept: String,
    /// The head's length: what follows it are frames.
    head: usize,
}

/// The upgrade `read` asks for, if its head is all there and the upgrade is one to accept: a
/// `GET` over HTTP/1.1 to a path (origin form), without a body, that passes the handshake's
/// checks. Anything else is for hyper.
fn asked(read: &[u8]) -> Option<Asked> {
    let mut lines = [httparse::EMPTY_HEADER; HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    let httparse::Status::Complete(head) = request.parse(read).ok()? else { return None };
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let target = request.path.filter(|path| path.starts_with('/'))?;
    // An empty query is no query, as on hyper's path (`routes::build_uri`).
    let target = match target.split_once('?') {
        Some((path, "")) => path,
        _ => target,
    };
    let uri = Uri::try_from(target).ok()?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(line.value).ok()?);
    }
    // Two lengths (even equal ones) are hyper's to judge.
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let bodiless = !headers.contains_key(header::TRANSFER_ENCODING)
        && lengths.next().is_none_or(|length| length == "0")
        && lengths.next().is_none();
    if !bodiless || !upgrade::is_upgrade(&headers) {
        return None;
    }
    let accept = upgrade::check(&Method::GET, &headers).ok()?;
    Some(Asked { uri, headers, accept, head })
}

/// The 101 that accepts an upgrade, as hyper writes it for the requests it upgrades.
fn switching_protocols(accept: &str) -> Vec<u8> {
    let mut response = Vec::with_capacity(128);
    response.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n",
    );
    response.extend_from_slice(b"sec-websocket-accept: ");
    response.extend_from_slice(accept.as_bytes());
    response.extend_from_slice(b"\r\n\r\n");
    response
}

#[cfg(test)]
mod tests {
    use super::{HEADERS, asked, switching_protocols};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head(request_line: &str, extra: &str) -> String {
        format!(
            "{request_line}\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    /// A whole upgrade head is taken, and what follows it is left for the socket.
    #[test]
    fn a_whole_upgrade_is_taken_with_what_follows() {
        let whole = head("GET /agents/a/b?x=1 HTTP/1.1", "");
        let mut read = whole.clone().into_bytes();
        read.extend_from_slice(b"\x81\x85frame");
        let taken = asked(&read).expect("taken");
        assert_eq!(taken.head, whole.len());
        assert_eq!(taken.uri, "/agents/a/b?x=1");
        assert_eq!(taken.headers["host"], "h");
        assert_eq!(taken.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(asked(head("GET / HTTP/1.1", "Content-Length: 0\r\n").as_bytes()).is_some());
        let empty_query = asked(head("GET /agents/a/b? HTTP/1.1", "").as_bytes()).expect("taken");
        assert_eq!((empty_query.uri.path(), empty_query.uri.query()), ("/agents/a/b", None));
    }

    /// Everything else is hyper's: it answers it as before (a refusal, plain HTTP, a head
    /// still coming in).
    #[test]
    fn anything_else_is_left_to_hyper() {
        let whole = head("GET /agents/a/b HTTP/1.1", "");
        let many: String = (0..HEADERS).map(|n| format!("X-{n}: y\r\n")).collect();
        let not_taken = [
            whole[..whole.len() - 1].to_owned(),
            whole[..20].to_owned(),
            String::new(),
            head("POST /agents/a/b HTTP/1.1", ""),
            head("GET /agents/a/b HTTP/1.0", ""),
            head("GET http://h/agents/a/b HTTP/1.1", ""),
            head("GET /agents/a/b HTTP/1.1", "Content-Length: 5\r\n"),
            head("GET /agents/a/b HTTP/1.1", "Transfer-Encoding: chunked\r\n"),
            head("GET /agents/a/b HTTP/1.1", "Content-Length: 0\r\nContent-Length: 7\r\n"),
            head("GET /agents/a/b HTTP/1.1", &many),
            whole.replace("Upgrade: websocket", "Upgrade: h2c"),
            whole.replace("Version: 13", "Version: 8"),
            whole.replace(KEY, "short"),
            whole.replace("keep-alive, Upgrade", "keep-alive"),
            whole.replace("Host: h", "Host: \x01"),
            "GET /agents/a/b HTTP/1.1\r\n\r\n".to_owned(),
        ];
        for read in not_taken {
            assert!(asked(read.as_bytes()).is_none(), "{read:?}");
        }
    }

    /// RFC 6455's own example.
    #[test]
    fn the_101_carries_the_accept_key() {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(KEY.as_bytes());
        let response = String::from_utf8(switching_protocols(&accept)).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
             sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }
}
