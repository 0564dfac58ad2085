//! The HTTP side of MCP connections: the server's HTTP client (one per server, made on first
//! use), the checks of where it may connect (URLs, the addresses names resolve to, redirects)
//! and of the headers an agent adds, and errors in words.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderName, HeaderValue};

use crate::instance::directory::Directory;

/// How long the TCP and TLS handshakes of a request may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most redirects a request follows.
const MAX_REDIRECTS: usize = 5;
/// The longest server URL accepted.
const MAX_URL_LEN: usize = 2048;
/// The most custom headers of one server, and their bytes (names and values) in all.
const MAX_HEADERS: usize = 32;
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Headers the transports set themselves: an agent's own would clash with them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "host",
    "last-event-id",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

/// The server's HTTP client for MCP connections, made on first use: one pool of connections
/// on the server's runtime, TLS by rustls with the system's certificates, and every address
/// checked (see [`parse_server_url`]).
pub(crate) fn client(directory: &Directory) -> Result<reqwest::Client, String> {
    let loopback = directory.limits.mcp_loopback;
    directory.mcp_http.get_or_init(|| build(loopback)).clone()
}

fn build(loopback: bool) -> Result<reqwest::Client, String> {
    let failed = |e: &dyn std::error::Error| format!("the HTTP client cannot be built: {e}");
    // The crypto provider is chosen here, not installed for the whole process: rustls
    // deprecates ring's for its lack of post-quantum key exchange, which aws-lc-rs has at the
    // cost of building AWS-LC's C sources.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| failed(&e))?;
    let tls = rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(tls)
        .map_err(|e| failed(&e))?
        .with_no_client_auth();
    // Redirects stay on the server's origin: another would get the agent's headers (a token,
    // say), or a downgrade from https to http.
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        let from = attempt.previous().last().map(Url::origin);
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if from.is_some_and(|from| from != attempt.url().origin()) {
            let to = attempt.url().origin().ascii_serialization();
            attempt.error(format!("a redirect to another origin ({to}) is not followed"))
        } else if let Err(why) = check_host(attempt.url(), loopback) {
            attempt.error(why)
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("agents-rs/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirects)
        .dns_resolver(Arc::new(CheckedResolver { loopback }))
        // A proxy from the environment would resolve the server's name itself, past the check.
        .no_proxy()
        .build()
        .map_err(|e| failed(&e))
}

/// Checks a server URL as the SDK does, and more: `http` or `https`, at most 2,048 bytes, and
/// no private, link-local, shared (CGNAT), unspecified or unique-local address (a client could
/// otherwise make the server reach its own network). Host names are checked when they resolve
/// (every request, redirects included). Loopback is allowed unless the server says otherwise
/// (`ServerBuilder::allow_loopback_mcp_servers`).
pub(crate) fn parse_server_url(url: &str, loopback: bool) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("the MCP server URL is longer than {MAX_URL_LEN} bytes"));
    }
    let parsed = Url::parse(url).map_err(|e| format!("invalid MCP server URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("invalid MCP server URL {url:?}: the scheme must be http or https"));
    }
    check_host(&parsed, loopback)?;
    Ok(parsed)
}

/// Checks the host of `url` if it is an address (names are checked by [`CheckedResolver`]).
fn check_host(url: &Url, loopback: bool) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(format!("invalid MCP server URL {url}: it has no host")),
    };
    if is_internal(ip, loopback) {
        return Err(blocked(url.as_str()));
    }
    Ok(())
}

fn blocked(target: &str) -> String {
    format!(
        "Blocked URL: {target} — MCP client connections to private/internal addresses are not allowed"
    )
}

/// Resolves host names as the system does, refusing names with an internal address among
/// theirs (a name can point anywhere, and change between the check and the connection).
struct CheckedResolver {
    loopback: bool,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let loopback = self.loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(addr) = addrs.iter().find(|addr| is_internal(addr.ip(), loopback)) {
                let target = format!("{host} (which resolves to {})", addr.ip());
                return Err(blocked(&target).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Addresses an agent may not reach: private (RFC 1918), shared (CGNAT, 100.64/10),
/// link-local (cloud metadata included), IETF-reserved 192.0.0/24, benchmarking 198.18/15,
/// unspecified, multicast, reserved 240/4 (broadcast included), IPv6 unique-local, site-local
/// and multicast, and IPv4 through IPv6 (mapped, compatible, NAT64, 6to4); loopback too,
/// unless `loopback`.
fn is_internal(ip: IpAddr, loopback: bool) -> bool {
    match ip {
        IpAddr::V4(ip) => internal_v4(ip, loopback),
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(v4) => internal_v4(v4, loopback),
            None => internal_v6(ip, loopback),
        },
    }
}

fn internal_v4(ip: Ipv4Addr, loopback: bool) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || a >= 240
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        || (ip.is_loopback() && !loopback)
}

fn internal_v6(ip: Ipv6Addr, loopback: bool) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (ip.is_loopback() && !loopback)
}

/// The IPv4 address an IPv6 one carries: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`, not `::` or `::1`), NAT64 (`64:ff9b::a.b.c.d`, and the local-use
/// `64:ff9b:1::/48`), or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    let compatible = s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1];
    (compatible || nat64).then(|| v4(s[6], s[7]))
}

/// The custom headers of a server, checked: names and values HTTP allows, each name once,
/// none the transports set themselves, at most [`MAX_HEADERS`] of [`MAX_HEADER_BYTES`].
pub(crate) fn parse_headers(
    headers: &[(String, String)],
) -> Result<HashMap<HeaderName, HeaderValue>, String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("an MCP server takes at most {MAX_HEADERS} headers"));
    }
    let bytes: usize = headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(format!("the headers of an MCP server are over {MAX_HEADER_BYTES} bytes"));
    }
    let mut parsed = HashMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid MCP header name {name:?}"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!("the MCP transport sets the {name:?} header itself"));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for MCP header {name:?}"))?;
        if parsed.insert(header, value).is_some() {
            return Err(format!("the MCP header {name:?} is given twice"));
        }
    }
    Ok(parsed)
}

/// An error with its causes, as one line (an HTTP client's own text leaves out why a request
/// failed: a refused connection, say).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        for allowed in [
            "http://127.0.0.1:3000/mcp",
            "http://localhost/mcp",
            "https://mcp.example.com/mcp",
            "http://[::1]:8080/sse",
            "https://8.8.8.8/mcp",
            "https://100.128.0.1/mcp",
        ] {
            assert!(parse_server_url(allowed, true).is_ok(), "{allowed}");
        }
        for blocked in [
            "http://10.0.0.1/mcp",
            "http://172.16.5.4/mcp",
            "http://192.168.1.1/mcp",
            "http://169.254.169.254/latest/meta-data",
            "http://100.100.100.200/latest/meta-data",
            "http://192.0.0.192/opc/v1/",
            "http://0.0.0.0/mcp",
            "http://255.255.255.255/mcp",
            "http://[::]/mcp",
            "http://[fd00::1]/mcp",
            "http://[fe80::1]/mcp",
            "http://[fec0::1]/mcp",
            "http://[::ffff:10.0.0.1]/mcp",
            "http://[::10.0.0.1]/mcp",
            "http://[64:ff9b::a9fe:a9fe]/mcp",
            "http://[64:ff9b:1::a00:1]/mcp",
            "http://[2002:a00:1::]/mcp",
            "http://224.0.0.1/mcp",
            "http://240.0.0.1/mcp",
            "http://198.18.0.1/mcp",
            "http://[ff02::1]/mcp",
        ] {
            let error = parse_server_url(blocked, true).expect_err(blocked);
            assert!(error.starts_with("Blocked URL"), "{blocked}: {error}");
        }
        // Other spellings of an address are read as the address (`url` parses as browsers do).
        for loopback in [
            "http://127.0.0.1/mcp",
            "http://127.1.2.3/mcp",
            "http://[::1]/mcp",
            "http://2130706433/mcp",
            "http://0x7f.1/mcp",
            "http://127.0.0.1./mcp",
        ] {
            let error = parse_server_url(loopback, false).expect_err(loopback);
            assert!(error.starts_with("Blocked URL"), "{loopback}: {error}");
        }
        for invalid in ["not a url", "ftp://example.com/mcp", "file:///etc/passwd", "mailto:a@b"] {
            let error = parse_server_url(invalid, true).expect_err(invalid);
            assert!(error.contains("invalid MCP server URL"), "{invalid}: {error}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_server_url(&long, true).expect_err("too long").contains("longer than"));
    }

    #[tokio::test]
    async fn names_that_resolve_to_internal_addresses_are_refused() {
        let resolver = CheckedResolver { loopback: false };
        let name: Name = "localhost".parse().expect("a name");
        let error = resolver.resolve(name).await.err().expect("refused").to_string();
        assert!(error.starts_with("Blocked URL: localhost (which resolves to "), "{error}");
        let resolver = CheckedResolver { loopback: true };
        let name: Name = "localhost".parse().expect("a name");
        assert!(resolver.resolve(name).await.is_ok(), "loopback allowed");
    }

    #[test]
    fn headers_are_checked() {
        let header = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        assert_eq!(parse_headers(&[header("Authorization", "Bearer x")]).expect("valid").len(), 1);
        let cases = [
            (vec![header("bad header", "x")], "header name"),
            (vec![header("X-Token", "a\nb")], "X-Token"),
            (vec![header("Accept", "text/html")], "sets the \"Accept\" header itself"),
            (vec![header("mcp-session-id", "x")], "itself"),
            (vec![header("X-A", "1"), header("x-a", "2")], "given twice"),
            (vec![header("X-Big", &"v".repeat(MAX_HEADER_BYTES))], "over 8192 bytes"),
            ((0..=MAX_HEADERS).map(|i| header(&format!("X-{i}"), "v")).collect(), "at most 32"),
        ];
        for (headers, expected) in cases {
            let error = parse_headers(&headers).expect_err(expected);
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
