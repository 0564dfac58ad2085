//! MCP's older HTTP transport, with server-sent events (protocol version 2024-11-05), which
//! the SDK falls back to: a `GET` opens an event stream whose first `endpoint` event names
//! the URL to `POST` messages to; the server's messages come back as `message` events.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use sse_stream::SseStream;
use tokio::sync::mpsc;

/// How long the server may take to send the `endpoint` event.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest event accepted from the server.
const MAX_EVENT_SIZE: usize = 16 << 20;
/// Messages read ahead of the client.
const QUEUE: usize = 64;

/// A transport error: what failed, in words.
#[derive(Debug)]
pub(crate) struct SseError(String);

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SseError {}

/// An open SSE transport: where to post, and the messages the event stream brought.
pub(crate) struct SseTransport {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the event stream at `url` and waits for its `endpoint` event.
pub(crate) async fn open(
    client: &reqwest::Client,
    url: &Url,
    headers: &HashMap<HeaderName, HeaderValue>,
) -> Result<SseTransport, SseError> {
    let headers: HeaderMap = headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let response = client
        .get(url.clone())
        .headers(headers.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| SseError(format!("SSE error: {}", full_error(&e))))?;
    let status = response.status();
    if !status.is_success() {
        return Err(SseError(format!("SSE error: Non-200 status code ({})", status.as_u16())));
    }
    let mut events = SseStream::from_bytes_stream(bounded(response.bytes_stream()));
    let first = tokio::time::timeout(ENDPOINT_TIMEOUT, async {
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| SseError(format!("SSE error: {e}")))?;
            if event.event.as_deref() == Some("endpoint") {
                return Ok(event.data.unwrap_or_default());
            }
        }
        Err(SseError("SSE error: the stream ended before its endpoint event".into()))
    })
    .await
    .map_err(|_| SseError("SSE error: no endpoint event within 15 s".into()))??;
    let endpoint = url
        .join(first.trim())
        .map_err(|e| SseError(format!("SSE error: invalid endpoint {first:?}: {e}")))?;
    if endpoint.origin() != url.origin() {
        return Err(SseError(format!(
            "SSE error: endpoint origin does not match connection origin: {}",
            endpoint.origin().ascii_serialization()
        )));
    }
    let (sender, incoming) = mpsc::channel(QUEUE);
    let reader = tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if event.event.as_deref().is_some_and(|kind| kind != "message") {
                continue;
            }
            let Some(data) = event.data else { continue };
            match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                Ok(message) => {
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!("an MCP server sent a message that does not parse: {e}"),
            }
        }
    });
    Ok(SseTransport { client: client.clone(), endpoint, headers, incoming, reader })
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn name() -> Cow<'static, str> {
        "sse".into()
    }

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), SseError>> + Send + 'static {
        let request = serde_json::to_vec(&item).map(|body| {
            self.client
                .post(self.endpoint.clone())
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body)
        });
        async move {
            let request =
                request.map_err(|e| SseError(format!("a message cannot be sent: {e}")))?;
            let response = request
                .send()
                .await
                .map_err(|e| SseError(format!("Error POSTing to endpoint: {}", full_error(&e))))?;
            let status = response.status();
            if !status.is_success() {
                return Err(SseError(format!(
                    "Error POSTing to endpoint (HTTP {}): {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )));
            }
            Ok(())
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<ServerJsonRpcMessage>> + Send {
        self.incoming.recv()
    }

    async fn close(&mut self) -> Result<(), SseError> {
        self.reader.abort();
        Ok(())
    }
}

/// The event stream's bytes, ended with an error once one event grows past
/// [`MAX_EVENT_SIZE`] (an event ends with a blank line).
fn bounded(
    stream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, SseError>> + Send + 'static {
    let mut in_event = 0usize;
    let mut last = 0u8;
    stream.map(move |chunk| {
        let chunk = chunk.map_err(|e| SseError(full_error(&e)))?;
        for &byte in chunk.iter() {
            match (last, byte) {
                (b'\n', b'\n') => in_event = 0,
                (_, b'\r') => continue,
                _ => in_event += 1,
            }
            last = byte;
        }
        if in_event > MAX_EVENT_SIZE {
            return Err(SseError(format!("an event is larger than {MAX_EVENT_SIZE} bytes")));
        }
        Ok(chunk)
    })
}

/// An error with its causes, as one line (reqwest's own text leaves out why a request failed).
pub(crate) fn full_error(error: &dyn std::error::Error) -> String {
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
