//! One task per WebSocket, once upgraded: it relays the client's frames to the instance
//! mailbox and what the link cannot write at once to the client, and runs the close handshake.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::error::Error;
use crate::instance::mailbox::{Permit, Refused};
use crate::instance::{ConnectionKey, Event, Instance};
use crate::message::{Message, Text};
use crate::outbox::{Link, Next, SocketSlot};
use crate::storage::durability::WriteSeq;
use crate::transport::edge::Edge;
use crate::wire::frame::{OP_CLOSE, OP_PONG};
use crate::wire::read::{Incoming, ReadError, Reader};
use crate::wire::{CloseFrame, close_code};

/// What a socket that joined its instance has, whether it starts relaying or resumes from
/// parking.
pub(super) struct Joined {
    pub(super) tcp: Arc<TcpStream>,
    pub(super) link: Arc<Link>,
    pub(super) instance: Arc<Instance>,
    pub(super) key: ConnectionKey,
    pub(super) edge: Arc<Edge>,
    pub(super) slot: SocketSlot,
}

pub(super) struct Socket {
    pub(super) tcp: Arc<TcpStream>,
    /// The client's frames, as they arrive.
    pub(super) reader: Reader,
    /// The outbox and the write side of the socket, and the forced close.
    pub(super) link: Arc<Link>,
    /// The instance, whose mailbox takes the client's messages.
    pub(super) instance: Arc<Instance>,
    pub(super) key: ConnectionKey,
    /// A message read while the mailbox was full: reading pauses until it is taken. (Boxed,
    /// like `waiting`: rare, they cost every socket's task nothing until they happen.)
    pub(super) pending: Option<Box<HeldEvent>>,
    /// The first queued message waits for a write to be durable (the output gate): resolves
    /// once it is. Nothing is written meanwhile.
    pub(super) waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    pub(super) edge: Arc<Edge>,
    /// Counts this socket against `max_connections`, and lists it for shutdown, until it is
    /// dropped.
    pub(super) slot: SocketSlot,
}

/// How the relay loop ended.
enum End {
    /// The client sent a close frame: answer with the same code and reason.
    PeerClosed(u16, String),
    /// We close: send this frame, then wait for the client's.
    Close(CloseFrame),
    /// A forced close (the outbox overflowed, or a close could not be queued): drop what is
    /// queued, then close.
    Forced(CloseFrame),
    /// What the client sent cannot be taken: `on_error` hears why, then we close.
    Failed(Error, CloseFrame),
    /// The transport broke (reset, EOF without close): 1006.
    Abnormal,
    /// The instance hibernated and the socket is idle: park it.
    Park,
}

/// Relays until the socket closes, or parks (its task ends; it comes back in a new one).
///
/// An `async` block, not an `async fn` taking the socket: such a function keeps its argument
/// twice in its future, which every socket's task would carry.
#[allow(clippy::manual_async_fn)]
pub(super) fn serve(mut socket: Socket) -> impl Future<Output = ()> + Send {
    async move {
        loop {
            match socket.relay_until_end().await {
                End::Park => match socket.park() {
                    None => return,
                    Some(back) => socket = back, // something came up: relay on
                },
                // The closing steps are rare: boxed, they add nothing to every socket's task.
                end => return Box::pin(socket.finish(end)).await,
            }
        }
    }
}

impl Socket {
    /// A socket that reads `read` (bytes already received) before what it reads from `tcp`.
    pub(super) fn new(joined: Joined, read: &[u8]) -> Self {
        let Joined { tcp, link, instance, key, edge, slot } = joined;
        let reader = Reader::new(read, edge.input.clone());
        Socket { tcp, reader, link, instance, key, pending: None, waiting: None, edge, slot }
    }

    /// Whether the socket task reads: its last message is in the mailbox, and the ones there
    /// hold less than a message's worth of bytes (the instance's turns wake it when they do).
    fn may_read(&self) -> bool {
        self.pending.is_none() && !self.link.inbound_over(self.edge.limits().max_message_size)
    }

    /// Whether the socket task could park now: nothing half-read, nothing held back.
    fn may_park(&self) -> bool {
        self.reader.is_idle() && self.pending.is_none() && self.waiting.is_none()
    }

    /// Runs the close and tells the instance how it went.
    async fn finish(&mut self, end: End) {
        // `on_error` hears why first, while the connection still takes sends (as before the
        // relay ended: the agent may answer the client before it is closed).
        let end = match end {
            End::Failed(error, frame) => {
                let _ = self.instance.send(Event::Error { key: self.key, error }).await;
                End::Close(frame)
            }
            end => end,
        };
        // Nothing more will be written: later sends fail as closed instead of filling up.
        self.link.close();
        if let Some(pending) = self.pending.take() {
            let _ = self.instance.send(pending.event).await;
        }
        let (code, reason, was_clean) = match end {
            End::PeerClosed(code, reason) => {
                // The reply (same code and reason, empty for an empty close) goes after
                // whatever waits in the link; the link writes it all out.
                let payload = if code == close_code::NO_STATUS_RECEIVED {
                    Vec::new()
                } else {
                    CloseFrame::new(code, reason.as_str()).payload()
                };
                let _ = timeout(
                    self.edge.limits().close_timeout,
                    self.send_control(OP_CLOSE, &payload),
                )
                .await;
                (code, reason, true)
            }
            End::Close(frame) | End::Forced(frame) | End::Failed(_, frame) => {
                self.close_handshake(frame).await
            }
            // Not reached with `Park`: the socket parks instead of closing.
            End::Abnormal | End::Park => (close_code::ABNORMAL_CLOSURE, String::new(), false),
        };
        // The socket closes with this task, even if the agent keeps the `Connection`.
        self.link.release_socket();
        let _ = self.instance.send(Event::Close { key: self.key, code, reason, was_clean }).await;
    }

    async fn relay_until_end(&mut self) -> End {
        let link = self.link.clone();
        let edge = self.edge.clone();
        // A forced close and the server's shutdown come through the link (`poll_next`), like
        // what the agent sends: no waiter of their own in every socket's task.
        loop {
            // Each branch says what to do; doing it needs `&mut self`, so it happens after the
            // select has let go of the branches' borrows.
            let waiting = self.waiting.is_some();
            let may_park = self.may_park();
            let may_read = self.pending.is_none();
            // In a block of its own: what the select yields is gone before the step awaits,
            // so it takes no room in every socket's task.
            let step = {
                let flow = tokio::select! {
                    () = poll_fn(|cx| match &mut self.waiting {
                        Some(durable) => durable.as_mut().poll(cx),
                        None => Poll::Pending,
                    }), if waiting => {
                        self.waiting = None;
                        Flow::Relay
                    }
                    permit = poll_fn(|cx| match &mut self.pending {
                        Some(pending) => pending.permit.as_mut().poll(cx),
                        None => Poll::Pending,
                    }), if self.pending.is_some() => {
                        let sent = match (permit, self.pending.take()) {
                            (Some(permit), Some(pending)) => permit.send(pending.event).is_ok(),
                            _ => false,
                        };
                        if sent {
                            Flow::Relay
                        } else {
                            Flow::End(End::Close(CloseFrame::agent_unavailable()))
                        }
                    }
                    next = poll_fn(|cx| link.poll_next(cx, edge.commits(), waiting, may_park)) => {
                        self.next(next)
                    }
                    // Paused while our messages in the mailbox hold a message's worth: it takes
                    // some, and wakes us.
                    read = poll_fn(|cx| {
                        ready!(link.poll_inbound_room(cx, edge.input.max_message_size));
                        self.reader.poll_next(&self.tcp, cx)
                    }), if may_read => {
                        self.take_all(read)
                    }
                };
                match flow {
                    Flow::Relay => continue,
                    Flow::End(end) => return end,
                    Flow::Step(step) => step,
                }
            };
            let end = match step {
                Step::Write => {
                    self.link.encode_batch(edge.commits());
                    self.flush().await
                }
                // The rare steps are boxed: they add nothing to every socket's task.
                Step::Answer(answer) => Box::pin(self.answer(answer)).await,
                Step::Close(frame, after) => Some(Box::pin(self.close_after(frame, after)).await),
                Step::Drain => Some(
                    Box::pin(self.drain())
                        .await
                        .unwrap_or_else(|| End::Close(CloseFrame::shutting_down())),
                ),
                Step::Park => Box::pin(self.before_parking()).await,
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// What the link says to do next.
    fn next(&mut self, next: Next) -> Flow {
        Flow::Step(match next {
            Next::Write => Step::Write,
            Next::Wait(after) => {
                let edge = self.edge.clone();
                // Durable or lost: either way the link says what comes next.
                self.waiting = Some(Box::pin(async move {
                    edge.commits().durable(after).await;
                }));
                return Flow::Relay;
            }
            Next::Close(frame, after) => Step::Close(frame, after),
            Next::Forced(frame) => return Flow::End(End::Forced(frame)),
            Next::Drain => Step::Drain,
            Next::Park => Step::Park,
            // Every handle on this connection is gone: the instance dropped it.
            Next::Abandoned => return Flow::End(End::Close(CloseFrame::agent_unavailable())),
        })
    }

    /// Takes `read` and the frames already read after it, one after the other, without a
    /// select (and a look at the link) between them; stops when the mailbox is full.
    fn take_all(&mut self, mut read: Result<Incoming, ReadError>) -> Flow {
        loop {
            match self.take(read) {
                Ok(Some(answer)) => return Flow::Step(Step::Answer(answer)),
                Ok(None) => {}
                Err(end) => return Flow::End(end),
            }
            if !self.may_read() {
                return Flow::Relay; // the mailbox is full, or holds enough of ours: reading pauses
            }
            match self.reader.buffered() {
                Some(next) => read = next,
                None => return Flow::Relay,
            }
        }
    }

    /// Takes what the client sent: an event goes to the mailbox (or waits for room in it);
    /// `Some` step for the relay to run, or the end of the relay.
    fn take(&mut self, read: Result<Incoming, ReadError>) -> Result<Option<Answer>, End> {
        let limit = self.edge.limits().max_message_size;
        match on_incoming(read, self.key, limit, &self.instance) {
            Read::Event(event) => {
                if let Event::Message { message, .. } = &event {
                    self.link.queued_inbound(message.len());
                }
                self.send(event)
            }
            Read::Nothing => Ok(None),
            Read::Pong(payload) => Ok(Some(Answer::Pong(payload))),
            Read::AutoResponse(response) => Ok(Some(Answer::AutoResponse(response))),
            Read::End(end) => Err(end),
            Read::Fail(error, frame) => Err(End::Failed(error, frame)),
        }
    }

    /// Puts `event` in the mailbox, or holds it until there is room.
    fn send(&mut self, event: Event) -> Result<Option<Answer>, End> {
        match self.instance.try_send(event) {
            Ok(()) => Ok(None),
            Err(Refused::Full(event)) => {
                let permit = Box::pin(self.instance.clone().reserve());
                self.pending = Some(Box::new(HeldEvent { event, permit }));
                Ok(None)
            }
            Err(Refused::Closed) => Err(End::Close(CloseFrame::agent_unavailable())),
        }
    }

    /// Answers a ping, or the auto-response request, ahead of the outbox.
    async fn answer(&mut self, answer: Answer) -> Option<End> {
        match answer {
            Answer::Pong(payload) => {
                self.write_ahead(|link| link.encode_control(OP_PONG, &payload)).await
            }
            Answer::AutoResponse(response) => {
                self.link.auto_responded();
                self.write_ahead(|link| link.encode_first(&response)).await
            }
        }
    }

    /// Asked to park: `End::Park` unless the client sent something meanwhile (a socket resumed
    /// because it became readable reads first), or a frame is part read.
    async fn before_parking(&mut self) -> Option<End> {
        match poll_fn(|cx| Poll::Ready(self.reader.poll_next(&self.tcp, cx))).await {
            Poll::Pending if self.may_park() => Some(End::Park),
            Poll::Pending => None,
            Poll::Ready(read) => match self.take(read) {
                Ok(Some(answer)) => self.answer(answer).await,
                Ok(None) => None,
                Err(end) => Some(end),
            },
        }
    }

    /// Closes once write `after` is durable: a close can acknowledge a write too.
    async fn close_after(&mut self, frame: CloseFrame, after: WriteSeq) -> End {
        tokio::select! {
            _ = self.edge.commits().durable(after) => End::Close(frame),
            frame = poll_fn(|cx| self.link.poll_forced(cx)) => End::Forced(frame),
        }
    }

    /// Shutdown: writes what is queued (waiting for its writes to be durable), within the
    /// close timeout, before the 1001 close; a forced close meanwhile ends it with its own
    /// frame instead.
    async fn drain(&mut self) -> Option<End> {
        let (link, commits) = (&self.link, &self.edge.commits());
        let drain = async {
            loop {
                // Frames a running turn corked for this socket are waited for, not dropped.
                match poll_fn(|cx| link.poll_left(cx, commits)).await {
                    Some(Next::Write) => {
                        link.encode_batch(commits);
                        if poll_fn(|cx| link.poll_flush(cx)).await.is_err() {
                            return None;
                        }
                    }
                    Some(Next::Wait(after)) => {
                        commits.durable(after).await;
                    }
                    Some(Next::Forced(frame)) => return Some(End::Forced(frame)),
                    // A close the agent queued (the 1001 replaces it), or nothing left.
                    _ => {
                        let _ = poll_fn(|cx| link.poll_flush(cx)).await;
                        return None;
                    }
                }
            }
        };
        timeout(self.edge.limits().close_timeout, drain).await.ok().flatten()
    }

    /// Puts a frame ahead of the queue with `encode` (which says no while a large payload is
    /// half-written or too much waits: flush, then try again), then writes it, within the send
    /// timeout.
    async fn write_ahead(&mut self, encode: impl Fn(&Link) -> bool) -> Option<End> {
        while !encode(&self.link) {
            if let Some(end) = self.flush().await {
                return Some(end);
            }
        }
        self.flush().await
    }

    /// Writes what the link has encoded, within the send timeout.
    async fn flush(&mut self) -> Option<End> {
        let link = &self.link;
        // Most writes finish at once (the socket buffer has room): no timer for those, and
        // the wait for the others lives in its own allocation, not in every socket's task.
        match poll_fn(|cx| Poll::Ready(link.poll_flush(cx))).await {
            Poll::Ready(Ok(())) => None,
            Poll::Ready(Err(_)) => Some(End::Abnormal),
            Poll::Pending => Box::pin(self.flush_stalled()).await,
        }
    }

    /// Waits for the socket to take what the link has, up to the send timeout.
    async fn flush_stalled(&mut self) -> Option<End> {
        let link = &self.link;
        let stalled = tokio::time::sleep(self.edge.limits().send_timeout);
        let flushed = tokio::select! {
            flushed = poll_fn(|cx| link.poll_flush(cx)) => Some(flushed),
            () = stalled => None,
            frame = poll_fn(|cx| link.poll_forced(cx)) => return Some(End::Forced(frame)),
            // Shutdown does not wait out the send timeout for a client that is not reading.
            () = poll_fn(|cx| link.poll_draining(cx)) => {
                return Some(End::Close(CloseFrame::shutting_down()));
            }
        };
        match flushed {
            Some(Ok(())) => None,
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

    /// Writes a control frame after what waits in the link (no send timeout: the caller bounds
    /// it with the close timeout).
    async fn send_control(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let link = &self.link;
        while !link.encode_control(opcode, payload) {
            poll_fn(|cx| link.poll_flush(cx)).await?;
        }
        poll_fn(|cx| link.poll_flush(cx)).await
    }

    /// Sends our close frame and waits for the client's, within the close timeout.
    /// Returns what `on_close` gets: the client's code and reason, or 1006 if none came.
    async fn close_handshake(&mut self, frame: CloseFrame) -> (u16, String, bool) {
        let wait = self.edge.limits().close_timeout;
        let handshake = async {
            // A frame half-written (the send timeout, a forced close) is finished first: the
            // close frame goes through the link, after it.
            let payload = frame.payload();
            self.send_control(OP_CLOSE, &payload).await.ok()?;
            if let Some(mut rest) = self.reader.closing() {
                let skipped = poll_fn(|cx| self.reader.poll_skip(&self.tcp, cx, &mut rest));
                skipped.await.ok()?;
            }
            loop {
                match poll_fn(|cx| self.reader.poll_next(&self.tcp, cx)).await {
                    Ok(Incoming::Close(reply)) => {
                        return Some(
                            reply.unwrap_or((close_code::NO_STATUS_RECEIVED, String::new())),
                        );
                    }
                    Ok(_) => {} // data after our close frame is dropped
                    Err(ReadError::Gone(_)) => return None,
                    // A message refused for its size: its bytes are read past (its later
                    // fragments dropped), and the client's close reply after them is read.
                    Err(ReadError::TooBig(_))
                        if let Some(mut rest) = self.reader.drop_refused() =>
                    {
                        let skipped = poll_fn(|cx| self.reader.poll_skip(&self.tcp, cx, &mut rest));
                        if skipped.await.is_err() {
                            return None;
                        }
                    }
                    Err(_) => {
                        // We close because of what the client sent, and the rest of it cannot
                        // be read as frames: say we are done writing, and drop what it sends
                        // until it hangs up, so the close frame is not lost to a reset.
                        let tcp = socket2::SockRef::from(&*self.tcp);
                        let _ = tcp.shutdown(std::net::Shutdown::Write);
                        poll_fn(|cx| self.reader.poll_discard(&self.tcp, cx)).await;
                        return None;
                    }
                }
            }
        };
        match timeout(wait, handshake).await {
            Ok(Some((code, reason))) => (code, reason, true),
            _ => (close_code::ABNORMAL_CLOSURE, String::new(), false),
        }
    }
}

/// A message read while the mailbox was full, and the wait for room.
pub(super) struct HeldEvent {
    event: Event,
    permit: Pin<Box<dyn Future<Output = Option<Permit<Instance>>> + Send>>,
}

/// What comes of one pass of the relay loop.
enum Flow {
    /// Nothing more to do: select again.
    Relay,
    /// Run this step.
    Step(Step),
    /// The relay ends.
    End(End),
}

/// What the relay does after one select.
enum Step {
    /// Write what the link has: bytes half-written, and released messages.
    Write,
    Answer(Answer),
    Close(CloseFrame, WriteSeq),
    /// The server shuts down: flush the outbox, then close with 1001.
    Drain,
    /// The instance hibernated: park, unless the client sent something meanwhile.
    Park,
}

/// What the socket answers itself, without the instance.
enum Answer {
    /// A pong carrying this.
    Pong(bytes::Bytes),
    /// The auto-response.
    AutoResponse(Message),
}

/// What a frame from the client asks for.
enum Read {
    /// An event for the instance.
    Event(Event),
    /// The auto-response request: answer with this, the instance never hears of it.
    AutoResponse(Message),
    /// A pong, nothing to do.
    Nothing,
    /// A ping: answer with a pong carrying this.
    Pong(bytes::Bytes),
    /// The relay ends.
    End(End),
    /// The relay ends, `on_error` hears why, and we close with this frame.
    Fail(Error, CloseFrame),
}

/// Turns what the client sent into an event, an auto-response, or how the relay ends.
fn on_incoming(
    read: Result<Incoming, ReadError>,
    key: ConnectionKey,
    limit: usize,
    instance: &Instance,
) -> Read {
    let (error, end) = match read {
        Ok(Incoming::Text(text)) => {
            if let Some(response) = instance.auto_response.answer(&text) {
                return Read::AutoResponse(response);
            }
            let message = Message::Text(Text::from_wire(text));
            return Read::Event(Event::Message { key, message });
        }
        Ok(Incoming::Binary(bytes)) => {
            return Read::Event(Event::Message { key, message: Message::Binary(bytes) });
        }
        // Answered here, without the instance: hibernation holds.
        Ok(Incoming::Ping(payload)) => return Read::Pong(payload),
        Ok(Incoming::Pong) => return Read::Nothing,
        Ok(Incoming::Close(frame)) => {
            let (code, reason) = frame.unwrap_or((close_code::NO_STATUS_RECEIVED, String::new()));
            return Read::End(End::PeerClosed(code, reason));
        }
        Err(ReadError::TooBig(size)) => (
            format!("message over the {limit}-byte limit: {size} bytes"),
            CloseFrame::new(close_code::MESSAGE_TOO_BIG, "Message too big"),
        ),
        Err(ReadError::Protocol(why)) => (
            format!("websocket protocol error: {why}"),
            CloseFrame::new(close_code::PROTOCOL_ERROR, "Protocol error"),
        ),
        Err(ReadError::Utf8) => (
            "a text frame was not valid UTF-8".to_owned(),
            CloseFrame::new(close_code::INVALID_PAYLOAD, "Invalid UTF-8"),
        ),
        Err(ReadError::Overloaded) => (
            "unfinished messages are over the server's budget (max_unfinished_input)".to_owned(),
            CloseFrame::new(close_code::TRY_AGAIN_LATER, "Server busy"),
        ),
        Err(ReadError::Slow) => (
            "a message was not finished within the message timeout".to_owned(),
            CloseFrame::new(close_code::POLICY_VIOLATION, "Message not finished in time"),
        ),
        // The peer went away without a close frame: a disconnect, not an error.
        Err(ReadError::Gone(error)) => {
            if let Some(error) = error {
                tracing::debug!("websocket read failed: {error}");
            }
            return Read::End(End::Abnormal);
        }
    };
    Read::Fail(Error::msg(error), end)
}
