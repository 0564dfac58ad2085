//! One server's connection, as a task of its own: connect (a few tries), list what the server
//! offers, then stay until the server closes the session, listing again when it says its
//! lists changed. Each step is written to the instance's table, which tells the instance.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{ClientInitializeError, NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ClientHandler, RoleClient, serve_client};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::catalog::{Discovered, discover};
use super::clients::Shared;
use super::http::{self, parse_headers, parse_server_url};
use super::sse::{self, full_error};
use super::stored::StoredServer;
use super::{McpConnectionState, McpTransport};

/// How many times a connection is tried before the server is `failed`.
const ATTEMPTS: u32 = 3;
/// The wait before the second try; it doubles for each later one.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// How long one try may take (the transport, then `initialize`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long listing the server's tools, prompts and resources may take.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Starts connection `generation` of `server`; aborting it closes the session.
pub(crate) fn spawn(shared: Arc<Shared>, server: StoredServer, generation: u64) -> AbortHandle {
    tokio::spawn(run(shared, server, generation)).abort_handle()
}

async fn run(shared: Arc<Shared>, server: StoredServer, generation: u64) {
    let id = server.id.clone();
    let step = |update: &dyn Fn(&mut super::clients::Live)| shared.update(&id, generation, update);
    let (relist, mut relists) = mpsc::channel(1);
    let listener = Listener { relist };
    let mut delay = FIRST_RETRY;
    let mut attempt = 1;
    let session = loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, open(&server, listener.clone())).await {
            Ok(Ok(session)) => break session,
            // Tried again, unless trying again cannot help.
            Ok(Err(why)) if attempt < ATTEMPTS && !is_blocked(&why) && !is_unauthorized(&why) => {
                tracing::debug!(id, name = server.name, "MCP connection failed, retrying: {why}");
            }
            Ok(Err(why)) => return fail(&shared, &server, generation, why).await,
            Err(_) if attempt < ATTEMPTS => {}
            Err(_) => {
                let why = format!("Connection timed out after {} s", CONNECT_TIMEOUT.as_secs());
                return fail(&shared, &server, generation, why).await;
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    };
    step(&|live| live.state = McpConnectionState::Connected);
    step(&|live| live.state = McpConnectionState::Discovering);
    shared.tell().await;
    let peer = session.peer().clone();
    if let Err(why) = list(&shared, &server, generation, &session).await {
        return fail(&shared, &server, generation, why).await;
    }
    let ready = shared.update(&id, generation, |live| {
        live.state = McpConnectionState::Ready;
        live.peer = Some(peer.clone());
    });
    if !ready {
        return; // removed meanwhile
    }
    shared.tell().await;
    tracing::info!(id, name = server.name, url = server.server_url, "MCP server ready");
    let ended = session.waiting();
    tokio::pin!(ended);
    loop {
        tokio::select! {
            _ = &mut ended => break,
            Some(()) = relists.recv() => {
                if let Ok(found) = tokio::time::timeout(DISCOVERY_TIMEOUT, discover(&peer, &id)).await
                    .map_err(|_| ()).and_then(|found| found.map_err(|_| ()))
                {
                    shared.update(&id, generation, |live| found.apply(live));
                    shared.tell().await;
                }
            }
        }
    }
    let why = "Connection closed by the MCP server".to_owned();
    fail(&shared, &server, generation, why).await;
}

/// Lists the server's tools, prompts and resources into the table.
async fn list(
    shared: &Shared,
    server: &StoredServer,
    generation: u64,
    session: &Session,
) -> Result<(), String> {
    let found: Discovered =
        tokio::time::timeout(DISCOVERY_TIMEOUT, discover(session.peer(), &server.id))
            .await
            .map_err(|_| {
                format!("Discovery timed out after {}ms", DISCOVERY_TIMEOUT.as_millis())
            })??;
    shared.update(&server.id, generation, |live| found.apply(live));
    Ok(())
}

async fn fail(shared: &Shared, server: &StoredServer, generation: u64, why: String) {
    tracing::warn!(
        id = server.id,
        name = server.name,
        url = server.server_url,
        "MCP server failed: {why}"
    );
    let why = if is_unauthorized(&why) {
        format!(
            "{why} (the server asks for authorization; OAuth is not supported yet, pass a token in a header)"
        )
    } else {
        why
    };
    if shared.update(&server.id, generation, |live| live.fail(why.clone())) {
        shared.tell().await;
    }
}

/// Opens a session with `server` over its transport (streamable HTTP, falling back to SSE
/// when it answers 404 or 405, for `auto`).
async fn open(server: &StoredServer, listener: Listener) -> Result<Session, String> {
    let url = parse_server_url(&server.server_url)?;
    let headers = parse_headers(&server.options.headers)?;
    let client = http::client()?;
    let streamable = async {
        let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
            .custom_headers(headers.clone());
        let transport = StreamableHttpClientTransport::with_client(client.clone(), config);
        serve_client(listener.clone(), transport).await.map_err(init_error)
    };
    let sse = async {
        let transport = sse::open(client, &url, &headers).await.map_err(|e| e.to_string())?;
        serve_client(listener.clone(), transport).await.map_err(init_error)
    };
    match server.options.transport {
        McpTransport::StreamableHttp => streamable.await,
        McpTransport::Sse => sse.await,
        McpTransport::Auto => match streamable.await {
            Err(why) if not_implemented(&why) => sse.await,
            opened => opened,
        },
    }
}

/// Why a session could not be opened, in words (without the transport's type name).
fn init_error(error: ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, context } => {
            // The HTTP client's error keeps its causes (a refused connection, say) out of the
            // transport error's chain.
            let inner = error.error.as_ref();
            let why = match inner.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
                Some(StreamableHttpError::Client(e)) => full_error(e),
                _ => full_error(inner),
            };
            format!("{why} (when trying to {context})")
        }
        other => full_error(&other),
    }
}

/// Whether the server asked for authorization (the SDK's test, and rmcp's words for it).
fn is_unauthorized(why: &str) -> bool {
    ["401", "Unauthorized", "Auth required"].iter().any(|sign| why.contains(sign))
}

/// Whether the URL was refused before any request.
fn is_blocked(why: &str) -> bool {
    why.starts_with("Blocked URL")
}

/// Whether streamable HTTP's error says the server does not have it (the SDK's test).
fn not_implemented(why: &str) -> bool {
    ["404", "405", "Not Found", "Method Not Allowed", "Not Implemented", "not implemented"]
        .iter()
        .any(|sign| why.contains(sign))
}
