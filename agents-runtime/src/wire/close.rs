//! Close frames: the codes the runtime uses, which codes a server may send, and reasons cut to
//! what a close frame holds.

/// Close codes the runtime itself uses, with their meaning here.
pub mod close_code {
    /// The server is shutting down, or the agent instance went away.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (RFC 6455): an unmasked frame, a reserved bit
    /// or opcode, a malformed control frame or close code.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Reported to `on_close` when the client's close frame had no code; never sent.
    pub const NO_STATUS_RECEIVED: u16 = 1005;
    /// Reported to `on_close` when the connection ended without a close frame; never sent.
    pub const ABNORMAL_CLOSURE: u16 = 1006;
    /// A text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// What the client asked for breaks the agent's rules (an agent's own refusal), or a
    /// message stayed unfinished past the message timeout.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message was over the server's size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Setting the connection up failed (tags, `on_start`); an `{"error":…}` frame came first.
    pub const SESSION_SETUP_FAILED: u16 = 1011;
    /// The server failed: its storage lost writes, and messages held behind them with them
    /// (the same code as [`SESSION_SETUP_FAILED`], RFC 6455's "internal error").
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The client stopped reading and its outbox filled up ("try again later": clients reconnect).
    pub const OUTBOX_FULL: u16 = 1013;
    /// The server is over a budget (unfinished input): the same code as [`OUTBOX_FULL`],
    /// "try again later".
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A close frame: code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CloseFrame {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

impl CloseFrame {
    pub(crate) fn new(code: u16, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }

    /// The instance is gone or cannot take the connection: 1001, "Agent unavailable".
    pub(crate) fn agent_unavailable() -> Self {
        Self::new(close_code::GOING_AWAY, AGENT_UNAVAILABLE)
    }

    /// The server is shutting down: 1001.
    pub(crate) fn shutting_down() -> Self {
        Self::new(close_code::GOING_AWAY, "Server shutting down")
    }

    /// The frame's payload: the code, big-endian, then the reason.
    pub(crate) fn payload(&self) -> Vec<u8> {
        let mut payload = self.code.to_be_bytes().to_vec();
        payload.extend_from_slice(self.reason.as_bytes());
        payload
    }
}

/// What a client hears when the instance it asked for cannot be reached: the close reason of
/// its socket, the body of a 503, the error of an in-process call.
pub(crate) const AGENT_UNAVAILABLE: &str = "Agent unavailable";

/// Codes a server may put in a close frame (RFC 6455 §7.4, as tungstenite and browsers check).
pub(crate) fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A close reason is at most 123 bytes of UTF-8; cut at a character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    const MAX: usize = 123;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
