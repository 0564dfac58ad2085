//! Client frames read straight from the socket (RFC 6455 §5), as uWebSockets does: each read
//! lands in one buffer per worker thread, and a socket keeps only the bytes of a frame that has
//! not fully arrived, so an idle connection holds no read buffer. A message's payload is
//! unmasked in place and handed on without another copy.

use std::cell::RefCell;
use std::io;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use rustix::net::RecvFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

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
    /// The largest frame and message accepted.
    limit: usize,
    /// The most bytes taken per read.
    read_size: usize,
}

impl Reader {
    /// A reader for messages of at most `limit` bytes, reading `read_size` bytes at a time,
    /// that starts with `read` (bytes the client sent right after its upgrade request).
    pub(crate) fn new(limit: usize, read_size: usize, read: &[u8]) -> Self {
        let buf = BytesMut::from(read);
        Self { buf, message: None, dropping: false, limit, read_size: read_size.max(1) }
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
                Ok(Some(incoming)) => return Poll::Ready(Ok(incoming)),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(e) = ready!(tcp.poll_read_ready(cx)) {
                return Poll::Ready(Err(ReadError::Gone(Some(e))));
            }
            match recv(tcp, self.read_size, |bytes| self.feed(bytes)) {
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
            let (size, buf) = (self.read_size, &mut self.buf);
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
        loop {
            if ready!(tcp.poll_read_ready(cx)).is_err() {
                return Poll::Ready(());
            }
            match recv(tcp, self.read_size, |_| {}) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(n) if n > 0 => {}
                _ => return Poll::Ready(()),
            }
        }
    }

    /// Adds bytes read from the socket.
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next message or control frame from what was read; `None` until one is whole.
    fn next(&mut self) -> Result<Option<Incoming>, ReadError> {
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
        if before + len > self.limit as u64 {
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
                if total > self.limit {
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

/// Reads what `tcp` has, at most `size` bytes, into this thread's buffer and hands it to
/// `take`; `Ok(0)` at the end of the stream, `WouldBlock` when the readiness was stale.
fn recv(tcp: &TcpStream, size: usize, take: impl FnOnce(&[u8])) -> io::Result<usize> {
    SCRATCH.with_borrow_mut(|scratch| {
        if scratch.len() < size {
            scratch.resize(size, 0);
        }
        let scratch = &mut scratch[..size];
        // `recv` on the socket, with tokio's readiness kept right. A read that returns less
        // than it asked for emptied the socket: its readiness is cleared with it, as tokio's
        // own reads do, so the next poll waits for new bytes instead of making a `recv` that
        // finds none. Bytes that arrive after the read mark the
        // socket ready again, and an end of stream stays marked.
        let mut short = 0;
        let read = tcp.try_io(Interest::READABLE, || {
            let (n, _) = rustix::net::recv(tcp, &mut *scratch, RecvFlags::empty())?;
            if n > 0 && n < size {
                short = n;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match read {
            Err(_) if short > 0 => short,
            read => read?,
        };
        take(&scratch[..n]);
        Ok(n)
    })
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
mod tests {
    use super::*;

    /// A masked client frame, as a browser sends it.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => out.push(0x80 | len as u8),
            len @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn reader() -> Reader {
        Reader::new(1 << 20, 4096, &[])
    }

    /// Feeds `bytes` `step` at a time, collecting what comes out.
    fn read_all(
        reader: &mut Reader,
        bytes: &[u8],
        step: usize,
    ) -> Result<Vec<Incoming>, ReadError> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            reader.feed(chunk);
            while let Some(incoming) = reader.next()? {
                out.push(incoming);
            }
        }
        Ok(out)
    }

    #[test]
    fn messages_of_every_length_class_survive_any_split() {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, len) in [0usize, 1, 125, 126, 127, 65_535, 65_536, 100_000].into_iter().enumerate()
        {
            let bytes: Vec<u8> = (0..len).map(|j| b'a' + (j % 26) as u8).collect();
            if i % 2 == 0 {
                stream.extend(frame(true, OP_TEXT, &bytes));
                want.push(Incoming::Text(String::from_utf8(bytes).unwrap().into()));
            } else {
                stream.extend(frame(true, OP_BINARY, &bytes));
                want.push(Incoming::Binary(bytes.into()));
            }
        }
        for step in [1, 2, 3, 7, 13, 1000, usize::MAX] {
            let mut reader = reader();
            assert_eq!(read_all(&mut reader, &stream, step).unwrap(), want, "step {step}");
            assert_eq!(reader.buf.capacity(), 0, "an idle reader holds no buffer");
        }
    }

    #[test]
    fn fragments_join_and_control_frames_may_come_between() {
        let mut stream = frame(false, OP_TEXT, "héllo, ".as_bytes());
        stream.extend(frame(true, OP_PING, b"are you there"));
        stream.extend(frame(false, OP_CONTINUATION, &"wör".as_bytes()[..2]));
        stream.extend(frame(true, OP_CONTINUATION, &"wörld".as_bytes()[2..]));
        stream.extend(frame(true, OP_CLOSE, &[0x03, 0xE8, b'b', b'y', b'e']));
        let got = read_all(&mut reader(), &stream, 5).unwrap();
        assert_eq!(
            got,
            [
                Incoming::Ping(Bytes::from_static(b"are you there")),
                Incoming::Text("héllo, wörld".into()),
                Incoming::Close(Some((1000, "bye".into()))),
            ]
        );
    }

    #[test]
    fn every_violation_has_its_answer() {
        let unmasked = {
            let mut f = frame(true, OP_TEXT, b"hi");
            f[1] &= 0x7F;
            f
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (unmasked, "masked"),
            (frame(true, 0x3, b"x"), "unknown opcode"),
            (frame(true, 0x1 | 0x40, b"x"), "reserved bits"),
            (frame(false, OP_PING, b"x"), "control frames"),
            (frame(true, OP_PING, &[0; 126]), "control frames"),
            (frame(true, OP_CONTINUATION, b"x"), "continuation"),
            ([frame(false, OP_TEXT, b"a"), frame(true, OP_BINARY, b"b")].concat(), "new message"),
            (frame(true, OP_CLOSE, &[3]), "1-byte"),
            (frame(true, OP_CLOSE, &1005u16.to_be_bytes()), "close code"),
            (frame(true, OP_CLOSE, &999u16.to_be_bytes()), "close code"),
        ];
        for (bytes, why) in cases {
            match read_all(&mut reader(), &bytes, usize::MAX) {
                Err(ReadError::Protocol(message)) => assert!(message.contains(why), "{message}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        let bad_text = frame(true, OP_TEXT, &[0xff, 0xfe]);
        assert!(matches!(read_all(&mut reader(), &bad_text, 1), Err(ReadError::Utf8)));
        let bad_reason = frame(true, OP_CLOSE, &[0x03, 0xE8, 0xff]);
        assert!(matches!(read_all(&mut reader(), &bad_reason, 1), Err(ReadError::Utf8)));
    }

    #[test]
    fn sizes_over_the_limit_are_refused_before_they_are_read() {
        let mut small = Reader::new(100, 4096, &[]);
        // Only the header has arrived: refused already.
        let header = &frame(true, OP_BINARY, &[0; 101])[..8];
        assert!(matches!(read_all(&mut small, header, usize::MAX), Err(ReadError::TooBig(101))));
        let mut small = Reader::new(100, 4096, &[]);
        let parts = [frame(false, OP_BINARY, &[0; 60]), frame(true, OP_CONTINUATION, &[0; 60])];
        assert!(matches!(read_all(&mut small, &parts.concat(), 7), Err(ReadError::TooBig(120))));
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            read_all(&mut reader(), &huge, usize::MAX),
            Err(ReadError::Protocol(message)) if message.contains("top bit")
        ));
    }

    #[test]
    fn a_frame_only_announced_costs_what_was_sent() {
        let mut reader = reader();
        let header = &frame(true, OP_BINARY, &[0; 65_535])[..8];
        assert!(read_all(&mut reader, header, usize::MAX).unwrap().is_empty());
        assert!(reader.buf.capacity() < 1024, "{} bytes held", reader.buf.capacity());
    }

    /// What a refused frame leaves to skip: its bytes not read yet, whatever part of it was
    /// read; the frame after it is read whole again. A refused fragment takes the rest of its
    /// message with it.
    #[test]
    fn a_refused_frame_is_dropped_and_what_follows_it_is_read() {
        let big = frame(true, OP_BINARY, &[0; 101]);
        let close = frame(true, OP_CLOSE, &[0x03, 0xF1]);
        for arrived in [4, 8, 50, big.len()] {
            let mut small = Reader::new(100, 4096, &[]);
            small.feed(&big[..arrived]);
            assert!(matches!(small.next(), Err(ReadError::TooBig(101))));
            assert_eq!(small.drop_refused(), Some((big.len() - arrived) as u64), "{arrived}");
            assert!(small.is_idle());
            small.feed(&close);
            assert!(matches!(small.next(), Ok(Some(Incoming::Close(Some((1009, _)))))));
        }
        // A message in fragments: the refused one and the ones after it are dropped, up to
        // the last.
        let mut small = Reader::new(100, 4096, &[]);
        let parts = [
            frame(false, OP_BINARY, &[0; 60]),
            frame(false, OP_CONTINUATION, &[0; 60]),
            frame(false, OP_CONTINUATION, &[0; 60]),
            frame(true, OP_CONTINUATION, &[0; 10]),
            close.clone(),
        ];
        small.feed(&parts.concat());
        assert!(matches!(small.next(), Err(ReadError::TooBig(120))));
        assert_eq!(small.drop_refused(), Some(0));
        assert!(!small.is_idle(), "the message's last fragment is still to come");
        assert!(matches!(small.next(), Ok(Some(Incoming::Close(Some((1009, _)))))));
        assert!(small.is_idle());
    }

    #[test]
    fn a_fragment_over_the_limit_is_refused_from_its_header() {
        let mut small = Reader::new(100, 4096, &[]);
        let first = frame(false, OP_BINARY, &[0; 60]);
        let second = &frame(true, OP_CONTINUATION, &[0; 60])[..6];
        let bytes = [first, second.to_vec()].concat();
        assert!(matches!(read_all(&mut small, &bytes, usize::MAX), Err(ReadError::TooBig(120))));
    }

    #[test]
    fn bytes_sent_with_the_upgrade_request_are_read_first() {
        let early = frame(true, OP_TEXT, b"early");
        let mut reader = Reader::new(1 << 20, 4096, &early);
        assert_eq!(reader.next().unwrap(), Some(Incoming::Text("early".into())));
    }

    #[test]
    fn unmasking_matches_the_rfc_definition() {
        let mask = [1, 2, 3, 4];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut bytes = original.clone();
            unmask(&mut bytes, mask);
            let want: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(bytes, want, "length {len}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::{Incoming, OP_BINARY, OP_CONTINUATION, OP_TEXT, frame, reader};

        /// A message and how many fragments it is sent in.
        fn message() -> impl Strategy<Value = (Incoming, Vec<u8>, bool, usize)> {
            let text = ".{0,200}".prop_map(|s: String| {
                let bytes = s.clone().into_bytes();
                (Incoming::Text(s.into()), bytes, true)
            });
            let binary = proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| (Incoming::Binary(b.clone().into()), b, false));
            (prop_oneof![text, binary], 1..4usize).prop_map(|((m, b, t), n)| (m, b, t, n))
        }

        proptest! {
            /// Whatever a client sends, the reader answers (a message, more to read, or an
            /// error) and never panics.
            #[test]
            fn any_bytes_in_any_chunks_never_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                step in 1..64usize,
            ) {
                let mut reader = reader();
                'feed: for chunk in bytes.chunks(step) {
                    reader.feed(chunk);
                    loop {
                        match reader.next() {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => break 'feed,
                        }
                    }
                }
            }

            /// Masked messages, fragmented and split anywhere, read back as they were sent.
            #[test]
            fn fragmented_messages_read_back_whole(
                messages in proptest::collection::vec(message(), 1..8),
                step in 1..97usize,
            ) {
                let mut stream = Vec::new();
                let mut want = Vec::new();
                for (incoming, bytes, text, fragments) in messages {
                    let size = bytes.len().div_ceil(fragments).max(1);
                    let parts: Vec<&[u8]> = if bytes.is_empty() { vec![&[]] } else { bytes.chunks(size).collect() };
                    for (i, part) in parts.iter().enumerate() {
                        let opcode = match (i, text) { (0, true) => OP_TEXT, (0, false) => OP_BINARY, _ => OP_CONTINUATION };
                        stream.extend(frame(i + 1 == parts.len(), opcode, part));
                    }
                    want.push(incoming);
                }
                let mut reader = reader();
                prop_assert_eq!(super::read_all(&mut reader, &stream, step).expect("valid frames"), want);
            }
        }
    }
}
