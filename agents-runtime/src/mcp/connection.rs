//! One server's connection, as a task of its own: connect (a few tries), list what the server
//! offers, then stay until the server closes the session, listing again (at most once a
//! second) when it says its lists changed. Each step is written to the instance's table.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rmcp::model::ProtocolVersion;
use rmcp::model::{ClientCapabilities, ClientConfig, ClientRequest, Implementation, PingRequest};
use rmcp::service::{ClientInitializeError, NotificationContext, RunningService, ServiceError};
use rmcp::service::{ClientLifecycleMode, serve_client_with_lifecycle};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::ExponentialBackoff;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientHandler, RoleClient};
use tokio::sync::mpsc;

use super::catalog::discover;
use super::http::{error_chain, parse_headers, parse_server_url};
use super::sse::{self, SseError};
use super::stored::StoredServer;
use super::table::Shared;
use super::types::{McpConnectionState, McpTransport};

/// How many times a connection is tried before the server is `failed`.
const ATTEMPTS: u32 = 3;
/// The wait before the second try; it doubles for each later one.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long one try may take (the transport, then `initialize`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long listing the server's tools, prompts and resources may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times a broken stream from the server is opened again.
const STREAM_RETRIES: usize = 3;
/// The least time between two listings a server asks for.
const RELIST_INTERVAL: Duration = Duration::from_secs(1);
/// How often a ready server is pinged, to notice one that is gone between requests.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may take before the next one.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The client side of a session: it hears the server's notices that its lists changed.
#[derive(Clone)]
struct Listener {
    relist: mpsc::Sender<()>,
}

impl ClientHandler for Listener {
    fn get_info(&self) -> ClientConfig {
        let us = Implementation::new("agents-rs", env!("CARGO_PKG_VERSION"));
        ClientConfig::new(ClientCapabilities::default(), us)
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.relist.try_send(());
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.relist.try_send(());
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.relist.try_send(());
    }
}

type Session = RunningService<RoleClient, Listener>;

/// Why a session could not be opened, and whether another try could help.
struct Failure {
    why: String,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The server asks for authorization (401).
    Unauthorized,
    /// The server does not have this transport (404 or 405).
    NotImplemented,
    /// The URL or headers are refused before any request.
    Refused,
    /// Anything else: a refused connection, a timeout, a bad answer.
    Other,
}

impl Failure {
    fn new(why: impl Into<String>, kind: Kind) -> Self {
        Self { why: why.into(), kind }
    }

    fn of_status(why: String, status: Option<u16>) -> Self {
        // The HTTP client's resolver refused the address a name resolves to.
        if why.contains("Blocked URL: ") {
            return Self { why, kind: Kind::Refused };
        }
        let kind = match status {
            Some(401 | 403) => Kind::Unauthorized,
            Some(404 | 405) => Kind::NotImplemented,
            _ => Kind::Other,
        };
        Self { why, kind }
    }

    /// The text a client is shown.
    fn into_text(self) -> String {
        match self.kind {
            Kind::Unauthorized => format!(
                "{} (the server asks for authorization: OAuth is not supported yet, pass a token in a header)",
                self.why
            ),
            _ => self.why,
        }
    }
}

/// Starts connection `generation` of `server` in a task of its own, which the table stops
/// when the server is removed or renewed, or the instance leaves memory.
pub(crate) fn connect(shared: &Arc<Shared>, server: StoredServer, generation: u64) {
    let id = server.id.clone();
    let owner = shared.clone();
    let task = tokio::spawn(async move {
        let id = server.id.clone();
        let ran = AssertUnwindSafe(run(&owner, server, generation)).catch_unwind().await;
        if let Err(panic) = ran {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let why = format!("the connection failed unexpectedly (a panic: {what})");
            tracing::error!(id, "{why}");
            owner.update(&id, generation, |live| live.fail(why));
        }
    });
    shared.attach(&id, generation, task.abort_handle());
}

async fn run(shared: &Shared, server: StoredServer, generation: u64) {
    let id = server.id.as_str();
    let (relist, mut relists) = mpsc::channel(1);
    let session = match open_with_tries(shared, &server, Listener { relist }).await {
        Ok(session) => session,
        Err(failure) => return fail(shared, &server, generation, failure.into_text()),
    };
    shared.update(id, generation, |live| live.state = McpConnectionState::Connected);
    shared.update(id, generation, |live| live.state = McpConnectionState::Discovering);
    let peer = session.peer().clone();
    let found = match tokio::time::timeout(DISCOVERY_TIMEOUT, discover(&peer, id)).await {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return fail(shared, &server, generation, why),
        Err(_) => {
            let why = format!("Discovery timed out after {}ms", DISCOVERY_TIMEOUT.as_millis());
            return fail(shared, &server, generation, why);
        }
    };
    let ready = shared.update(id, generation, |live| {
        found.apply(live);
        live.state = McpConnectionState::Ready;
        live.peer = Some(peer.clone());
    });
    if !ready {
        return; // removed or renewed meanwhile
    }
    tracing::info!(id, name = server.name, url = server.server_url, "MCP server ready");
    let ended = session.waiting();
    tokio::pin!(ended);
    let mut pings =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            _ = &mut ended => break "Connection closed by the MCP server".to_owned(),
            Some(()) = relists.recv() => {
                // A list that cannot be read again keeps the one before.
                match tokio::time::timeout(DISCOVERY_TIMEOUT, discover(&peer, id)).await {
                    Ok(Ok(found)) => {
                        shared.update(id, generation, |live| found.apply(live));
                    }
                    Ok(Err(why)) => tracing::warn!(id, "listing the MCP server's lists again failed: {why}"),
                    Err(_) => tracing::warn!(id, "listing the MCP server's lists again timed out"),
                }
                tokio::time::sleep(RELIST_INTERVAL).await;
            }
            _ = pings.tick() => {
                let ping = ClientRequest::PingRequest(PingRequest::default());
                if let Ok(Err(e)) = tokio::time::timeout(PING_TIMEOUT, peer.send_request(ping)).await
                    && is_gone(&e)
                {
                    break format!("Connection lost: {}", error_chain(&e));
                }
            }
        }
    };
    fail(shared, &server, generation, why);
}

/// Whether a request's error means the session is gone (closed, the server unreachable, the
/// session unknown to it), not that one request failed (a 429 or a 503 from a gateway).
pub(crate) fn is_gone(error: &ServiceError) -> bool {
    let ServiceError::TransportSend(error) = error else {
        return matches!(error, ServiceError::TransportClosed);
    };
    match error.error.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
        Some(StreamableHttpError::Client(e)) => e.is_connect(),
        Some(
            StreamableHttpError::SessionExpired
            | StreamableHttpError::TransportChannelClosed
            | StreamableHttpError::UnexpectedEndOfStream,
        ) => true,
        _ => false,
    }
}

fn fail(shared: &Shared, server: &StoredServer, generation: u64, why: String) {
    let (id, name, url) = (&server.id, &server.name, &server.server_url);
    tracing::warn!(id, name, url, "MCP server failed: {why}");
    shared.update(id, generation, |live| live.fail(why));
}

/// Opens a session, trying again (after 0.5 s, then 1 s) unless that cannot help.
async fn open_with_tries(
    shared: &Shared,
    server: &StoredServer,
    listener: Listener,
) -> Result<Session, Failure> {
    let mut delay = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let failure =
            match tokio::time::timeout(CONNECT_TIMEOUT, open(shared, server, &listener)).await {
                Ok(Ok(session)) => return Ok(session),
                Ok(Err(failure)) => failure,
                Err(_) => {
                    let why = format!("Connection timed out after {} s", CONNECT_TIMEOUT.as_secs());
                    Failure::new(why, Kind::Other)
                }
            };
        if attempt == ATTEMPTS || matches!(failure.kind, Kind::Unauthorized | Kind::Refused) {
            return Err(failure);
        }
        let (id, why) = (&server.id, &failure.why);
        tracing::debug!(id, name = server.name, "MCP connection failed, trying again: {why}");
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    unreachable!("the last try returns")
}

/// Opens a session with `server` over its transport (for `auto`: streamable HTTP, then SSE
/// when the server answers 404 or 405).
async fn open(
    shared: &Shared,
    server: &StoredServer,
    listener: &Listener,
) -> Result<Session, Failure> {
    let refused = |why| Failure::new(why, Kind::Refused);
    let url = parse_server_url(&server.server_url, shared.loopback).map_err(refused)?;
    let headers = parse_headers(&server.options.headers).map_err(refused)?;
    let client = &shared.http;
    let streamable = async {
        let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .custom_headers(headers.clone());
        // A stream from the server that broke is opened again a few times, not forever: a
        // server that is gone ends the session (and the server is `failed`).
        let mut backoff = ExponentialBackoff::default();
        backoff.max_times = Some(STREAM_RETRIES);
        backoff.max_delay = Some(Duration::from_secs(4));
        config.retry_config = Arc::new(backoff);
        let transport = StreamableHttpClientTransport::with_client(client.clone(), config);
        serve_client_with_lifecycle(listener.clone(), transport, lifecycle())
            .await
            .map_err(init_failure)
    };
    let sse = async {
        let transport = sse::open(client, &url, &headers)
            .await
            .map_err(|e| Failure::of_status(e.to_string(), e.status))?;
        // The SSE transport predates the stateless protocol: `initialize` only.
        let legacy = ClientLifecycleMode::Initialize;
        serve_client_with_lifecycle(listener.clone(), transport, legacy).await.map_err(init_failure)
    };
    match server.options.transport {
        McpTransport::StreamableHttp => streamable.await,
        McpTransport::Sse => sse.await,
        McpTransport::Auto => match streamable.await {
            Err(failure) if failure.kind == Kind::NotImplemented => sse.await,
            opened => opened,
        },
    }
}

/// The protocol's startup over streamable HTTP: `server/discover` for servers of the
/// stateless protocol (2026-07-28), and `initialize` for the others, as the SDK negotiates.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

/// Why a session could not be opened, from the transport's typed errors (without the
/// transport's type name).
fn init_failure(error: ClientInitializeError) -> Failure {
    let (error, context) = match error {
        ClientInitializeError::TransportError { error, context } => (error, context),
        // `server/discover` refused, then `initialize` failed: why the latter did.
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => {
            return init_failure(*fallback);
        }
        other => return Failure::new(error_chain(&other), Kind::Other),
    };
    let inner = error.error.as_ref();
    let (why, status) =
        if let Some(e) = inner.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            let status = match e {
                StreamableHttpError::AuthRequired(_)
                | StreamableHttpError::InsufficientScope(_) => Some(401),
                StreamableHttpError::HttpStatus(e) => Some(e.status),
                StreamableHttpError::UnexpectedServerResponse(text) => status_in(text),
                StreamableHttpError::Client(e) => e.status().map(|status| status.as_u16()),
                _ => None,
            };
            // The HTTP client's error keeps its causes (a refused connection, say) out of the
            // transport error's chain.
            let why = match e {
                StreamableHttpError::Client(e) => error_chain(e),
                other => error_chain(other),
            };
            (why, status)
        } else if let Some(e) = inner.downcast_ref::<SseError>() {
            (e.to_string(), e.status)
        } else {
            (error_chain(inner), None)
        };
    Failure::of_status(format!("{why} (when trying to {context})"), status)
}

/// The status of rmcp's "HTTP 404 Not Found: …" texts.
fn status_in(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP ")?.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_in;

    #[test]
    fn statuses_are_read_from_the_transports_texts() {
        assert_eq!(status_in("HTTP 404 Not Found: Not Found"), Some(404));
        assert_eq!(status_in("HTTP 405 Method Not Allowed: x"), Some(405));
        assert_eq!(status_in("unexpected body from :4040/404"), None);
        assert_eq!(status_in("HTTP 4"), None);
    }
}
