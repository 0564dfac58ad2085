//! The frames of a link between two nodes: a gateway (the node holding a client's socket)
//! sends its clients' events to the agent's owner, and the owner sends back what its turns
//! send to those clients, once per gateway for a broadcast.
//!
//! On the wire each frame is `u32 length (big-endian) | u8 kind | fields`; a string or a
//! payload is `u32 length | bytes`, a number big-endian. A frame that does not decode ends the
//! link (it came from a node of the same cluster, so it is a bug or a version mismatch).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::message::Message;

/// The longest frame a link accepts: a message of the largest size a server allows, plus room.
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// Where an owner's frames for one gateway go: the gateway's link.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Writes `frame` to the gateway; `false` when the link is gone (or this node may no
    /// longer speak for the agent: its lease ran out).
    fn send(&self, frame: Frame) -> bool;

    /// Gives up on the link: the gateway hears it end.
    fn abort(&self);
}

/// Which of a gateway's sockets an owner's frame is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// One socket, by the gateway's key.
    One(u64),
    /// These sockets (a broadcast).
    Some(Vec<u64>),
}

/// One frame of a node link.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Frame {
    /// Gateway → owner: a client's socket finished its upgrade.
    Connect {
        agent: String,
        name: String,
        conn: u64,
        id: String,
        uri: String,
        headers: Vec<(String, Vec<u8>)>,
    },
    /// Gateway → owner: a client's message.
    Message { agent: String, name: String, conn: u64, message: Message },
    /// Gateway → owner: a client's socket closed.
    Close { agent: String, name: String, conn: u64, code: u16, reason: String, clean: bool },
    /// Gateway → owner: a client broke the protocol (the gateway closes it; `on_error` runs).
    Error { agent: String, name: String, conn: u64, error: String },
    /// Gateway → owner: an HTTP request for the agent (`on_request`).
    Request {
        agent: String,
        name: String,
        id: u64,
        method: String,
        uri: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Bytes,
    },
    /// Gateway → owner: an in-process call (an `AgentStub` on the gateway): method and JSON
    /// arguments.
    Call { agent: String, name: String, id: u64, method: String, args: String },
    /// Owner → gateway: the answer to request `id`.
    Response {
        agent: String,
        name: String,
        id: u64,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Bytes,
    },
    /// Owner → gateway: how call `id` ended (`kind`: 0 a value, JSON in `payload`, 1 no
    /// value, 2 an error, 3 no such method, 4 not callable).
    Outcome { agent: String, name: String, id: u64, kind: u8, payload: String },
    /// Owner → gateway: a message for some of the gateway's sockets.
    Send { agent: String, name: String, epoch: i64, target: Target, message: Message },
    /// Owner → gateway: close a socket.
    CloseConn { agent: String, name: String, epoch: i64, conn: u64, code: u16, reason: String },
    /// Owner → gateway: the owner does not own the agent (any more): find its owner again.
    NotOwner { agent: String, name: String },
}

const CONNECT: u8 = 1;
const MESSAGE: u8 = 2;
const CLOSE: u8 = 3;
const ERROR: u8 = 4;
const REQUEST: u8 = 5;
const CALL: u8 = 6;
const SEND: u8 = 10;
const CLOSE_CONN: u8 = 11;
const NOT_OWNER: u8 = 12;
const RESPONSE: u8 = 13;
const OUTCOME: u8 = 14;

const TEXT: u8 = 0;
const BINARY: u8 = 1;

impl Frame {
    /// The agent and instance the frame is about.
    pub(crate) fn instance(&self) -> (&str, &str) {
        match self {
            Frame::Connect { agent, name, .. }
            | Frame::Message { agent, name, .. }
            | Frame::Close { agent, name, .. }
            | Frame::Error { agent, name, .. }
            | Frame::Request { agent, name, .. }
            | Frame::Call { agent, name, .. }
            | Frame::Response { agent, name, .. }
            | Frame::Outcome { agent, name, .. }
            | Frame::Send { agent, name, .. }
            | Frame::CloseConn { agent, name, .. }
            | Frame::NotOwner { agent, name } => (agent, name),
        }
    }

    /// Appends the frame, length first, to `out`.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        match self {
            Frame::Connect { agent, name, conn, id, uri, headers } => {
                out.put_u8(CONNECT);
                instance(out, agent, name);
                out.put_u64(*conn);
                string(out, id.as_bytes());
                string(out, uri.as_bytes());
                self::headers(out, headers);
            }
            Frame::Message { agent, name, conn, message } => {
                out.put_u8(MESSAGE);
                instance(out, agent, name);
                out.put_u64(*conn);
                self::message(out, message);
            }
            Frame::Close { agent, name, conn, code, reason, clean } => {
                out.put_u8(CLOSE);
                instance(out, agent, name);
                out.put_u64(*conn);
                out.put_u16(*code);
                string(out, reason.as_bytes());
                out.put_u8(u8::from(*clean));
            }
            Frame::Error { agent, name, conn, error } => {
                out.put_u8(ERROR);
                instance(out, agent, name);
                out.put_u64(*conn);
                string(out, error.as_bytes());
            }
            Frame::Request { agent, name, id, method, uri, headers, body } => {
                out.put_u8(REQUEST);
                instance(out, agent, name);
                out.put_u64(*id);
                string(out, method.as_bytes());
                string(out, uri.as_bytes());
                self::headers(out, headers);
                string(out, body);
            }
            Frame::Call { agent, name, id, method, args } => {
                out.put_u8(CALL);
                instance(out, agent, name);
                out.put_u64(*id);
                string(out, method.as_bytes());
                string(out, args.as_bytes());
            }
            _ => self.encode_owner(out),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// [`encode`](Self::encode)'s part for the frames an owner sends.
    fn encode_owner(&self, out: &mut BytesMut) {
        match self {
            Frame::Response { agent, name, id, status, headers, body } => {
                out.put_u8(RESPONSE);
                instance(out, agent, name);
                out.put_u64(*id);
                out.put_u16(*status);
                self::headers(out, headers);
                string(out, body);
            }
            Frame::Outcome { agent, name, id, kind, payload } => {
                out.put_u8(OUTCOME);
                instance(out, agent, name);
                out.put_u64(*id);
                out.put_u8(*kind);
                string(out, payload.as_bytes());
            }
            Frame::Send { agent, name, epoch, target, message } => {
                out.put_u8(SEND);
                instance(out, agent, name);
                out.put_i64(*epoch);
                match target {
                    Target::One(conn) => {
                        out.put_u8(0);
                        out.put_u64(*conn);
                    }
                    Target::Some(conns) => {
                        out.put_u8(1);
                        out.put_u32(conns.len() as u32);
                        for conn in conns {
                            out.put_u64(*conn);
                        }
                    }
                }
                self::message(out, message);
            }
            Frame::CloseConn { agent, name, epoch, conn, code, reason } => {
                out.put_u8(CLOSE_CONN);
                instance(out, agent, name);
                out.put_i64(*epoch);
                out.put_u64(*conn);
                out.put_u16(*code);
                string(out, reason.as_bytes());
            }
            Frame::NotOwner { agent, name } => {
                out.put_u8(NOT_OWNER);
                instance(out, agent, name);
            }
            _ => {}
        }
    }

    /// Decodes one frame's body (without its length).
    pub(crate) fn decode(mut body: Bytes) -> Result<Self, String> {
        let body = &mut body;
        let kind = take_u8(body)?;
        let (agent, name) = (take_string(body)?, take_string(body)?);
        let frame = match kind {
            CONNECT => {
                let conn = take_u64(body)?;
                let (id, uri) = (take_string(body)?, take_string(body)?);
                Frame::Connect { agent, name, conn, id, uri, headers: take_headers(body)? }
            }
            REQUEST => Frame::Request {
                agent,
                name,
                id: take_u64(body)?,
                method: take_string(body)?,
                uri: take_string(body)?,
                headers: take_headers(body)?,
                body: take_bytes(body)?,
            },
            CALL => Frame::Call {
                agent,
                name,
                id: take_u64(body)?,
                method: take_string(body)?,
                args: take_string(body)?,
            },
            other => decode_owner(other, agent, name, body)?,
        };
        match body.has_remaining() {
            true => Err("bytes after the end of a frame".into()),
            false => Ok(frame),
        }
    }
}

/// [`Frame::decode`]'s part for the frames an owner sends (`kind`, after the instance).
fn decode_owner(kind: u8, agent: String, name: String, body: &mut Bytes) -> Result<Frame, String> {
    Ok(match kind {
        RESPONSE => Frame::Response {
            agent,
            name,
            id: take_u64(body)?,
            status: take_u16(body)?,
            headers: take_headers(body)?,
            body: take_bytes(body)?,
        },
        OUTCOME => Frame::Outcome {
            agent,
            name,
            id: take_u64(body)?,
            kind: take_u8(body)?,
            payload: take_string(body)?,
        },
        MESSAGE => {
            Frame::Message { agent, name, conn: take_u64(body)?, message: take_message(body)? }
        }
        CLOSE => Frame::Close {
            agent,
            name,
            conn: take_u64(body)?,
            code: take_u16(body)?,
            reason: take_string(body)?,
            clean: take_u8(body)? != 0,
        },
        ERROR => Frame::Error { agent, name, conn: take_u64(body)?, error: take_string(body)? },
        SEND => {
            let epoch = take_i64(body)?;
            let target = match take_u8(body)? {
                0 => Target::One(take_u64(body)?),
                1 => {
                    let count = take_u32(body)? as usize;
                    if count * 8 > body.remaining() {
                        return Err("a target list longer than its frame".into());
                    }
                    Target::Some((0..count).map(|_| body.get_u64()).collect())
                }
                other => return Err(format!("unknown target kind {other}")),
            };
            Frame::Send { agent, name, epoch, target, message: take_message(body)? }
        }
        CLOSE_CONN => Frame::CloseConn {
            agent,
            name,
            epoch: take_i64(body)?,
            conn: take_u64(body)?,
            code: take_u16(body)?,
            reason: take_string(body)?,
        },
        NOT_OWNER => Frame::NotOwner { agent, name },
        other => return Err(format!("unknown frame kind {other}")),
    })
}

fn instance(out: &mut BytesMut, agent: &str, name: &str) {
    string(out, agent.as_bytes());
    string(out, name.as_bytes());
}

fn string(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn headers(out: &mut BytesMut, headers: &[(String, Vec<u8>)]) {
    out.put_u32(headers.len() as u32);
    for (header, value) in headers {
        string(out, header.as_bytes());
        string(out, value);
    }
}

fn take_headers(body: &mut Bytes) -> Result<Vec<(String, Vec<u8>)>, String> {
    let count = take_u32(body)? as usize;
    let mut headers = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        headers.push((take_string(body)?, take_bytes(body)?.to_vec()));
    }
    Ok(headers)
}

fn message(out: &mut BytesMut, message: &Message) {
    match message {
        Message::Text(text) => {
            out.put_u8(TEXT);
            string(out, text.as_bytes());
        }
        Message::Binary(bytes) => {
            out.put_u8(BINARY);
            string(out, bytes);
        }
    }
}

fn need(body: &Bytes, n: usize) -> Result<(), String> {
    match body.remaining() >= n {
        true => Ok(()),
        false => Err("a frame ends early".into()),
    }
}

fn take_u8(body: &mut Bytes) -> Result<u8, String> {
    need(body, 1)?;
    Ok(body.get_u8())
}

fn take_u16(body: &mut Bytes) -> Result<u16, String> {
    need(body, 2)?;
    Ok(body.get_u16())
}

fn take_u32(body: &mut Bytes) -> Result<u32, String> {
    need(body, 4)?;
    Ok(body.get_u32())
}

fn take_u64(body: &mut Bytes) -> Result<u64, String> {
    need(body, 8)?;
    Ok(body.get_u64())
}

fn take_i64(body: &mut Bytes) -> Result<i64, String> {
    need(body, 8)?;
    Ok(body.get_i64())
}

fn take_bytes(body: &mut Bytes) -> Result<Bytes, String> {
    let len = take_u32(body)? as usize;
    need(body, len)?;
    Ok(body.split_to(len))
}

fn take_string(body: &mut Bytes) -> Result<String, String> {
    String::from_utf8(take_bytes(body)?.to_vec()).map_err(|_| "a string that is not UTF-8".into())
}

fn take_message(body: &mut Bytes) -> Result<Message, String> {
    let kind = take_u8(body)?;
    let payload = take_bytes(body)?;
    match kind {
        TEXT => Message::text_from_bytes(payload)
            .ok_or_else(|| "a text message that is not UTF-8".into()),
        BINARY => Ok(Message::Binary(payload)),
        other => Err(format!("unknown message kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        let mut bytes = out.freeze();
        let len = bytes.get_u32() as usize;
        assert_eq!(len, bytes.len());
        assert_eq!(Frame::decode(bytes.clone()).expect("decodes"), frame);
        // Every cut of it is refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(Frame::decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_frame_round_trips_and_a_cut_one_is_refused() {
        let (agent, name) = ("chat-room".to_owned(), "lobby".to_owned());
        round_trip(Frame::Connect {
            agent: agent.clone(),
            name: name.clone(),
            conn: 7,
            id: "abc".into(),
            uri: "/agents/chat-room/lobby?x=1".into(),
            headers: vec![("host".into(), b"a:1".to_vec()), ("x-bin".into(), vec![0, 255])],
        });
        round_trip(Frame::Message {
            agent: agent.clone(),
            name: name.clone(),
            conn: 1,
            message: Message::from("héllo"),
        });
        let binary = Message::Binary(Bytes::from_static(&[0, 1, 2]));
        round_trip(Frame::Message {
            agent: agent.clone(),
            name: name.clone(),
            conn: 1,
            message: binary.clone(),
        });
        round_trip(Frame::Close {
            agent: agent.clone(),
            name: name.clone(),
            conn: 2,
            code: 1000,
            reason: "bye".into(),
            clean: true,
        });
        round_trip(Frame::Error {
            agent: agent.clone(),
            name: name.clone(),
            conn: 2,
            error: "too big".into(),
        });
        for target in [Target::One(3), Target::Some(vec![1, 2, u64::MAX]), Target::Some(vec![])] {
            round_trip(Frame::Send {
                agent: agent.clone(),
                name: name.clone(),
                epoch: 9,
                target,
                message: binary.clone(),
            });
        }
        round_trip(Frame::CloseConn {
            agent: agent.clone(),
            name: name.clone(),
            epoch: 2,
            conn: 4,
            code: 1013,
            reason: "".into(),
        });
        let headers = vec![("content-type".to_owned(), b"text/plain".to_vec())];
        let body = Bytes::from_static(b"body");
        round_trip(Frame::Request {
            agent: agent.clone(),
            name: name.clone(),
            id: 1,
            method: "POST".into(),
            uri: "/agents/a/b/x?y".into(),
            headers: headers.clone(),
            body: body.clone(),
        });
        round_trip(Frame::Response {
            agent: agent.clone(),
            name: name.clone(),
            id: 1,
            status: 201,
            headers,
            body,
        });
        round_trip(Frame::Call {
            agent: agent.clone(),
            name: name.clone(),
            id: 2,
            method: "add".into(),
            args: "[1,2]".into(),
        });
        round_trip(Frame::Outcome {
            agent: agent.clone(),
            name: name.clone(),
            id: 2,
            kind: 0,
            payload: "3".into(),
        });
        round_trip(Frame::NotOwner { agent, name });
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(Frame::decode(Bytes::from_static(&[99, 0, 0, 0, 0, 0, 0, 0, 0])).is_err());
        assert!(Frame::decode(Bytes::new()).is_err());
        // A target list that claims more than the frame holds.
        let mut out = BytesMut::new();
        out.put_u8(SEND);
        instance(&mut out, "a", "b");
        out.put_i64(1);
        out.put_u8(1);
        out.put_u32(u32::MAX);
        assert!(Frame::decode(out.freeze()).is_err());
    }
}
