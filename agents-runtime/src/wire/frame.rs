//! Data frames as bytes on their way to a socket: a 2–10 byte header and the payload, many
//! frames in one write, written without waiting.
//!
//! Every byte written to a socket goes through a connection's [`Frames`]: data frames and the
//! control frames (pongs, the close handshake) alike. The buffer is given
//! back once everything in it is written, and a large payload is written from its shared
//! bytes without a copy.
//! [`Frames`] keeps how far a write got, so a frame is never torn: what a full socket buffer
//! did not take goes out first next time.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

use crate::message::Message;

/// Payloads up to this size are copied into the batch buffer (one syscall for many frames);
/// bigger ones go out from their shared bytes, next to their header, in one vectored write.
pub(crate) const COPY_LIMIT: usize = 4096;

/// The least a batch buffer is allocated with.
const MIN_BATCH: usize = 512;

/// Continuation frame opcode (RFC 6455 §5.2).
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// Text frame opcode.
pub(crate) const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
pub(crate) const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub(crate) const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub(crate) const OP_PONG: u8 = 0xA;
/// FIN: the frame is a whole message.
pub(crate) const FIN: u8 = 0x80;

/// A socket written without waiting (a `TcpStream` in the server).
pub(crate) trait Wire: Send + Sync {
    /// Writes what the socket buffer takes now; `WouldBlock` when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Resolves once the socket may take more.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A frame's header, ready to write.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    /// The header of an unmasked, final frame (server to client, RFC 6455 §5.2).
    pub(crate) fn of(message: &Message) -> (Self, &[u8]) {
        let (opcode, payload) = match message {
            Message::Text(text) => (OP_TEXT, text.as_bytes()),
            Message::Binary(bytes) => (OP_BINARY, &bytes[..]),
        };
        let mut bytes = [0u8; 10];
        bytes[0] = FIN | opcode;
        let len = payload.len();
        let header_len = match len {
            0..=125 => {
                bytes[1] = len as u8;
                2
            }
            126..=0xFFFF => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
                10
            }
        };
        (Self { bytes, len: header_len }, payload)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Bytes on their way to one socket.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    /// Headers, small payloads and raw control frames.
    buf: Vec<u8>,
    /// How much of `buf` is written.
    sent: usize,
    /// A large payload that goes right after `buf`, from its shared bytes (what is left of
    /// it). Boxed: every idle link holds a `Frames`, and large payloads are rare.
    tail: Option<Box<Bytes>>,
}

impl Frames {
    /// Whether nothing is waiting to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.sent == self.buf.len() && self.tail.is_none()
    }

    /// Whether a large payload waits: nothing more can be added until it is written.
    pub(crate) fn is_full(&self) -> bool {
        self.tail.is_some()
    }

    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.sent + self.tail.as_ref().map_or(0, |tail| tail.len())
    }

    /// Adds `message` as one frame: copied into the buffer, or, over [`COPY_LIMIT`], kept as the
    /// tail to be written from its shared bytes. Not while [`is_full`](Self::is_full).
    pub(crate) fn push(&mut self, message: &Message) {
        let (header, payload) = Header::of(message);
        if payload.len() <= COPY_LIMIT {
            debug_assert!(!self.is_full(), "write before adding after a large payload");
            self.reserve(header.as_bytes().len() + payload.len());
            self.buf.extend_from_slice(header.as_bytes());
            self.buf.extend_from_slice(payload);
        } else {
            self.push_rest(header.as_bytes(), payload_bytes(message), 0);
        }
    }

    /// Adds what a write of `header` and `payload` left: the bytes from `written` on.
    pub(crate) fn push_rest(&mut self, header: &[u8], payload: Bytes, written: usize) {
        debug_assert!(!self.is_full(), "write before adding after a large payload");
        let mut payload = payload;
        if written < header.len() {
            self.reserve(header.len() - written + payload.len().min(COPY_LIMIT));
            self.buf.extend_from_slice(&header[written..]);
        } else {
            payload.advance(written - header.len());
        }
        if payload.len() <= COPY_LIMIT {
            self.buf.extend_from_slice(&payload);
        } else {
            self.tail = Some(Box::new(payload));
        }
    }

    /// Adds bytes already encoded as frames (corked frames the socket did not take, or that
    /// move out of the cork log). Behind a large payload (the auto-response's, written ahead
    /// of everything while a turn corked frames), that payload is copied into the buffer
    /// first: the frames must follow it, and only the buffer can be added to.
    pub(crate) fn push_raw(&mut self, frames: &[u8]) {
        if let Some(tail) = self.tail.take() {
            self.reserve(tail.len() + frames.len());
            self.buf.extend_from_slice(&tail);
        }
        self.reserve(frames.len());
        self.buf.extend_from_slice(frames);
    }

    /// Adds a control frame (close, ping, pong): `payload` is at most 125 bytes.
    pub(crate) fn push_control(&mut self, opcode: u8, payload: &[u8]) {
        debug_assert!(!self.is_full(), "write before adding after a large payload");
        debug_assert!(payload.len() <= 125, "control frames carry at most 125 bytes");
        self.reserve(2 + payload.len());
        self.buf.extend_from_slice(&[FIN | opcode, payload.len() as u8]);
        self.buf.extend_from_slice(payload);
    }

    fn reserve(&mut self, additional: usize) {
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent > self.buf.len() / 2 {
            // Mostly written: drop the written part rather than grow past it.
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        // A batch usually gathers several frames: grow once, not per frame.
        self.buf.reserve(additional.max(MIN_BATCH));
    }

    /// Writes what the socket takes now. `Ok` once everything is out (the buffer's memory is
    /// given back, so an idle socket holds none); `WouldBlock` if the socket buffer filled up
    /// first (what is left stays, in order).
    pub(crate) fn write_to(&mut self, wire: &dyn Wire) -> io::Result<()> {
        while !self.is_empty() {
            let head = &self.buf[self.sent..];
            let tail = self.tail.as_deref().map_or(&[][..], |tail| &tail[..]);
            let n = wire.try_write_vectored(&[IoSlice::new(head), IoSlice::new(tail)])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            self.sent += from_head;
            if let Some(tail) = &mut self.tail {
                tail.advance(n - from_head);
                if tail.is_empty() {
                    self.tail = None;
                }
            }
        }
        self.buf = Vec::new();
        self.sent = 0;
        Ok(())
    }
}

/// The payload of `message`, as shared bytes (a reference count, not a copy).
pub(crate) fn payload_bytes(message: &Message) -> Bytes {
    match message {
        Message::Text(text) => Bytes::from(text.clone().into_wire()),
        Message::Binary(bytes) => bytes.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Cursor;
    use std::sync::Mutex;

    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    use super::*;

    /// A socket that takes at most `step` bytes per write, and nothing once it took `budget`.
    pub(crate) struct Trickle {
        pub(crate) state: Mutex<(Vec<u8>, usize)>,
        step: usize,
    }

    impl Trickle {
        pub(crate) fn new(step: usize, budget: usize) -> Self {
            Self { state: Mutex::new((Vec::new(), budget)), step }
        }

        pub(crate) fn open(&self, budget: usize) {
            self.state.lock().unwrap().1 = budget;
        }

        pub(crate) fn taken(&self) -> Vec<u8> {
            self.state.lock().unwrap().0.clone()
        }
    }

    impl Wire for Trickle {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut state = self.state.lock().unwrap();
            let (out, budget) = &mut *state;
            if *budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut left = self.step.min(*budget);
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                out.extend_from_slice(&buf[..take]);
                n += take;
                left -= take;
            }
            *budget -= n;
            Ok(n)
        }

        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Parses `bytes` back into messages with tungstenite's own frame decoder.
    pub(crate) fn decode(mut bytes: &[u8]) -> Vec<WsMessage> {
        let mut messages = Vec::new();
        while !bytes.is_empty() {
            let mut cursor = Cursor::new(bytes);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().expect("a whole header");
            assert!(header.is_final && header.mask.is_none());
            let start = cursor.position() as usize;
            let len = len as usize;
            let payload = bytes[start..start + len].to_vec();
            messages.push(match u8::from(header.opcode) {
                1 => WsMessage::text(String::from_utf8(payload).unwrap()),
                2 => WsMessage::binary(payload),
                other => panic!("opcode {other}"),
            });
            bytes = &bytes[start + len..];
        }
        messages
    }

    /// Writes until done, opening the socket a little each time it blocks.
    fn write_all(frames: &mut Frames, wire: &Trickle) {
        loop {
            match frames.write_to(wire) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wire.open(usize::MAX),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn every_length_class_round_trips_through_partial_writes() {
        let sizes = [0, 1, 125, 126, 127, 4096, 4097, 65_535, 65_536, 200_000];
        for step in [1, 3, 7, 1000, usize::MAX] {
            let wire = Trickle::new(step, usize::MAX);
            let mut frames = Frames::default();
            let mut sent = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let message = if i % 2 == 0 {
                    Message::from("é".repeat(size / 2) + &"x".repeat(size % 2))
                } else {
                    Message::from(vec![i as u8; size])
                };
                if frames.is_full() {
                    write_all(&mut frames, &wire);
                }
                frames.push(&message);
                sent.push(message);
            }
            write_all(&mut frames, &wire);
            assert!(frames.is_empty() && frames.buf.capacity() == 0, "memory given back");
            let got = decode(&wire.taken());
            assert_eq!(got.len(), sent.len(), "step {step}");
            for (got, sent) in got.iter().zip(&sent) {
                match (got, sent) {
                    (WsMessage::Text(got), Message::Text(sent)) => {
                        assert_eq!(got.as_str(), &**sent)
                    }
                    (WsMessage::Binary(got), Message::Binary(sent)) => assert_eq!(got, sent),
                    other => panic!("kind changed: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error_not_a_spin() {
        struct Zero;
        impl Wire for Zero {
            fn try_write_vectored(&self, _: &[IoSlice<'_>]) -> io::Result<usize> {
                Ok(0)
            }
            fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut frames = Frames::default();
        frames.push(&Message::from(vec![0u8; COPY_LIMIT + 1]));
        let err = frames.write_to(&Zero).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert!(!frames.is_empty(), "what was not written is kept");
    }

    #[test]
    fn a_full_socket_keeps_the_rest_in_order_and_frames_stay_whole() {
        let wire = Trickle::new(1000, 3000);
        let mut frames = Frames::default();
        frames.push(&Message::from("before"));
        frames.push(&Message::from(vec![9u8; 10_000]));
        let blocked = frames.write_to(&wire).unwrap_err();
        assert_eq!(blocked.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(frames.len(), 8 + 4 + 10_000 - 3000);
        // A control frame goes after what is waiting, never inside it.
        write_all(&mut frames, &wire);
        frames.push_control(OP_PONG, &[]);
        write_all(&mut frames, &wire);
        let got = decode_with_pong(&wire.taken());
        assert_eq!(got, ["text before", "binary 10000", "pong"]);
    }

    #[test]
    fn the_rest_of_a_direct_write_is_kept_from_where_it_stopped() {
        let message = Message::from(vec![5u8; 300]);
        let (header, payload) = Header::of(&message);
        for written in [0, 1, 3, 4, 5, 303] {
            let wire = Trickle::new(usize::MAX, usize::MAX);
            let mut whole = header.as_bytes().to_vec();
            whole.extend_from_slice(payload);
            let mut frames = Frames::default();
            frames.push_rest(header.as_bytes(), Bytes::copy_from_slice(payload), written);
            write_all(&mut frames, &wire);
            assert_eq!(wire.taken(), whole[written..], "written {written}");
        }
    }

    /// Like [`decode`], naming each frame, with pongs.
    fn decode_with_pong(mut bytes: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        while !bytes.is_empty() {
            let mut cursor = Cursor::new(bytes);
            let (header, len) = FrameHeader::parse(&mut cursor).unwrap().expect("a whole header");
            let start = cursor.position() as usize;
            let payload = &bytes[start..start + len as usize];
            names.push(match u8::from(header.opcode) {
                1 => format!("text {}", std::str::from_utf8(payload).unwrap()),
                2 => format!("binary {}", payload.len()),
                10 => "pong".to_owned(),
                other => panic!("opcode {other}"),
            });
            bytes = &bytes[start + len as usize..];
        }
        names
    }
}
