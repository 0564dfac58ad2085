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

use super::http::error_chain;

/// How long the server may take to send the `endpoint` event.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest event accepted from the server.
const MAX_EVENT_SIZE: usize = 16 << 20;
/// Messages read ahead of the client.
const QUEUE: usize = 8;

/// A transport error: what failed, in words, and the HTTP status that said so, if one did.
#[derive(Debug)]
pub(crate) struct SseError {
    text: String,
    pub(crate) status: Option<u16>,
}

impl SseError {
    fn new(text: impl Into<String>) -> Self {
        Self { text: text.into(), status: None }
    }

    fn status(status: u16, text: String) -> Self {
        Self { text, status: Some(status) }
    }
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
        .map_err(|e| SseError::new(format!("SSE error: {}", error_chain(&e))))?;
    let status = response.status();
    if !status.is_success() {
        let text = format!("SSE error: Non-200 status code ({})", status.as_u16());
        return Err(SseError::status(status.as_u16(), text));
    }
    let mut events = SseStream::from_bytes_stream(bounded(response.bytes_stream()));
    let first = tokio::time::timeout(ENDPOINT_TIMEOUT, async {
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| SseError::new(format!("SSE error: {e}")))?;
            if event.event.as_deref() == Some("endpoint") {
                return Ok(event.data.unwrap_or_default());
            }
        }
        Err(SseError::new("SSE error: the stream ended before its endpoint event"))
    })
    .await
    .map_err(|_| SseError::new("SSE error: no endpoint event within 15 s"))??;
    let endpoint = url
        .join(first.trim())
        .map_err(|e| SseError::new(format!("SSE error: invalid endpoint {first:?}: {e}")))?;
    if endpoint.origin() != url.origin() {
        return Err(SseError::new(format!(
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
                request.map_err(|e| SseError::new(format!("a message cannot be sent: {e}")))?;
            let response = request.send().await.map_err(|e| {
                SseError::new(format!("Error POSTing to endpoint: {}", error_chain(&e)))
            })?;
            let status = response.status();
            if !status.is_success() {
                let reason = status.canonical_reason().unwrap_or("");
                let text =
                    format!("Error POSTing to endpoint (HTTP {}): {reason}", status.as_u16());
                return Err(SseError::status(status.as_u16(), text));
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
/// [`MAX_EVENT_SIZE`] (an event ends with a blank line; lines end with CR, LF or CRLF).
fn bounded(
    stream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, SseError>> + Send + 'static {
    let mut size = EventSize::default();
    stream.map(move |chunk| {
        let chunk = chunk.map_err(|e| SseError::new(error_chain(&e)))?;
        if !size.add(&chunk) {
            return Err(SseError::new(format!("an event is larger than {MAX_EVENT_SIZE} bytes")));
        }
        Ok(chunk)
    })
}

/// The size of the event being read, across chunks.
#[derive(Default)]
struct EventSize {
    /// Bytes of the event so far.
    event: usize,
    /// Bytes of its current line so far.
    line: usize,
    /// The last byte was a CR (a LF right after it ends no other line).
    after_cr: bool,
}

impl EventSize {
    /// Counts `bytes`; `false` once the event is over the bound.
    fn add(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            let crlf = byte == b'\n' && self.after_cr;
            self.after_cr = byte == b'\r';
            match byte {
                _ if crlf => {}
                b'\r' | b'\n' if self.line == 0 => self.event = 0,
                b'\r' | b'\n' => self.line = 0,
                _ => {
                    self.line += 1;
                    self.event += 1;
                }
            }
            if self.event > MAX_EVENT_SIZE {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_measured_one_at_a_time_whatever_the_line_ends() {
        let line = "a".repeat(MAX_EVENT_SIZE / 2);
        for end in ["\n", "\r", "\r\n"] {
            let mut size = EventSize::default();
            // Many events of half the bound each: each fits.
            for _ in 0..4 {
                let event = format!("data:{line}{end}{end}");
                assert!(size.add(event.as_bytes()), "{end:?}");
            }
            // One event of two such lines and more: over the bound.
            let event = format!("data:{line}{end}data:{line}{end}data:x{end}");
            assert!(!size.add(event.as_bytes()), "{end:?}");
        }
    }
}
