//! The [`Connection`] object: id, uri, tags, typed per-connection state, send and close.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::error::ConnectionError;
pub(crate) use crate::instance::event::{ConnectionKey, ConnectionParts};
use crate::instance::shared::Instance;
use crate::message::Message;
use crate::outbox::corks::{Append, Batch, CorkMark};

use crate::cluster::frames::Target;
use crate::outbox::{Link, Outbound, Outlet, PushError, RemoteOutlet, seal_after};
use crate::storage::durability::WriteSeq;
use crate::sync::lock;
use crate::wire::{CloseFrame, close_code, is_sendable_close_code, truncate_reason};

/// One connected client, as Cloudflare's `Connection`: `id`, `uri`, `state`, `set_state`, `send`,
/// `close`, `tags` and `server` (the instance name).
///
/// `S` is the agent's per-connection state type (`#[agent(connection_state = S)]`). The handle
/// is cheap to clone; all clones refer to the same connection.
///
/// ```no_run
/// use agents_runtime::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// /// What each socket keeps: who is on it.
/// #[derive(Clone, Serialize, Deserialize)]
/// struct User {
///     name: String,
/// }
///
/// #[derive(Default)]
/// struct Lobby;
///
/// #[agent(connection_state = User)]
/// impl Lobby {
///     fn on_connect(&mut self, _ctx: &mut Context<Self>, conn: &Connection<User>, conn_ctx: &ConnectionContext) -> Result<()> {
///         let name = conn_ctx.query("name").map_or("guest".into(), |name| name.into_owned());
///         conn.set_state(User { name })?; // `connection.setState`, survives hibernation
///         conn.send(format!("hello, you are {}", conn.id()))?;
///         Ok(())
///     }
///
///     fn on_message(&mut self, _ctx: &mut Context<Self>, conn: &Connection<User>, message: Message) -> Result<()> {
///         let name = conn.with_state(|user| user.map(|user| user.name.clone()));
///         if message.as_text() == Some("bye") {
///             conn.close(1000, "goodbye")?;
///         } else {
///             conn.send(format!("{name:?} said {:?}", message.as_text()))?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub struct Connection<S = ()> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    key: ConnectionKey,
    id: Arc<str>,
    uri: Box<str>,
    /// Boxed twice: a thin pointer, as every connection carries the slot and most never set
    /// tags.
    tags: OnceLock<Box<Box<[Arc<str>]>>>,
    state: Mutex<Option<S>>,
    closing: AtomicBool,
    readonly: AtomicBool,
    protocol: AtomicBool,
    /// The link to the socket (dropped with the last handle, which tells the socket task), or
    /// the route to the node that holds it.
    link: Outlet,
    /// Where the instance's running turn logs frames for this connection.
    cork: CorkMark,
    /// The instance: its name, its output gate (read on every send) and the limits.
    instance: Arc<Instance>,
}

impl<S> Clone for Connection<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<S: serde::Serialize> Connection<S> {
    pub(crate) fn new(parts: ConnectionParts, instance: Arc<Instance>) -> Self {
        Self {
            inner: Arc::new(Inner {
                key: parts.key,
                id: parts.id,
                uri: parts.uri,
                tags: OnceLock::new(),
                state: Mutex::new(None),
                closing: AtomicBool::new(false),
                readonly: AtomicBool::new(false),
                protocol: AtomicBool::new(true),
                link: parts.link,
                cork: CorkMark::default(),
                instance,
            }),
        }
    }

    /// Replaces the connection state (`connection.setState(state)`).
    ///
    /// The state must serialize to at most the server's `max_connection_state_size` bytes of
    /// JSON; otherwise the old state is kept and [`ConnectionError::StateTooLarge`] is returned.
    pub fn set_state(&self, state: S) -> Result<(), ConnectionError> {
        self.check_state_size(&state)?;
        *lock(&self.inner.state) = Some(state);
        Ok(())
    }

    /// Computes the new state from the current one (`connection.setState(prev => next)`).
    ///
    /// The closure runs without holding the state's lock, so it may use the connection; while
    /// it runs, the state reads as `None`. If the new state is over the limit, the old one is
    /// put back.
    pub fn update_state(
        &self,
        update: impl FnOnce(Option<&S>) -> S,
    ) -> Result<(), ConnectionError> {
        let previous = lock(&self.inner.state).take();
        let next = update(previous.as_ref());
        let checked = self.check_state_size(&next);
        *lock(&self.inner.state) = if checked.is_ok() { Some(next) } else { previous };
        checked
    }

    fn check_state_size(&self, state: &S) -> Result<(), ConnectionError> {
        let limit = self.inner.instance.max_connection_state_size();
        let mut counter = SizeLimit { written: 0, limit };
        match serde_json::to_writer(&mut counter, state) {
            Ok(()) => Ok(()),
            Err(e) if e.is_io() => Err(ConnectionError::StateTooLarge { limit }),
            Err(e) => Err(ConnectionError::StateNotSerializable(e)),
        }
    }
}

impl<S> Connection<S> {
    /// The connection id: the client's `_pk` query parameter when it has 1 to 256 characters,
    /// otherwise a random 21-character id of `[A-Za-z0-9_-]`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The URL of the original upgrade request, query string included.
    pub fn uri(&self) -> &str {
        &self.inner.uri
    }

    /// The agent instance name this connection belongs to (`connection.server` in the docs).
    pub fn server(&self) -> &str {
        &self.inner.instance.name
    }

    /// The tags from `connection_tags`; the first is always the connection id.
    pub fn tags(&self) -> &[Arc<str>] {
        match self.inner.tags.get() {
            Some(tags) => tags,
            None => std::slice::from_ref(&self.inner.id),
        }
    }

    /// A copy of the connection state (`connection.state`), `None` until one is set.
    pub fn state(&self) -> Option<S>
    where
        S: Clone,
    {
        lock(&self.inner.state).clone()
    }

    /// Reads the connection state in place, without cloning it. The closure runs under the
    /// state's lock: it must not call state methods of the same connection.
    pub fn with_state<R>(&self, read: impl FnOnce(Option<&S>) -> R) -> R {
        read(lock(&self.inner.state).as_ref())
    }

    /// Removes the connection state (`connection.setState(null)`).
    pub fn clear_state(&self) {
        *lock(&self.inner.state) = None;
    }

    /// Queues a text or binary message for this client (`connection.send(message)`).
    ///
    /// Never waits. If the client has stopped reading and the outbox is full, the connection is
    /// closed with [`close_code::OUTBOX_FULL`] and [`ConnectionError::OutboxFull`] is returned.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), ConnectionError> {
        self.send_cow(Cow::Owned(message.into()))
    }

    /// [`send`](Self::send) for a message shared by many connections (a broadcast): copied
    /// only if it has to be queued. The `fanout` reads the instance's output gate and locks
    /// its turn once for all of them: a connection the turn already listed takes the frame
    /// without a lock of its own.
    pub(crate) fn send_batched<'a>(
        &'a self,
        message: &Message,
        fanout: &mut Option<Fanout<'a>>,
    ) -> Result<(), ConnectionError> {
        if self.is_closing() {
            return Err(ConnectionError::Closed);
        }
        let link = match &self.inner.link {
            Outlet::Local(link) => link,
            Outlet::Remote(_) => return self.push(Cow::Borrowed(message)),
        };
        let instance = &self.inner.instance;
        let fanout = match fanout {
            Some(fanout) if fanout.batch.holds(&instance.corks) => fanout,
            _ => {
                let after = self.pending_write();
                let released = instance.gate.is_settled(after);
                fanout.insert(Fanout { batch: Batch::new(&instance.corks), after, released })
            }
        };
        let (after, released, mark) = (fanout.after, fanout.released, &self.inner.cork);
        let append = if released { fanout.batch.append(mark, message) } else { Append::NotLogged };
        if let Append::Logged = append {
            return Ok(());
        }
        let budget = instance.max_outbox_bytes();
        let turn = fanout.batch.turn();
        let message = Cow::Borrowed(message);
        let holds_turn = turn.is_some();
        let out = Outbound { message, after, released, budget, mark };
        let sent = link.send_unlogged(out, turn, append);
        if sent == Ok(true) && !holds_turn {
            // The batch holds no turn, so the corks are not locked: seal in the new one.
            seal_after(&instance.corks, mark);
        }
        self.sent(sent.map(|_| ()))
    }

    fn send_cow(&self, message: Cow<'_, Message>) -> Result<(), ConnectionError> {
        if self.is_closing() {
            return Err(ConnectionError::Closed);
        }
        self.push(message)
    }

    /// The write a frame queued now must wait for (the instance's output gate).
    pub(crate) fn pending_write(&self) -> WriteSeq {
        self.inner.instance.gate.pending()
    }

    /// When the auto-response last answered this connection, if ever
    /// (`getWebSocketAutoResponseTimestamp`); see
    /// [`Context::set_websocket_auto_response`](crate::Context::set_websocket_auto_response).
    pub fn auto_response_timestamp(&self) -> Option<SystemTime> {
        self.inner.link.local()?.auto_responded_at()
    }

    /// Closes the connection with `code` and `reason` (`connection.close(code, reason)`), after
    /// the messages already queued; if the outbox is full (the client stopped reading), at once,
    /// dropping what is queued. The reason is cut to the 123 bytes a close frame can carry.
    /// Closing twice is a no-op. Once closing, the connection is left out of `get_connections`
    /// and broadcasts; `on_close` runs when the client's close frame arrives.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), ConnectionError> {
        if !is_sendable_close_code(code) {
            return Err(ConnectionError::InvalidCloseCode(code));
        }
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let frame = CloseFrame { code, reason: truncate_reason(reason).to_owned() };
        match &self.inner.link {
            Outlet::Local(link) => {
                let queued = link.push_close(frame, self.pending_write());
                if let Err((PushError::Full, frame)) = queued {
                    link.force_close(frame);
                }
            }
            Outlet::Remote(remote) => {
                let _ = remote.route.close(
                    remote.conn,
                    frame.code,
                    &frame.reason,
                    self.pending_write(),
                );
            }
        }
        Ok(())
    }

    /// Whether the connection is readonly: it gets state updates but cannot change the state
    /// (`isConnectionReadonly`). Set by `should_connection_be_readonly` or
    /// [`Context::set_connection_readonly`](crate::Context::set_connection_readonly).
    pub fn is_readonly(&self) -> bool {
        self.inner.readonly.load(Ordering::Acquire)
    }

    /// Whether the connection gets protocol frames and state broadcasts
    /// (`isConnectionProtocolEnabled`); see `should_send_protocol_messages`.
    pub fn is_protocol_enabled(&self) -> bool {
        self.inner.protocol.load(Ordering::Acquire)
    }

    pub(crate) fn set_readonly(&self, readonly: bool) {
        self.inner.readonly.store(readonly, Ordering::Release);
    }

    pub(crate) fn set_protocol_enabled(&self, enabled: bool) {
        self.inner.protocol.store(enabled, Ordering::Release);
    }

    /// Whether `close` was called or the runtime is closing this connection.
    pub fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
    }

    pub(crate) fn key(&self) -> ConnectionKey {
        self.inner.key
    }

    /// The connection's outbox and socket, for a socket on this node.
    pub(crate) fn link(&self) -> Option<&Link> {
        self.inner.link.local().map(|link| &***link)
    }

    /// The route to the socket's node, for a socket on another node (cluster mode).
    pub(crate) fn remote(&self) -> Option<&RemoteOutlet> {
        match &self.inner.link {
            Outlet::Local(_) => None,
            Outlet::Remote(remote) => Some(remote),
        }
    }

    pub(crate) fn id_arc(&self) -> &Arc<str> {
        &self.inner.id
    }

    /// The connect turn begins: the upgrade's 101, held in the link, leaves when this poll
    /// of the turn ends, with the frames the turn sends to this connection meanwhile.
    pub(crate) fn cork_response(&self) {
        if let Outlet::Local(link) = &self.inner.link {
            link.cork_response(&self.inner.instance.corks, &self.inner.cork);
        }
    }

    /// The socket is gone: from now on the connection is closing and cannot be sent to.
    pub(crate) fn mark_closed(&self) {
        self.inner.closing.store(true, Ordering::Release);
    }

    pub(crate) fn set_tags(&self, tags: Box<[Arc<str>]>) {
        // Set once, right after `connection_tags` and before the connection is listed.
        let _ = self.inner.tags.set(Box::new(tags));
    }

    /// Sends without the closing check: also used for the setup-failure frame.
    ///
    /// A message the output gate released goes straight to the socket when nothing is ahead
    /// of it (corked during the instance's turn); otherwise it is queued, and counts against
    /// the outbox's byte budget until the socket task wrote it. A single message bigger than
    /// the budget still goes through an empty outbox. Borrowed, it is copied only if queued.
    pub(crate) fn push(&self, message: Cow<'_, Message>) -> Result<(), ConnectionError> {
        let after = self.pending_write();
        let link = match &self.inner.link {
            Outlet::Local(link) => link,
            Outlet::Remote(remote) => {
                let target = Target::One(remote.conn);
                return self.sent(remote.route.send(target, message.into_owned(), after));
            }
        };
        let instance = &self.inner.instance;
        let released = instance.gate.is_settled(after);
        let budget = self.inner.instance.max_outbox_bytes();
        let out = Outbound { message, after, released, budget, mark: &self.inner.cork };
        self.sent(link.send(out, &instance.corks))
    }

    /// What a push's outcome means to the agent: an overflowing outbox closes the connection.
    fn sent(&self, sent: Result<(), PushError>) -> Result<(), ConnectionError> {
        match sent {
            Ok(()) => Ok(()),
            Err(PushError::Closed) => Err(ConnectionError::Closed),
            Err(PushError::Full) => Err(self.overflow()),
        }
    }

    /// The client stopped reading: close it out of band, dropping what is queued.
    fn overflow(&self) -> ConnectionError {
        let Outlet::Local(link) = &self.inner.link else { return ConnectionError::Closed };
        let (messages, bytes) = (link.capacity(), self.inner.instance.max_outbox_bytes());
        if !self.inner.closing.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                connection = %self.inner.id,
                agent_instance = %self.inner.instance.name,
                messages,
                bytes,
                "closing connection: outbox full, the client is not reading"
            );
        }
        link.force_close(CloseFrame {
            code: close_code::OUTBOX_FULL,
            reason: "Outbox full: client is not reading".into(),
        });
        ConnectionError::OutboxFull { messages, bytes }
    }
}

/// One broadcast's hold on the instance its connections belong to: the output gate read
/// once (nothing the agent writes can come in between), and its turn locked once.
pub(crate) struct Fanout<'a> {
    batch: Batch<'a>,
    after: WriteSeq,
    released: bool,
}

impl<S> fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id())
            .field("uri", &self.uri())
            .field("tags", &self.tags())
            .field("closing", &self.is_closing())
            .finish_non_exhaustive()
    }
}

/// The connection id for a `_pk` value: kept when it has 1 to 256 characters, else random.
pub(crate) fn connection_id(pk: Option<&str>) -> Arc<str> {
    match pk {
        Some(pk)
            if !pk.is_empty()
                && crate::instance::tags::utf16_len(pk) <= crate::instance::tags::MAX_TAG_LEN =>
        {
            pk.into()
        }
        _ => random_id().into(),
    }
}

/// A 21-character id over nanoid's alphabet `[A-Za-z0-9_-]`.
pub(crate) fn random_id() -> String {
    const ALPHABET: &[u8; 64] = b"useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict";
    let bytes: [u8; 21] = rand::random();
    bytes.iter().map(|b| ALPHABET[usize::from(b & 63)] as char).collect()
}

/// A writer that counts bytes and fails once past `limit`, so oversized state stops early.
struct SizeLimit {
    written: usize,
    limit: usize,
}

impl Write for SizeLimit {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        if self.written > self.limit {
            return Err(io::Error::other("over the size limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pk_is_kept_when_it_fits() {
        assert_eq!(&*connection_id(Some("abc")), "abc");
        assert_eq!(&*connection_id(Some(&"x".repeat(256))), "x".repeat(256));
    }

    #[test]
    fn missing_empty_or_long_pk_gets_a_random_id() {
        for pk in [None, Some(""), Some(&*"x".repeat(257))] {
            let id = connection_id(pk);
            assert_eq!(id.len(), 21);
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
        assert_ne!(random_id(), random_id());
    }

    #[test]
    fn close_codes_and_reasons() {
        for ok in [1000, 1001, 1011, 1013, 3000, 4001, 4999] {
            assert!(is_sendable_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert!(!is_sendable_close_code(bad), "{bad}");
        }
        assert_eq!(truncate_reason("short"), "short");
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123 && cut.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn state_over_the_limit_is_refused_and_the_old_state_kept() {
        let parts = ConnectionParts {
            key: 1,
            id: "a".into(),
            uri: "http://x/".into(),
            link: crate::outbox::LinkHandle::new(Arc::new(Link::new(4, None))).into(),
        };
        let mut instance = Instance::detached();
        Arc::get_mut(&mut instance).expect("not shared yet").set_max_connection_state_size(16);
        let conn: Connection<String> = Connection::new(parts, instance);
        conn.set_state("small".into()).expect("fits");
        let err = conn.set_state("x".repeat(100)).unwrap_err();
        assert!(matches!(err, ConnectionError::StateTooLarge { limit: 16 }));
        assert_eq!(conn.state().as_deref(), Some("small"));
        conn.update_state(|prev| format!("{}!", prev.map_or("", |s| s))).expect("fits");
        assert_eq!(conn.state().as_deref(), Some("small!"));
        // The updater may read the connection (no deadlock), and a refused update keeps the old.
        let err =
            conn.update_state(|_| format!("{:?}{}", conn.state(), "x".repeat(50))).unwrap_err();
        assert!(matches!(err, ConnectionError::StateTooLarge { .. }));
        assert_eq!(conn.state().as_deref(), Some("small!"));
    }
}
