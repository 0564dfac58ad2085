//! One task per WebSocket: upgrade, then relay frames to the instance mailbox and the outbox
//! to the client, and run the close handshake.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame as WireCloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Error as WsError, Message as WsMessage};
use warp::reply::Reply;

use crate::connection::{CloseFrame, ConnectionKey, ConnectionParts, close_code, connection_id};
use crate::error::Error;
use crate::host::{ConnectRequest, Event};
use crate::instances::Instance;
use crate::message::{Message, Text};
use crate::outbox::{self, Link, Outgoing};
use crate::registry::AgentClass;
use crate::request::{ConnectionContext, query_param};
use crate::server::{ConnectionSlot, Shared};
use crate::storage::durability::{GroupCommit, WriteSeq};

use super::frames::Frames;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;

/// `Upgrade: websocket` (case-insensitive), as the reference tests it.
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade (101) and starts the socket task, or says what is wrong with it.
pub(super) fn upgrade(
    shared: Arc<Shared>,
    class: AgentClass,
    name: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
) -> warp::reply::Response {
    let bad = |why: &'static str| super::text(StatusCode::BAD_REQUEST, why);
    if method != Method::GET {
        return bad("Invalid WebSocket upgrade: the method must be GET");
    }
    let has_upgrade_token = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !has_upgrade_token {
        return bad("Invalid WebSocket upgrade: `Connection: upgrade` is missing");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        let mut response =
            super::text(StatusCode::UPGRADE_REQUIRED, "Unsupported WebSocket version: use 13");
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad("Invalid WebSocket upgrade: `Sec-WebSocket-Key` is missing");
    };
    let Some(on_upgrade) = on_upgrade else {
        return bad("Invalid WebSocket upgrade: the connection cannot be upgraded");
    };
    let Some(slot) = shared.admit_connection() else {
        tracing::warn!("refusing a WebSocket: max_connections reached");
        return super::text(StatusCode::SERVICE_UNAVAILABLE, "Too many connections");
    };
    let accept = derive_accept_key(key.as_bytes());
    let id = connection_id(query_param(uri.query(), "_pk").as_deref());
    let conn_ctx = ConnectionContext::new(method, uri, headers);
    let opening = Box::new(Opening { slot, on_upgrade, shared, class, name, id, conn_ctx });
    tokio::spawn(async move {
        // The task keeps only the relay for the socket's life: setting up runs in an
        // allocation of its own, freed before the relay starts.
        let Some(mut socket) = Box::pin(opening.open()).await else { return };
        socket.relay().await;
    });
    let mut response = http::Response::new(bytes::Bytes::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response.into_response()
}

/// What an accepted upgrade needs until its socket joins the instance.
struct Opening {
    slot: ConnectionSlot,
    on_upgrade: OnUpgrade,
    shared: Arc<Shared>,
    class: AgentClass,
    name: String,
    id: Arc<str>,
    conn_ctx: ConnectionContext,
}

impl Opening {
    /// Finishes the upgrade and delivers the connect event; `None` if the socket went away or
    /// the instance could not take it (the client is told to try again later).
    async fn open(self: Box<Self>) -> Option<Socket> {
        let Opening { slot, on_upgrade, shared, class, name, id, conn_ctx } = *self;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return None;
            }
        };
        let limits = &shared.limits;
        let config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer_size)
            .max_message_size(Some(limits.max_message_size))
            .max_frame_size(Some(limits.max_message_size));
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let key = shared.next_connection_key();
        let link = Arc::new(Link::new(shared.limits.outbox_capacity));
        let parts = ConnectionParts {
            key,
            id,
            uri: conn_ctx.url().into(),
            outbox: outbox::Sender(link.clone()),
        };
        let connect = Event::Connect(Box::new(ConnectRequest { parts, conn_ctx }));
        let dispatched = shared.instances.dispatch(&class, &name, &shared, connect).await;
        let Some((mailbox, instance)) = dispatched else {
            // The instance could not be started (max_instances, shutting down, or it kept being
            // evicted under our feet): try again later.
            let frame = wire_close(close_code::OUTBOX_FULL, "Server at capacity");
            let _ = timeout(shared.limits.close_timeout, ws.close(Some(frame))).await;
            return None;
        };
        Some(Socket {
            ws,
            frames: Frames::default(),
            link,
            mailbox,
            instance,
            key,
            pending: None,
            held: None,
            shared,
            _slot: slot,
        })
    }
}

struct Socket {
    ws: Ws,
    /// Data frames on their way out (written by us, not by tungstenite).
    frames: Frames,
    /// The outbox, and the forced close.
    link: Arc<Link>,
    mailbox: mpsc::Sender<Event>,
    instance: Arc<Instance>,
    key: ConnectionKey,
    /// A message read but not yet taken by the mailbox: reading pauses until it is.
    pending: Option<Event>,
    /// A message taken from the outbox that waits for a write to be durable (the output
    /// gate); the outbox is not read until it goes out.
    held: Option<(Message, WriteSeq)>,
    shared: Arc<Shared>,
    /// Counts this socket against `max_connections` until it is dropped.
    _slot: ConnectionSlot,
}

/// How the relay loop ended.
enum End {
    /// The client sent a close frame (already answered with the same code and reason).
    PeerClosed(u16, String),
    /// We close: send this frame, then wait for the client's.
    Close(CloseFrame),
    /// The outbox overflowed: drop what is queued, then close.
    Forced(CloseFrame),
    /// The transport broke (reset, EOF without close): 1006.
    Abnormal,
}

impl Socket {
    /// Relays until the socket ends, then closes it. (`&mut self`, not `self`: a future that
    /// takes its argument by value stores it twice.)
    async fn relay(&mut self) {
        let end = self.relay_until_end().await;
        // The closing steps are rare: boxed, they add nothing to every socket's task.
        Box::pin(self.finish(end)).await;
    }

    /// Runs the close and tells the instance how it went.
    async fn finish(&mut self, end: End) {
        // Nothing more will be written: later sends fail as closed instead of filling up.
        self.link.close();
        if let Some(event) = self.pending.take() {
            let _ = self.mailbox.send(event).await;
        }
        let (code, reason, was_clean) = match end {
            End::PeerClosed(code, reason) => {
                // tungstenite queued the reply (same code and reason); push it out.
                let _ = timeout(self.shared.limits.close_timeout, self.ws.flush()).await;
                (code, reason, true)
            }
            End::Close(frame) | End::Forced(frame) => self.close_handshake(frame).await,
            End::Abnormal => (1006, String::new(), false),
        };
        let _ = self.mailbox.send(Event::Close { key: self.key, code, reason, was_clean }).await;
    }

    async fn relay_until_end(&mut self) -> End {
        let link = self.link.clone();
        let shared = self.shared.clone();
        let going_away = || {
            End::Close(CloseFrame {
                code: close_code::GOING_AWAY,
                reason: "Server shutting down".into(),
            })
        };
        let mut shutdown = shared.shutdown_signal();
        if *shutdown.borrow_and_update() {
            return going_away();
        }
        // One future each for the whole relay: re-creating them per iteration would lock and
        // register a waiter on every message.
        let forced = link.forced();
        let shutting_down = shutdown.changed();
        tokio::pin!(forced, shutting_down);
        loop {
            // Each branch says what to do; doing it needs `&mut self`, so it happens after the
            // select has let go of the branches' borrows.
            let step = tokio::select! {
                frame = &mut forced => return End::Forced(frame),
                _ = &mut shutting_down => Step::Drain,
                () = wait_held(&shared, self.held.as_ref().map(|(_, after)| *after)),
                    if self.held.is_some() => Step::WriteHeld,
                permit = self.mailbox.reserve(), if self.pending.is_some() => match permit {
                    Ok(permit) => {
                        permit.send(self.pending.take().expect("guarded by the branch"));
                        continue;
                    }
                    Err(_) => return End::Close(CloseFrame {
                        code: close_code::GOING_AWAY,
                        reason: "Agent unavailable".into(),
                    }),
                },
                outgoing = link.pop(), if self.held.is_none() => match outgoing {
                    Some(Outgoing::Message(message, after)) if shared.commits.is_durable(after) => {
                        Step::Write(message)
                    }
                    Some(Outgoing::Message(message, after)) => {
                        self.held = Some((message, after));
                        continue;
                    }
                    Some(Outgoing::Close(frame, after)) => Step::Close(frame, after),
                    // Every handle on this connection is gone: the instance dropped it.
                    None => return End::Close(CloseFrame {
                        code: close_code::GOING_AWAY,
                        reason: "Agent unavailable".into(),
                    }),
                },
                frame = self.ws.next(), if self.pending.is_none() => {
                    let limit = self.shared.limits.max_message_size;
                    match on_frame(frame, self.key, limit, &self.instance) {
                        Read::Event(event) => {
                            self.pending = Some(event);
                            continue;
                        }
                        Read::Nothing => continue,
                        Read::AutoResponse(response) => Step::AutoRespond(response),
                        Read::End(end) => return end,
                        Read::Fail(error, end) => {
                            let error = Event::Error { key: self.key, error };
                            let _ = Box::pin(self.mailbox.send(error)).await;
                            return end;
                        }
                    }
                }
            };
            let end = match step {
                Step::WriteHeld => match self.held.take() {
                    Some((message, _)) => self.write(message, &mut forced).await,
                    None => None,
                },
                Step::Write(message) => self.write(message, &mut forced).await,
                // The rare steps are boxed: they add nothing to every socket's task.
                Step::AutoRespond(response) => Box::pin(self.auto_respond(response)).await,
                Step::Close(frame, after) => {
                    Some(Box::pin(self.close_after(frame, after, &mut forced)).await)
                }
                Step::Drain => {
                    Box::pin(self.drain()).await;
                    Some(going_away())
                }
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Closes once write `after` is durable: a close can acknowledge a write too.
    async fn close_after(
        &mut self,
        frame: CloseFrame,
        after: WriteSeq,
        forced: &mut Pin<&mut impl Future<Output = CloseFrame>>,
    ) -> End {
        tokio::select! {
            () = self.shared.commits.durable(after) => End::Close(frame),
            frame = forced.as_mut() => End::Forced(frame),
        }
    }

    /// Shutdown: writes what is queued (waiting for its writes to be durable), within the
    /// close timeout, before the 1001 close.
    async fn drain(&mut self) {
        let commits = &self.shared.commits;
        let drain = async {
            self.ws.flush().await.map_err(io::Error::other)?;
            let io = self.ws.get_mut();
            if let Some((message, after)) = self.held.take() {
                commits.durable(after).await;
                put(&mut self.frames, &self.link, message);
            }
            while let Some(Outgoing::Message(message, after)) = self.link.try_pop() {
                if self.frames.is_full() {
                    self.frames.write_out(io).await?;
                }
                commits.durable(after).await;
                put(&mut self.frames, &self.link, message);
            }
            self.frames.finish(io).await
        };
        let _ = timeout(self.shared.limits.close_timeout, drain).await;
    }

    /// Answers the auto-response request straight away, ahead of the outbox.
    async fn auto_respond(&mut self, response: Message) -> Option<End> {
        self.link.auto_responded();
        let send = async {
            self.ws.flush().await.map_err(io::Error::other)?;
            self.frames.push(response);
            self.frames.finish(self.ws.get_mut()).await
        };
        match timeout(self.shared.limits.send_timeout, send).await {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(End::Abnormal),
            Err(_elapsed) => Some(End::Forced(CloseFrame {
                code: close_code::OUTBOX_FULL,
                reason: "Send timed out: client is not reading".into(),
            })),
        }
    }

    /// Writes `first` and what else is queued and released, within the send timeout.
    async fn write(
        &mut self,
        first: Message,
        forced: &mut Pin<&mut impl Future<Output = CloseFrame>>,
    ) -> Option<End> {
        let commits = &self.shared.commits;
        let stall_limit = self.shared.limits.send_timeout;
        let written = {
            let write = write_batch(&mut self.ws, &mut self.frames, &self.link, commits, first);
            let mut write = pin!(write);
            // Most writes finish at once (the socket buffer has room): no timer for those, and
            // the others' timer lives in its own allocation, not in every socket's task.
            match poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
                Poll::Ready(written) => Some(written),
                Poll::Pending => {
                    let stalled = Box::pin(tokio::time::sleep(stall_limit));
                    tokio::select! {
                        written = &mut write => Some(written),
                        () = stalled => None,
                        frame = forced.as_mut() => return Some(End::Forced(frame)),
                    }
                }
            }
        };
        match written {
            Some(Ok(Batch::Done)) => None,
            Some(Ok(Batch::Held(message, after))) => {
                self.held = Some((message, after));
                None
            }
            Some(Ok(Batch::Close(close, after))) => {
                Some(Box::pin(self.close_after(close, after, forced)).await)
            }
            Some(Err(_)) => Some(End::Abnormal),
            None => {
                tracing::warn!(
                    "closing connection: a write stalled past send_timeout, the client is not reading"
                );
                Some(End::Forced(CloseFrame {
                    code: close_code::OUTBOX_FULL,
                    reason: "Send timed out: client is not reading".into(),
                }))
            }
        }
    }

    /// Sends our close frame and waits for the client's, within the close timeout.
    /// Returns what `on_close` gets: the client's code and reason, or 1006 if none came.
    async fn close_handshake(&mut self, frame: CloseFrame) -> (u16, String, bool) {
        let wait = self.shared.limits.close_timeout;
        let handshake = async {
            // A write cut short (the send timeout, a forced close) ends its frame first.
            self.frames.finish(self.ws.get_mut()).await.ok()?;
            self.ws
                .send(WsMessage::Close(Some(wire_close(frame.code, &frame.reason))))
                .await
                .ok()?;
            while let Some(next) = self.ws.next().await {
                match next {
                    Ok(WsMessage::Close(reply)) => {
                        return Some(match reply {
                            Some(reply) => {
                                (u16::from(reply.code), reply.reason.as_str().to_owned())
                            }
                            None => (1005, String::new()),
                        });
                    }
                    Ok(_) => {} // data after our close frame is dropped
                    Err(_) => return None,
                }
            }
            None
        };
        match timeout(wait, handshake).await {
            Ok(Some((code, reason))) => (code, reason, true),
            _ => (1006, String::new(), false),
        }
    }
}

/// How a write batch ended.
enum Batch {
    /// The outbox is empty (or the batch is full).
    Done,
    /// The next message waits for a write to be durable.
    Held(Message, WriteSeq),
    /// A close frame came next, to be sent once write `WriteSeq` is durable.
    Close(CloseFrame, WriteSeq),
}

/// Resolves once the held message may go out.
async fn wait_held(shared: &Shared, after: Option<WriteSeq>) {
    if let Some(after) = after {
        shared.commits.durable(after).await;
    }
}

/// What the relay does after one select.
enum Step {
    Write(Message),
    WriteHeld,
    AutoRespond(Message),
    Close(CloseFrame, WriteSeq),
    /// The server shuts down: flush the outbox, then close with 1001.
    Drain,
}

/// Writes `first` and whatever else is queued and released (up to a batch), then flushes once.
async fn write_batch(
    ws: &mut Ws,
    frames: &mut Frames,
    link: &Link,
    commits: &GroupCommit,
    first: Message,
) -> io::Result<Batch> {
    // tungstenite's own frames (a pong) go out whole before ours.
    ws.flush().await.map_err(io::Error::other)?;
    let io = ws.get_mut();
    put(frames, link, first);
    let mut end = Batch::Done;
    for _ in 1..WRITE_BATCH {
        if frames.is_full() {
            frames.write_out(io).await?;
        }
        match link.try_pop() {
            Some(Outgoing::Message(message, after)) if commits.is_durable(after) => {
                put(frames, link, message);
            }
            Some(Outgoing::Message(message, after)) => {
                end = Batch::Held(message, after);
                break;
            }
            Some(Outgoing::Close(frame, after)) => {
                end = Batch::Close(frame, after);
                break;
            }
            None => break,
        }
    }
    frames.finish(io).await?;
    Ok(end)
}

/// Adds one message to the batch; from then on it is off the outbox budget.
fn put(frames: &mut Frames, link: &Link, message: Message) {
    link.written(message.len());
    frames.push(message);
}

fn wire_close(code: u16, reason: &str) -> WireCloseFrame {
    WireCloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::from(code),
        reason: reason.into(),
    }
}

/// What a frame from the client asks for.
enum Read {
    /// An event for the instance.
    Event(Event),
    /// The auto-response request: answer with this, the instance never hears of it.
    AutoResponse(Message),
    /// A control frame, already handled.
    Nothing,
    /// The relay ends.
    End(End),
    /// The relay ends, and `on_error` hears why.
    Fail(Error, End),
}

/// Turns what the client sent into an event, an auto-response, or how the relay ends.
fn on_frame(
    frame: Option<Result<WsMessage, WsError>>,
    key: ConnectionKey,
    limit: usize,
    instance: &Instance,
) -> Read {
    let end = match frame {
        Some(Ok(WsMessage::Text(text))) => {
            if let Some(response) = instance.auto_response.answer(&text) {
                return Read::AutoResponse(response);
            }
            let message = Message::Text(Text::from_wire(text));
            return Read::Event(Event::Message { key, message });
        }
        Some(Ok(WsMessage::Binary(bytes))) => {
            return Read::Event(Event::Message { key, message: Message::Binary(bytes) });
        }
        // tungstenite answers pings itself, without the instance: hibernation holds.
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {
            return Read::Nothing;
        }
        Some(Ok(WsMessage::Close(frame))) => {
            let (code, reason) = match frame {
                Some(frame) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
                None => (1005, String::new()),
            };
            End::PeerClosed(code, reason)
        }
        Some(Err(WsError::Capacity(e))) => {
            let error = Error::msg(format!("message over the {limit}-byte limit: {e}"));
            let end = End::Close(CloseFrame {
                code: close_code::MESSAGE_TOO_BIG,
                reason: "Message too big".into(),
            });
            return Read::Fail(error, end);
        }
        // The peer went away without a close frame: a disconnect, not an error.
        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => End::Abnormal,
        Some(Err(WsError::Protocol(e))) => {
            let error = Error::msg(format!("websocket protocol error: {e}"));
            let end = End::Close(CloseFrame { code: 1002, reason: "Protocol error".into() });
            return Read::Fail(error, end);
        }
        Some(Err(WsError::Utf8(_))) => {
            let error = Error::msg("a text frame was not valid UTF-8");
            let end = End::Close(CloseFrame { code: 1007, reason: "Invalid UTF-8".into() });
            return Read::Fail(error, end);
        }
        Some(Err(_)) | None => End::Abnormal,
    };
    Read::End(end)
}
