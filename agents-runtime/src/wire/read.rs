//! Client frames read straight from the socket (RFC 6455 §5), as uWebSockets does: each read
//! lands in one buffer per worker thread, and a socket keeps only the bytes of a frame that has
//! not fully arrived, so an idle connection holds no read buffer. A message's payload is
//! unmasked in place and handed on without another copy.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use rustix::net::RecvFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

use crate::wire::budget::InputBudget;
use crate::wire::close::is_sendable_close_code;
use crate::wire::frame::{FIN, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

/// What the client sent.
#[derive(Debug, PartialEq)]
pub(crate) enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// Answered with a pong carrying the same payload.
    Ping(Bytes),
    Pong,
    /// The client closes: its code and reason (`None` for an empty close frame).
    Close(Option<(u16, String)>),
}

/// Why the client's bytes are not a WebSocket stream we accept.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A frame or message over the limit (its announced size): close 1009.
    TooBig(u64),
    /// Not RFC 6455: close 1002.
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8: close 1007.
    Utf8,
    /// The connection broke, or ended without a close frame: 1006.
    Gone(Option<io::Error>),
    /// Unfinished input would go over the server's budget: close 1013.
    Overloaded,
    /// A message stayed unfinished past the timeout: close 1008.
    Slow,
}

/// Payloads and leftovers under this size are copied out of the read's buffer (see
/// [`Reader::frame`]).
const SMALL: usize = 4096;

thread_local! {
    /// Every socket read on this thread lands here first.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One connection's read side.
#[derive(Debug)]
pub(crate) struct Reader {
    /// Bytes read and not yet parsed: empty, with no allocation, between frames.
    buf: BytesMut,
    /// The fragments of a message in progress: whether it is text, and its bytes so far.
    message: Option<(bool, BytesMut)>,
    /// The rest of a refused message's fragments are dropped as they come (see
    /// [`drop_refused`](Self::drop_refused)).
    dropping: bool,
    /// The server's budget for unfinished input (and its read limits), and what this reader
    /// counts in it.
    budget: Arc<InputBudget>,
    charged: u32,
    /// When the unfinished message must be whole; set while one is, reset by the next.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A message became whole since the deadline was set: the next one starts afresh.
    restart: bool,
    /// Our close frame is out (`closing`): only the client's reply is waited for, within the
    /// close timeout, with no deadline or budget of its own.
    closing: bool,
}

impl Reader {
    /// A reader that starts with `read` (bytes the client sent right after its upgrade
    /// request), reads by the rules of `budget` and counts what it holds of unfinished
    /// messages in it.
    pub(crate) fn new(read: &[u8], budget: Arc<InputBudget>) -> Self {
        let buf = BytesMut::from(read);
        let charged = u32::try_from(buf.capacity()).unwrap_or(u32::MAX);
        budget.grow(charged as usize);
        Self {
            buf,
            message: None,
            dropping: false,
            budget,
            charged,
            deadline: None,
            restart: false,
            closing: false,
        }
    }

    /// The largest frame and message accepted.
    fn max_message_size(&self) -> usize {
        self.budget.max_message_size
    }

    /// The most bytes taken per read.
    fn read_size(&self) -> usize {
        self.budget.read_size
    }

    /// What the reader holds: its buffer and the fragments so far, as allocated.
    fn holds(&self) -> usize {
        self.buf.capacity() + self.message.as_ref().map_or(0, |(_, bytes)| bytes.capacity())
    }

    /// Brings what the budget counts for this reader up to date: growth within the budget
    /// (or anyway, `forced`), or [`ReadError::Overloaded`].
    fn settle(&mut self, forced: bool) -> Result<(), ReadError> {
        // Within the message limit (a few times over at most), so it fits: clamped all the same.
        let holds = self.holds().min(u32::MAX as usize);
        let charged = self.charged as usize;
        if holds == charged {
            return Ok(()); // the usual case, idle: the shared count is not touched
        }
        if holds > charged {
            let more = holds - charged;
            if forced {
                self.budget.grow(more);
            } else if !self.budget.try_grow(more) {
                return Err(ReadError::Overloaded);
            }
        } else {
            self.budget.shrink(charged - holds);
        }
        self.charged = holds as u32;
        Ok(())
    }

    /// Waits for the socket with a message unfinished: resolves with [`ReadError::Slow`]
    /// once it has been unfinished for the budget's timeout.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, ReadError>> {
        if self.is_idle() || self.closing {
            self.deadline = None;
            return Poll::Pending;
        }
        let timeout = self.budget.timeout;
        let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::mem::take(&mut self.restart) {
            deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(ReadError::Slow)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Our close frame is out: from now on only the client's reply matters, bounded by the
    /// close timeout rather than the message timeout. What is held of an unfinished message is
    /// dropped (data after our close is dropped anyway), so a socket closed for the budget or
    /// the timeout gives its memory back and can still hear the client's close frame: returns
    /// how many bytes of a frame part read are still to come, for
    /// [`poll_skip`](Self::poll_skip).
    pub(crate) fn closing(&mut self) -> Option<u64> {
        self.closing = true;
        self.deadline = None;
        if self.message.take().is_some() {
            self.dropping = true; // its later fragments too
        }
        let rest = self.drop_refused();
        self.buf = BytesMut::from(&self.buf[..]);
        let _ = self.settle(true);
        rest
    }

    /// Whether nothing is half-read: no partial frame, no message in fragments.
    pub(crate) fn is_idle(&self) -> bool {
        self.buf.is_empty() && self.message.is_none() && !self.dropping
    }

    /// The next message or control frame among the bytes already read, if one is whole.
    pub(crate) fn buffered(&mut self) -> Option<Result<Incoming, ReadError>> {
        self.next().transpose()
    }

    /// The next message or control frame, reading from `tcp` until one is whole.
    pub(crate) fn poll_next(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Incoming, ReadError>> {
        loop {
            match self.next() {
                Ok(Some(incoming)) => {
                    // What it held left with the message (or stays for the next frame).
                    if self.charged != 0 {
                        let _ = self.settle(true);
                    }
                    // Only a whole message starts the next one's time afresh: pings between
                    // the fragments of a message do not hold its deadline off.
                    if matches!(incoming, Incoming::Text(_) | Incoming::Binary(_)) {
                        self.restart = self.deadline.is_some();
                    }
                    return Poll::Ready(Ok(incoming));
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match tcp.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::Gone(Some(e)))),
                // What is left unfinished counts in the budget while it waits (a burst is
                // read whole first: a socket goes over by one message at most).
                Poll::Pending => {
                    if let Err(e) = self.settle(false) {
                        return Poll::Ready(Err(e));
                    }
                    return self.poll_deadline(cx);
                }
            }
            match recv(tcp, self.read_size(), |bytes| self.feed(bytes)) {
                Ok(0) => return Poll::Ready(Err(ReadError::Gone(None))),
                Ok(_) => {}
                // The readiness was stale: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(ReadError::Gone(Some(e)))),
            }
        }
    }

    /// After a frame refused for its size ([`ReadError::TooBig`], the frame at the front of
    /// what was read): drops what was read of it, and of its message, and says how many of
    /// its bytes are still to come, for [`poll_skip`](Self::poll_skip). The frames after it
    /// can be read again; the rest of its message's fragments are dropped as they come.
    pub(crate) fn drop_refused(&mut self) -> Option<u64> {
        if self.buf.len() < 2 {
            return None;
        }
        let buf = &self.buf[..];
        let fin = buf[0] & FIN != 0;
        let (len, extended) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 2),
            127 if buf.len() >= 10 => {
                (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 8)
            }
            126 | 127 => return None,
            len => (u64::from(len), 0),
        };
        let whole = len.checked_add(2 + extended + 4)?;
        let read = (self.buf.len() as u64).min(whole);
        self.buf.advance(read as usize);
        self.message = None;
        self.dropping = !fin;
        Some(whole - read)
    }

    /// Reads and drops the `rest` bytes of a refused frame (see
    /// [`drop_refused`](Self::drop_refused)), keeping what comes after them.
    pub(crate) fn poll_skip(
        &mut self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        rest: &mut u64,
    ) -> Poll<Result<(), ReadError>> {
        while *rest > 0 {
            if let Err(e) = ready!(tcp.poll_read_ready(cx)) {
                return Poll::Ready(Err(ReadError::Gone(Some(e))));
            }
            let (size, buf) = (self.read_size(), &mut self.buf);
            let skip = |bytes: &[u8]| {
                let dropped = (bytes.len() as u64).min(*rest);
                *rest -= dropped;
                buf.extend_from_slice(&bytes[dropped as usize..]);
            };
            match recv(tcp, size, skip) {
                Ok(0) => return Poll::Ready(Err(ReadError::Gone(None))),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(ReadError::Gone(Some(e)))),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads and drops whatever the client sends until it closes the connection: after a
    /// frame we refused, its bytes cannot be parsed, and closing with them unread would reset
    /// the connection and lose our close frame on the way.
    pub(crate) fn poll_discard(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) -> Poll<()> {
        self.buf = BytesMut::new();
        self.message = None;
        let _ = self.settle(true);
        loop {
            if ready!(tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match recv(tcp, self.read_size(), |_| {}) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(n) if n > 0 => {}
                _ => return Poll::Ready(()),
            }
        }
    }

    /// Adds bytes read from the socket.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next message or control frame from what was read; `None` until one is whole.
    pub(crate) fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
        while let Some((fin, opcode, payload)) = self.frame()? {
            if let Some(incoming) = self.assemble(fin, opcode, payload)? {
                return Ok(Some(incoming));
            }
        }
        Ok(None)
    }

    /// Takes one whole frame off the buffer, unmasked: `(fin, opcode, payload)`.
    fn frame(&mut self) -> Result<Option<(bool, u8, BytesMut)>, ReadError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (fin, rsv, opcode) = (buf[0] & FIN != 0, buf[0] & 0x70, buf[0] & 0x0F);
        let (masked, len7) = (buf[1] & 0x80 != 0, buf[1] & 0x7F);
        if rsv != 0 {
            return Err(ReadError::Protocol("reserved bits set (no extension was agreed)"));
        }
        if !matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
            return Err(ReadError::Protocol("unknown opcode"));
        }
        if !masked {
            return Err(ReadError::Protocol("a client frame must be masked"));
        }
        let (len, extended) = match len7 {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 2),
            127 if buf.len() >= 10 => {
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("frame length with the top bit set"));
                }
                (len, 8)
            }
            126 | 127 => return Ok(None),
            len => (u64::from(len), 0),
        };
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(ReadError::Protocol("control frames are whole and at most 125 bytes"));
        }
        // A fragment counts with the ones before it: refused before its payload is read.
        let before = match &self.message {
            Some((_, bytes)) if opcode == OP_CONTINUATION => bytes.len() as u64,
            _ => 0,
        };
        if before + len > self.max_message_size() as u64 {
            return Err(ReadError::TooBig(before + len));
        }
        let header = 2 + extended + 4;
        if buf.len() < header {
            return Ok(None);
        }
        let mask = [buf[header - 4], buf[header - 3], buf[header - 2], buf[header - 1]];
        // Within the limit, so it fits a `usize`; checked all the same.
        let whole = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header))
            .ok_or(ReadError::TooBig(len))?;
        if buf.len() < whole {
            // The buffer grows with what arrives, not with what the header announces: a
            // client that announces 1 MiB and sends nothing more holds what it sent only.
            return Ok(None);
        }
        let mut frame = self.buf.split_to(whole);
        frame.advance(header);
        unmask(&mut frame, mask);
        if self.buf.is_empty() {
            // Nothing left to parse: the socket keeps no buffer while it waits.
            self.buf = BytesMut::new();
        } else if self.buf.len() < SMALL {
            // The start of the next frame: kept on its own, not in the whole read's buffer.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        if frame.len() < SMALL {
            // A small payload gets its own allocation: a message the agent keeps must not
            // keep the whole read's buffer alive with it.
            frame = BytesMut::from(&frame[..]);
        }
        Ok(Some((fin, opcode, frame)))
    }

    /// Turns a frame into a message, a control frame, or a fragment kept for later.
    fn assemble(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ReadError> {
        match opcode {
            OP_CONTINUATION if self.dropping => {
                self.dropping = !fin;
                Ok(None)
            }
            OP_TEXT | OP_BINARY if self.message.is_some() || self.dropping => {
                Err(ReadError::Protocol("a new message before the last one ended"))
            }
            OP_TEXT | OP_BINARY if fin => message(opcode == OP_TEXT, payload).map(Some),
            OP_TEXT | OP_BINARY => {
                self.message = Some((opcode == OP_TEXT, payload));
                Ok(None)
            }
            OP_CONTINUATION => {
                let Some((_, bytes)) = self.message.as_mut() else {
                    return Err(ReadError::Protocol("a continuation frame with no message"));
                };
                let total = bytes.len() + payload.len();
                if total > self.budget.max_message_size {
                    return Err(ReadError::TooBig(total as u64));
                }
                bytes.extend_from_slice(&payload);
                match self.message.take() {
                    Some((text, bytes)) if fin => message(text, bytes).map(Some),
                    unfinished => {
                        self.message = unfinished;
                        Ok(None)
                    }
                }
            }
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            _ => close(&payload).map(|close| Some(Incoming::Close(close))),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.budget.shrink(self.charged as usize);
    }
}

/// Reads what `tcp` has, at most `size` bytes, into this thread's buffer and hands it to
/// `take`; `Ok(0)` at the end of the stream, `WouldBlock` when the readiness was stale.
pub(crate) fn recv(tcp: &TcpStream, size: usize, take: impl FnOnce(&[u8])) -> io::Result<usize> {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < size {
            scratch.resize(size, 0);
        }
        let n = recv_draining(tcp, &mut scratch[..size])?;
        take(&scratch[..n]);
        Ok(n)
    })
}

/// `recv` on `tcp` into `buf`, with tokio's readiness kept right. A read that returns less
/// than it asked for emptied the socket: its readiness is cleared with it, as tokio's own
/// reads do, so the next poll waits for new bytes instead of making a `recv` that finds none.
/// Bytes that arrive after the read mark the socket ready again, and an end of stream stays
/// marked. `Ok(0)` at the end of the stream, `WouldBlock` when the readiness was stale.
fn recv_draining(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let size = buf.len();
    let mut short = 0;
    let read = tcp.try_io(Interest::READABLE, || {
        let (n, _) = rustix::net::recv(tcp, &mut *buf, RecvFlags::empty())?;
        if n > 0 && n < size {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match read {
        Err(_) if short > 0 => Ok(short),
        read => read,
    }
}

fn message(text: bool, payload: BytesMut) -> Result<Incoming, ReadError> {
    if text {
        let text = Utf8Bytes::try_from(payload.freeze()).map_err(|_| ReadError::Utf8)?;
        Ok(Incoming::Text(text))
    } else {
        Ok(Incoming::Binary(payload.freeze()))
    }
}

/// A close frame's code and reason (RFC 6455 §5.5.1, §7.4).
fn close(payload: &[u8]) -> Result<Option<(u16, String)>, ReadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ReadError::Protocol("a close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let sendable = is_sendable_close_code(code);
            if !sendable {
                return Err(ReadError::Protocol("a close code a client may not send"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ReadError::Utf8)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// XORs the payload with the client's mask (RFC 6455 §5.3), eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests;
