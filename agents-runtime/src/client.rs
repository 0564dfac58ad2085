//! [`AgentClient`]: a Rust client for any agent, speaking the same protocol as the official
//! JavaScript `AgentClient`; generated `{Agent}Client` types add typed methods on top.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures_util::{SinkExt, Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::error::{Error, Result};
use crate::sync::lock;
use crate::wire::protocol::{ClientFrame, RpcRequest, RpcResponse, ServerFrame};

/// How a typed client reaches an agent: over a WebSocket ([`AgentClient`]) or in-process
/// ([`AgentStub`](crate::AgentStub)).
pub trait RpcTransport: Send + Sync {
    /// Calls `method` and waits for its answer: `None` for a method returning `()`.
    fn call(
        &self,
        method: &str,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<Option<Value>>> + Send;

    /// Calls a streaming method: its chunks, then its final value.
    fn stream(
        &self,
        method: &str,
        args: Vec<Value>,
    ) -> impl Future<Output = Result<CallStream>> + Send;
}

/// The answer of a streaming call: each chunk as [`StreamItem::Chunk`], then
/// [`StreamItem::Done`] (or an error, which ends it).
pub struct CallStream {
    items: mpsc::Receiver<Result<StreamItem>>,
    /// Whether the final item (`Done` or an error) was yielded.
    ended: bool,
}

/// Chunks a stream buffers for its consumer; one that falls further behind is cut off.
const STREAM_BUFFER: usize = 1024;

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A chunk sent with `StreamingResponse::send`.
    Chunk(Value),
    /// The end, with the final value (`None` for `end_empty`).
    Done(Option<Value>),
}

impl CallStream {
    pub(crate) fn channel() -> (mpsc::Sender<Result<StreamItem>>, Self) {
        let (tx, items) = mpsc::channel(STREAM_BUFFER);
        (tx, Self { items, ended: false })
    }

    /// Collects every chunk and the final value.
    pub async fn collect_all(mut self) -> Result<(Vec<Value>, Option<Value>)> {
        let mut chunks = Vec::new();
        while let Some(item) = self.next().await {
            match item? {
                StreamItem::Chunk(chunk) => chunks.push(chunk),
                StreamItem::Done(last) => return Ok((chunks, last)),
            }
        }
        Err(Error::msg("the stream ended without its final frame"))
    }
}

impl Stream for CallStream {
    type Item = Result<StreamItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match std::task::ready!(self.items.poll_recv(cx)) {
            Some(item) => {
                if matches!(item, Ok(StreamItem::Done(_)) | Err(_)) {
                    self.ended = true;
                }
                Poll::Ready(Some(item))
            }
            // Closed before its end: say so once rather than end quietly.
            None if !self.ended => {
                self.ended = true;
                Poll::Ready(Some(Err(Error::msg(format!(
                    "the stream was cut: the connection closed, or the consumer fell more than {STREAM_BUFFER} chunks behind"
                )))))
            }
            None => Poll::Ready(None),
        }
    }
}

impl fmt::Debug for CallStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallStream").finish_non_exhaustive()
    }
}

/// Decodes what a call returned into the method's result type.
pub fn decode_result<T: DeserializeOwned>(method: &str, value: Option<Value>) -> Result<T> {
    serde_json::from_value(value.unwrap_or(Value::Null))
        .map_err(|e| Error::msg(format!("the result of {method} does not decode: {e}")))
}

/// Serializes a call argument.
pub fn encode_arg<T: Serialize + ?Sized>(method: &str, index: usize, value: &T) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| Error::msg(format!("argument {index} of {method} does not encode: {e}")))
}

/// Routes the `rpc` frames of an answer to whoever waits for them.
pub(crate) enum PendingCall {
    Once(oneshot::Sender<Result<Option<Value>>>),
    Stream(mpsc::Sender<Result<StreamItem>>),
}

impl PendingCall {
    /// Handles one `rpc` frame; returns whether the call is finished.
    pub(crate) fn deliver(self, answer: RpcResponse) -> Option<Self> {
        let (failed, done) = (!answer.success, answer.is_final());
        let result = answer.result;
        let error = answer.error;
        let error = || Error::msg(error.as_deref().unwrap_or("Unknown error occurred"));
        match self {
            // A plain call of a streaming method waits through the chunks for the final value.
            Self::Once(reply) if !failed && !done => Some(Self::Once(reply)),
            Self::Once(reply) => {
                let _ = reply.send(if failed { Err(error()) } else { Ok(result) });
                None
            }
            Self::Stream(items) => {
                let item = match (failed, done) {
                    (true, _) => Err(error()),
                    (false, false) => Ok(StreamItem::Chunk(result.unwrap_or(Value::Null))),
                    (false, true) => Ok(StreamItem::Done(result)),
                };
                let finished = failed || done;
                // A full buffer means the consumer is not reading: drop the sender, which the
                // consumer sees as a cut stream.
                let delivered = items.try_send(item).is_ok();
                (delivered && !finished).then_some(Self::Stream(items))
            }
        }
    }

    pub(crate) fn fail(self, why: &str) {
        match self {
            Self::Once(reply) => drop(reply.send(Err(Error::msg(why)))),
            Self::Stream(items) => drop(items.try_send(Err(Error::msg(why)))),
        }
    }
}

/// A connection to one agent instance over WebSocket, like the JavaScript `AgentClient`:
/// it waits for the identity (and the state, when one follows), then calls callables, streams,
/// and follows the state.
///
/// ```no_run
/// # async fn demo() -> agents_runtime::Result<()> {
/// use agents_runtime::client::{AgentClient, RpcTransport};
/// let client = AgentClient::connect("ws://127.0.0.1:8787/agents/counter/room-1").await?;
/// let count = client.call("increment", vec![]).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AgentClient {
    shared: Arc<Session>,
    outgoing: mpsc::UnboundedSender<WsMessage>,
}

struct Session {
    pending: Mutex<HashMap<String, PendingCall>>,
    state: watch::Sender<Option<Value>>,
    identity: Mutex<Option<(String, String)>>,
    state_errors: watch::Sender<Option<String>>,
    next_id: AtomicU64,
}

/// How long [`AgentClient::connect`] waits for the server's identity frame.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a (non-streaming) call waits for its answer, as the JS client's default.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl AgentClient {
    /// Connects to `url` (`ws://host/agents/{agent}/{name}[?query]`) and waits until the agent
    /// identified itself and, when it has a state, sent it (the JS client's `ready`).
    pub async fn connect(url: &str) -> Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let shared = Arc::new(Session {
            pending: Mutex::new(HashMap::new()),
            state: watch::channel(None).0,
            identity: Mutex::new(None),
            state_errors: watch::channel(None).0,
            next_id: AtomicU64::new(1),
        });
        let (outgoing, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready) = oneshot::channel();
        tokio::spawn(drive(ws, rx, shared.clone(), ready_tx));
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Ok(())) => Ok(Self { shared, outgoing }),
            Ok(Err(_)) => {
                Err(Error::msg("the connection closed before the agent identified itself"))
            }
            Err(_) => Err(Error::msg("no identity frame from the server within 10 s")),
        }
    }

    /// The instance name and agent route name the server announced.
    pub fn identity(&self) -> (String, String) {
        lock(&self.shared.identity).clone().unwrap_or_default()
    }

    /// The latest agent state the server sent, as JSON.
    pub fn state_json(&self) -> Option<Value> {
        self.shared.state.borrow().clone()
    }

    /// The latest agent state, decoded.
    pub fn state<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.state_json().map(serde_json::from_value).transpose().map_err(Error::from)
    }

    /// A receiver that sees every state update (`onStateUpdate`).
    pub fn state_updates(&self) -> watch::Receiver<Option<Value>> {
        self.shared.state.subscribe()
    }

    /// The last `cf_agent_state_error` the server sent (`onStateUpdateError`), as a receiver.
    pub fn state_errors(&self) -> watch::Receiver<Option<String>> {
        self.shared.state_errors.subscribe()
    }

    /// Replaces the agent state (`setState`): optimistic locally, broadcast by the server to
    /// the other clients, refused with a state error when not allowed.
    pub fn set_state(&self, state: &impl Serialize) -> Result<()> {
        let state = serde_json::to_value(state)?;
        self.shared.state.send_replace(Some(state.clone()));
        self.send(ClientFrame::State { state })
    }

    /// Sends a raw text message (what the agent's `on_message` receives).
    pub fn send_text(&self, text: impl Into<String>) -> Result<()> {
        self.outgoing
            .send(WsMessage::text(text.into()))
            .map_err(|_| Error::msg("Connection closed"))
    }

    fn send(&self, frame: ClientFrame) -> Result<()> {
        self.send_text(serde_json::to_string(&frame)?)
    }

    fn start_call(&self, method: &str, args: Vec<Value>, pending: PendingCall) -> Result<String> {
        let id = format!("rs-{}", self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.shared.pending).insert(id.clone(), pending);
        let frame =
            ClientFrame::Rpc(RpcRequest { id: id.clone(), method: method.to_owned(), args });
        if let Err(e) = self.send(frame) {
            lock(&self.shared.pending).remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Closes the connection (code 1000); pending calls fail with `Connection closed`.
    pub fn close(&self) {
        let _ = self.outgoing.send(WsMessage::Close(None));
    }
}

impl RpcTransport for AgentClient {
    async fn call(&self, method: &str, args: Vec<Value>) -> Result<Option<Value>> {
        let (reply, answer) = oneshot::channel();
        let id = self.start_call(method, args, PendingCall::Once(reply))?;
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(answer) => answer.map_err(|_| Error::msg("Connection closed"))?,
            Err(_) => {
                lock(&self.shared.pending).remove(&id);
                let ms = CALL_TIMEOUT.as_millis();
                Err(Error::msg(format!("RPC call to {method} timed out after {ms}ms")))
            }
        }
    }

    async fn stream(&self, method: &str, args: Vec<Value>) -> Result<CallStream> {
        let (items, stream) = CallStream::channel();
        self.start_call(method, args, PendingCall::Stream(items))?;
        Ok(stream)
    }
}

impl fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentClient").field("identity", &self.identity()).finish_non_exhaustive()
    }
}

type ClientSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The client's socket task: writes what the handle queues, routes what the server sends.
async fn drive(
    mut ws: ClientSocket,
    mut outgoing: mpsc::UnboundedReceiver<WsMessage>,
    shared: Arc<Session>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut state_follows = false;
    loop {
        tokio::select! {
            out = outgoing.recv() => match out {
                Some(message) => {
                    let closing = matches!(message, WsMessage::Close(_));
                    if ws.send(message).await.is_err() || closing {
                        break;
                    }
                }
                None => break,
            },
            frame = ws.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => {
                    let Some(frame) = ServerFrame::parse(&text) else { continue };
                    match frame {
                        ServerFrame::Identity { name, agent, state_follows: follows } => {
                            *lock(&shared.identity) = Some((name.into_owned(), agent.into_owned()));
                            state_follows = follows;
                            if !state_follows {
                                ready.take().map(|ready| ready.send(()));
                            }
                        }
                        ServerFrame::State { state } => {
                            shared.state.send_replace(Some(state));
                            if state_follows {
                                state_follows = false;
                                ready.take().map(|ready| ready.send(()));
                            }
                        }
                        ServerFrame::StateError { error } => {
                            shared.state_errors.send_replace(Some(error.into_owned()));
                        }
                        ServerFrame::Rpc(answer) => {
                            let answer = answer.into_owned();
                            let mut pending = lock(&shared.pending);
                            let id = answer.id.clone();
                            let more = pending.remove(&id).and_then(|call| call.deliver(answer));
                            if let Some(more) = more {
                                pending.insert(id, more);
                            }
                        }
                        ServerFrame::McpServers { .. } => {}
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // No call can start any more; then fail those still waiting.
    outgoing.close();
    for (_, call) in lock(&shared.pending).drain() {
        call.fail("Connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u64) -> RpcResponse {
        RpcResponse::result("s", Some(Value::from(n)), false)
    }

    #[tokio::test]
    async fn a_consumer_that_falls_behind_gets_a_cut_stream_not_unbounded_memory() {
        let (items, mut stream) = CallStream::channel();
        let mut pending = Some(PendingCall::Stream(items));
        let mut delivered = 0;
        while let Some(call) = pending.take() {
            pending = call.deliver(chunk(delivered));
            delivered += 1;
        }
        // The buffer took STREAM_BUFFER chunks; the next one found it full and cut the stream.
        assert_eq!(delivered, STREAM_BUFFER as u64 + 1);
        for n in 0..STREAM_BUFFER as u64 {
            let item = stream.next().await.expect("a chunk").expect("not an error");
            assert_eq!(item, StreamItem::Chunk(Value::from(n)));
        }
        let cut = stream.next().await.expect("one more item").expect_err("the cut");
        assert!(cut.to_string().starts_with("the stream was cut"), "{cut}");
        assert!(stream.next().await.is_none());
    }
}
