//! Data frames written straight to the socket: a 2–10 byte header and the payload, a batch of
//! them in one write.
//!
//! tungstenite still reads, answers pings and runs the close handshake. Data frames skip its
//! write buffer, which grows to the largest burst and keeps that memory for the socket's whole
//! life; here a batch's buffer lives for the batch only, and a large payload is written from its
//! shared bytes without a copy.
//!
//! [`Frames`] keeps how far a write got, so a write cut short (a forced close, the send timeout)
//! can be finished before the close frame: a frame is never torn.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

use crate::message::Message;

/// Payloads up to this size are copied into the batch buffer (one syscall for many frames);
/// bigger ones go out from their shared bytes, next to their header, in one vectored write.
const COPY_LIMIT: usize = 4096;

/// Text frame opcode (RFC 6455 §5.2).
const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
const OP_BINARY: u8 = 0x2;
/// FIN: the frame is a whole message.
const FIN: u8 = 0x80;

/// Frames on their way to one socket.
#[derive(Debug, Default)]
pub(super) struct Frames {
    /// Headers and small payloads.
    buf: Vec<u8>,
    /// How much of `buf` is written.
    sent: usize,
    /// A large payload that goes right after `buf`, from its shared bytes (what is left of it).
    tail: Bytes,
}

impl Frames {
    /// Whether nothing is waiting to be written.
    pub(super) fn is_empty(&self) -> bool {
        self.sent == self.buf.len() && self.tail.is_empty()
    }

    /// Whether a large payload waits: [`write_out`](Self::write_out) before the next push.
    pub(super) fn is_full(&self) -> bool {
        !self.tail.is_empty()
    }

    /// Adds `message` as one frame: copied into the buffer, or, over [`COPY_LIMIT`], kept as the
    /// tail to be written from its shared bytes. Not while [`is_full`](Self::is_full).
    pub(super) fn push(&mut self, message: Message) {
        debug_assert!(!self.is_full(), "write_out before pushing after a large payload");
        let (opcode, payload) = match message {
            Message::Text(text) => (OP_TEXT, Bytes::from(text.into_wire())),
            Message::Binary(bytes) => (OP_BINARY, bytes),
        };
        if self.buf.is_empty() {
            self.buf.reserve(payload.len().min(COPY_LIMIT) + 10);
        }
        put_header(&mut self.buf, opcode, payload.len());
        if payload.len() <= COPY_LIMIT {
            self.buf.extend_from_slice(&payload);
        } else {
            self.tail = payload;
        }
    }

    /// Writes everything still waiting (including the rest of a write cut short) and flushes.
    /// The batch buffer is given back, so an idle socket holds no write memory.
    pub(super) async fn finish<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        self.write_out(io).await?;
        self.buf = Vec::new();
        poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
    }

    /// Writes `buf` from `sent` on, then `tail`. Each step records its progress before the next
    /// await, so dropping this future loses nothing.
    pub(super) async fn write_out<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        while !self.is_empty() {
            let head = &self.buf[self.sent..];
            let slices = [IoSlice::new(head), IoSlice::new(&self.tail)];
            let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &slices)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            self.sent += from_head;
            self.tail.advance(n - from_head);
        }
        self.buf.clear();
        self.sent = 0;
        Ok(())
    }
}

/// Appends the header of an unmasked, final frame (server to client, RFC 6455 §5.2).
fn put_header(buf: &mut Vec<u8>, opcode: u8, len: usize) {
    buf.push(FIN | opcode);
    match len {
        0..=125 => buf.push(len as u8),
        126..=0xFFFF => {
            buf.push(126);
            buf.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            buf.push(127);
            buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    use super::*;

    /// A writer that takes at most `step` bytes per call, to exercise partial writes, and
    /// blocks (forever) once it took `budget` bytes.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        budget: usize,
    }

    impl Trickle {
        fn new(step: usize) -> Self {
            Self { out: Vec::new(), step, budget: usize::MAX }
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.budget == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.step).min(self.budget);
            self.budget -= n;
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if self.budget == 0 {
                return Poll::Pending;
            }
            let mut left = self.step.min(self.budget);
            self.budget -= left;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                self.out.extend_from_slice(&buf[..take]);
                n += take;
                left -= take;
            }
            self.budget += left;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Parses `bytes` back into messages with tungstenite's own frame decoder.
    fn decode(mut bytes: &[u8]) -> Vec<WsMessage> {
        let mut messages = Vec::new();
        while !bytes.is_empty() {
            let mut cursor = io::Cursor::new(bytes);
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

    #[tokio::test]
    async fn every_length_class_round_trips_through_partial_writes() {
        let sizes = [0, 1, 125, 126, 127, 4096, 4097, 65_535, 65_536, 200_000];
        for step in [1, 3, 7, 1000, usize::MAX] {
            let mut io = Trickle::new(step);
            let mut frames = Frames::default();
            let mut sent = Vec::new();
            for (i, &size) in sizes.iter().enumerate() {
                let message = if i % 2 == 0 {
                    Message::from("é".repeat(size / 2) + &"x".repeat(size % 2))
                } else {
                    Message::from(vec![i as u8; size])
                };
                if frames.is_full() {
                    frames.write_out(&mut io).await.unwrap();
                }
                frames.push(message.clone());
                sent.push(message);
            }
            frames.finish(&mut io).await.unwrap();
            assert!(frames.is_empty());
            let got = decode(&io.out);
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

    #[tokio::test]
    async fn a_writer_that_takes_nothing_is_an_error_not_a_spin() {
        let mut io = Trickle::new(0);
        let mut frames = Frames::default();
        let big = Message::from(vec![0u8; COPY_LIMIT + 1]);
        frames.push(big);
        let err = frames.finish(&mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
        assert!(!frames.is_empty(), "what was not written is kept");
    }

    #[tokio::test]
    async fn a_write_cut_short_is_finished_later_without_tearing_a_frame() {
        let big = Message::from(vec![9u8; 10_000]);
        let small = Message::from("after");
        // The socket takes 3,000 bytes, then blocks: the push is abandoned (a forced close).
        let mut io = Trickle { out: Vec::new(), step: 1000, budget: 3000 };
        let mut frames = Frames::default();
        frames.push(small);
        frames.push(big);
        let write = frames.write_out(&mut io);
        let cut = tokio::time::timeout(std::time::Duration::from_millis(20), write).await;
        assert!(cut.is_err(), "the write blocked");
        assert!(!frames.is_empty());
        // Later (the close handshake) the rest goes out, and the stream is whole.
        io.budget = usize::MAX;
        frames.finish(&mut io).await.unwrap();
        let got = decode(&io.out);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], WsMessage::text("after"));
        assert_eq!(got[1], WsMessage::binary(vec![9u8; 10_000]));
    }
}
