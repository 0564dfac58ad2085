//! Close frames: the codes the runtime uses, which codes a server may send, and reasons cut to
//! what a close frame holds.

/// Close codes the runtime itself uses, with their meaning here.
pub mod close_code {
    /// The server is shutting down, or the agent instance went away.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame or message was over the server's size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Setting the connection up failed (tags, `on_start`); an `{"error":…}` frame came first.
    pub const SESSION_SETUP_FAILED: u16 = 1011;
    /// The client stopped reading and its outbox filled up ("try again later": clients reconnect).
    pub const OUTBOX_FULL: u16 = 1013;
}

/// A close frame: code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CloseFrame {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

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
