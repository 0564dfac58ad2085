//! The HTTP side of MCP connections: the one HTTP client every connection shares, and the
//! checks of what an agent (or a client, through a callable) asks to connect to.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

/// How long the TCP and TLS handshakes of a request may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most redirects a request follows.
const MAX_REDIRECTS: usize = 5;
/// The longest server URL accepted.
pub(crate) const MAX_URL_LEN: usize = 2048;

/// The HTTP client of every MCP connection in the process (one pool of connections, one TLS
/// configuration: rustls, with the system's certificates).
pub(crate) fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // rustls needs a process-wide crypto provider; ring, unless the application
            // installed one of its own first. (rustls deprecates ring's provider for its lack
            // of post-quantum key exchange; aws-lc-rs has it, at the cost of building
            // AWS-LC's C sources. An application that wants it installs it before.)
            if rustls::crypto::CryptoProvider::get_default().is_none() {
                #[allow(deprecated)]
                let ring = rustls::crypto::ring::default_provider();
                let _ = ring.install_default();
            }
            let redirects = reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if let Err(why) = check_target(attempt.url()) {
                    attempt.error(why)
                } else {
                    attempt.follow()
                }
            });
            reqwest::Client::builder()
                .user_agent(concat!("agents-rs/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(redirects)
                .build()
                .map_err(|e| format!("the HTTP client cannot be built: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Checks a server URL as the SDK does: `http` or `https`, and no private, link-local or
/// unspecified address (a client could otherwise make the server reach its own network).
/// Loopback addresses and host names are allowed.
pub(crate) fn parse_server_url(url: &str) -> Result<Url, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("the MCP server URL is longer than {MAX_URL_LEN} bytes"));
    }
    let parsed = Url::parse(url).map_err(|e| format!("invalid MCP server URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("invalid MCP server URL {url:?}: the scheme must be http or https"));
    }
    check_target(&parsed)?;
    Ok(parsed)
}

fn check_target(url: &Url) -> Result<(), String> {
    let blocked = match url.host() {
        Some(url::Host::Ipv4(ip)) => is_blocked(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_blocked(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => false,
        None => return Err(format!("invalid MCP server URL {url}: it has no host")),
    };
    if blocked {
        return Err(format!(
            "Blocked URL: {url} — MCP client connections to private/internal addresses are not allowed"
        ));
    }
    Ok(())
}

/// Private (RFC 1918), link-local (cloud metadata included), unspecified, and IPv6
/// unique-local addresses; loopback is allowed.
fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => blocked_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => blocked_v4(v4),
            None => blocked_v6(ip),
        },
    }
}

fn blocked_v4(ip: Ipv4Addr) -> bool {
    ip.is_private() || ip.is_link_local() || ip.is_unspecified()
}

fn blocked_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

/// The custom headers of a server, checked: a name or value HTTP does not allow is an error
/// that names it.
pub(crate) fn parse_headers(
    headers: &[(String, String)],
) -> Result<HashMap<HeaderName, HeaderValue>, String> {
    let mut parsed = HashMap::with_capacity(headers.len());
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid MCP header name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for MCP header {name:?}"))?;
        parsed.insert(header, value);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_as_the_sdk_checks_them() {
        for allowed in [
            "http://127.0.0.1:3000/mcp",
            "http://localhost/mcp",
            "https://mcp.example.com/mcp",
            "http://[::1]:8080/sse",
            "https://8.8.8.8/mcp",
        ] {
            assert!(parse_server_url(allowed).is_ok(), "{allowed}");
        }
        for blocked in [
            "http://10.0.0.1/mcp",
            "http://172.16.5.4/mcp",
            "http://192.168.1.1/mcp",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/mcp",
            "http://[::]/mcp",
            "http://[fd00::1]/mcp",
            "http://[fe80::1]/mcp",
            "http://[::ffff:10.0.0.1]/mcp",
        ] {
            let error = parse_server_url(blocked).expect_err(blocked);
            assert!(error.starts_with("Blocked URL"), "{blocked}: {error}");
        }
        for invalid in ["not a url", "ftp://example.com/mcp", "file:///etc/passwd", "mailto:a@b"] {
            let error = parse_server_url(invalid).expect_err(invalid);
            assert!(error.contains("invalid MCP server URL"), "{invalid}: {error}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_server_url(&long).expect_err("too long").contains("longer than"));
    }

    #[test]
    fn headers_are_checked() {
        let ok = [("Authorization".to_owned(), "Bearer x".to_owned())];
        assert_eq!(parse_headers(&ok).expect("valid").len(), 1);
        let bad_name = [("bad header".to_owned(), "x".to_owned())];
        assert!(parse_headers(&bad_name).expect_err("name").contains("header name"));
        let bad_value = [("X-Token".to_owned(), "a\nb".to_owned())];
        assert!(parse_headers(&bad_value).expect_err("value").contains("X-Token"));
    }
}
